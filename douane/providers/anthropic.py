"""Anthropic wire format: /v1/messages (plain and SSE) and count_tokens. Reads and writes messages."""

from __future__ import annotations

import json
from typing import Any

from douane.providers.base import (
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
    string_leaves,
    strings,
)

# Blocks that call a tool: the caller's own (tool_use) and the ones Anthropic runs (kind = the block type).
_TOOL_USES = ("tool_use", "server_tool_use", "mcp_tool_use")
_TOOL_RESULTS = ("tool_result", "mcp_tool_result")


def _tool_call(block: dict[str, Any]) -> ToolCall:
    name = need_str(block.get("name"), "name")
    args = as_dict(block.get("input"), "input")
    kind = "function" if block.get("type") == "tool_use" else str(block.get("type"))
    return ToolCall(name, str_or_none(block.get("id")), block, "input", list(string_leaves(args, "tool_call")),
                    kind=kind)


def _read_blocks(container: dict[str, Any], key: str, kind: str, into: Message) -> None:
    """A `content`/`system` value (a string, or blocks: text, tool_use, tool_result, document, ...) into
    `into`: its texts, tool calls and tool results. (Text blocks inline: every message of every call.)"""
    value = container.get(key)
    if type(value) is str:
        into.parts.append(TextPart(container, key, kind))
        return
    if type(value) is not list:
        value = as_list(value, key)
    for i, block in enumerate(value):
        if type(block) is not dict:
            raise UnreadableBody(f"{key}[{i}]", "an object", block)
        text = block.get("text")
        if type(text) is str:
            into.parts.append(TextPart(block, "text", kind))
        elif text is not None:
            raise UnreadableBody(f"{key}[{i}].text", "a string", text)
        elif block.get("type") is not None:
            try:
                _read_other_block(block, kind, into)
            except UnreadableBody as e:
                raise e.within(f"{key}[{i}]") from None


def _read_other_block(block: dict[str, Any], kind: str, into: Message) -> None:
    btype = block.get("type")
    if btype in _TOOL_USES:
        into.add_call(_tool_call(block))
    elif btype in _TOOL_RESULTS:
        inner = Message("tool")
        _read_blocks(block, "content", "tool_result", inner)
        into.add_result(ToolResult(str_or_none(block.get("tool_use_id")), None, block, "content", inner.parts))
    elif btype == "document":  # a plain-text document is prompt text like any other
        source = as_dict(block.get("source"), "source")
        if source is None:
            return
        try:
            if source.get("type") == "text" and has_text(source, "data"):
                into.parts.append(TextPart(source, "data", kind))
            elif source.get("type") == "content":
                _read_blocks(source, "content", kind, into)
        except UnreadableBody as e:
            raise e.within("source") from None


def _usage(raw: Any) -> Usage | None:
    """Anthropic counts cache reads and writes apart from `input_tokens`: the input is their sum."""
    if not isinstance(raw, dict):
        return None
    base = int_or_none(raw.get("input_tokens"))
    cache_read = int_or_none(raw.get("cache_read_input_tokens"))
    cache_write = int_or_none(raw.get("cache_creation_input_tokens"))
    total_in = None if base is None else base + (cache_read or 0) + (cache_write or 0)
    return Usage(input_tokens=total_in, output_tokens=int_or_none(raw.get("output_tokens")),
                 cached_tokens=cache_read)


def _wire_usage(usage: Usage) -> dict[str, Any]:
    cached = usage.cached_tokens or 0
    out = {"input_tokens": max(0, (usage.input_tokens or 0) - cached), "output_tokens": usage.output_tokens or 0}
    if usage.cached_tokens is not None:
        out["cache_read_input_tokens"] = cached
    return out


def _wire_tool_use(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id or new_id("toolu_"), "name": call.name or "",
            "input": call.arguments_object()}


class AnthropicAdapter(Adapter):
    format = "anthropic"
    chat_endpoint = "messages"
    error_types = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 407: "authentication_error", 413: "request_too_large",
                   429: "rate_limit_error", 500: "api_error", 502: "api_error", 503: "overloaded_error"}
    finish_in = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                 "refusal": "content_filter", "pause_turn": "stop", "model_context_window_exceeded": "length"}
    finish_out = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}

    def endpoint(self, method: str, path: str) -> str | None:
        bare = path.split("?", 1)[0].rstrip("/")
        if method != "POST":
            return None
        if bare.endswith("/messages/count_tokens"):
            return "count_tokens"
        if bare.endswith("/messages"):
            return "messages"
        return None

    # -- requests ---------------------------------------------------------------------------------
    def parse_request(self, endpoint: str, path: str, body: Any) -> CanonicalRequest:
        messages: list[Message] = []
        if "system" in body:
            system = Message("system")
            _read_blocks(body, "system", "system", system)
            messages.append(system)
        for i, msg in enumerate(as_list(body.get("messages"), "messages")):
            if type(msg) is not dict:
                raise UnreadableBody(f"messages[{i}]", "an object", msg)
            role = msg.get("role")
            message = Message(role if type(role) is str else "user", [])
            try:
                _read_blocks(msg, "content", "text", message)
            except UnreadableBody as e:
                raise e.within(f"messages[{i}]") from None
            messages.append(message)
        return CanonicalRequest(endpoint, str_or_none(body.get("model")), body.get("stream") is True, messages, body,
                                int_or_none(body.get("max_tokens")), number_or_none(body.get("temperature")),
                                number_or_none(body.get("top_p")), strings(body.get("stop_sequences")),
                                self._tools(body))

    @staticmethod
    def _tools(body: dict[str, Any]) -> list[ToolDef]:
        """The caller's tools (with an input_schema; type absent or "custom") and Anthropic's own (typed)."""
        defs = []
        for i, tool in enumerate(as_list(body.get("tools"), "tools")):
            tool = need_dict(tool, f"tools[{i}]")
            schema = tool.get("input_schema")
            kind = tool.get("type")
            defs.append(ToolDef(str_or_none(tool.get("name")), str_or_none(tool.get("description")) or "",
                                schema if isinstance(schema, dict) else None,
                                "function" if kind in (None, "custom") else str(kind)))
        return defs

    def write_request(self, request: CanonicalRequest, model: str) -> tuple[dict[str, Any], str]:
        messages: list[dict[str, Any]] = []

        def add(role: str, blocks: list[dict[str, Any]]) -> None:
            if messages and messages[-1]["role"] == role:  # Anthropic wants turns to alternate
                messages[-1]["content"].extend(blocks)
            else:
                messages.append({"role": role, "content": blocks})

        for m in request.messages:
            if m.speaker == "system":
                continue
            if m.tool_results:
                add("user", [{"type": "tool_result", "tool_use_id": r.call_id or "", "content": r.text}
                             for r in m.tool_results])
            text = m.text
            if m.speaker == "assistant":
                blocks = [{"type": "text", "text": text}] if text else []
                blocks += [_wire_tool_use(c) for c in m.tool_calls if c.kind == "function"]
                if blocks:
                    add("assistant", blocks)
            elif text or not m.tool_results:
                add("user", [{"type": "text", "text": text}])
        body: dict[str, Any] = {"model": model, "max_tokens": request.max_tokens or 4096, "messages": messages}
        if request.system:
            body["system"] = request.system
        # temperature and top_p are not written: Anthropic deprecated them, its SDK no longer sends them,
        # and its models after Opus 4.6 answer 400 to them; every model falls back to its default.
        if request.stop:
            body["stop_sequences"] = request.stop
        tools = [t for t in request.tools if t.kind == "function" and t.name]
        if tools:
            body["tools"] = [{"name": t.name, "description": t.description,
                              "input_schema": t.parameters or {"type": "object", "properties": {}}} for t in tools]
        if request.stream:
            body["stream"] = True
        return body, "/v1/messages"

    # -- replies ----------------------------------------------------------------------------------
    def parse_response(self, endpoint: str, body: Any) -> CanonicalResponse:
        if not isinstance(body, dict):
            return CanonicalResponse(None, [], Usage())
        reply = Message("assistant")
        _read_blocks(body, "content", "text", reply)
        return CanonicalResponse(str_or_none(body.get("model")), reply.parts, _usage(body.get("usage")) or Usage(),
                                 list(reply.tool_calls), self.finish_from(body.get("stop_reason")))

    def write_response(self, response: CanonicalResponse, model: str) -> dict[str, Any]:
        text = response.text
        calls = [c for c in response.tool_calls if c.kind == "function"]
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text or not calls else []
        content += [_wire_tool_use(c) for c in calls]
        return {"id": new_id("msg_"), "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": self.finish_out[response.finish or "stop"], "stop_sequence": None,
                "usage": _wire_usage(response.usage)}

    # -- streams ----------------------------------------------------------------------------------
    def parse_stream_event(self, endpoint: str, event_name: str | None, data: Any,
                           request: CanonicalRequest | None) -> StreamEvent:
        out = StreamEvent()
        if not isinstance(data, dict):
            return out
        kind = data.get("type") or event_name
        index = data.get("index")
        if kind == "message_start":
            message = as_dict(data.get("message"), "message")
            if message is not None:
                out.model = str_or_none(message.get("model"))
                out.usage = _usage(message.get("usage"))
        elif kind == "content_block_delta":
            try:
                self._delta(as_dict(data.get("delta"), "") or {}, index, out)
            except UnreadableBody as e:
                raise e.within("delta") from None
        elif kind == "content_block_start":
            try:
                self._block_start(as_dict(data.get("content_block"), "") or {}, index, out)
            except UnreadableBody as e:
                raise e.within("content_block") from None
        elif kind == "message_delta":
            delta = as_dict(data.get("delta"), "delta") or {}
            out.finish = self.finish_from(delta.get("stop_reason"))
            usage = data.get("usage")
            if isinstance(usage, dict):
                # output_tokens here is cumulative; input figures appear only when the server repeats them.
                out.usage = _usage(usage) if int_or_none(usage.get("input_tokens")) is not None \
                    else Usage(output_tokens=int_or_none(usage.get("output_tokens")))
        elif kind == "error":
            err = data.get("error")
            out.error = str(err.get("message") if isinstance(err, dict) else err)
        return out

    @staticmethod
    def _delta(delta: dict[str, Any], index: Any, out: StreamEvent) -> None:
        if has_text(delta, "text"):
            out.parts.append(TextPart(delta, "text"))
        elif has_text(delta, "partial_json"):
            part = TextPart(delta, "partial_json", "tool_call")
            out.parts.append(part)
            out.tool_calls.append(ToolCall(None, None, delta, "partial_json", [part], index))

    @staticmethod
    def _block_start(block: dict[str, Any], index: Any, out: StreamEvent) -> None:
        if has_text(block, "text"):
            if block["text"]:
                out.parts.append(TextPart(block, "text"))
        elif block.get("type") in _TOOL_USES:
            call = _tool_call(block)
            if not block.get("input"):  # the arguments follow as input_json_delta fragments
                call.container = None
            call.index = index
            out.parts.extend(call.parts)
            out.tool_calls.append(call)

    def event_writer(self, model: str) -> EventWriter:
        return AnthropicEventWriter(self, model)

    def error_body(self, status: int, message: str, code: str) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.error_type(status), "message": message}}

    def error_event(self, status: int, message: str, code: str) -> bytes:
        return b"event: error\ndata: " + json.dumps(self.error_body(status, message, code)).encode() + b"\n\n"


class AnthropicEventWriter(EventWriter):
    """message_start, one content block per text run or tool call, message_delta (stop reason and
    usage), message_stop."""

    def __init__(self, adapter: Adapter, model: str):
        super().__init__(adapter, model)
        self._open: str | None = None  # the kind of the open content block
        self._blocks = 0

    def begin(self) -> bytes:
        return sse({"type": "message_start", "message": {
            "id": "msg_" + self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}},
            "message_start")

    def _start_block(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._open = kind
        return out + sse({"type": "content_block_start", "index": self._blocks, "content_block": block},
                         "content_block_start")

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        self._blocks += 1
        return sse({"type": "content_block_stop", "index": self._blocks - 1}, "content_block_stop")

    def text(self, text: str) -> bytes:
        out = b"" if self._open == "text" else self._start_block("text", {"type": "text", "text": ""})
        return out + sse({"type": "content_block_delta", "index": self._blocks,
                          "delta": {"type": "text_delta", "text": text}}, "content_block_delta")

    def tool_start(self, position: int, call_id: str, name: str) -> bytes:
        return self._start_block("tool", {"type": "tool_use", "id": call_id, "name": name, "input": {}})

    def tool_arguments(self, position: int, fragment: str) -> bytes:
        return sse({"type": "content_block_delta", "index": self._blocks,
                    "delta": {"type": "input_json_delta", "partial_json": fragment}}, "content_block_delta")

    def end(self, finish: str, usage: Usage) -> bytes:
        return self._close_block() + sse(
            {"type": "message_delta", "delta": {"stop_reason": self.adapter.finish_out[finish], "stop_sequence": None},
             "usage": _wire_usage(usage)}, "message_delta") + sse({"type": "message_stop"}, "message_stop")
