"""`douane policy replay` against the truth: traffic recorded through a real proxy, the policy
tightened, the recorded calls replayed under it, and the same traffic sent afresh through a proxy
running the tightened policy. Replay and the fresh run must agree on every call (none of these
decisions depends on redacted text)."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

from click.testing import CliRunner

from douane.cli import main
from tests.e2e.conftest import Douane, routed_policy

OPENAI = "https://api.openai.com/v1/chat/completions"
ANTHROPIC = "https://api.anthropic.com/v1/messages"
GEMINI = "https://generativelanguage.googleapis.com/v1beta/models/{model}:generateContent"


def client(name: str, team: str) -> dict[str, str]:
    return {"name": name, "team": team, "key_sha256": hashlib.sha256(f"{name}-key".encode()).hexdigest()}


CLIENTS = [client("bot", "ops"), client("job", "research")]
# (client, url, body): the traffic, in order
TRAFFIC: list[tuple[str, str, dict[str, Any]]] = [
    ("bot", OPENAI, {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello one"}]}),
    ("bot", OPENAI, {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hello two"}]}),
    ("bot", OPENAI, {"model": "gpt-4o", "messages": [{"role": "user", "content": "mail jane.doe@example.com"}]}),
    *[("job", OPENAI, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"question {i}"}]})
      for i in range(4)],
    ("job", ANTHROPIC, {"model": "claude-haiku-4-5", "max_tokens": 64,
                        "messages": [{"role": "user", "content": "hi"}]}),
    ("bot", GEMINI.format(model="gemini-2.0-flash"), {"contents": [{"role": "user", "parts": [{"text": "gem"}]}]}),
]


def recording(mock: str) -> dict[str, Any]:
    return routed_policy(mock, teams={"ops": {}, "research": {}}, clients=CLIENTS, audit={"bodies": "redacted"})


def tightened(mock: str) -> dict[str, Any]:
    """ops loses gpt-4o, research gets 3 calls a minute, gemini-2.0-flash is rerouted to its lite model."""
    return routed_policy(mock, teams={"ops": {"models": ["gpt-4o-mini", "gemini-*"]},
                                      "research": {"requests_per_minute": 3}},
                         clients=CLIENTS, audit={"bodies": "redacted"},
                         routes=[{"when": {"model": "gemini-2.0-flash"}, "set_model": "gemini-2.0-flash-lite"}])


def within_one_minute() -> None:
    """Rate limits count per wall-clock minute: start the traffic early in one, so it ends in it too."""
    deadline = time.monotonic() + 70
    while datetime.now(UTC).second >= 40:
        assert time.monotonic() < deadline, "the wall clock did not move on"
        time.sleep(0.2)


def send(d: Douane) -> list[tuple[str, int]]:
    """The traffic through the proxy: (x-douane-request-id, status) per call, in order."""
    answers = []
    for who, url, body in TRAFFIC:
        with d.http(f"{who}:{who}-key") as http:
            r = http.post(url, json=body)
        answers.append((r.headers["x-douane-request-id"], r.status_code))
    return answers


def test_replay_agrees_with_a_fresh_run_under_the_tightened_policy(make_douane: Any, mock: str) -> None:
    before = make_douane(recording(mock))
    within_one_minute()
    recorded = send(before)
    assert {status for _, status in recorded} == {200}
    before.rows(expect=len(TRAFFIC))
    before.stop()  # the store closed: replay reads it as an auditor would

    after = make_douane(tightened(mock))
    result = CliRunner().invoke(main, ["policy", "replay", "--policy", str(after.policy_path), "--db",
                                       str(before.db), "--since", "1d", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)

    within_one_minute()
    fresh = send(after)
    fresh_rows = {r["id"]: r for r in after.rows(expect=len(TRAFFIC))}

    assert report["replayed"] == len(TRAFFIC) and report["skipped"] == {}
    changed = {c["id"]: c for c in report["changed"]}
    rerouted = {r["id"]: r for r in report["rerouted"]}
    for (old_id, _), (new_id, status) in zip(recorded, fresh, strict=True):
        truth = fresh_rows[new_id]
        replayed = changed[old_id]["after"] if old_id in changed else "allowed"
        assert replayed == truth["decision"], f"call {old_id}: replay says {replayed}, a fresh run {truth['decision']}"
        if old_id in changed:
            assert (changed[old_id]["before"], changed[old_id]["after_status"]) == ("allowed", status)
            assert changed[old_id]["after_rule"] == truth["reason"]
        if old_id in rerouted:
            assert rerouted[old_id]["after"] == f"{truth['served_by'] or truth['provider']}/{truth['model']}"
    # the tightening bit where it was meant to: 2 calls by model, 2 by the rate limit, 1 reroute
    assert sorted((c["team"], c["after_rule"]) for c in report["changed"]) == [
        ("ops", "teams.ops.models"), ("ops", "teams.ops.models"),
        ("research", "teams.research.requests_per_minute"), ("research", "teams.research.requests_per_minute")]
    assert [r["after"] for r in report["rerouted"]] == ["gemini/gemini-2.0-flash-lite"]
    assert report["by_rule"][0]["calls"] == 2 and report["cannot_know"]


def test_replay_of_an_empty_window_and_a_bad_where(make_douane: Any, mock: str) -> None:
    d = make_douane(recording(mock))
    send(d)
    d.rows(expect=len(TRAFFIC))
    d.stop()

    none = CliRunner().invoke(main, ["policy", "replay", "--policy", str(d.policy_path), "--db", str(d.db),
                                     "--where", "client = 'nobody'", "--format", "json"])
    bad = CliRunner().invoke(main, ["policy", "replay", "--policy", str(d.policy_path), "--db", str(d.db),
                                    "--where", "no_such_column = 1"])
    same = CliRunner().invoke(main, ["policy", "replay", "--policy", str(d.policy_path), "--db", str(d.db),
                                     "--format", "json"])

    assert none.exit_code == 0 and json.loads(none.output)["replayed"] == 0
    assert bad.exit_code == 1 and "no_such_column" in bad.output and "--where" in bad.output
    report = json.loads(same.output)  # the policy that recorded them: nothing changes
    assert (report["replayed"], report["changed"], report["rerouted"]) == (len(TRAFFIC), [], [])
