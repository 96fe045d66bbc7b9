import json

import pytest

from douane import translate
from douane.meter.pricing import Pricer
from douane.policy.model import Match
from douane.providers import ProviderSpec
from douane.providers.base import UnreadableBody
from douane.relay import Breakers, Plan
from douane.routing import Facts, attempt_for, cheapest, matches, set_model

OPENAI_BODY = {
    "model": "gpt-4o", "max_tokens": 50, "temperature": 0.3, "stop": ["END"], "stream": True,
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ],
    "tools": [{"type": "function", "function": {"name": "weather", "description": "d",
                                                "parameters": {"type": "object", "properties": {}}}}],
}


def test_openai_to_anthropic_and_back_keeps_the_conversation() -> None:
    chat = translate.read_request("openai", OPENAI_BODY)
    body, path = translate.write_request("anthropic", chat, "claude-haiku-4-5")
    assert path == "/v1/messages" and body["system"] == "be brief" and body["max_tokens"] == 50
    assert body["stop_sequences"] == ["END"] and body["stream"] is True
    assert body["messages"][1]["content"][0] == {"type": "tool_use", "id": "call_1", "name": "weather",
                                                  "input": {"city": "Paris"}}
    assert body["messages"][2]["content"][0]["type"] == "tool_result"
    assert body["tools"][0]["input_schema"] == {"type": "object", "properties": {}}
    back, _ = translate.write_request("openai", translate.read_request("anthropic", body), "gpt-4o")
    assert [m["role"] for m in back["messages"]] == ["system", "user", "assistant", "tool"]
    assert back["messages"][2]["tool_calls"][0]["function"]["name"] == "weather"


def test_gemini_request_names_function_responses() -> None:
    chat = translate.read_request("openai", OPENAI_BODY)
    body, path = translate.write_request("gemini", chat, "gemini-2.0-flash")
    assert path == "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    assert body["contents"][1]["parts"][0] == {"functionCall": {"name": "weather", "args": {"city": "Paris"}}}
    assert body["contents"][2]["parts"][0]["functionResponse"]["name"] == "weather"
    assert body["generationConfig"] == {"maxOutputTokens": 50, "temperature": 0.3, "stopSequences": ["END"]}


def test_replies_translate_with_finish_and_usage() -> None:
    anthropic_reply = {"model": "claude", "content": [{"type": "text", "text": "hi"},
                                                      {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}],
                       "stop_reason": "tool_use", "usage": {"input_tokens": 7, "output_tokens": 3}}
    reply = translate.read_reply("anthropic", anthropic_reply)
    out = translate.write_reply("openai", reply, "gpt-4o")
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": "{\"a\": 1}"}
    assert out["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    gem = translate.write_reply("gemini", reply, "g")
    assert gem["usageMetadata"]["candidatesTokenCount"] == 3


def stream_through(src: str, dst: str, events: list[dict]) -> list[dict]:
    reader, writer = translate.StreamReader(src), translate.StreamWriter(dst, "client-model")
    raw = b"".join(writer.write(ev) for e in events for ev in reader.feed(e)) + writer.close()
    return [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: {")]


def test_anthropic_stream_to_openai_chunks() -> None:
    events = [{"type": "message_start", "message": {"model": "claude", "usage": {"input_tokens": 9}}},
              {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
              {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 2}},
              {"type": "message_stop"}]
    chunks = stream_through("anthropic", "openai", events)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["usage"] == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}


def test_openai_stream_to_anthropic_events_with_tools() -> None:
    events = [{"model": "gpt", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"}}]},
              {"choices": [{"index": 0, "delta": {"tool_calls": [
                  {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]}}]},
              {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}]},
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
              {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4}}]
    out = stream_through("openai", "anthropic", events)
    kinds = [e["type"] for e in out]
    assert kinds == ["message_start", "content_block_start", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_stop", "message_delta",
                     "message_stop"]
    assert out[4]["content_block"] == {"type": "tool_use", "id": "c1", "name": "f", "input": {}}
    assert out[-2]["delta"]["stop_reason"] == "tool_use" and out[-2]["usage"]["output_tokens"] == 4


def test_gemini_writer_emits_function_calls_at_the_end() -> None:
    events = [{"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{\"x\":"}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": " 2}"}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}]
    out = stream_through("openai", "gemini", events)
    assert out[-1]["candidates"][0]["content"]["parts"] == [{"functionCall": {"name": "f", "args": {"x": 2}}}]


def test_matching_and_model_placement() -> None:
    f = Facts("support", "bot", "openai", "gpt-4o-2024-08-06", "chat.completions", 500)
    assert matches(Match(team="support", model="gpt-4o*"), f)
    assert not matches(Match(model="gpt-4o-mini"), f)
    assert not matches(Match(min_input_tokens=1000), f) and matches(Match(max_input_tokens=1000), f)
    body: dict = {}
    assert set_model("gemini", body, "/v1beta/models/a:generateContent?alt=sse", "b") == \
        "/v1beta/models/b:generateContent?alt=sse" and body == {}
    assert set_model("openai", body, "/v1/chat/completions", "m") == "/v1/chat/completions" and body["model"] == "m"


def test_cheapest_respects_the_allow_list() -> None:
    p = Pricer()
    assert cheapest(["gpt-4o", "gpt-4o-mini"], None, p, "openai", 1000, 100, 4096) == "gpt-4o-mini"
    assert cheapest(["gpt-4o", "gpt-4o-mini"], ["gpt-4o"], p, "openai", 1000, 100, 4096) == "gpt-4o"
    assert cheapest(["unknown-x"], None, p, "openai", 1000, 100, 4096) is None


def test_attempt_for_another_provider_drops_the_clients_key() -> None:
    spec = ProviderSpec("anthropic", "anthropic", ("api.anthropic.com",))
    a = attempt_for(spec, "claude-haiku-4-5", "openai", "chat.completions", OPENAI_BODY, "/v1/chat/completions",
                    {"authorization": "Bearer sk-client", "content-type": "application/json"}, "sk-central", False)
    assert a is not None and a.url == "https://api.anthropic.com/v1/messages"
    assert a.headers["x-api-key"] == "sk-central" and "authorization" not in a.headers
    assert a.headers["anthropic-version"] == "2023-06-01" and a.translate_from == "openai"
    embeddings = attempt_for(spec, "claude-haiku-4-5", "openai", "embeddings", {"input": "x"}, "/v1/embeddings",
                             {}, None, False)
    assert embeddings is None, "embeddings do not translate"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_skips_and_probes_again() -> None:
    clock = Clock()
    b = Breakers(failures=2, cooldown=30, clock=clock)
    b.failure("u")
    assert b.allow("u")
    b.failure("u")
    assert not b.allow("u")
    clock.now += 29.9
    assert not b.allow("u"), "open for the whole cooldown"
    clock.now += 0.1
    assert b.allow("u"), "half-open: one probe"
    assert not b.allow("u"), "only one probe per cooldown"
    clock.now += 30
    assert b.allow("u"), "the next probe, a cooldown later"
    b.success("u")
    assert b.allow("u") and b.allow("u"), "closed again"


def test_plan_retry_conditions() -> None:
    p = Plan("id", "openai", "m", False, [], ["429", "5xx", "timeout"])
    assert p.should_retry(429, "status") and p.should_retry(503, "status") and not p.should_retry(400, "status")
    assert p.should_retry(None, "timeout") and p.should_retry(None, "error")
    assert not Plan("id", "openai", "m", False, [], ["429"]).should_retry(None, "error")


def test_a_tool_call_without_a_name_is_refused_not_crashed() -> None:
    """The tool a call names is what a policy judges, and what the other format needs: a nameless call
    is refused with the place, before anything is translated or sent."""
    body = json.loads(json.dumps(OPENAI_BODY))
    del body["messages"][2]["tool_calls"][0]["function"]["name"]
    spec = ProviderSpec("anthropic", "anthropic", ("api.anthropic.com",))
    with pytest.raises(UnreadableBody) as e:
        attempt_for(spec, "claude-haiku-4-5", "openai", "chat.completions", body, "/v1/chat/completions", {},
                    None, False)
    assert str(e.value) == "messages[2].tool_calls[0].function.name: expected a string, got null"


@pytest.mark.parametrize(("host", "path", "header"), [
    ("myres.openai.azure.com", "/openai/v1/chat/completions", "api-key"),
    ("MYRES.cognitiveservices.azure.com.", "/openai/responses", "api-key"),
    ("proxy.internal", "/openai/deployments/gpt-4o/chat/completions", "api-key"),
    ("api.openai.com", "/v1/chat/completions", "authorization"),
    ("openai.azure.com.evil.example", "/v1/chat/completions", "authorization"),
])
def test_a_central_key_goes_where_the_target_reads_it(host: str, path: str, header: str) -> None:
    from douane.routing import key_headers

    sent = key_headers("openai", "k-1", host, path)
    assert list(sent) == [header] and sent[header].endswith("k-1")
