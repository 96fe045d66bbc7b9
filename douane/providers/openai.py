"""OpenAI wire format: chat.completions, responses, embeddings, completions (and compatible hosts).

Reads all four; writes chat.completions (requests, replies, streams) for translated calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from douane.providers.base import (
    EVERY_CALL,
    Adapter,
    CanonicalRequest,
    CanonicalResponse,
    EventWriter,
    Message,
    StreamEvent,
    TextPart,
    ToolCall,
    ToolDef,
    ToolResult,
    UnreadableBody,
    Usage,
    as_dict,
    as_list,
    has_text,
    int_or_none,
    need_dict,
    need_str,
    new_id,
    number_or_none,
    sse,
    str_or_none,
    strings,
)

# Matched on the path's end so that prefixed compatible servers (/openai/deployments/x/...) work too.
_ENDPOINTS = {
    "/chat/completions": "chat.completions",
    "/responses": "responses",
    "/embeddings": "embeddings",
    "/completions": "completions",
}
_SYSTEM_ROLES = ("system", "developer")
LEGACY_CALL = "function_call"  # the stream key of the deprecated API's one call
_CALL_DONE = ("response.function_call_arguments.done", "response.custom_tool_call_input.done")
_RESPONSE_ENDS = ("response.completed", "response.incomplete", "response.failed", "response.done")
_TOOL_ROLES = ("tool", "function")


def _content_parts(container: dict[str, Any], key: str, kind: str) -> list[TextPart]:
    """`content` is a string or a list of typed parts (text, input_text, output_text, refusal, ...).
    (Checks inline: this runs for every message of every call.)"""
    value = container.get(key)
    if type(value) is str:
        return [TextPart(container, key, kind)]
    if value is None:
        return []
    parts = []
    for i, item in enumerate(as_list(value, key)):
        if type(item) is str:
            parts.append(TextPart(value, i, kind))
            continue
        if type(item) is not dict:
            raise UnreadableBody(f"{key}[{i}]", "an object", item)
        for field in ("text", "refusal"):
            text = item.get(field)
            if type(text) is str:
                parts.append(TextPart(item, field, kind))
                break
            if text is not None:
                raise UnreadableBody(f"{key}[{i}].{field}", "a string", text)
    return parts


def _chat_tool_call(call: Any, legacy: bool = False) -> ToolCall:
    """One entry of `tool_calls` (`function` or `custom`), or a legacy `function_call` (the function itself)."""
    call = need_dict(call)
    if legacy:
        at, spec, key = "", call, "arguments"
    elif call.get("function") is None and "custom" in call:
        at, spec, key = "custom", call["custom"], "input"
    else:
        at, spec, key = "function", call.get("function"), "arguments"
    try:
        spec = need_dict(spec)
        name = need_str(spec.get("name"), "name")
        parts = [TextPart(spec, key, "tool_call")] if has_text(spec, key) else []
    except UnreadableBody as e:
        raise e.within(at) if at else e from None
    return ToolCall(name, str_or_none(call.get("id")), spec, key, parts)


def _item_call(item: dict[str, Any]) -> ToolCall:
    """A Responses API function_call (JSON arguments) or custom_tool_call (free-text input) item."""
    key = "arguments" if item.get("type") == "function_call" else "input"
    name = need_str(item.get("name"), "name")
    parts = [TextPart(item, key, "tool_call")] if has_text(item, key) else []
    return ToolCall(name, str_or_none(item.get("call_id")), item, key, parts)


def _each(items: list[Any], where: str, read: Callable[[Any], Any]) -> list[Any]:
    """`read` of each item; a problem inside one is placed at `where[i]`."""
    out = []
    for i, item in enumerate(items):
        try:
            out.append(read(item))
        except UnreadableBody as e:
            raise e.within(f"{where}[{i}]") from None
    return out


def _tool_def(tool: Any) -> ToolDef:
    tool = need_dict(tool)
    kind = str(tool.get("type") or "function")
    spec = as_dict(tool.get("function") or tool.get("custom"), kind) or tool
    params = spec.get("parameters")
    return ToolDef(str_or_none(spec.get("name")), str_or_none(spec.get("description")) or "",
                   params if isinstance(params, dict) else None, kind)


def _tool_defs(body: dict[str, Any]) -> list[ToolDef]:
    """`tools` (chat: nested under `function`; responses: flat; built-in tools by type) and the legacy
    `functions`."""
    tools, functions = body.get("tools"), body.get("functions")
    if tools is None and functions is None:
        return []
    defs = []
    for key in ("tools", "functions"):
        items = as_list(body.get(key), key)
        for i, tool in enumerate(_each(items, key, _tool_def)):
            tool.container, tool.key = items, i
            defs.append(tool)
    return defs


def _chat_message(msg: Any) -> Message:
    if type(msg) is not dict:
        raise UnreadableBody("", "an object", msg)
    role = msg.get("role")
    if type(role) is not str:
        role = "user"
    kind = "system" if role in _SYSTEM_ROLES else "tool_result" if role in _TOOL_ROLES else "text"
    if len(msg) == 2 and "role" in msg and kind != "tool_result" and type(msg.get("content")) is str:  # the usual
        return Message(role, [TextPart(msg, "content", kind)])
    message = Message(role, _content_parts(msg, "content", kind))
    if kind == "tool_result":
        message.tool_results = [ToolResult(str_or_none(msg.get("tool_call_id")), str_or_none(msg.get("name")),
                                           msg, "content", list(message.parts))]
    calls = msg.get("tool_calls")
    if calls is not None:
        for call in _each(as_list(calls, "tool_calls"), "tool_calls", _chat_tool_call):
            message.add_call(call)
    legacy = msg.get("function_call")
    if legacy is not None:
        try:
            message.add_call(_chat_tool_call(legacy, legacy=True))
        except UnreadableBody as e:
            raise e.within("function_call") from None
    return message


def _response_item(item: Any) -> Message | None:
    item = need_dict(item)
    item_type = item.get("type")
    if item_type in ("function_call", "custom_tool_call"):
        call = _item_call(item)
        return Message("assistant", list(call.parts), tool_calls=[call])
    if item_type in ("function_call_output", "custom_tool_call_output"):
        parts = _content_parts(item, "output", "tool_result")
        return Message("tool", list(parts),
                       tool_results=[ToolResult(str_or_none(item.get("call_id")), None, item, "output", parts)])
    if "content" in item:
        role = item.get("role")
        role = role if type(role) is str else "user"
        return Message(role, _content_parts(item, "content", "system" if role in _SYSTEM_ROLES else "text"))
    return None


def _choice(choice: Any) -> Message:
    """One choice of a reply: a completion's text, or a chat message's content, refusal and tool calls."""
    choice = need_dict(choice)
    out = Message("assistant")
    if has_text(choice, "text"):
        out.parts.append(TextPart(choice, "text"))
    msg = as_dict(choice.get("message"), "message")
    if msg is None:
        return out
    try:
        out.parts.extend(_content_parts(msg, "content", "text"))
        if has_text(msg, "refusal"):
            out.parts.append(TextPart(msg, "refusal"))
        calls = msg.get("tool_calls")
        if calls is not None:
            for call in _each(as_list(calls, "tool_calls"), "tool_calls", _chat_tool_call):
                out.add_call(call)
        legacy = msg.get("function_call")  # the deprecated `functions` API's single call
        if legacy is not None:
            try:
                out.add_call(_chat_tool_call(legacy, legacy=True))
            except UnreadableBody as e:
                raise e.within("function_call") from None
    except UnreadableBody as e:
        raise e.within("message") from None
    return out


def _call_fragment(call: Any, position: int) -> ToolCall:
    """A piece of a streamed tool call: the first names the tool, the rest carry arguments."""
    call = need_dict(call)
    fn = as_dict(call.get("function"), "function") or {}
    try:
        parts = [TextPart(fn, "arguments", "tool_call")] if has_text(fn, "arguments") else []
    except UnreadableBody as e:
        raise e.within("function") from None
    index = call.get("index")
    return ToolCall(str_or_none(fn.get("name")), str_or_none(call.get("id")), fn, "arguments", parts,
                    index if isinstance(index, int) else position)


def _output_items(output: Any, where: str) -> tuple[list[TextPart], list[ToolCall]]:
    """Texts and tool calls of the Responses API's `output` items."""
    parts: list[TextPart] = []
    calls: list[ToolCall] = []
    for item in _each(as_list(output, where), where, _output_item):
        parts.extend(item.parts)
        calls.extend(item.tool_calls)
    return parts, calls


def _output_item(item: Any) -> Message:
    item = need_dict(item)
    out = Message("assistant")
    if item.get("type") in ("function_call", "custom_tool_call"):
        out.add_call(_item_call(item))
    content = item.get("content")
    if content is not None:
        out.parts.extend(p for c in _each(as_list(content, "content"), "content", _output_text) for p in c)
    return out


def _output_text(content: Any) -> list[TextPart]:
    content = need_dict(content)
    return [TextPart(content, "text")] if has_text(content, "text") else []


class OpenAIAdapter(Adapter):
    format = "openai"
    chat_endpoint = "chat.completions"
    error_types = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 407: "authentication_error", 413: "invalid_request_error",
                   429: "rate_limit_error", 500: "server_error", 502: "upstream_error",
                   503: "service_unavailable"}
    finish_in = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter",
                 "function_call": "tool_calls"}
    finish_out = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter"}

    def endpoint(self, method: str, path: str) -> str | None:
        if method != "POST":
            return None
        bare = path.split("?", 1)[0].rstrip("/")
        for suffix, name in _ENDPOINTS.items():
            if bare.endswith(suffix):
                return name
        return None

    # -- requests ---------------------------------------------------------------------------------
    def parse_request(self, endpoint: str, path: str, body: Any) -> CanonicalRequest:
        if endpoint == "chat.completions":
            messages = _each(as_list(body.get("messages"), "messages"), "messages", _chat_message)
        elif endpoint == "responses":
            messages = self._response_items(body)
        elif endpoint in ("embeddings", "completions"):
            messages = self._prompts(body, "input" if endpoint == "embeddings" else "prompt")
        else:
            messages = []
        max_tokens = int_or_none(body.get("max_completion_tokens")) or int_or_none(body.get("max_tokens")) \
            or int_or_none(body.get("max_output_tokens"))
        return CanonicalRequest(endpoint, str_or_none(body.get("model")), body.get("stream") is True, messages, body,
                                max_tokens, number_or_none(body.get("temperature")), number_or_none(body.get("top_p")),
                                strings(body.get("stop")), _tool_defs(body))

    @staticmethod
    def _response_items(body: dict[str, Any]) -> list[Message]:
        messages = []
        if has_text(body, "instructions"):
            messages.append(Message("system", [TextPart(body, "instructions", "system")]))
        items = body.get("input")
        if type(items) is str:
            return [*messages, Message("user", [TextPart(body, "input")])]
        return messages + [m for m in _each(as_list(items, "input"), "input", _response_item) if m is not None]

    @staticmethod
    def _prompts(body: dict[str, Any], key: str) -> list[Message]:
        value = body.get(key)
        if isinstance(value, str):
            return [Message("user", [TextPart(body, key)])]
        if isinstance(value, list):  # texts, or token ids (numbers, lists of numbers): no text in those
            return [Message("user", [TextPart(value, i) for i, v in enumerate(value) if isinstance(v, str)])]
        return []

    def prepare_upstream(self, request: CanonicalRequest) -> bool:
        """Chat streams report usage only when asked: ask, and remember to hide the extra chunk."""
        if request.endpoint != "chat.completions" or not request.stream:
            return False
        opts = request.body.get("stream_options")
        if isinstance(opts, dict) and opts.get("include_usage") is True:
            return False
        request.body["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
        return True

    def write_request(self, request: CanonicalRequest, model: str) -> tuple[dict[str, Any], str]:
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        for m in request.messages:
            if m.speaker == "system":
                continue
            messages.extend({"role": "tool", "tool_call_id": r.call_id or "", "content": r.text}
                            for r in m.tool_results)
            text = m.text
            if m.speaker == "assistant":
                if text or m.tool_calls:
                    msg: dict[str, Any] = {"role": "assistant", "content": text or None}
                    if m.tool_calls:
                        msg["tool_calls"] = [_wire_call(c) for c in m.tool_calls]
                    messages.append(msg)
            elif text or not m.tool_results:
                messages.append({"role": "user", "content": text})
        body: dict[str, Any] = {"model": model, "messages": messages}
        if request.max_tokens:
            body["max_tokens"] = request.max_tokens
        for key, value in (("temperature", request.temperature), ("top_p", request.top_p)):
            if value is not None:
                body[key] = value
        if request.stop:
            body["stop"] = request.stop
        tools = [t for t in request.tools if t.kind == "function" and t.name]
        if tools:
            body["tools"] = [{"type": "function", "function": {
                "name": t.name, "description": t.description,
                "parameters": t.parameters or {"type": "object", "properties": {}}}} for t in tools]
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body, "/v1/chat/completions"

    # -- replies ----------------------------------------------------------------------------------
    def parse_response(self, endpoint: str, body: Any) -> CanonicalResponse:
        out = CanonicalResponse(None, [], Usage())
        if not isinstance(body, dict):
            return out
        if endpoint in ("chat.completions", "completions"):
            choices = _each(as_list(body.get("choices"), "choices"), "choices", _choice)
            for choice in choices:
                out.parts.extend(choice.parts)
                out.tool_calls.extend(choice.tool_calls)
            out.finish = self.finish_from(body["choices"][0].get("finish_reason")) if choices else None
        elif endpoint == "responses":
            out.parts, out.tool_calls = _output_items(body.get("output"), "output")
        out.usage = self._usage(body.get("usage"))
        out.model = str_or_none(body.get("model"))
        return out

    @staticmethod
    def _usage(raw: Any) -> Usage:
        if not isinstance(raw, dict):
            return Usage()
        in_details = raw.get("prompt_tokens_details") or raw.get("input_tokens_details") or {}
        out_details = raw.get("completion_tokens_details") or raw.get("output_tokens_details") or {}
        return Usage(
            input_tokens=int_or_none(raw.get("prompt_tokens", raw.get("input_tokens"))),
            output_tokens=int_or_none(raw.get("completion_tokens", raw.get("output_tokens"))),
            cached_tokens=int_or_none(in_details.get("cached_tokens")) if isinstance(in_details, dict) else None,
            reasoning_tokens=int_or_none(out_details.get("reasoning_tokens"))
            if isinstance(out_details, dict) else None,
        )

    def write_response(self, response: CanonicalResponse, model: str) -> dict[str, Any]:
        calls = response.tool_calls
        msg: dict[str, Any] = {"role": "assistant", "content": response.text or (None if calls else "")}
        if calls:
            msg["tool_calls"] = [_wire_call(c) for c in calls]
        return {"id": new_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()),
                "model": model, "choices": [{"index": 0, "message": msg, "logprobs": None,
                                             "finish_reason": self.finish_out[response.finish or "stop"]}],
                "usage": _wire_usage(response.usage)}

    # -- streams ----------------------------------------------------------------------------------
    def parse_stream_event(self, endpoint: str, event_name: str | None, data: Any,
                           request: CanonicalRequest | None) -> StreamEvent:
        if not isinstance(data, dict):
            return StreamEvent()
        if endpoint == "responses":
            return self._response_event(data)
        out = StreamEvent()
        error = data.get("error")
        if isinstance(error, dict):
            out.error = str(error.get("message"))
        out.model = str_or_none(data.get("model"))
        choices = data.get("choices")
        for i, choice in enumerate(as_list(choices, "choices")):
            try:
                self._chunk_choice(need_dict(choice), out)
            except UnreadableBody as e:
                raise e.within(f"choices[{i}]") from None
        if data.get("usage"):
            out.usage = self._usage(data["usage"])
            out.internal = choices == []
        return out

    def _chunk_choice(self, choice: dict[str, Any], out: StreamEvent) -> None:
        if choice.get("finish_reason"):
            out.final = True
            out.finish = out.finish or self.finish_from(choice["finish_reason"])
        delta = as_dict(choice.get("delta"), "delta")
        if delta is None:
            if has_text(choice, "text"):
                out.parts.append(TextPart(choice, "text"))
            return
        try:
            if has_text(delta, "content"):
                out.parts.append(TextPart(delta, "content"))
            if has_text(delta, "refusal"):
                out.parts.append(TextPart(delta, "refusal"))
            legacy = as_dict(delta.get("function_call"), "function_call")
            if legacy is not None:  # the deprecated `functions` API: one call, named on its first fragment
                try:
                    parts = [TextPart(legacy, "arguments", "tool_call")] if has_text(legacy, "arguments") else []
                except UnreadableBody as e:
                    raise e.within("function_call") from None
                out.parts.extend(parts)
                out.tool_calls.append(ToolCall(str_or_none(legacy.get("name")), None, legacy, "arguments", parts,
                                               LEGACY_CALL))
            calls = delta.get("tool_calls")
            if calls is not None:
                for j, call in enumerate(as_list(calls, "tool_calls")):
                    try:
                        fragment = _call_fragment(call, j)
                    except UnreadableBody as e:
                        raise e.within(f"tool_calls[{j}]") from None
                    out.parts.extend(fragment.parts)
                    out.tool_calls.append(fragment)
        except UnreadableBody as e:
            raise e.within("delta") from None

    def _response_event(self, data: dict[str, Any]) -> StreamEvent:
        """One typed event of the Responses API."""
        out = StreamEvent()
        kind = data.get("type")
        if kind in _CALL_DONE or kind == "response.output_item.done" and isinstance(data.get("item"), dict) \
                and data["item"].get("type") in ("function_call", "custom_tool_call"):
            out.tool_calls_done.append(data.get("output_index"))
        elif kind in _RESPONSE_ENDS:
            out.tool_calls_done.append(EVERY_CALL)
        if kind in ("response.output_text.delta", "response.function_call_arguments.delta",
                    "response.custom_tool_call_input.delta") and has_text(data, "delta"):
            part = TextPart(data, "delta", "text" if kind == "response.output_text.delta" else "tool_call")
            out.parts.append(part)
            if part.kind == "tool_call":
                out.tool_calls.append(ToolCall(None, None, data, "delta", [part], data.get("output_index")))
        if kind == "response.output_text.done" and has_text(data, "text"):
            out.snapshots.append(TextPart(data, "text"))
        part_done = as_dict(data.get("part"), "part")
        if kind == "response.content_part.done" and part_done is not None:
            out.snapshots.extend(_output_text(part_done))
        item = as_dict(data.get("item"), "item")
        if kind == "response.output_item.added" and item is not None \
                and item.get("type") in ("function_call", "custom_tool_call"):
            out.tool_calls.append(ToolCall(str_or_none(item.get("name")), str_or_none(item.get("call_id")),
                                           index=data.get("output_index")))
        if kind == "response.output_item.done" and item is not None:
            try:
                out.snapshots.extend(_output_item(item).parts)
            except UnreadableBody as e:
                raise e.within("item") from None
        response = as_dict(data.get("response"), "response")
        if response is not None:
            try:
                out.snapshots.extend(_output_items(response.get("output"), "output")[0])
            except UnreadableBody as e:
                raise e.within("response") from None
            out.model = str_or_none(response.get("model"))
            if response.get("usage"):
                out.usage = self._usage(response["usage"])
        if kind in ("error", "response.failed"):
            out.error = str(data.get("message") or (response or {}).get("error") or kind)
        return out

    def event_writer(self, model: str) -> EventWriter:
        return OpenAIEventWriter(self, model)

    def error_body(self, status: int, message: str, code: str) -> dict[str, Any]:
        return {"error": {"message": message, "type": self.error_type(status), "param": None, "code": code}}


def _wire_call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id or new_id("call_"), "type": "function",
            "function": {"name": call.name or "", "arguments": call.arguments or "{}"}}


def _wire_usage(usage: Usage) -> dict[str, Any]:
    n_in, n_out = usage.input_tokens or 0, usage.output_tokens or 0
    out: dict[str, Any] = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
    if usage.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


class OpenAIEventWriter(EventWriter):
    """chat.completion.chunk events, a finish chunk, a usage chunk (always: the meter reads it, and the
    answer tap hides it from a client that did not ask), then [DONE]."""

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse({"id": "chatcmpl-" + self.id, "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": self.model, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                      "finish_reason": finish}]})

    def begin(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def text(self, text: str) -> bytes:
        return self._chunk({"content": text})

    def tool_start(self, position: int, call_id: str, name: str) -> bytes:
        return self._chunk({"tool_calls": [{"index": position, "id": call_id, "type": "function",
                                            "function": {"name": name, "arguments": ""}}]})

    def tool_arguments(self, position: int, fragment: str) -> bytes:
        return self._chunk({"tool_calls": [{"index": position, "function": {"arguments": fragment}}]})

    def end(self, finish: str, usage: Usage) -> bytes:
        usage_chunk = sse({"id": "chatcmpl-" + self.id, "object": "chat.completion.chunk",
                           "created": int(time.time()), "model": self.model, "choices": [],
                           "usage": _wire_usage(usage)})
        return self._chunk({}, self.adapter.finish_out[finish]) + usage_chunk + b"data: [DONE]\n\n"

