"""Translation checked against references outside douane: the providers' official SDKs.

Requests: one conversation (a system prompt, a tool call in the history and its result, sampling
options, a tool definition) built with each SDK; what an SDK puts on the wire is the expected
translation of what the others put on the wire. Replies and streams: the source bodies are
validated by the source SDK's own models, translated, and read back by the client SDK's own
parser (for streams, its accumulator: text, tool-call arguments, finish reason and usage).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pydantic
import pytest
from google import genai
from google.genai import types as gtypes

from douane import translate
from douane.providers import ADAPTERS

SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
          "required": ["city"], "additionalProperties": False}
ARGS = {"city": "Paris"}


def transport(answer: Callable[[httpx.Request], httpx.Response], seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)
    return httpx.MockTransport(handle)


def openai_client(answer: Callable[[httpx.Request], httpx.Response], seen: list) -> openai.OpenAI:
    return openai.OpenAI(api_key="x", max_retries=0, http_client=httpx.Client(transport=transport(answer, seen)))


def anthropic_client(answer: Callable[[httpx.Request], httpx.Response], seen: list) -> anthropic.Anthropic:
    def handle(request: httpx2.Request) -> httpx2.Response:  # this SDK runs on httpx2
        seen.append(request)
        got = answer(httpx.Request(request.method, str(request.url), content=request.content))
        return httpx2.Response(got.status_code, content=got.content, headers=dict(got.headers))
    return anthropic.Anthropic(api_key="x", max_retries=0,
                               http_client=httpx2.Client(transport=httpx2.MockTransport(handle)))


def gemini_client(answer: Callable[[httpx.Request], httpx.Response], seen: list) -> genai.Client:
    return genai.Client(api_key="x", http_options=gtypes.HttpOptions(
        httpx_client=httpx.Client(transport=transport(answer, seen)),
        retry_options=gtypes.HttpRetryOptions(attempts=1)))


def json_answer(body: dict[str, Any]) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(200, json=body)


def sse_answer(raw: bytes) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"})


# -- requests: each SDK's wire body for the same conversation ------------------------------------

OPENAI_OK = {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
             "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "x"}}]}
ANTHROPIC_OK = {"id": "m", "type": "message", "role": "assistant", "model": "m", "stop_reason": "end_turn",
                "content": [{"type": "text", "text": "x"}], "usage": {"input_tokens": 1, "output_tokens": 1}}
GEMINI_OK = {"candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": "STOP"}]}


def openai_wire(sampling: bool = True) -> dict[str, Any]:
    seen: list[httpx.Request] = []
    openai_client(json_answer(OPENAI_OK), seen).chat.completions.create(
        model="target-model", max_tokens=50, stop=["END"],
        **({"temperature": 0.3, "top_p": 0.9} if sampling else {}),  # type: ignore[arg-type]
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "call_1", "type": "function",
                       "function": {"name": "get_weather", "arguments": json.dumps(ARGS)}}]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
                  {"role": "user", "content": "And tomorrow?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                                 "parameters": SCHEMA}}])
    assert seen[0].url.path == "/v1/chat/completions"
    return json.loads(seen[0].content)


def anthropic_wire() -> dict[str, Any]:
    seen: list[httpx2.Request] = []
    anthropic_client(json_answer(ANTHROPIC_OK), seen).messages.create(
        model="target-model", max_tokens=50, stop_sequences=["END"], system="Be brief.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
                  {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather",
                                                     "input": ARGS}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1",
                                                "content": "sunny, 21 C"},
                                               {"type": "text", "text": "And tomorrow?"}]}],
        tools=[{"name": "get_weather", "description": "Weather for a city", "input_schema": SCHEMA}])
    assert seen[0].url.path == "/v1/messages"
    return json.loads(seen[0].content)


def gemini_wire(sampling: bool = True, schema: str = "json") -> tuple[dict[str, Any], str]:
    seen: list[httpx.Request] = []
    declaration = gtypes.FunctionDeclaration(name="get_weather", description="Weather for a city",
                                             **({"parameters_json_schema": SCHEMA} if schema == "json" else
                                                {"parameters": gtypes.Schema.model_validate(
                                                    {k: v for k, v in SCHEMA.items() if k != "additionalProperties"})}))
    gemini_client(json_answer(GEMINI_OK), seen).models.generate_content(
        model="target-model",
        contents=[gtypes.Content(role="user", parts=[gtypes.Part(text="Weather in Paris?")]),
                  gtypes.Content(role="model", parts=[gtypes.Part(function_call=gtypes.FunctionCall(
                      name="get_weather", args=ARGS))]),
                  gtypes.Content(role="user", parts=[gtypes.Part(function_response=gtypes.FunctionResponse(
                      name="get_weather", response={"content": "sunny, 21 C"})), gtypes.Part(text="And tomorrow?")])],
        config=gtypes.GenerateContentConfig(
            system_instruction="Be brief.", max_output_tokens=50, stop_sequences=["END"],
            **({"temperature": 0.3, "top_p": 0.9} if sampling else {}),  # type: ignore[arg-type]
            tools=[gtypes.Tool(function_declarations=[declaration])]))
    body = json.loads(seen[0].content)
    # the SDK names the system prompt's role and spells one field in snake_case; the API reads either
    body["systemInstruction"].pop("role", None)
    for tool in body.get("tools", []):
        for fn in tool["functionDeclarations"]:
            if "parameters_json_schema" in fn:
                fn["parametersJsonSchema"] = fn.pop("parameters_json_schema")
    return body, seen[0].url.path


def same_pairs(body: Any, ids: dict[str, str] | None = None) -> Any:
    """The body with tool-call ids renamed by order of appearance: equal bodies then pair each result
    with the same call, whatever the ids (Gemini carries none, so douane makes them)."""
    ids = {} if ids is None else ids
    if isinstance(body, dict):
        return {k: ids.setdefault(v, f"id{len(ids)}") if k in ("id", "tool_use_id", "tool_call_id")
                and isinstance(v, str) else same_pairs(v, ids) for k, v in body.items()}
    if isinstance(body, list):
        return [same_pairs(v, ids) for v in body]
    return body


SOURCES: dict[str, Callable[[], tuple[dict[str, Any], str, str]]] = {
    # format: () -> (wire body, endpoint, path)
    "openai": lambda: (openai_wire(), "chat.completions", "/v1/chat/completions"),
    "anthropic": lambda: (anthropic_wire(), "messages", "/v1/messages"),
    "gemini": lambda: (gemini_wire()[0], "generateContent", "/v1beta/models/source-model:generateContent"),
}


def expected_wire(target: str, source: str) -> tuple[dict[str, Any], str]:
    """What the target SDK sends for the conversation, with the options the source can carry
    (Anthropic's SDK has no temperature or top_p any more)."""
    sampling = source != "anthropic"
    if target == "openai":
        return openai_wire(sampling), "/v1/chat/completions"
    if target == "anthropic":
        return anthropic_wire(), "/v1/messages"
    body, path = gemini_wire(sampling)
    return body, path


@pytest.mark.parametrize(("source", "target"), [(s, t) for s in SOURCES for t in SOURCES if s != t])
def test_a_request_translates_to_what_the_targets_sdk_sends(source: str, target: str) -> None:
    body, endpoint, path = SOURCES[source]()
    got, got_path = translate.request(source, endpoint, path, body, target, "target-model")
    want, want_path = expected_wire(target, source)
    if target == "gemini":  # the SDK's API version (v1) or douane's (v1beta, as in Google's REST docs)
        got_path, want_path = got_path.split("/", 2)[2], want_path.split("/", 2)[2]
    assert got_path == want_path
    assert same_pairs(got) == same_pairs(want)


def test_geminis_own_schema_becomes_json_schema() -> None:
    body, _ = gemini_wire(schema="gemini")
    assert body["tools"][0]["functionDeclarations"][0]["parameters"]["type"] == "OBJECT", "the SDK's own spelling"
    got, _ = translate.request("gemini", "generateContent", "/v1beta/models/m:generateContent", body, "openai", "m")
    assert got["tools"][0]["function"]["parameters"] == {k: v for k, v in SCHEMA.items()
                                                         if k != "additionalProperties"}


# -- replies: validated by the source SDK, read back by the client SDK ---------------------------

REPLIES = {
    "openai": {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-x",
               "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
                   "role": "assistant", "content": "It is sunny.", "tool_calls": [
                       {"id": "call_9", "type": "function",
                        "function": {"name": "get_weather", "arguments": json.dumps(ARGS)}}]}}],
               "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
                         "prompt_tokens_details": {"cached_tokens": 4}}},
    "anthropic": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                  "content": [{"type": "text", "text": "It is sunny."},
                              {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": ARGS}],
                  "stop_reason": "tool_use", "stop_sequence": None,
                  "usage": {"input_tokens": 8, "cache_read_input_tokens": 4, "output_tokens": 7}},
    "gemini": {"candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [
                   {"text": "It is sunny."}, {"functionCall": {"name": "get_weather", "args": ARGS}}]}}],
               "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 7, "totalTokenCount": 19,
                                 "cachedContentTokenCount": 4},
               "modelVersion": "gemini-x"},
}


def test_the_source_replies_are_valid_for_their_own_sdks() -> None:
    openai.types.chat.ChatCompletion.model_validate(REPLIES["openai"])
    anthropic.types.Message.model_validate(REPLIES["anthropic"])
    gtypes.GenerateContentResponse.model_validate(REPLIES["gemini"])


def read_reply(client_fmt: str, body: dict[str, Any]) -> dict[str, Any]:
    """What the client's SDK makes of a reply: text, tool calls, finish reason, usage, model."""
    seen: list = []
    if client_fmt == "openai":
        c = openai_client(json_answer(body), seen).chat.completions.create(
            model="client-model", messages=[{"role": "user", "content": "hi"}])
        msg = c.choices[0].message
        assert c.usage is not None and c.usage.prompt_tokens_details is not None
        return {"text": msg.content, "calls": [(t.function.name, json.loads(t.function.arguments))  # type: ignore[union-attr]
                                               for t in msg.tool_calls or []],
                "finish": c.choices[0].finish_reason, "usage": (c.usage.prompt_tokens, c.usage.completion_tokens,
                                                                c.usage.prompt_tokens_details.cached_tokens),
                "model": c.model}
    if client_fmt == "anthropic":
        m = anthropic_client(json_answer(body), seen).messages.create(
            model="client-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        u = m.usage
        return {"text": "".join(b.text for b in m.content if b.type == "text"),
                "calls": [(b.name, b.input) for b in m.content if b.type == "tool_use"], "finish": m.stop_reason,
                "usage": (u.input_tokens + (u.cache_read_input_tokens or 0), u.output_tokens,
                          u.cache_read_input_tokens), "model": m.model}
    r = gemini_client(json_answer(body), seen).models.generate_content(model="client-model", contents="hi")
    um = r.usage_metadata
    assert um is not None and r.candidates
    parts = r.candidates[0].content.parts if r.candidates[0].content else []
    return {"text": "".join(p.text for p in parts or [] if p.text),
            "calls": [(f.name, f.args) for f in r.function_calls or []],
            "finish": r.candidates[0].finish_reason, "usage": (um.prompt_token_count, um.candidates_token_count,
                                                               um.cached_content_token_count),
            "model": r.model_version}


FINISH = {"openai": "tool_calls", "anthropic": "tool_use", "gemini": gtypes.FinishReason.STOP}


@pytest.mark.parametrize(("source", "client"), [(s, c) for s in REPLIES for c in REPLIES if s != c])
def test_a_translated_reply_reads_in_the_clients_sdk(source: str, client: str) -> None:
    body = translate.reply(source, json.loads(json.dumps(REPLIES[source])), client, "client-model")
    got = read_reply(client, body)
    assert got == {"text": "It is sunny.", "calls": [("get_weather", ARGS)], "finish": FINISH[client],
                   "usage": (12, 7, 4), "model": "client-model"}


# -- streams: validated by the source SDK, accumulated by the client SDK -------------------------

STREAMS: dict[str, list[tuple[str | None, dict[str, Any]]]] = {
    "openai": [(None, {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x", "choices": [
                   {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}),
               *[(None, {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x", "choices": [
                   {"index": 0, "delta": {"content": t}, "finish_reason": None}]}) for t in ("It is ", "sunny.")],
               (None, {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x", "choices": [
                   {"index": 0, "finish_reason": None, "delta": {"tool_calls": [
                       {"index": 0, "id": "call_9", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}]}}]}),
               *[(None, {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x", "choices": [
                   {"index": 0, "finish_reason": None, "delta": {"tool_calls": [
                       {"index": 0, "function": {"arguments": a}}]}}]}) for a in ('{"city": ', '"Paris"}')],
               (None, {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x", "choices": [
                   {"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
               (None, {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x", "choices": [],
                       "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
                                 "prompt_tokens_details": {"cached_tokens": 4}}})],
    "anthropic": [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 8, "cache_read_input_tokens": 4, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        *[("content_block_delta", {"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "text_delta", "text": t}}) for t in ("It is ", "sunny.")],
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}}),
        *[("content_block_delta", {"type": "content_block_delta", "index": 1,
                                   "delta": {"type": "input_json_delta", "partial_json": a}})
          for a in ("", '{"city": ', '"Paris"}')],
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                           "usage": {"output_tokens": 7}}),
        ("message_stop", {"type": "message_stop"})],
    "gemini": [
        (None, {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "It is "}]}}],
                "modelVersion": "gemini-x"}),
        (None, {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "sunny."}]}}],
                "modelVersion": "gemini-x"}),
        (None, {"candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": ARGS}}]}}],
                "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 7, "totalTokenCount": 19,
                                  "cachedContentTokenCount": 4}, "modelVersion": "gemini-x"})],
}


def test_the_source_streams_are_valid_for_their_own_sdks() -> None:
    for _, chunk in STREAMS["openai"]:
        openai.types.chat.ChatCompletionChunk.model_validate(chunk)
    event = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
    for _, data in STREAMS["anthropic"]:
        event.validate_python(data)
    for _, data in STREAMS["gemini"]:
        gtypes.GenerateContentResponse.model_validate(data)


def translated_stream(source: str, client: str) -> bytes:
    reader, writer = translate.StreamReader(source), translate.StreamWriter(client, "client-model")
    out = [writer.write(ev) for name, data in STREAMS[source] for ev in reader.feed(json.loads(json.dumps(data)), name)]
    return b"".join(out) + writer.close()


def accumulate(client_fmt: str, raw: bytes) -> dict[str, Any]:
    """What the client's SDK assembles from the stream."""
    seen: list = []
    if client_fmt == "openai":
        with openai_client(sse_answer(raw), seen).chat.completions.stream(
                model="client-model", messages=[{"role": "user", "content": "hi"}]) as s:
            c = s.get_final_completion()
        msg = c.choices[0].message
        assert c.usage is not None and c.usage.prompt_tokens_details is not None
        return {"text": msg.content, "calls": [(t.function.name, json.loads(t.function.arguments))  # type: ignore[union-attr]
                                               for t in msg.tool_calls or []],
                "finish": c.choices[0].finish_reason,
                "usage": (c.usage.prompt_tokens, c.usage.completion_tokens,
                          c.usage.prompt_tokens_details.cached_tokens),
                "model": c.model}
    if client_fmt == "anthropic":
        with anthropic_client(sse_answer(raw), seen).messages.stream(
                model="client-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as s:
            m = s.get_final_message()
        u = m.usage
        return {"text": "".join(b.text for b in m.content if b.type == "text"),
                "calls": [(b.name, b.input) for b in m.content if b.type == "tool_use"], "finish": m.stop_reason,
                "usage": (u.input_tokens + (u.cache_read_input_tokens or 0), u.output_tokens,
                          u.cache_read_input_tokens), "model": m.model}
    chunks = list(gemini_client(sse_answer(raw), seen).models.generate_content_stream(model="client-model",
                                                                                    contents="hi"))
    um = chunks[-1].usage_metadata
    assert um is not None
    return {"text": "".join(p.text for ch in chunks for c in ch.candidates or [] if c.content
                            for p in c.content.parts or [] if p.text),
            "calls": [(f.name, f.args) for ch in chunks for f in ch.function_calls or []],
            "finish": chunks[-1].candidates[0].finish_reason if chunks[-1].candidates else None,
            "usage": (um.prompt_token_count, um.candidates_token_count, um.cached_content_token_count),
            "model": chunks[-1].model_version}


@pytest.mark.parametrize(("source", "client"), [(s, c) for s in STREAMS for c in STREAMS if s != c])
def test_a_translated_stream_accumulates_in_the_clients_sdk(source: str, client: str) -> None:
    got = accumulate(client, translated_stream(source, client))
    assert got == {"text": "It is sunny.", "calls": [("get_weather", ARGS)], "finish": FINISH[client],
                   "usage": (12, 7, 4), "model": "client-model"}


# -- tool calls are first-class in the canonical model, in every format ----------------------------
# (what a tools policy will judge: a tool's name and arguments, wherever they appear)


def responses_wire() -> dict[str, Any]:
    seen: list[httpx.Request] = []
    reply = {"id": "resp_1", "object": "response", "created_at": 1, "model": "m", "output": [],
             "status": "completed", "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
    openai_client(json_answer(reply), seen).responses.create(
        model="gpt-x", instructions="Be brief.",
        input=[{"role": "user", "content": "Weather in Paris?"},
               {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": json.dumps(ARGS)},
               {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21 C"}],
        tools=[{"type": "function", "name": "get_weather", "description": "Weather for a city", "parameters": SCHEMA,
                "strict": True}, {"type": "web_search"}])
    return json.loads(seen[0].content)


REQUESTS = {**SOURCES, "responses": lambda: (responses_wire(), "responses", "/v1/responses")}


@pytest.mark.parametrize("fmt", list(REQUESTS))
def test_a_requests_tools_calls_and_results_are_read(fmt: str) -> None:
    body, endpoint, path = REQUESTS[fmt]()
    req = ADAPTERS["openai" if fmt == "responses" else fmt].parse_request(endpoint, path, body)
    assert [(t.name, t.parameters, t.kind) for t in req.tools if t.kind == "function"] == \
        [("get_weather", SCHEMA, "function")]
    assert [(c.name, c.arguments_object()) for c in req.tool_calls()] == [("get_weather", ARGS)]
    assert [m.speaker for m in req.messages if m.tool_calls] == ["assistant"]
    results = [r for m in req.messages for r in m.tool_results]
    assert [r.text for r in results] == ["sunny, 21 C"]
    assert results[0].call_id == (None if fmt == "gemini" else "call_1")
    assert results[0].name == ("get_weather" if fmt == "gemini" else None)
    call = next(req.tool_calls())
    assert all(p in list(req.text_parts()) for p in call.parts), "the guards see the arguments too"
    if fmt == "responses":
        assert [t.kind for t in req.tools] == ["function", "web_search"]


@pytest.mark.parametrize("fmt", list(REPLIES))
def test_an_answers_tool_calls_are_read(fmt: str) -> None:
    reply = ADAPTERS[fmt].parse_response(ADAPTERS[fmt].chat_endpoint, json.loads(json.dumps(REPLIES[fmt])))
    assert [(c.name, c.arguments_object()) for c in reply.tool_calls] == [("get_weather", ARGS)]
    assert reply.finish == "tool_calls" and reply.text == "It is sunny."


@pytest.mark.parametrize("fmt", list(STREAMS))
def test_a_streams_tool_calls_are_named_on_their_first_fragment(fmt: str) -> None:
    calls: dict[Any, list[Any]] = {}
    for name, data in STREAMS[fmt]:
        event = ADAPTERS[fmt].parse_stream_event(ADAPTERS[fmt].chat_endpoint, name, json.loads(json.dumps(data)), None)
        for c in event.tool_calls:
            key = c.index if c.index is not None else len(calls)
            if key not in calls:
                calls[key] = [c.name, ""]
            calls[key][1] += c.arguments
    assert [(n, json.loads(a)) for n, a in calls.values()] == [("get_weather", ARGS)]


def test_a_responses_streams_tool_call_is_named_and_its_arguments_follow() -> None:
    events = [{"type": "response.output_item.added", "output_index": 1, "sequence_number": 1, "item": {
                  "type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather", "arguments": "",
                  "status": "in_progress"}},
              *[{"type": "response.function_call_arguments.delta", "output_index": 1, "item_id": "fc_1",
                 "sequence_number": 2 + i, "delta": d} for i, d in enumerate(('{"city": ', '"Paris"}'))]]
    event_type = pydantic.TypeAdapter(openai.types.responses.ResponseStreamEvent)
    calls: dict[Any, list[Any]] = {}
    for data in events:
        event_type.validate_python(data)
        for c in ADAPTERS["openai"].parse_stream_event("responses", None, data, None).tool_calls:
            calls.setdefault(c.index, [c.name, c.id, ""])[2] += c.arguments
    assert {k: (n, i, json.loads(a)) for k, (n, i, a) in calls.items()} == {1: ("get_weather", "call_1", ARGS)}


def test_an_unknown_format_is_an_error_never_another_format() -> None:
    """The old translator read any format it did not know as Gemini."""
    from douane.providers import ProviderSpec, UnknownFormat

    with pytest.raises(UnknownFormat, match="unknown wire format 'mistral': douane reads and writes anthropic, "
                                             "gemini, openai"):
        translate.read_request("mistral", {"contents": [{"parts": [{"text": "hi"}]}]})
    for make in (lambda: translate.StreamReader("mistral"), lambda: translate.StreamWriter("mistral", "m"),
                 lambda: translate.reply("openai", REPLIES["openai"], "mistral", "m"),
                 lambda: ProviderSpec("mistral", "mistral", ("api.mistral.ai",))):
        with pytest.raises(UnknownFormat):
            make()
