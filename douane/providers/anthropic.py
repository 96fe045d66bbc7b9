"""Anthropic wire format: /v1/messages (plain and SSE) and count_tokens."""

from __future__ import annotations

import json
from typing import Any

from douane.providers.base import (
    Adapter,
    CanonicalRequest,
    CanonicalResponse,
    Message,
    StreamEvent,
    TextPart,
    Usage,
    int_or_none,
    string_leaves,
)


def _blocks(container: dict, key: str, kind: str) -> list[TextPart]:
    """Text of a `content`/`system` value: a string, or blocks (text, tool_use, tool_result, ...)."""
    value = container.get(key)
    if isinstance(value, str):
        return [TextPart(container, key, kind)]
    parts: list[TextPart] = []
    for block in value if isinstance(value, list) else []:
        if not isinstance(block, dict):
            continue
        btype = block.get("type")
        if isinstance(block.get("text"), str):
            parts.append(TextPart(block, "text", kind))
        elif btype == "tool_use":
            parts.extend(string_leaves(block.get("input"), "tool_call"))
        elif btype == "tool_result":
            parts.extend(_blocks(block, "content", "tool_result"))
    return parts


class AnthropicAdapter(Adapter):
    format = "anthropic"
    error_types = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 407: "authentication_error", 413: "request_too_large",
                   429: "rate_limit_error", 500: "api_error", 502: "api_error", 503: "overloaded_error"}

    def endpoint(self, method: str, path: str) -> str | None:
        bare = path.split("?", 1)[0].rstrip("/")
        if method != "POST":
            return None
        if bare.endswith("/messages/count_tokens"):
            return "count_tokens"
        if bare.endswith("/messages"):
            return "messages"
        return None

    def parse_request(self, endpoint: str, path: str, body: Any) -> CanonicalRequest:
        messages: list[Message] = []
        if "system" in body:
            messages.append(Message("system", _blocks(body, "system", "system")))
        for msg in body.get("messages") or []:
            if isinstance(msg, dict):
                messages.append(Message(str(msg.get("role", "user")), _blocks(msg, "content", "text")))
        model = body.get("model")
        return CanonicalRequest(endpoint, model if isinstance(model, str) else None, body.get("stream") is True,
                                messages, body, int_or_none(body.get("max_tokens")))

    @staticmethod
    def _usage(raw: Any) -> Usage | None:
        if not isinstance(raw, dict):
            return None
        base = int_or_none(raw.get("input_tokens"))
        cache_read = int_or_none(raw.get("cache_read_input_tokens"))
        cache_write = int_or_none(raw.get("cache_creation_input_tokens"))
        total_in = None if base is None else base + (cache_read or 0) + (cache_write or 0)
        return Usage(input_tokens=total_in, output_tokens=int_or_none(raw.get("output_tokens")),
                     cached_tokens=cache_read)

    def parse_response(self, endpoint: str, body: Any) -> CanonicalResponse:
        if not isinstance(body, dict):
            return CanonicalResponse(None, [], Usage())
        model = body.get("model")
        return CanonicalResponse(model if isinstance(model, str) else None, _blocks(body, "content", "text"),
                                 self._usage(body.get("usage")) or Usage())

    def parse_stream_event(self, endpoint: str, event_name: str | None, data: Any,
                           request: CanonicalRequest | None) -> StreamEvent:
        out = StreamEvent()
        if not isinstance(data, dict):
            return out
        kind = data.get("type") or event_name
        if kind == "message_start" and isinstance(data.get("message"), dict):
            message = data["message"]
            out.model = message.get("model") if isinstance(message.get("model"), str) else None
            out.usage = self._usage(message.get("usage"))
        elif kind == "content_block_delta" and isinstance(data.get("delta"), dict):
            delta = data["delta"]
            if isinstance(delta.get("text"), str):
                out.parts.append(TextPart(delta, "text"))
            elif isinstance(delta.get("partial_json"), str):
                out.parts.append(TextPart(delta, "partial_json", "tool_call"))
        elif kind == "content_block_start" and isinstance(data.get("content_block"), dict):
            block = data["content_block"]
            if isinstance(block.get("text"), str) and block["text"]:
                out.parts.append(TextPart(block, "text"))
        elif kind == "message_delta":
            usage = data.get("usage")
            if isinstance(usage, dict):
                # output_tokens here is cumulative; input figures appear only when the server repeats them.
                out.usage = Usage(output_tokens=int_or_none(usage.get("output_tokens")))
                if int_or_none(usage.get("input_tokens")) is not None:
                    full = self._usage(usage)
                    out.usage.input_tokens = full.input_tokens if full else None
        elif kind == "error":
            err = data.get("error")
            out.error = str(err.get("message") if isinstance(err, dict) else err)
        return out

    def error_body(self, status: int, message: str, code: str) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.error_type(status), "message": message}}

    def error_event(self, status: int, message: str, code: str) -> bytes:
        return b"event: error\ndata: " + json.dumps(self.error_body(status, message, code)).encode() + b"\n\n"
