"""A stage that errors follows `fail:`, at every stage and hook a call passes through (README:
"a guard that errors follows fail"). The proxies run with fault injection on (douane.faults): a
request names, in its x-douane-fault header, the `<stage>.<hook>` to fail; a CONNECT names it in its
own headers. One proxy per fail mode.

What each phase must do (addons/failures.py):
- before the call is forwarded: closed answers 503 in the provider's shape and forwards nothing;
  open forwards it and records the guard error. Identity and routing always close.
- while the answer is inspected: closed withholds it (503, or the provider's error event that ends a
  stream); open delivers it and records the error.
- after that (routing's bookkeeping, settling the meter, writing the record): the client keeps its
  answer; the row names the stage and the exception class.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors

from tests.e2e.conftest import Douane, free_port, routed_policy
from tests.e2e.test_sdks import client_env, only_row

FAULTS = {"DOUANE_FAULT_INJECTION": "1"}
TEXT = "one two three"
ECHO = f"echo: {TEXT}"
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.0-flash"}
DEAD_HOST = "llm.dead.example"

# every <stage>.<hook> a plain call passes through, by what its failure must mean
BEFORE_FORWARDING = ["classify.requestheaders", "classify.request", "access.request", "prompt_guard.request",
                     "meter.request"]
ALWAYS_CLOSED = ["identity.requestheaders", "router.request"]
INSPECTING_THE_ANSWER = ["answer.responseheaders", "answer.response"]
AFTER_THE_ANSWER = ["router.responseheaders", "router.response", "meter.response", "audit.response"]
# and those of a call whose upstream cannot be reached
ON_UPSTREAM_ERROR = ["router.error", "upstream_errors.error", "answer.error", "meter.error", "audit.error"]


def fault_policy(mock: str, fail: str) -> dict[str, Any]:
    policy = routed_policy(mock, fail=fail, output={"secrets": "redact", "pii": "redact"})
    # a provider whose upstream refuses connections, for the hooks of a failing call
    policy["providers"]["deadprov"] = {"format": "openai", "hosts": [DEAD_HOST],
                                       "upstream": f"http://127.0.0.1:{free_port()}"}
    return policy


def start(tmp_path_factory: pytest.TempPathFactory, mock: str, certs: Any, fail: str) -> Douane:
    return Douane(tmp_path_factory.mktemp(f"faults-{fail}"), fault_policy(mock, fail), certs, env=FAULTS).start()


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory, mock: str, certs: Any) -> Iterator[Douane]:
    d = start(tmp_path_factory, mock, certs, "closed")
    yield d
    d.stop()


@pytest.fixture(scope="module")
def opened(tmp_path_factory: pytest.TempPathFactory, mock: str, certs: Any) -> Iterator[Douane]:
    d = start(tmp_path_factory, mock, certs, "open")
    yield d
    d.stop()


def injected(point: str) -> str:
    """What the row's error says when `point` failed."""
    return f"{point} failed (InjectedFault: fault injected at {point})"


# -- one call through each SDK, with the fault armed -------------------------------------------------

def sdk_call(d: Douane, fmt: str, point: str, stream: bool = False, ids: list[str] | None = None) -> tuple[str, str]:
    """(reply text, call id) of a call that succeeds; raises the SDK's own error when it does not. A
    stream's call id is put in `ids` as soon as its headers come, before its events are read."""
    headers = {"x-douane-fault": point}
    ids = [] if ids is None else ids
    with client_env(d):
        if fmt == "openai":
            client = openai.OpenAI(api_key="sk-x", max_retries=0, default_headers=headers)
            raw = client.chat.completions.with_raw_response.create(
                model=MODELS[fmt], stream=stream, messages=[{"role": "user", "content": TEXT}])
            ids.append(raw.headers["x-douane-request-id"])
            if stream:
                return "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices), \
                    raw.headers["x-douane-request-id"]
            return raw.parse().choices[0].message.content or "", raw.headers["x-douane-request-id"]
        if fmt == "anthropic":
            a = anthropic.Anthropic(api_key="sk-x", max_retries=0, default_headers=headers)
            raw_a = a.messages.with_raw_response.create(model=MODELS[fmt], max_tokens=50, stream=stream,
                                                        messages=[{"role": "user", "content": TEXT}])
            ids.append(raw_a.headers["x-douane-request-id"])
            if stream:
                events = list(raw_a.parse())
                return "".join(e.delta.text for e in events if e.type == "content_block_delta"), \
                    raw_a.headers["x-douane-request-id"]
            return raw_a.parse().content[0].text, raw_a.headers["x-douane-request-id"]
        g = genai.Client(api_key="x", http_options={"headers": headers, "retry_options": {"attempts": 1}})
        if stream:
            chunks = []
            for chunk in g.models.generate_content_stream(model=MODELS[fmt], contents=TEXT):
                if not chunks:
                    ids.append(header_id(chunk.sdk_http_response))
                chunks.append(chunk)
            return "".join(c.text or "" for c in chunks), ids[-1]
        reply = g.models.generate_content(model=MODELS[fmt], contents=TEXT)
        return reply.text or "", header_id(reply.sdk_http_response)


def header_id(response: Any) -> str:
    return {k.lower(): v for k, v in (response.headers or {}).items()}["x-douane-request-id"]


def refused_by_each_sdk(d: Douane, fmt: str, point: str, stream: bool = False) -> tuple[int, str, str]:
    """(status, message, call id) of the SDK's own error for a call douane refused with 503."""
    if fmt == "openai":
        with pytest.raises(openai.InternalServerError) as oe:
            sdk_call(d, fmt, point, stream)
        assert oe.value.body["type"] == "service_unavailable" and oe.value.body["code"] == "fail.closed"
        return oe.value.status_code, oe.value.message, oe.value.response.headers["x-douane-request-id"]
    if fmt == "anthropic":
        with pytest.raises(anthropic.InternalServerError) as ae:
            sdk_call(d, fmt, point, stream)
        assert ae.value.body["type"] == "error" and ae.value.body["error"]["type"] == "overloaded_error"
        return ae.value.status_code, ae.value.body["error"]["message"], ae.value.response.headers[
            "x-douane-request-id"]
    with pytest.raises(genai_errors.ServerError) as ge:
        sdk_call(d, fmt, point, stream)
    assert ge.value.status == "UNAVAILABLE"
    return ge.value.code, ge.value.message or "", ge.value.response.headers["x-douane-request-id"]


# -- before the call is forwarded ------------------------------------------------------------------

@pytest.mark.parametrize("fmt", list(MODELS))
@pytest.mark.parametrize("point", BEFORE_FORWARDING + ALWAYS_CLOSED)
def test_closed_refuses_before_forwarding(closed: Douane, received: list, point: str, fmt: str) -> None:
    status, message, call_id = refused_by_each_sdk(closed, fmt, point)
    stage = point.split(".")[0]
    assert status == 503 and "[rule: fail.closed]" in message
    assert f"douane's {stage} stage failed (InjectedFault)" in message and "tell douane's operator" in message
    assert received == [], "nothing reaches the provider"
    row = only_row(closed, call_id)
    assert (row["status"], row["decision"], row["reason"]) == (503, "blocked", "fail.closed")
    assert row["error"] == injected(point) and row["provider"] == fmt


@pytest.mark.parametrize("fmt", list(MODELS))
@pytest.mark.parametrize("point", BEFORE_FORWARDING)
def test_open_forwards_and_records_the_guard_error(opened: Douane, received: list, point: str, fmt: str) -> None:
    text, call_id = sdk_call(opened, fmt, point)
    assert text == ECHO and len(received) == 1
    row = only_row(opened, call_id)
    stage = point.split(".")[0]
    assert (row["status"], row["decision"]) == (200, "allowed")
    assert f"fail.open: guard_error in {stage} (InjectedFault), forwarded" in row["reason"]
    assert row["error"] == injected(point)


@pytest.mark.parametrize("fmt", list(MODELS))
@pytest.mark.parametrize("point", ALWAYS_CLOSED)
def test_identity_and_routing_close_even_under_open(opened: Douane, received: list, point: str, fmt: str) -> None:
    """An unidentified caller is not let through, and an unrouted call would go where the policy does
    not send it (not to the provider's upstream, without its central key): both refuse."""
    status, _, call_id = refused_by_each_sdk(opened, fmt, point)
    assert status == 503 and received == []
    row = only_row(opened, call_id)
    assert (row["status"], row["reason"], row["error"]) == (503, "fail.closed", injected(point))


@pytest.mark.parametrize("fail", ["closed", "open"])
@pytest.mark.parametrize("point", ["identity.http_connect", "shadow_ai.http_connect"])
def test_a_failing_connect_stage(closed: Douane, opened: Douane, received: list, fail: str, point: str) -> None:
    """A CONNECT stage that fails: the tunnel is refused (identity always; the others under closed),
    or under open opened with the error recorded in a row of its own."""
    d = closed if fail == "closed" else opened
    refuses = fail == "closed" or point.startswith("identity.")
    proxy = httpx.Proxy(d.proxy, headers={"x-douane-fault": point})
    with httpx.Client(proxy=proxy, verify=ssl.create_default_context(cafile=d.bundle), trust_env=False) as http:
        if refuses:
            with pytest.raises(httpx.ProxyError, match="503"):
                http.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o-mini",
                          "messages": [{"role": "user", "content": TEXT}]})
        else:
            r = http.post("https://api.openai.com/v1/chat/completions", json={
                "model": "gpt-4o-mini", "messages": [{"role": "user", "content": TEXT}]})
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == ECHO
    rows = d.rows(f"SELECT * FROM requests WHERE method = 'CONNECT' AND error LIKE '%{point}%'", expect=1)
    assert len(rows) == 1
    assert rows[0]["error"] == injected(point) and rows[0]["host"] == "api.openai.com"
    if refuses:
        assert received == [] and (rows[0]["status"], rows[0]["reason"]) == (503, "fail.closed")
    else:
        assert len(received) == 1 and f"fail.open: guard_error in {point.split('.')[0]}" in rows[0]["reason"]


# -- while the answer is inspected -----------------------------------------------------------------

@pytest.mark.parametrize("fmt", list(MODELS))
@pytest.mark.parametrize("point", INSPECTING_THE_ANSWER)
def test_closed_withholds_an_answer_it_could_not_inspect(closed: Douane, received: list, point: str,
                                                         fmt: str) -> None:
    status, message, call_id = refused_by_each_sdk(closed, fmt, point)
    assert status == 503 and "douane could not inspect the answer (InjectedFault)" in message
    assert len(received) == 1, "the call went out; its answer did not come back"
    row = only_row(closed, call_id)
    assert (row["status"], row["decision"], row["reason"]) == (503, "blocked", "fail.closed")
    assert row["error"] == injected(point) and row["response_body"] is None


@pytest.mark.parametrize("fmt", list(MODELS))
@pytest.mark.parametrize("point", INSPECTING_THE_ANSWER)
def test_open_delivers_an_answer_it_could_not_inspect(opened: Douane, received: list, point: str, fmt: str) -> None:
    text, call_id = sdk_call(opened, fmt, point)
    assert text == ECHO and len(received) == 1
    row = only_row(opened, call_id)
    assert (row["status"], row["decision"]) == (200, "allowed")
    assert "fail.open: guard_error in answer (InjectedFault), answer delivered uninspected" in row["reason"]
    assert row["error"] == injected(point)


@pytest.mark.parametrize("fmt", list(MODELS))
def test_closed_ends_a_stream_it_could_not_inspect(closed: Douane, received: list, fmt: str) -> None:
    """The stream tap failing (answer.stream): the client's SDK gets the provider's error event."""
    ids: list[str] = []
    with pytest.raises((openai.APIError, anthropic.APIStatusError, genai_errors.ServerError)) as e:
        sdk_call(closed, fmt, "answer.stream", stream=True, ids=ids)
    message = {"openai": lambda x: x.message, "anthropic": lambda x: x.body["error"]["message"],
               "gemini": lambda x: x.message}[fmt](e.value)
    assert "douane could not inspect this answer, so it was stopped (InjectedFault)" in message
    assert "[rule: fail.closed]" in message
    if fmt == "gemini":
        assert e.value.code == 503 and e.value.status == "UNAVAILABLE"
    else:
        assert type(e.value) in (openai.APIError, anthropic.APIStatusError)
    if fmt == "gemini":  # the error event is the stream's first: the SDK raised before yielding a chunk
        ids.append(header_id(e.value.response))
    row = only_row(closed, ids[-1])
    assert row["provider"] == fmt and row["stream"] is True
    assert row["decision"] == "blocked" and "fail.closed" in row["reason"]
    assert row["error"] == "answer.stream failed (InjectedFault: fault injected at answer.stream)"
    assert len(received) == 1


@pytest.mark.parametrize("fmt", list(MODELS))
def test_open_lets_a_stream_it_could_not_inspect_through(opened: Douane, received: list, fmt: str) -> None:
    text, call_id = sdk_call(opened, fmt, "answer.stream", stream=True)
    assert text == ECHO, "the whole answer, uninspected"
    row = only_row(opened, call_id)
    assert (row["status"], row["decision"]) == (200, "allowed")
    assert "fail.open: guard_error in answer.stream, rest of the stream delivered uninspected" in row["reason"]
    assert row["error"] == "answer.stream failed (InjectedFault: fault injected at answer.stream)"


# -- after the answer: nothing left to withhold, the row says what failed ----------------------------

@pytest.mark.parametrize("fail", ["closed", "open"])
@pytest.mark.parametrize("point", AFTER_THE_ANSWER)
def test_a_stage_failing_after_the_answer_is_recorded(closed: Douane, opened: Douane, received: list, fail: str,
                                                      point: str) -> None:
    d = closed if fail == "closed" else opened
    text, call_id = sdk_call(d, "openai", point)
    assert text == ECHO
    row = only_row(d, call_id)
    assert row["status"] == 200 and row["error"] == injected(point)


@pytest.mark.parametrize("fail", ["closed", "open"])
@pytest.mark.parametrize("point", ON_UPSTREAM_ERROR)
def test_a_stage_failing_on_an_upstream_error_is_recorded(closed: Douane, opened: Douane, fail: str,
                                                          point: str) -> None:
    """A call whose upstream refuses the connection: whatever stage fails on the way, the client gets a
    502 and the row names both the upstream's failure and the stage's."""
    d = closed if fail == "closed" else opened
    with d.http() as http:
        r = http.post(f"https://{DEAD_HOST}/v1/chat/completions", headers={"x-douane-fault": point},
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": TEXT}]})
    assert r.status_code == 502
    rows = d.rows(f"SELECT * FROM requests WHERE host = '{DEAD_HOST}' AND error LIKE '%{point}%'", expect=1)
    assert len(rows) == 1
    assert injected(point) in rows[0]["error"] and rows[0]["status"] == 502
