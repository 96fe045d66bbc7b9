import json
import re

import pytest

from douane.providers import ADAPTERS, ProviderSpec, ProviderTable
from douane.providers.base import UnreadableBody

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


def test_every_copy_of_a_repeated_string_in_a_content_list_is_rewritable() -> None:
    """A content list holding the same string twice: a guard rewriting each part must reach both
    copies (PII in the second copy used to leave unredacted)."""
    body = {"model": "m", "messages": [{"role": "user", "content": ["mail a@b.co", "x", "mail a@b.co"]}]}
    req = openai.parse_request("chat.completions", "/v1/chat/completions", body)
    for part in req.text_parts():
        part.replace(part.text.replace("a@b.co", "<EMAIL_ADDRESS>"))
    assert body["messages"][0]["content"] == ["mail <EMAIL_ADDRESS>", "x", "mail <EMAIL_ADDRESS>"]
    embeddings = {"model": "m", "input": ["a@b.co", "a@b.co"]}
    for part in openai.parse_request("embeddings", "/v1/embeddings", embeddings).text_parts():
        part.replace("<EMAIL_ADDRESS>")
    assert embeddings["input"] == ["<EMAIL_ADDRESS>", "<EMAIL_ADDRESS>"]


def test_tool_calls_that_are_not_a_list_are_refused_with_the_place() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"},
                                       {"role": "assistant", "content": "x", "tool_calls": True}]}
    with pytest.raises(UnreadableBody) as e:
        openai.parse_request("chat.completions", "/v1/chat/completions", body)
    assert str(e.value) == "messages[1].tool_calls: expected a list, got true"


def test_a_two_key_message_is_read_in_full_whatever_its_two_keys() -> None:
    """The usual {role, content} message is read on a short path; any other pair of keys is not."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"q\": \"x\"}"}}
    body = {"model": "m", "messages": [{"content": "hi", "tool_calls": [call]}, {"role": "tool", "content": "r"},
                                       {"role": "user", "content": "plain"}]}
    req = openai.parse_request("chat.completions", "/v1/chat/completions", body)
    assert [c.name for c in req.messages[0].tool_calls] == ["f"], "tool calls beside content are read"
    assert [r.container for r in req.messages[1].tool_results] == [body["messages"][1]], "a tool result stays one"
    assert [(p.text, p.kind) for p in req.messages[2].parts] == [("plain", "text")]


# -- every body shape is read or refused: nothing in a body may make an adapter raise anything else --

SAMPLE_REQUESTS = {
    ("openai", "chat.completions", "/v1/chat/completions"): {
        "model": "m", "stream": True, "max_tokens": 5, "stop": ["x"], "temperature": 0.5, "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, "b",
                                         {"type": "image_url", "image_url": {"url": "u"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "r"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
    ("openai", "responses", "/v1/responses"): {
        "model": "m", "instructions": "i", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "a"}]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "r"}],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]},
    ("openai", "embeddings", "/v1/embeddings"): {"model": "m", "input": ["a", "b"]},
    ("anthropic", "messages", "/v1/messages"): {
        "model": "m", "max_tokens": 5, "system": [{"type": "text", "text": "s"}], "stop_sequences": ["x"],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"q": "v"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                          "content": [{"type": "text", "text": "r"}]}]}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}]},
    ("gemini", "generateContent", "/v1beta/models/g:generateContent"): {
        "systemInstruction": {"parts": [{"text": "s"}]},
        "contents": [{"role": "user", "parts": [{"text": "a"}]},
                     {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"q": "v"}}}]},
                     {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"content": "r"}}}]}],
        "generationConfig": {"maxOutputTokens": 5, "stopSequences": ["x"]},
        "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "object"}}]}]},
    ("gemini", "embedContent", "/v1beta/models/g:embedContent"): {"content": {"parts": [{"text": "a"}]}},
}

SAMPLE_RESPONSES = {
    ("openai", "chat.completions"): {
        "model": "m", "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "hi", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 0}}},
    ("openai", "responses"): {
        "model": "m", "output": [{"type": "message", "content": [{"type": "output_text", "text": "hi"}]},
                                 {"type": "function_call", "name": "f", "arguments": "{}", "call_id": "c"}],
        "usage": {"input_tokens": 1, "output_tokens": 2}},
    ("anthropic", "messages"): {
        "model": "m", "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 2},
        "content": [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "t", "name": "f", "input": {"a": "b"}}]},
    ("gemini", "generateContent"): {
        "candidates": [{"finishReason": "STOP", "content": {"role": "model", "parts": [
            {"text": "hi"}, {"functionCall": {"name": "f", "args": {"a": "b"}}}]}}],
        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 2}},
}

SAMPLE_EVENTS = {
    ("openai", "chat.completions"): [
        {"model": "m", "usage": {"prompt_tokens": 1}, "choices": [{"index": 0, "finish_reason": None, "delta": {
            "content": "x", "tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{"}}]}}]}],
    ("openai", "responses"): [
        {"type": "response.output_text.delta", "delta": "x"},
        {"type": "response.output_item.added", "output_index": 1,
         "item": {"type": "function_call", "name": "f", "call_id": "c", "arguments": ""}},
        {"type": "response.function_call_arguments.delta", "output_index": 1, "delta": "{"},
        {"type": "response.output_item.done", "item": {"type": "function_call", "name": "f", "arguments": "{}"}},
        {"type": "response.content_part.done", "part": {"type": "output_text", "text": "x"}},
        {"type": "response.completed", "response": {"model": "m", "usage": {"input_tokens": 1}, "output": [
            {"type": "message", "content": [{"type": "output_text", "text": "x"}]}]}}],
    ("anthropic", "messages"): [
        {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "a"}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "f",
                                                                      "input": {}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
        {"type": "error", "error": {"type": "overloaded_error", "message": "m"}}],
    ("gemini", "streamGenerateContent"): [
        {"candidates": [{"finishReason": "STOP", "content": {"parts": [
            {"text": "x"}, {"functionCall": {"name": "f", "args": {"a": "b"}}}]}}],
         "usageMetadata": {"promptTokenCount": 1}, "error": {"message": "e"}}],
}

WRONG = [True, 7, "text", [], {}, None, [True], {"x": True}]


def every_place(obj: object, at: tuple = ()) -> list[tuple]:
    places = [at] if at else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            places += every_place(v, (*at, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            places += every_place(v, (*at, i))
    return places


def mutants(body: dict) -> list[tuple[str, object]]:
    """The body with one place at a time replaced by each wrong kind of JSON value."""
    out = []
    for place in every_place(body):
        for value in WRONG:
            mutant = json.loads(json.dumps(body))
            node = mutant
            for step in place[:-1]:
                node = node[step]
            node[place[-1]] = value
            out.append((f"{place} = {value!r}", mutant))
    return out


def read_or_refused(label: str, read) -> None:  # noqa: ANN001
    try:
        read()
    except UnreadableBody as e:
        assert e.where and str(e).startswith(e.where), label
    except Exception as e:  # anything else lets a call through uninspected, or crashes the stream
        raise AssertionError(f"{label}: {type(e).__name__}: {e}") from e


@pytest.mark.parametrize(("fmt", "endpoint", "path"), list(SAMPLE_REQUESTS))
def test_every_request_shape_is_read_or_refused(fmt: str, endpoint: str, path: str) -> None:
    body = SAMPLE_REQUESTS[(fmt, endpoint, path)]
    for label, mutant in mutants(body):
        read_or_refused(label, lambda m=mutant: ADAPTERS[fmt].parse_request(endpoint, path, m))


@pytest.mark.parametrize(("fmt", "endpoint"), list(SAMPLE_RESPONSES))
def test_every_reply_shape_is_read_or_refused(fmt: str, endpoint: str) -> None:
    for label, mutant in mutants(SAMPLE_RESPONSES[(fmt, endpoint)]):
        read_or_refused(label, lambda m=mutant: ADAPTERS[fmt].parse_response(endpoint, m))


@pytest.mark.parametrize(("fmt", "endpoint"), list(SAMPLE_EVENTS))
def test_every_stream_event_shape_is_read_or_refused(fmt: str, endpoint: str) -> None:
    for event in SAMPLE_EVENTS[(fmt, endpoint)]:
        for label, mutant in mutants(event):
            read_or_refused(label, lambda m=mutant: ADAPTERS[fmt].parse_stream_event(endpoint, None, m, None))


@pytest.mark.parametrize(("fmt", "endpoint", "body"), [
    ("openai", "chat.completions", {"messages": "mail a@b.co"}),
    ("openai", "chat.completions", {"messages": [{"role": "user", "content": {"type": "text", "text": "a@b.co"}}]}),
    ("openai", "responses", {"input": {"role": "user", "content": "a@b.co"}}),
    ("anthropic", "messages", {"messages": [{"role": "user", "content": {"type": "text", "text": "a@b.co"}}]}),
    ("anthropic", "messages", {"system": {"type": "text", "text": "a@b.co"}, "messages": []}),
    ("gemini", "generateContent", {"systemInstruction": "a@b.co"}),
])
def test_text_in_a_shape_the_api_does_not_document_is_refused_not_skipped(fmt: str, endpoint: str,
                                                                            body: dict) -> None:
    """A string iterated as if it were a list, or an object where a list is documented, used to be
    skipped: its text went out unread."""
    with pytest.raises(UnreadableBody):
        ADAPTERS[fmt].parse_request(endpoint, "/v1beta/models/g:generateContent", body)


def test_gemini_reads_one_object_where_a_list_is_documented() -> None:
    """Protobuf JSON accepts one object for a repeated field: the text in it is read, not skipped."""
    body = {"contents": {"role": "user", "parts": {"text": "a@b.co"}},
            "systemInstruction": {"parts": {"text": "sys"}},
            "tools": {"function_declarations": {"name": "f", "parameters": {"type": "object"}}}}
    req = gemini.parse_request("generateContent", "/v1beta/models/g:generateContent", body)
    assert [(p.kind, p.text) for p in req.text_parts()] == [("system", "sys"), ("text", "a@b.co")]
    assert [t.name for t in req.tools] == ["f"]
    snake = {"contents": [{"role": "model", "parts": [{"function_call": {"name": "send", "args": {"to": "a@b.co"}}}]}]}
    req = gemini.parse_request("generateContent", "/v1beta/models/g:generateContent", snake)
    assert [p.text for p in req.text_parts()] == ["a@b.co"], "snake_case is read too"
    assert [c.name for c in req.tool_calls()] == ["send"]
