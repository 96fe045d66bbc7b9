"""Records the store cannot take as they are must never block the queue (issue 9, section 6.1)."""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path

import httpx
import pytest

from douane.audit import AuditStore, AuditWriter, query
from douane.audit import writer as writer_module
from tests.adversarial.audit_support import record
from tests.e2e.conftest import Douane, certs, make_douane, mock  # noqa: F401  (fixtures)

CHAT = "https://api.openai.com/v1/chat/completions"


def test_a_lone_surrogate_is_replaced_and_the_queue_moves_on(tmp_path: Path) -> None:
    w = AuditWriter(AuditStore(tmp_path / "a.duckdb"))
    w.start()
    try:
        w.submit(record("bad", request_body="x \ud800 y", pii_entities=["\udfff"]))
        for i in range(50):
            w.submit(record(i))
        assert w.flush(timeout=20), "the writer is stuck on the record with a lone surrogate"
        rows = query(w.store.db_path, "SELECT id, request_body, pii_entities, error FROM requests WHERE id = 'rbad'")[1]
        assert rows[0][:3] == ("rbad", "x \ufffd y", ["\ufffd"])
        assert "surrogate" in rows[0][3] and "request_body" in rows[0][3], "the row says what was changed"
        assert query(w.store.db_path, "SELECT count(*) FROM requests")[1] == [(51,)]
    finally:
        w.close()


def test_numbers_out_of_their_columns_range_become_null_and_the_row_says_so(tmp_path: Path) -> None:
    w = AuditWriter(AuditStore(tmp_path / "a.duckdb"))
    w.start()
    try:
        w.submit(record("big", status=2 ** 40, input_tokens=2 ** 70, cost_usd=float("nan")))
        w.submit(record("fine", status=200))
        assert w.flush(timeout=20)
        rows = dict((r[0], r[1:]) for r in query(w.store.db_path,
                                                  "SELECT id, status, input_tokens, error FROM requests")[1])
        assert rows["rfine"] == (200, None, None)
        status, tokens, error = rows["rbig"]
        assert (status, tokens) == (None, None) and "status" in error and "input_tokens" in error
    finally:
        w.close()


def test_a_record_that_cannot_be_fixed_is_quarantined_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Whatever DuckDB refuses, the batch is halved until the one record is alone: the others are
    written, it is kept whole in quarantine/ with the reason, and its call still has a row."""
    monkeypatch.setattr(writer_module, "sanitized", lambda rec: rec if rec.id == "rbad" else rec.__class__(
        **{**rec.__dict__, "status": None, "error": "audit: fixed"}))
    w = AuditWriter(AuditStore(tmp_path / "a.duckdb"), min_interval=10)
    w.start()
    try:
        with caplog.at_level(logging.ERROR):
            for i in range(30):
                w.submit(record(i, status=2 ** 40 if i == 17 else 200))
            w.submit(record("bad", status=2 ** 40))
            assert w.flush(timeout=20)
        rows = query(w.store.db_path, "SELECT id, status, error FROM requests ORDER BY id")[1]
        assert len(rows) == 31
        by_id = {r[0]: r for r in rows}
        assert by_id["r17"][1:] == (None, "audit: fixed")
        assert by_id["rbad"][1] is None and "quarantine/records.jsonl" in by_id["rbad"][2]
        kept = [json.loads(line) for line in (w.store.quarantine / "records.jsonl").read_text().splitlines()]
        assert [k["record"]["id"] for k in kept] == ["rbad"] and kept[0]["record"]["status"] == 2 ** 40
        assert "numerical" in kept[0]["error"] or "cast" in kept[0]["error"].lower()
        assert "rbad could not be stored as a row" in caplog.text
        assert w.health().quarantined == 1
    finally:
        w.close()


def test_a_prompt_with_a_lone_surrogate_through_the_proxy(make_douane) -> None:  # noqa: F811
    d: Douane = make_douane(output={"secrets": "redact"})
    # streamed: the answer is assembled from its events into text, lone surrogate and all (a prompt
    # with one is refused as unreadable: the upstream's answer brings it)
    body = '{"model": "gpt-4o-mini-surrogate", "stream": true, "messages": [{"role": "user", "content": "x y"}]}'
    with d.http() as http:
        first = http.post(CHAT, content=body, headers={"content-type": "application/json"})
        assert first.status_code == 200
        for i in range(20):
            assert http.post(CHAT, json={"model": "gpt-4o-mini", "messages": [
                {"role": "user", "content": f"after {i}"}]}).status_code == 200
    rows = d.rows(expect=21)
    bad = [r for r in rows if r["id"] == first.headers["x-douane-request-id"]]
    assert bad and "\ufffd" in bad[0]["response_body"] and "surrogate" in bad[0]["error"]


def test_a_client_that_hangs_up_while_its_call_is_upstream_still_gets_a_row(make_douane) -> None:  # noqa: F811
    """The upstream-errors addon answers every failure with a 502 set in the error hook; when the
    failure is the client's own departure that answer is never sent, so no `response` hook came
    to record the call (found while cutting calls off at shutdown)."""
    d: Douane = make_douane()
    verify = ssl.create_default_context(cafile=d.bundle)
    with httpx.Client(proxy=d.proxy, verify=verify, timeout=0.2, trust_env=False) as http, \
            pytest.raises(httpx.TimeoutException):
        http.post(CHAT, json={"model": "gpt-4o-mini-slow", "messages": [{"role": "user", "content": "bye"}]})
    row = d.rows(expect=1)[0]
    assert row["status"] is None and row["error"] == "Client disconnected."
