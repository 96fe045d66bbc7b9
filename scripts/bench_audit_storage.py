"""What a long chat costs the audit store: bytes per turn, first turn against last.

A chat client resends the whole history on every turn, so a call's request body grows with the
chat and a store that keeps full bodies grows with the square of its length. This script writes
--chats chats of --turns turns each through the audit writer (OpenAI chat bodies: each turn adds
a user message of about 300 characters and an answer of about 600), one segment per turn holding
that turn of every chat, and reports the stored bytes per call for each turn and in total, next to
the bytes of new text the turn added. Writes a BENCHMARKS.md section unless --no-write.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from douane.audit import AuditRecord, AuditStore, AuditWriter  # noqa: E402
from douane.audit.compaction import MERGE_ORDER, SEGMENT_FORMAT  # noqa: E402
from douane.audit.manifest import read_manifest  # noqa: E402
from douane.audit.store import MANIFEST  # noqa: E402


def merged_size(store: AuditStore) -> int:
    """The bytes of one segment merging every live one, as the store's compaction writes it."""
    manifest, problem = read_manifest(store.segments / MANIFEST)
    assert manifest is not None, problem
    listing = "[" + ", ".join(f"'{store.segments / n}'" for n in manifest.live) + "]"
    out = store.segments / "merged.bench"
    duckdb.connect().execute(f"COPY (SELECT * FROM read_parquet({listing}, union_by_name = true) {MERGE_ORDER}) "
                             f"TO '{out}' ({SEGMENT_FORMAT})")
    return out.stat().st_size

# words drawn at random for each message: prose that compresses about as well as real chats do
# (a repeated sentence would let Parquet's compression hide the repetition this measures)
WORDS = ("account actual after again agree answer april audit balance before budget change client cost "
              "customer data deadline decide draft during each email error estimate figure final first forecast "
              "growth invoice issue last legal margin march market meeting month number office order payment "
              "period plan price problem product quarter quote rate reason record report request result revenue "
              "review risk sales schedule second service since spend summary supplier table target team total "
              "trend update value vendor week why year")
VOCABULARY = WORDS.split(" ")


def text(chat: int, turn: int, size: int) -> str:
    rng = random.Random(chat * 100_003 + turn * 7 + size)
    words = [f"[chat {chat} turn {turn}]"]
    while sum(len(w) + 1 for w in words) < size:
        words.append(rng.choice(VOCABULARY))
    return " ".join(words)[:size]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chats", type=int, default=50)
    ap.add_argument("--turns", type=int, default=40)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="douane-bench-storage-"))
    try:
        store = AuditStore(folder / "audit.duckdb")
        w = AuditWriter(store, compact_at=10**6, min_interval=0)
        w.start()
        histories: list[list[dict[str, str]]] = [[] for _ in range(args.chats)]
        per_turn = []
        for turn in range(args.turns):
            before = {p.name for p in store.segment_files()}
            new_text = 0
            for chat, history in enumerate(histories):
                question, answer = text(chat, turn, 300), text(chat, turn, 600)
                history.append({"role": "user", "content": question})
                body = json.dumps({"model": "gpt-4o-mini", "messages": history})
                reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]})
                history.append({"role": "assistant", "content": answer})
                new_text += len(question) + len(answer)
                w.submit(AuditRecord(id=f"c{chat}-t{turn}", ts=datetime.now(UTC), client=f"chat-{chat}",
                                     provider="openai", request_body=body, response_body=reply))
            assert w.flush(60)
            added = [p for p in store.segment_files() if p.name not in before]
            per_turn.append((sum(p.stat().st_size for p in added) / args.chats, new_text / args.chats))
        w.close()
        merged = merged_size(store) / args.chats
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    total = sum(b for b, _ in per_turn)
    new = sum(n for _, n in per_turn)
    first, last = per_turn[0][0], per_turn[-1][0]
    lines = [
        "## scripts/bench_audit_storage.py (a long chat in the audit store)",
        "",
        f"{args.chats} chats of {args.turns} turns (each turn: a 300-character question and a 600-character "
        f"answer; the client resends the history), written through the audit writer, one Parquet segment per "
        f"turn. Bytes stored per call:",
        "",
        "| | first turn | last turn | whole chat | new text in the chat |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| as written (a segment per turn, zstd) | {first:,.0f} | {last:,.0f} | {total:,.0f} | {new:,.0f} |",
        f"| after the turns' segments merge (rows by caller and time, zstd) | | | {merged:,.0f} | {new:,.0f} |",
        "",
        f"As written, the last turn costs {last / first:.1f} times the first: each segment holds one turn of "
        f"every chat, so nothing in it repeats. Merged, a caller's calls lie side by side and zstd stores a "
        f"resent history once: the whole chat takes {merged / new:.2f} times its new text (the snappy segments "
        f"of the first round took 7.3 times). The `requests` view and every body are unchanged.",
    ]
    out = "\n".join(lines)
    print(out)
    if not args.no_write:
        from benchmarks_md import write_section
        print(f"wrote {write_section('bench-audit-storage', out)}")


if __name__ == "__main__":
    main()
