"""Hot reload through a real `douane run`: SIGHUP under load loses no call and mixes no policies
within a call; an invalid policy is refused and the old one stays; a call in flight finishes under
the policy it started with; new providers' hosts are intercepted at once."""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from douane.gateway import policy_digest
from douane.policy import load_policy
from tests import mock_provider
from tests.e2e.conftest import Douane, routed_policy, wait_for

CHAT = "https://api.openai.com/v1/chat/completions"
LOAD_THREADS = 4


def tagged(mock: str, tag: str, **extra: Any) -> dict[str, Any]:
    """A policy whose routes mark each call's model with `tag`: the model a row was served tells which
    policy routed it (at request time), its policy_hash which policy recorded it (at the end)."""
    return routed_policy(mock, routes=[{"when": {"model": "gpt-4o"}, "set_model": f"gpt-4o-{tag}"},
                                       {"when": {"model": "hold-me"}, "set_model": f"hold-{tag}"}], **extra)


def put(d: Douane, policy: dict[str, Any] | str) -> str:
    """Write the proxy's policy file and return its policy_hash, as `douane policy check` computes it."""
    d.policy_path.write_text(policy if isinstance(policy, str) else yaml.safe_dump(policy))
    return "" if isinstance(policy, str) else policy_digest(load_policy(d.policy_path))


def reload(d: Douane, policy: dict[str, Any] | str, outcome: str) -> str:
    """SIGHUP with a new policy file; waits (bounded) for the log line of the reload's `outcome`."""
    seen = d.log().count(outcome)
    digest = put(d, policy)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    wait_for(f"a log line '{outcome}'", lambda: d.log().count(outcome) > seen, d)
    return digest


def served_model(r: httpx.Response, stream: bool) -> str:
    """The model the client was answered by: the JSON's, or the first SSE chunk's."""
    if not stream:
        return r.json()["model"]
    for line in r.text.splitlines():
        if line.startswith("data: {"):
            return json.loads(line[6:])["model"]
    raise AssertionError(f"no data event in the stream: {r.text[:300]}")


class Load:
    """Threads sending chat calls (plain and streamed, alternately) until stopped; every answer kept."""

    def __init__(self, d: Douane):
        self.d = d
        self.stop = threading.Event()
        self.lock = threading.Lock()
        # (status, x-douane-request-id, model served, monotonic time sent, monotonic time answered)
        self.answers: list[tuple[int, str, str, float, float]] = []
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._send, args=(i,)) for i in range(LOAD_THREADS)]

    def _send(self, n: int) -> None:
        with self.d.http() as http:
            i = 0
            while not self.stop.is_set():
                stream = (i + n) % 2 == 1
                i += 1
                sent = time.monotonic()
                try:
                    r = http.post(CHAT, json={"model": "gpt-4o", "stream": stream,
                                              "messages": [{"role": "user", "content": f"call {n}.{i}"}]})
                    answer = (r.status_code, r.headers.get("x-douane-request-id", ""), served_model(r, stream), sent,
                              time.monotonic())
                except Exception as e:  # noqa: BLE001 - a lost call is what this test looks for
                    with self.lock:
                        self.failures.append(repr(e))
                    continue
                with self.lock:
                    self.answers.append(answer)

    def count(self) -> int:
        with self.lock:
            return len(self.answers)

    def more(self, n: int = 12) -> int:
        """Wait until `n` more calls are answered; the number answered before."""
        start = self.count()
        wait_for(f"{n} more answered calls", lambda: self.count() >= start + n, self.d)
        return start

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_reloads_under_load_lose_no_call_and_mix_no_policies(make_douane: Any, mock: str) -> None:
    d: Douane = make_douane(tagged(mock, "a"))
    hash_a = policy_digest(load_policy(d.policy_path))
    with Load(d) as load:
        load.more()
        hash_b = reload(d, tagged(mock, "b"), "policy reloaded")
        load.more()
        reload(d, "version: 1\nmode: enforce\npii:\n  action: shred\n", "policy reload (SIGHUP) refused")
        refused_at = time.monotonic()
        load.more()
        a_again_at = time.monotonic()
        reload(d, tagged(mock, "a"), "policy reloaded")
        load.more()
    assert not load.failures, load.failures[:5]
    assert not any(t.is_alive() for t in load.threads)
    answers = load.answers

    assert {a[0] for a in answers} == {200}
    rows = d.rows(expect=len(answers))
    by_id = {r["id"]: r for r in rows}
    assert len(rows) == len(by_id) == len(answers) and set(by_id) == {a[1] for a in answers}, "a call was lost"
    tag_of = {hash_a: "a", hash_b: "b"}
    for _, call_id, model, _, _ in answers:
        row = by_id[call_id]
        assert row["policy_hash"] in tag_of, row
        assert model == row["model"] == f"gpt-4o-{tag_of[row['policy_hash']]}", \
            f"routed under one policy, recorded under another: {row['id']} {model} {row['policy_hash']}"
    # sent after the refusal, answered before A came back: only B can have judged them
    under_b_only = [a[1] for a in answers if a[3] > refused_at and a[4] < a_again_at]
    assert under_b_only and {by_id[i]["policy_hash"] for i in under_b_only} == {hash_b}, \
        "the refused policy changed something"
    assert {r["policy_hash"] for r in rows} == {hash_a, hash_b}
    log = d.log()
    assert "pii.action" in log and f"{d.policy_path}:4" in log, "the refusal names the line, as policy check does"


@pytest.fixture()
def held() -> Iterator[None]:
    mock_provider.HOLD.clear()
    mock_provider.HOLDING.clear()
    mock_provider.HELD_TOO_LONG.clear()
    try:
        yield
    finally:
        mock_provider.HOLD.set()


def test_a_call_in_flight_finishes_under_the_policy_it_started_with(make_douane: Any, mock: str,
                                                                    held: None) -> None:
    d: Douane = make_douane(tagged(mock, "a"))
    hash_a = policy_digest(load_policy(d.policy_path))
    got: dict[str, Any] = {}

    def held_stream() -> None:
        with d.http() as http:
            r = http.post(CHAT, json={"model": "hold-me", "stream": True,
                                      "messages": [{"role": "user", "content": "one two three four"}]})
            got.update(status=r.status_code, id=r.headers["x-douane-request-id"], model=served_model(r, True),
                       text=r.text)

    caller = threading.Thread(target=held_stream)
    caller.start()
    try:
        wait_for("the upstream holding the stream midway", mock_provider.HOLDING.is_set, d)
        hash_b = reload(d, tagged(mock, "b"), "policy reloaded")
        with d.http() as http:
            fresh = http.post(CHAT, json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    finally:
        mock_provider.HOLD.set()
        caller.join(30)
    assert not mock_provider.HELD_TOO_LONG

    assert fresh.status_code == 200 and fresh.json()["model"] == "gpt-4o-b"
    assert got["status"] == 200 and got["model"] == "hold-a" and "four" in got["text"]
    rows = {r["id"]: r for r in d.rows(expect=2)}
    held_row, fresh_row = rows[got["id"]], rows[fresh.headers["x-douane-request-id"]]
    assert (held_row["policy_hash"], held_row["model"]) == (hash_a, "hold-a")
    assert (fresh_row["policy_hash"], fresh_row["model"]) == (hash_b, "gpt-4o-b")
    assert hash_a != hash_b


def test_a_provider_added_by_a_reload_is_intercepted(make_douane: Any, mock: str) -> None:
    d: Douane = make_douane(routed_policy(mock))
    url = "https://llm.acme.test/v1/chat/completions"
    body = {"model": "acme-1", "messages": [{"role": "user", "content": "hello"}]}
    with d.http() as http, pytest.raises(httpx.HTTPError):
        http.post(url, json=body)  # not a provider: tunnelled untouched, and there is no such host
    assert d.rows() == []

    reload(d, routed_policy(mock, providers={"acme": {"format": "openai", "hosts": ["llm.acme.test"],
                                                      "upstream": mock}}), "policy reloaded")
    with d.http() as http:
        r = http.post(url, json=body)

    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: hello"
    (row,) = d.rows(expect=1)
    assert (row["provider"], row["id"]) == ("acme", r.headers["x-douane-request-id"])


def test_policy_check_prints_the_hash_the_proxy_records(make_douane: Any, mock: str, tmp_path: Path) -> None:
    d: Douane = make_douane(routed_policy(mock))
    from click.testing import CliRunner

    from douane.cli import main

    printed = CliRunner().invoke(main, ["policy", "check", str(d.policy_path)]).output.strip().rsplit(" ", 1)[-1]
    with d.http() as http:
        r = http.post(CHAT, json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    (row,) = d.rows(expect=1)
    assert row["policy_hash"] == printed


def test_a_client_removed_by_a_reload_is_refused_on_a_connection_opened_before(make_douane: Any, mock: str) -> None:
    def client(name: str, key: str) -> dict[str, str]:
        return {"name": name, "team": "ops", "key_sha256": hashlib.sha256(key.encode()).hexdigest()}

    d: Douane = make_douane(routed_policy(mock, teams={"ops": {}}, clients=[client("bot", "k1"), client("job", "k2")]))
    ask = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    with d.http("bot:k1") as bot:
        before = bot.post(CHAT, json=ask)
        reload(d, routed_policy(mock, teams={"ops": {}}, clients=[client("job", "k2")]), "policy reloaded")
        after = bot.post(CHAT, json=ask)  # the same keep-alive connection, its CONNECT made under the old policy
    with d.http("job:k2") as job:
        kept = job.post(CHAT, json=ask)

    assert (before.status_code, after.status_code, kept.status_code) == (200, 407, 200)
