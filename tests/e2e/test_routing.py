"""Routes, fallbacks across providers and translation between formats, through the official SDKs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from google import genai

from tests.e2e.conftest import Douane, body_of, routed_policy
from tests.e2e.test_sdks import EMAIL, client_env, failures_from_each_sdk, only_row

TARGETS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.0-flash"}


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory, mock: str, certs) -> Iterator[Douane]:
    policy = routed_policy(mock)
    policy["routes"] = [
        {"when": {"model": "gpt-4o"}, "set_model": "gpt-4o-mini"},
        {"when": {"model": "route-to-claude"}, "set_provider": "anthropic", "set_model": "claude-haiku-4-5"},
        {"when": {"model": "cheap-please"}, "set_model": "cheapest",
         "among": ["gpt-4o", "gpt-4o-mini", "gpt-4.1-nano", "no-such-priced-model"]},
    ]
    policy["fallbacks"] = [
        {"when": {"model": f"fail-*-to-{name}"}, "on": ["429", "5xx"], "retries": 0,
         "to": [{"provider": name, "model": model}]} for name, model in TARGETS.items()
    ] + [{"when": {"model": "fail-*-nowhere"}, "on": ["429", "5xx"], "retries": 1, "backoff_ms": 10,
          "to": [{"provider": "anthropic", "model": "fail-503-too"}]},
         {"when": {"model": "slow-upstream"}, "on": ["timeout"], "retries": 0, "first_byte_timeout_s": 0.2,
          "to": [{"provider": "gemini", "model": "gemini-2.0-flash"}]}]
    # every provider is the same mock here: keep its circuit closed (the breaker has tests of its own)
    policy["breaker"] = {"failures": 1000}
    d = Douane(tmp_path_factory.mktemp("router"), policy, certs).start()
    yield d
    d.stop()


def ask(client_fmt: str, d: Douane, model: str, text: str, stream: bool) -> tuple[str, str]:
    """(reply text, x-douane-request-id) from the client's official SDK."""
    with client_env(d):
        if client_fmt == "openai":
            c = openai.OpenAI(api_key="sk-x", max_retries=0)
            raw = c.chat.completions.with_raw_response.create(
                model=model, stream=stream, messages=[{"role": "user", "content": text}])
            if stream:
                return "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices), \
                    raw.headers["x-douane-request-id"]
            return raw.parse().choices[0].message.content or "", raw.headers["x-douane-request-id"]
        if client_fmt == "anthropic":
            a = anthropic.Anthropic(api_key="sk-x", max_retries=0)
            if stream:
                with a.messages.stream(model=model, max_tokens=64,
                                       messages=[{"role": "user", "content": text}]) as s:
                    got = "".join(s.text_stream)
                    final = s.get_final_message()
                    assert final.stop_reason == "end_turn"
                    return got, s.response.headers["x-douane-request-id"]
            raw_a = a.messages.with_raw_response.create(model=model, max_tokens=64,
                                                         messages=[{"role": "user", "content": text}])
            msg = raw_a.parse()
            assert msg.stop_reason == "end_turn" and msg.usage.output_tokens > 0
            return msg.content[0].text, raw_a.headers["x-douane-request-id"]
        g = genai.Client(api_key="x", http_options={"retry_options": {"attempts": 1}})
        if stream:
            chunks = list(g.models.generate_content_stream(model=model, contents=text))
            return "".join(ch.text or "" for ch in chunks), gemini_call_id(chunks[0])
        reply = g.models.generate_content(model=model, contents=text)
        assert reply.usage_metadata is not None and reply.usage_metadata.prompt_token_count == 11
        return reply.text or "", gemini_call_id(reply)


def gemini_call_id(response: Any) -> str:
    headers = response.sdk_http_response.headers if response.sdk_http_response else {}
    return {k.lower(): v for k, v in (headers or {}).items()}["x-douane-request-id"]


def test_route_rewrites_model_invisibly(router: Douane, received: list) -> None:
    text, call_id = ask("openai", router, "gpt-4o", "hello", stream=False)
    assert text == "echo: hello"
    assert body_of(received[-1])["model"] == "gpt-4o-mini"
    row = only_row(router, call_id)
    assert (row["model_requested"], row["model"]) == ("gpt-4o", "gpt-4o-mini")
    assert "routes[0]: openai/gpt-4o -> openai/gpt-4o-mini" in row["reason"]
    assert row["cost_usd"] > 0


def test_route_to_another_provider_translates(router: Douane, received: list) -> None:
    text, call_id = ask("openai", router, "route-to-claude", f"mail {EMAIL}", stream=True)
    assert text == "echo: mail <EMAIL_ADDRESS>"
    assert received[-1]["path"] == "/v1/messages" and EMAIL not in received[-1]["raw"]
    row = only_row(router, call_id)
    assert (row["provider"], row["served_by"], row["model"]) == ("openai", "anthropic", "claude-haiku-4-5")
    assert row["input_tokens"] == 11 and row["cost_usd"] > 0


@pytest.mark.parametrize("asked", [False, True])
def test_translated_stream_shows_the_usage_chunk_only_to_a_client_that_asked(router: Douane, asked: bool) -> None:
    body: dict[str, Any] = {"model": "route-to-claude", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    if asked:
        body["stream_options"] = {"include_usage": True}
    with router.http() as http:
        r = http.post("https://api.openai.com/v1/chat/completions", json=body, headers={"authorization": "Bearer sk-x"})
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert any(c["choices"] for c in chunks), "the answer itself"
    assert any("usage" in c and not c["choices"] for c in chunks) is asked
    row = only_row(router, r.headers["x-douane-request-id"])
    assert row["input_tokens"] == 11 and row["output_tokens"] > 0, "metered either way"


def test_cheapest_route_picks_the_cheapest_priced_candidate(router: Douane, received: list) -> None:
    ask("openai", router, "cheap-please", "hi", stream=False)
    assert body_of(received[-1])["model"] == "gpt-4.1-nano"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("client_fmt", "target_fmt"), [
    ("openai", "anthropic"), ("openai", "gemini"), ("anthropic", "openai"),
    ("anthropic", "gemini"), ("gemini", "openai"), ("gemini", "anthropic")])
def test_fallback_answers_in_the_clients_shape(router: Douane, received: list, client_fmt: str, target_fmt: str,
                                               stream: bool) -> None:
    model = f"fail-429-to-{target_fmt}"
    text, call_id = ask(client_fmt, router, model, f"ping {EMAIL}", stream)
    assert text == "echo: ping <EMAIL_ADDRESS>"
    assert len(received) == 2, "the failing target, then the fallback"
    assert EMAIL not in received[1]["raw"], "guards apply to the translated request too"
    row = only_row(router, call_id)
    assert row["served_by"] == target_fmt and row["model"] == TARGETS[target_fmt]
    assert row["status"] == 200 and row["stream"] is stream
    assert f"{client_fmt}/{model}: 429" in row["reason"] and "fallback: answered by" in row["reason"]
    assert row["input_tokens"] == 11 and row["output_tokens"] and row["cost_usd"] > 0


def test_same_format_fallback_passes_through(router: Douane, received: list) -> None:
    text, call_id = ask("openai", router, "fail-503-to-openai", "again", stream=True)
    assert text == "echo: again"
    assert [body_of(r)["model"] for r in received] == ["fail-503-to-openai", "gpt-4o-mini"]
    assert only_row(router, call_id)["output_tokens"] == 2


def test_every_target_failing_gives_502_in_the_clients_shape(router: Douane, received: list) -> None:
    oe, ae, ge = failures_from_each_sdk(router, "fail-500-nowhere", "fail-429-nowhere", "fail-503-nowhere", "x")
    assert oe.status_code == 502 and "tried openai/fail-500-nowhere: 500" in oe.message
    assert "anthropic/fail-503-too: 503" in oe.message
    assert ae.status_code == 502 and ae.body["error"]["type"] == "api_error"
    assert ge.code == 502
    assert len(received) == 3 * 4, "each target tried twice (retries: 1)"
    row = only_row(router, oe.response.headers["x-douane-request-id"])
    assert row["status"] == 502 and "every upstream failed" in row["error"]
    assert "openai/fail-500-nowhere: 500" in row["reason"]


def test_first_byte_timeout_falls_back(router: Douane, received: list) -> None:
    """The mock answers `slow-upstream` after 0.5 s; the rule gives it 0.2 s to start answering. (That
    the slow target was given up on is in the row; how fast is the benchmarks' business, not a test's.)"""
    text, call_id = ask("openai", router, "slow-upstream", "quick", stream=True)
    assert text == "echo: quick"
    row = only_row(router, call_id)
    assert row["served_by"] == "gemini" and "openai/slow-upstream: no answer within 0.2 s" in row["reason"]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "route-to-claude"], ids=["direct", "routed"])
@pytest.mark.parametrize("history", [
    {"role": "assistant", "content": f"mail {EMAIL}", "tool_calls": True},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"arguments": f'{{"to": "{EMAIL}"}}'}}]},
], ids=["tool_calls-not-a-list", "tool-call-without-name"])
def test_a_body_douane_cannot_read_is_refused_before_any_route(router: Douane, received: list, model: str,
                                                                history: dict) -> None:
    """A shape the API does not document used to raise inside the adapter, and the call went out
    unread (and unredacted); read or refused, never forwarded unread."""
    body = {"model": model, "messages": [{"role": "user", "content": f"hi {EMAIL}"}, history]}
    with router.http() as http:
        r = http.post("https://api.openai.com/v1/chat/completions", json=body,
                      headers={"authorization": "Bearer sk-x"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "unreadable_body" and "messages[1].tool_calls" in err["message"]
    assert received == [], "nothing douane cannot read leaves it"
    row = only_row(router, r.headers["x-douane-request-id"])
    assert (row["decision"], row["status"], row["reason"]) == ("blocked", 400, "unreadable_body")
