"""The relay without mitmproxy: its pure dispatch, and its server over a real local socket with the
upstreams replaced by an httpx transport and the backoff by a recorder (nothing waits)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from douane.relay import Attempt, Breakers, Dispatch, Plan, Relay
from tests.unit.test_routing import Clock


def attempt(provider: str, fmt: str, url: str, translate_from: str | None = None) -> Attempt:
    return Attempt(provider, fmt, f"m-{provider}", url, {"content-type": "application/json"}, b"{}", translate_from)


A = attempt("a", "openai", "http://a.test/v1/chat/completions")
B = attempt("b", "anthropic", "http://b.test/v1/messages", translate_from="openai")


def walk(dispatch: Dispatch, outcomes: list[int | str]) -> list[tuple[str, int, float]]:
    """Feed outcomes (a status, or "timeout"/"error") to the dispatch; the tries it made."""
    made = []
    for outcome in outcomes:
        t = dispatch.next()
        assert t is not None
        made.append((t.attempt.provider, t.number, t.delay))
        if isinstance(outcome, str):
            if dispatch.no_answer(t, outcome == "timeout", "ConnectError: refused") is not None:
                break
        elif dispatch.answered(t, outcome):
            break
    return made


def test_dispatch_retries_with_backoff_then_falls_back() -> None:
    plan = Plan("id", "openai", "m", False, [A, B], ["429", "5xx", "timeout"], retries=2, backoff=0.5)
    dispatch = Dispatch(plan, Breakers(failures=10))
    assert walk(dispatch, [429, "timeout", 503, 200]) == [("a", 0, 0.0), ("a", 1, 0.5), ("a", 2, 1.0), ("b", 0, 0.0)]
    assert plan.served is B
    assert plan.tried == ["a/m-a: 429", "a/m-a: no answer within 30 s", "a/m-a: 503", "b/m-b: 200"]


def test_dispatch_serves_a_status_the_rule_does_not_retry_and_stops_on_an_unlisted_failure() -> None:
    plan = Plan("id", "openai", "m", False, [A, B], ["429"])
    assert walk(Dispatch(plan, Breakers()), [400]) == [("a", 0, 0.0)] and plan.served is A
    plan = Plan("id", "openai", "m", False, [A, B], ["429"])
    dispatch = Dispatch(plan, Breakers())
    t = dispatch.next()
    assert t is not None and dispatch.no_answer(t, True, "") == 504, "timeout is not in `on`: give up now"
    t = dispatch.next()
    assert t is not None and dispatch.no_answer(t, False, "ConnectError") == 502
    assert plan.served is None


def test_dispatch_skips_an_open_circuit_and_counts_failures_per_upstream() -> None:
    clock = Clock()
    breakers = Breakers(failures=2, cooldown=10, clock=clock)
    for _ in range(2):
        plan = Plan("id", "openai", "m", False, [A, B], ["5xx"])
        walk(Dispatch(plan, breakers), [500, 200])
    plan = Plan("id", "openai", "m", False, [A, B], ["5xx"])
    assert walk(Dispatch(plan, breakers), [200]) == [("b", 0, 0.0)]
    assert plan.tried[0] == "a/m-a: skipped (circuit open)"
    clock.now += 10
    plan = Plan("id", "openai", "m", False, [A, B], ["5xx"])
    assert walk(Dispatch(plan, breakers), [200]) == [("a", 0, 0.0)], "probed again after the cooldown"
    assert breakers.allow(A.base), "and closed by its success"


def test_dispatch_ends_when_every_try_is_spent() -> None:
    plan = Plan("id", "openai", "m", False, [A], ["5xx"], retries=1)
    dispatch = Dispatch(plan, Breakers(failures=10))
    assert walk(dispatch, [500, 502]) == [("a", 0, 0.0), ("a", 1, 0.2)]
    assert dispatch.next() is None and plan.served is None
    assert dispatch.failure_message() == "douane: every upstream failed; tried a/m-a: 500; a/m-a: 502"


# -- the relay over a socket ------------------------------------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture()
async def relay_with() -> AsyncIterator[Callable[[Handler], Relay]]:
    started: list[Relay] = []

    async def no_wait(seconds: float) -> None:
        slept.append(seconds)

    slept: list[float] = []

    def make(handler: Handler) -> Relay:
        async def handle(request: httpx.Request) -> httpx.Response:
            result = handler(request)
            return await result if asyncio.iscoroutine(result) else result

        relay = Relay(Breakers(failures=100), sleep=no_wait, transport=httpx.MockTransport(handle))
        relay.slept = slept  # type: ignore[attr-defined]
        started.append(relay)
        return relay

    yield make
    for relay in started:
        await relay.stop()


async def post(relay: Relay, plan: Plan) -> httpx.Response:
    if not relay.port:
        await relay.start()
    path = relay.register(plan)
    async with httpx.AsyncClient(trust_env=False) as client:
        return await client.post(f"http://127.0.0.1:{relay.port}{path}", content=b"{}")


ANTHROPIC_REPLY = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                   "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
                   "usage": {"input_tokens": 5, "output_tokens": 1}}


async def test_relay_falls_back_and_translates_the_answer(relay_with: Callable[[Handler], Relay]) -> None:
    seen: list[str] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        if request.url.host == "a.test":
            return httpx.Response(429, json={"error": {"message": "slow down"}})
        return httpx.Response(200, json=ANTHROPIC_REPLY)

    relay = relay_with(upstream)
    plan = Plan("c1", "openai", "gpt-4o", False, [A, B], ["429"], retries=1, backoff=0.25)
    r = await post(relay, plan)
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "hello"
    assert r.json()["model"] == "gpt-4o", "the client sees the model it asked for"
    assert seen == ["a.test", "a.test", "b.test"] and relay.slept == [0.25]  # type: ignore[attr-defined]
    assert plan.served is B and "c1" not in relay.plans


async def test_relay_answers_502_in_the_clients_shape_naming_every_try(
        relay_with: Callable[[Handler], Relay]) -> None:
    def upstream(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a.test":
            raise httpx.ConnectError("refused")
        return httpx.Response(503, json={"type": "error", "error": {"type": "overloaded_error", "message": "x"}})

    plan = Plan("c2", "anthropic", "claude", False, [A, B], ["5xx"])
    r = await post(relay_with(upstream), plan)
    assert r.status_code == 502
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert body["error"]["message"] == ("douane: every upstream failed; tried a/m-a: ConnectError: refused; "
                                        "b/m-b: 503")


async def test_relay_times_out_without_a_first_byte(relay_with: Callable[[Handler], Relay]) -> None:
    def upstream(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a.test":
            raise TimeoutError  # what asyncio.wait_for raises when no first byte came in time
        return httpx.Response(200, json=ANTHROPIC_REPLY)

    plan = Plan("c3", "openai", "m", False, [A, B], ["timeout"], first_byte_timeout=7)
    r = await post(relay_with(upstream), plan)
    assert r.status_code == 200 and plan.tried[0] == "a/m-a: no answer within 7 s"


async def test_relay_refuses_an_answer_it_cannot_read(relay_with: Callable[[Handler], Relay]) -> None:
    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={**ANTHROPIC_REPLY, "content": {"type": "text", "text": "AKIA..."}})

    plan = Plan("c4", "openai", "m", False, [B], [])
    r = await post(relay_with(upstream), plan)
    assert r.status_code == 502 and "AKIA" not in r.text
    assert "content: expected a list, got an object" in r.json()["error"]["message"]


async def test_relay_passes_a_same_format_answer_through_and_keeps_the_connection(
        relay_with: Callable[[Handler], Relay]) -> None:
    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"data: {\"x\": 1}\n\n", headers={"content-type": "text/event-stream",
                                                                             "x-upstream": "yes"})

    relay = relay_with(upstream)
    await relay.start()
    async with httpx.AsyncClient(trust_env=False) as client:
        answers = []
        for call_id in ("k1", "k2", "gone"):
            path = relay.register(Plan(call_id, "openai", "m", True, [A], [])) if call_id != "gone" else "/relay/gone"
            answers.append(await client.post(f"http://127.0.0.1:{relay.port}{path}", content=b"{}"))
    assert [a.status_code for a in answers] == [200, 200, 404]
    assert answers[0].content == b"data: {\"x\": 1}\n\n" and answers[0].headers["x-upstream"] == "yes"


async def test_relay_translates_a_stream_event_by_event(relay_with: Callable[[Handler], Relay]) -> None:
    events = [("message_start", {"type": "message_start", "message": {"model": "c", "usage": {"input_tokens": 3}}}),
              ("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}}),
              ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": "hi"}}),
              ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                 "usage": {"output_tokens": 1}}),
              ("message_stop", {"type": "message_stop"})]
    raw = b"".join(f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in events)

    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"})

    r = await post(relay_with(upstream), Plan("c5", "openai", "gpt", True, [B], []))
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "hi"
    assert chunks[-1]["usage"]["prompt_tokens"] == 3 and r.text.endswith("data: [DONE]\n\n")


class DropsMidStream(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'data: {"choices": [{"index": 0, "delta": {"content": "par"}}]}\n\n'
        raise httpx.ReadError("upstream went away")


async def test_an_upstream_dropping_mid_stream_cuts_the_clients_answer(
        relay_with: Callable[[Handler], Relay]) -> None:
    """A clean end would tell the client a truncated answer was whole; the cut lets mitmproxy (and the
    audit row) see the failure."""
    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=DropsMidStream(), headers={"content-type": "text/event-stream"})

    relay = relay_with(upstream)
    await relay.start()
    path = relay.register(Plan("c6", "openai", "m", True, [A], []))
    got = b""
    async with httpx.AsyncClient(trust_env=False) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", f"http://127.0.0.1:{relay.port}{path}", content=b"{}") as r:
                async for data in r.aiter_bytes():
                    got += data
    assert b"par" in got
