"""How fast `douane policy replay` re-judges recorded calls (the issue asks >= 5,000 calls/s).

Writes N synthetic chat calls (OpenAI format, stored redacted bodies of a few sentences, one in
five with a placeholder, a few teams and models) to a fresh audit store through the real writer,
then replays them under a candidate policy (PII redact on, one team limited, one route) and prints
the rows read per second and the calls replayed per second.

    .venv/bin/python scripts/bench_replay.py [N]
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from douane.audit import AuditRecord, AuditStore, AuditWriter
from douane.policy import load_policy
from douane.policy.replay import read_rows, replay

TEXT = ("Summarise the attached quarterly report for the board, keeping the numbers, and write to "
        "{who} when it is done. Keep it under two hundred words.")


def write_store(db: Path, n: int) -> None:
    writer = AuditWriter(AuditStore(db))
    writer.start()
    start = datetime.now(UTC) - timedelta(hours=1)
    for i in range(n):
        who = "<EMAIL_ADDRESS>" if i % 5 == 0 else "the finance team"
        body = {"model": "gpt-4o-mini" if i % 3 else "gpt-4o",
                "messages": [{"role": "system", "content": "You are terse."},
                             {"role": "user", "content": TEXT.format(who=who)}]}
        answer = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "Done: revenue up 4%."},
                               "finish_reason": "stop"}], "usage": {"prompt_tokens": 60, "completion_tokens": 8}}
        writer.submit(AuditRecord(
            id=f"bench{i}", ts=start + timedelta(milliseconds=10 * i), client=f"c{i % 4}", team=f"t{i % 2}",
            provider="openai", endpoint="chat", method="POST", path="/v1/chat/completions", host="api.openai.com",
            model_requested=str(body["model"]), model=str(body["model"]), served_by="openai", stream=False,
            status=200, decision="allowed", mode="enforce", input_tokens=60, output_tokens=8,
            request_body=json.dumps(body), response_body=json.dumps(answer)))
    writer.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        digest = hashlib.sha256(b"k").hexdigest()
        (folder / "p.yaml").write_text(yaml.safe_dump({
            "version": 1, "pii": {"action": "redact", "entities": ["EMAIL_ADDRESS", "PHONE_NUMBER"]},
            "teams": {"t0": {"requests_per_minute": 1000}, "t1": {}},
            "clients": [{"name": f"c{i}", "team": f"t{i % 2}", "key_sha256": digest} for i in range(4)],
            "routes": [{"when": {"model": "gpt-4o"}, "set_model": "gpt-4o-mini"}]}))
        policy = load_policy(folder / "p.yaml")
        write_store(folder / "a.duckdb", n)
        t = time.perf_counter()
        rows = read_rows(folder / "a.duckdb", None, None)
        read_s = time.perf_counter() - t
        report = replay(policy, str(folder / "p.yaml"), rows).as_json()
        print(f"{len(rows)} rows read in {read_s:.2f} s ({len(rows) / read_s:,.0f} rows/s); "
              f"replayed {report['replayed']} at {report['calls_per_second']:,} calls/s; "
              f"changed {len(report['changed'])}, rerouted {len(report['rerouted'])}")


if __name__ == "__main__":
    main()
