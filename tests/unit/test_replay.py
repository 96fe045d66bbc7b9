"""douane.policy.replay on rows as the audit store returns them: time order and the row's clock for
limits, what is skipped and why, callers the candidate no longer knows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from douane.policy import load_policy
from douane.policy.replay import parse_since, replay

T0 = datetime(2030, 3, 1, 12, 0, 5, tzinfo=UTC)


def row(n: int, at: datetime, **kw: Any) -> dict[str, Any]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"question {n}"}]}
    base = {"id": f"r{n}", "ts": at, "client": "bot", "team": "ops", "provider": "openai", "endpoint": "chat",
            "path": "/v1/chat/completions", "model_requested": "gpt-4o-mini", "model": "gpt-4o-mini",
            "served_by": "openai", "stream": False, "status": 200, "decision": "allowed", "reason": None,
            "pii_entities": [], "output_findings": [], "input_tokens": 12, "output_tokens": 3, "cost_usd": 0.00001,
            "request_body": json.dumps(body), "response_body": None}
    return {**base, **kw}


def candidate(tmp_path: Path, **policy: Any) -> Any:
    path = tmp_path / "candidate.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "teams": {"ops": {"requests_per_minute": 2}},
                                    "clients": [{"name": "bot", "team": "ops", "key_sha256": "0" * 64}], **policy}))
    return load_policy(path)


def test_since_takes_a_number_and_a_unit() -> None:
    assert parse_since("7d") == timedelta(days=7) and parse_since("30m") == timedelta(minutes=30)
    with pytest.raises(ValueError, match="expected a number and a unit"):
        parse_since("a week")


def test_limits_are_replayed_in_time_order_on_the_rows_clock(tmp_path: Path) -> None:
    rows = [row(1, T0), row(2, T0 + timedelta(seconds=1)), row(3, T0 + timedelta(seconds=2)),
            row(4, T0 + timedelta(seconds=60))]  # the next minute: a new window

    report = replay(candidate(tmp_path), "candidate.yaml", rows).as_json()

    assert report["replayed"] == 4
    assert [(c["id"], c["after"], c["after_status"], c["after_rule"]) for c in report["changed"]] == [
        ("r3", "blocked", 429, "teams.ops.requests_per_minute")]
    assert report["by_rule"] == [{"now": "blocked", "team": "ops", "rule": "teams.ops.requests_per_minute",
                                  "calls": 1, "examples": ["r3"]}]


def test_what_cannot_be_replayed_is_counted_with_why(tmp_path: Path) -> None:
    rows = [row(1, T0, request_body=None, decision="blocked"),
            row(2, T0, provider="anthropic", served_by="openai"),
            row(3, T0, endpoint="other"),
            row(4, T0)]

    report = replay(candidate(tmp_path), "candidate.yaml", rows).as_json()

    assert report["replayed"] == 1 and report["skipped"] == {
        "no stored request body (refused before it left, or audit.bodies: none)": 1,
        "served through a translation: the stored body is the translated one": 1,
        "not an LLM call douane models": 1}


def test_a_client_the_candidate_no_longer_names_would_be_refused(tmp_path: Path) -> None:
    report = replay(candidate(tmp_path), "candidate.yaml", [row(1, T0, client="old-bot")]).as_json()
    (change,) = report["changed"]
    assert (change["before"], change["after"], change["after_status"]) == ("allowed", "blocked", 407)


def test_a_reroute_and_new_findings_are_reported(tmp_path: Path) -> None:
    policy = candidate(tmp_path, routes=[{"when": {"model": "gpt-4o-mini"}, "set_model": "gpt-4.1-nano"}],
                       pii={"action": "redact", "entities": ["EMAIL_ADDRESS"]})
    mail = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "to jane@example.com"}]})

    report = replay(policy, "candidate.yaml", [row(1, T0, request_body=mail)]).as_json()

    assert [(r["before"], r["after"]) for r in report["rerouted"]] == [("openai/gpt-4o-mini", "openai/gpt-4.1-nano")]
    assert report["new_findings"] == [{"id": "r1", "team": "ops", "pii_entities": ["EMAIL_ADDRESS"],
                                       "output_findings": []}]
    assert report["changed"] == []


def test_the_command_reads_the_store_and_prints_a_table_or_json(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from douane.audit import AuditRecord, AuditStore, AuditWriter
    from douane.cli import main

    writer = AuditWriter(AuditStore(tmp_path / "a.duckdb"))
    writer.start()
    now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)  # one minute for the three
    for n in range(3):
        writer.submit(AuditRecord(**row(n, now + timedelta(milliseconds=n)), method="POST", host="api.openai.com",
                                  mode="enforce"))
    writer.close()
    candidate(tmp_path)  # writes candidate.yaml: 2 calls a minute for ops
    args = ["policy", "replay", "--policy", str(tmp_path / "candidate.yaml"), "--db", str(tmp_path / "a.duckdb")]

    table = CliRunner().invoke(main, args)
    as_json = CliRunner().invoke(main, [*args, "--format", "json", "--since", "1h"])
    old = CliRunner().invoke(main, [*args, "--format", "json", "--where", "ts < now() - INTERVAL 1 DAY"])

    assert table.exit_code == 0 and "replayed 3 call(s)" in table.output and "what replay cannot know" in table.output
    assert "teams.ops.requests_per_minute" in table.output
    report = json.loads(as_json.output)
    assert report["replayed"] == 3 and [c["id"] for c in report["changed"]] == ["r2"]
    assert json.loads(old.output)["replayed"] == 0
