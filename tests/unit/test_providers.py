import json
import re

import pytest

from douane.providers import ADAPTERS, ProviderSpec, ProviderTable

openai, anthropic, gemini = ADAPTERS["openai"], ADAPTERS["anthropic"], ADAPTERS["gemini"]


def test_endpoints() -> None:
    assert openai.endpoint("POST", "/v1/chat/completions") == "chat.completions"
    assert openai.endpoint("POST", "/openai/deployments/x/chat/completions?api-version=1") == "chat.completions"
    assert openai.endpoint("POST", "/v1/responses") == "responses"
    assert openai.endpoint("POST", "/v1/embeddings") == "embeddings"
    assert openai.endpoint("POST", "/v1/files") is None
    assert openai.endpoint("GET", "/v1/models") is None
    assert anthropic.endpoint("POST", "/v1/messages") == "messages"
    assert anthropic.endpoint("POST", "/v1/messages/count_tokens") == "count_tokens"
    assert anthropic.endpoint("POST", "/v1/messages/batches") is None
    assert gemini.endpoint("POST", "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse") \
        == "streamGenerateContent"
    assert gemini.endpoint("POST", "/v1beta/files") is None


def test_openai_chat_every_text_part_is_rewritable_and_nothing_else_moves() -> None:
    body = {"model": "gpt-4o", "temperature": 0.2, "messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "hello"},
                                     {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"q\": \"v\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "result"}]}
    original = json.loads(json.dumps(body))
    req = openai.parse_request("chat.completions", "/v1/chat/completions", body)
    assert [m.role for m in req.messages] == ["system", "user", "assistant", "tool"]
    kinds = [(p.kind, p.text) for p in req.text_parts()]
    assert kinds == [("system", "sys"), ("text", "hello"), ("tool_call", "{\"q\": \"v\"}"), ("tool_result", "result")]
    for p in req.text_parts():
        p.replace(p.text.upper())
    assert body["messages"][1]["content"][1] == original["messages"][1]["content"][1]
    assert body["messages"][1]["content"][0]["text"] == "HELLO"
    assert body["temperature"] == 0.2 and body["messages"][2]["tool_calls"][0]["id"] == "c1"


def test_openai_stream_usage_is_requested_once() -> None:
    body = {"model": "m", "stream": True, "messages": []}
    req = openai.parse_request("chat.completions", "/v1/chat/completions", body)
    assert openai.prepare_upstream(req) is True
    assert body["stream_options"] == {"include_usage": True}
    body2 = {"model": "m", "stream": True, "stream_options": {"include_usage": True}, "messages": []}
    assert openai.prepare_upstream(openai.parse_request("chat.completions", "/", body2)) is False


def test_usage_of_each_format() -> None:
    u = openai.parse_response("chat.completions", {"model": "m", "choices": [], "usage": {
        "prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 2}}}).usage
    assert (u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens) == (10, 5, 4, 2)
    a = anthropic.parse_response("messages", {"content": [{"type": "text", "text": "hi"}], "usage": {
        "input_tokens": 3, "cache_read_input_tokens": 7, "output_tokens": 9}})
    assert (a.usage.input_tokens, a.usage.cached_tokens, a.usage.output_tokens) == (10, 7, 9)
    assert a.parts[0].text == "hi"
    g = gemini.parse_response("generateContent", {"candidates": [{"content": {"parts": [{"text": "x"}]}}],
                                                  "usageMetadata": {"promptTokenCount": 4,
                                                                    "candidatesTokenCount": 6,
                                                                    "thoughtsTokenCount": 2}})
    assert (g.usage.input_tokens, g.usage.output_tokens, g.usage.reasoning_tokens) == (4, 8, 2)


def test_anthropic_request_blocks_and_tools() -> None:
    body = {"model": "claude", "max_tokens": 100, "system": [{"type": "text", "text": "be nice"}],
            "messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "doc"}]}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                                   "input": {"email": "a@b.co", "n": 3}}]}]}
    req = anthropic.parse_request("messages", "/v1/messages", body)
    assert req.max_tokens == 100 and req.model == "claude"
    assert [(p.kind, p.text) for p in req.text_parts()] == [
        ("system", "be nice"), ("tool_result", "doc"), ("tool_call", "a@b.co")]


def test_gemini_model_from_path_and_parts() -> None:
    body = {"systemInstruction": {"parts": [{"text": "sys"}]},
            "contents": [{"role": "user", "parts": [{"text": "hi"}, {"inlineData": {"data": "AAA"}}]},
                         {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"q": "x"}}}]}],
            "generationConfig": {"maxOutputTokens": 50}}
    req = gemini.parse_request("generateContent", "/v1beta/models/gemini-2.5-pro:generateContent?key=k", body)
    assert req.model == "gemini-2.5-pro" and req.max_tokens == 50 and not req.stream
    assert [p.text for p in req.text_parts()] == ["sys", "hi", "x"]


def test_stream_events() -> None:
    ev = openai.parse_stream_event("chat.completions", None, {"choices": [], "usage": {
        "prompt_tokens": 1, "completion_tokens": 2}}, None)
    assert ev.internal and ev.usage.output_tokens == 2
    ev = anthropic.parse_stream_event("messages", "message_delta", {"type": "message_delta",
                                                                    "usage": {"output_tokens": 12}}, None)
    assert ev.usage.output_tokens == 12 and ev.usage.input_tokens is None
    ev = anthropic.parse_stream_event("messages", "error", {"type": "error", "error": {
        "type": "overloaded_error", "message": "busy"}}, None)
    assert ev.error == "busy"
    ev = openai.parse_stream_event("responses", None, {"type": "response.output_text.delta", "delta": "hi"}, None)
    assert ev.parts[0].text == "hi"


@pytest.mark.parametrize(("fmt", "status"), [("openai", 403), ("anthropic", 429), ("gemini", 502)])
def test_error_shapes(fmt: str, status: int) -> None:
    body = ADAPTERS[fmt].error_body(status, "why", "rule.x")
    if fmt == "openai":
        assert set(body["error"]) >= {"message", "type", "code"} and body["error"]["code"] == "rule.x"
    elif fmt == "anthropic":
        assert body["type"] == "error" and body["error"] == {"type": "rate_limit_error", "message": "why"}
    else:
        assert body["error"] == {"code": 502, "message": "why", "status": "UNAVAILABLE"}


def test_table_matches_host_and_port_case_insensitively() -> None:
    table = ProviderTable([ProviderSpec("openai", "openai", ("api.openai.com",)),
                           ProviderSpec("local", "openai", ("llm.internal:8443",))])
    assert table.match("API.OpenAI.com", 443).name == "openai"
    assert table.match("llm.internal", 8443).name == "local"
    assert table.match("llm.internal", 443) is None
    assert table.match("example.com", 443) is None
    assert table.match("api.openai.com.", 443).name == "openai", "a fully qualified name is the same host"
    allow = table.allow_hosts()
    assert r"^api\.openai\.com\.?:[0-9]+$" in allow
    intercepted = [h for h in ("api.openai.com:443", "API.OPENAI.COM.:443", "api.openai.com.evil.io:443",
                               "xapi.openai.com:443", "llm.internal:8443", "llm.internal.:8443", "llm.internal:443")
                   if any(re.search(rx, h, re.IGNORECASE) for rx in allow)]  # as mitmproxy's next_layer matches
    assert intercepted == ["api.openai.com:443", "API.OPENAI.COM.:443", "llm.internal:8443", "llm.internal.:8443"]
