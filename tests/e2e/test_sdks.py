"""The official SDKs, unmodified, through HTTPS_PROXY: plain and streamed, redacted, audited."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai.errors import APIError

from tests import mock_provider
from tests.e2e.conftest import Douane, body_of

EMAIL = "jane.roe@example.com"
CARD = "4111 1111 1111 1111"
PHONE = "212-555-0143"


@contextmanager
def client_env(d: Douane) -> Iterator[None]:
    """The SDKs read HTTPS_PROXY and SSL_CERT_FILE from the environment, as a workload would."""
    saved = dict(os.environ)
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_DIR", "AWS_CA_BUNDLE",
                "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(var, None)
    os.environ.update(d.client_env())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def failures_from_each_sdk(d: Douane, openai_model: str, anthropic_model: str, gemini_model: str,
                           text: str = "hi") -> tuple[openai.APIStatusError, anthropic.APIStatusError, APIError]:
    """One call per SDK that must fail (no retries); the error each SDK raised."""
    with client_env(d):
        with pytest.raises(openai.APIStatusError) as oe:
            openai.OpenAI(api_key="sk-x", max_retries=0).chat.completions.create(
                model=openai_model, messages=[{"role": "user", "content": text}])
        with pytest.raises(anthropic.APIStatusError) as ae:
            anthropic.Anthropic(api_key="sk-x", max_retries=0).messages.create(
                model=anthropic_model, max_tokens=5, messages=[{"role": "user", "content": text}])
        gemini = genai.Client(api_key="x", http_options={"retry_options": {"attempts": 1}})
        with pytest.raises(APIError) as ge:
            gemini.models.generate_content(model=gemini_model, contents=text)
    return oe.value, ae.value, ge.value


def only_row(d: Douane, call_id: str) -> dict[str, Any]:
    rows = d.rows(f"SELECT * FROM requests WHERE id = '{call_id}'", expect=1)
    assert len(rows) == 1, f"expected one audit row for {call_id}, got {rows}"
    return rows[0]


def assert_complete(row: dict[str, Any], provider: str, endpoint: str, stream: bool) -> None:
    assert row["provider"] == provider
    assert row["endpoint"] == endpoint
    assert row["stream"] is stream
    assert row["status"] == 200
    assert row["decision"] == "allowed"
    assert row["client"] == "anonymous"
    assert row["ts"] is not None and row["latency_ms"] > 0 and row["ttfb_ms"] > 0
    assert row["input_tokens"] == 11 and row["output_tokens"] and row["output_tokens"] > 0
    assert row["upstream"].startswith("http://127.0.0.1:")
    assert row["request_body"] and row["response_body"]


def test_openai_chat_plain_redacts_and_audits(douane: Douane, received: list) -> None:
    with client_env(douane):
        client = openai.OpenAI(api_key="sk-client-secret-1")
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": f"The user's phone is {PHONE}."},
                      {"role": "user", "content": f"Write to {EMAIL} about card {CARD}"}])
    reply = raw.parse()
    call_id = raw.headers["x-douane-request-id"]
    assert reply.choices[0].message.content == "echo: Write to <EMAIL_ADDRESS> about card <CREDIT_CARD>"
    sent = body_of(received[-1])
    assert EMAIL not in received[-1]["raw"] and CARD not in received[-1]["raw"] and PHONE not in received[-1]["raw"]
    assert sent["messages"][0]["content"] == "The user's phone is <PHONE_NUMBER>."
    row = only_row(douane, call_id)
    assert_complete(row, "openai", "chat.completions", stream=False)
    assert row["model_requested"] == row["model"] == "gpt-4o-mini"
    assert sorted(row["pii_entities"]) == ["CREDIT_CARD", "EMAIL_ADDRESS", "PHONE_NUMBER"]
    assert "pii.redact" in row["reason"]
    assert EMAIL not in row["request_body"] and "<EMAIL_ADDRESS>" in row["request_body"]
    assert row["host"] == "api.openai.com"


def test_openai_chat_stream_flows_with_usage(douane: Douane, received: list) -> None:
    with client_env(douane):
        client = openai.OpenAI(api_key="sk-client-secret-1")
        stream = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": f"stream {EMAIL} now"}])
        call_id = stream.headers["x-douane-request-id"]
        chunks = list(stream.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream <EMAIL_ADDRESS> now"
    # douane asked upstream for usage, and hid the extra chunk from a client that did not ask
    assert body_of(received[-1])["stream_options"] == {"include_usage": True}
    assert len(chunks) == 6, "role, four words, finish: the mock's chunks, and not the usage-only one"
    assert all(c.choices for c in chunks), "the usage-only chunk douane asked for leaked to the client"
    row = only_row(douane, call_id)
    assert_complete(row, "openai", "chat.completions", stream=True)
    assert row["response_body"] == text


def test_openai_stream_with_client_usage_keeps_it(douane: Douane) -> None:
    with client_env(douane):
        client = openai.OpenAI(api_key="sk-client-secret-1")
        chunks = list(client.chat.completions.create(
            model="gpt-4o-mini", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "usage please"}]))
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 11


def test_openai_responses_and_embeddings(douane: Douane, received: list) -> None:
    with client_env(douane):
        client = openai.OpenAI(api_key="sk-client-secret-1")
        resp = client.responses.create(model="gpt-4o-mini", instructions=f"call {PHONE}",
                                       input=f"hello {EMAIL}")
        assert resp.output_text == "echo: hello <EMAIL_ADDRESS>"
        assert body_of(received[-1])["instructions"] == "call <PHONE_NUMBER>"
        streamed = "".join(e.delta for e in client.responses.create(model="gpt-4o-mini", input="hi there",
                                                                    stream=True)
                           if e.type == "response.output_text.delta")
        assert streamed == "echo: hi there"
        emb = client.embeddings.create(model="text-embedding-3-small", input=[f"mail {EMAIL}", "plain"])
        assert len(emb.data[0].embedding) == 3
        assert body_of(received[-1])["input"] == ["mail <EMAIL_ADDRESS>", "plain"]
    rows = douane.rows("SELECT endpoint, stream, input_tokens, output_tokens FROM requests "
                       "WHERE endpoint IN ('responses', 'embeddings') ORDER BY ts", expect=3)
    assert [(r["endpoint"], r["stream"]) for r in rows][-3:] == [
        ("responses", False), ("responses", True), ("embeddings", False)]
    assert rows[-2]["output_tokens"] == 3 and rows[-1]["input_tokens"] == 5


def test_anthropic_plain_and_stream(douane: Douane, received: list) -> None:
    with client_env(douane):
        client = anthropic.Anthropic(api_key="sk-ant-client-secret")
        raw = client.messages.with_raw_response.create(
            model="claude-haiku-4-5", max_tokens=64, system=f"Escalate to {EMAIL}",
            messages=[{"role": "user", "content": [{"type": "text", "text": f"call me on {PHONE}"}]}])
        msg = raw.parse()
        assert msg.content[0].text == "echo: call me on <PHONE_NUMBER>"
        assert body_of(received[-1])["system"] == "Escalate to <EMAIL_ADDRESS>"
        plain_id = raw.headers["x-douane-request-id"]
        with client.messages.stream(model="claude-haiku-4-5", max_tokens=64,
                                    messages=[{"role": "user", "content": f"stream {CARD}"}]) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
            stream_id = stream.response.headers["x-douane-request-id"]
    assert text == "echo: stream <CREDIT_CARD>"
    assert final.usage.output_tokens == 3
    assert_complete(only_row(douane, plain_id), "anthropic", "messages", stream=False)
    row = only_row(douane, stream_id)
    assert_complete(row, "anthropic", "messages", stream=True)
    assert row["output_tokens"] == 3 and row["response_body"] == text


def test_gemini_plain_and_stream(douane: Douane, received: list) -> None:
    mark = uuid.uuid4().hex[:8]  # the shared proxy's store holds other tests' Gemini rows: find ours
    with client_env(douane):
        client = genai.Client(api_key="AIza-client-secret")
        reply = client.models.generate_content(model="gemini-2.0-flash", contents=f"hi {mark} {EMAIL}")
        assert reply.text == f"echo: hi {mark} <EMAIL_ADDRESS>"
        assert received[-1]["path"].endswith("/models/gemini-2.0-flash:generateContent")
        text = "".join(c.text or "" for c in client.models.generate_content_stream(
            model="gemini-2.0-flash", contents=f"stream {mark} {PHONE}"))
    assert text == f"echo: stream {mark} <PHONE_NUMBER>"
    rows = douane.rows(f"SELECT * FROM requests WHERE provider = 'gemini' AND request_body LIKE '%{mark}%' "
                       "ORDER BY ts", expect=2)
    assert len(rows) == 2
    assert_complete(rows[0], "gemini", "generateContent", stream=False)
    assert_complete(rows[1], "gemini", "streamGenerateContent", stream=True)
    assert rows[1]["model"] == "gemini-2.0-flash" and rows[1]["response_body"] == text


def test_sequential_calls_on_one_connection(douane: Douane, received: list) -> None:
    """One SDK client keeps its connection to the proxy alive across calls."""
    with client_env(douane):
        client = openai.OpenAI(api_key="sk-client-secret-1")
        ids = []
        for i in range(4):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"turn {i} {EMAIL}"}])
            assert raw.parse().choices[0].message.content == f"echo: turn {i} <EMAIL_ADDRESS>"
            ids.append(raw.headers["x-douane-request-id"])
    assert len(set(ids)) == 4 and len(received) == 4
    rows = douane.rows("SELECT id FROM requests WHERE id IN ('" + "','".join(ids) + "')", expect=4)
    assert {r["id"] for r in rows} == set(ids)


def test_keys_never_reach_store_or_log(douane: Douane) -> None:
    with client_env(douane):
        openai.OpenAI(api_key="sk-never-store-me").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
        gemini = genai.Client(api_key="AIza-never-store-me")
        gemini.models.generate_content(model="gemini-2.0-flash", contents="hello")
        anthropic.Anthropic(api_key="sk-ant-never-store-me").messages.create(
            model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hello"}])
    with douane.http() as http:  # the Gemini key may also travel as a query parameter
        r = http.post("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
                      "?key=AIza-query-never-store-me", json={"contents": [{"parts": [{"text": "hi"}]}]})
        assert r.status_code == 200
    assert only_row(douane, r.headers["x-douane-request-id"])["path"] == \
        "/v1beta/models/gemini-2.0-flash:generateContent"
    dump = douane.rows("SELECT * FROM requests")
    assert "never-store-me" not in repr(dump)
    assert "never-store-me" not in douane.log()
    for segment in (douane.tmp / "audit.duckdb.segments").glob("*"):
        assert b"never-store-me" not in segment.read_bytes()


@pytest.mark.parametrize(("case", "body", "status", "decision"), [
    ("blocked", b'{"model": "gpt-4o-mini", "messages": [', 400, "blocked"),
    ("failed", b'{"model": "fail-500", "messages": [{"role": "user", "content": "x"}]}', 500, "allowed"),
])
def test_request_id_header_matches_audit_for_blocked_and_failed(douane: Douane, received: list, case: str,
                                                                body: bytes, status: int, decision: str) -> None:
    """A refusal of douane's own and an upstream's failure both carry the id of their audit row."""
    with douane.http() as http:
        r = http.post("https://api.openai.com/v1/chat/completions", content=body,
                      headers={"content-type": "application/json"})
    assert r.status_code == status
    call_id = r.headers["x-douane-request-id"]
    assert call_id.startswith("dou_")
    row = only_row(douane, call_id)
    assert (row["status"], row["decision"]) == (status, decision)
    if case == "blocked":
        assert received == [] and row["reason"] == "unreadable_body"
        assert r.json()["error"]["code"] == "unreadable_body"
    else:
        assert len(received) == 1 and row["error"] == "upstream answered 500"
        assert r.json()["error"]["message"] == "mock upstream error 500", "the upstream's own error, as it came"


@pytest.fixture()
def held() -> Iterator[None]:
    """The mock's *hold* streams wait midway until the test releases them (never past the test)."""
    mock_provider.HOLD.clear()
    mock_provider.HELD_TOO_LONG.clear()
    try:
        yield
    finally:
        mock_provider.HOLD.set()


def first_event_while_upstream_holds(events: Iterator[Any]) -> list[Any]:
    """Read a stream: its first event must arrive while the upstream still holds the rest back."""
    got = [next(events)]
    assert mock_provider.HOLDING.is_set() and not mock_provider.HELD_TOO_LONG, \
        "the first event reached the client only after the upstream had sent the whole stream"
    mock_provider.HOLD.set()
    got += list(events)
    return got


@pytest.mark.parametrize("api", ["chat.completions", "responses", "messages", "streamGenerateContent"])
def test_streams_flow_through_while_the_upstream_is_still_sending(douane: Douane, held: None, api: str) -> None:
    """douane reads an answer as it streams, without holding it back: the mock sends its first events,
    then waits until the client (an official SDK) has received one."""
    model = "hold-model"
    with client_env(douane):
        if api == "chat.completions":
            chunks = first_event_while_upstream_holds(iter(openai.OpenAI(api_key="sk-x").chat.completions.create(
                model=model, stream=True, messages=[{"role": "user", "content": "one two three four"}])))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        elif api == "responses":
            events = first_event_while_upstream_holds(iter(openai.OpenAI(api_key="sk-x").responses.create(
                model=model, stream=True, input="one two three four")))
            text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        elif api == "messages":
            events = first_event_while_upstream_holds(iter(anthropic.Anthropic(api_key="sk-x").messages.create(
                model=model, max_tokens=50, stream=True, messages=[{"role": "user", "content": "one two three four"}])))
            text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
        else:
            gemini = genai.Client(api_key="x")
            chunks = first_event_while_upstream_holds(iter(gemini.models.generate_content_stream(
                model=model, contents="one two three four")))
            text = "".join(c.text or "" for c in chunks)
    assert text == "echo: one two three four"
    assert not mock_provider.HELD_TOO_LONG
