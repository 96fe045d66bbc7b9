"""OpenAI wire format: chat.completions, responses, embeddings, completions (and compatible hosts)."""

from __future__ import annotations

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
)

# Matched on the path's end so that prefixed compatible servers (/openai/deployments/x/...) work too.
_ENDPOINTS = {
    "/chat/completions": "chat.completions",
    "/responses": "responses",
    "/embeddings": "embeddings",
    "/completions": "completions",
}


def _content_parts(container: dict, key: str, kind: str) -> list[TextPart]:
    """`content` may be a string or a list of typed parts (text, input_text, output_text, ...)."""
    value = container.get(key)
    if isinstance(value, str):
        return [TextPart(container, key, kind)]
    parts = []
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                parts.append(TextPart(item, "text", kind))
            elif isinstance(item, str):
                parts.append(TextPart(value, value.index(item), kind))
    return parts


class OpenAIAdapter(Adapter):
    format = "openai"
    error_types = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 407: "authentication_error", 413: "invalid_request_error",
                   429: "rate_limit_error", 500: "server_error", 502: "upstream_error",
                   503: "service_unavailable"}

    def endpoint(self, method: str, path: str) -> str | None:
        if method != "POST":
            return None
        bare = path.split("?", 1)[0].rstrip("/")
        for suffix, name in _ENDPOINTS.items():
            if bare.endswith(suffix):
                return name
        return None

    def parse_request(self, endpoint: str, path: str, body: Any) -> CanonicalRequest:
        messages: list[Message] = []
        if endpoint == "chat.completions":
            for msg in body.get("messages") or []:
                if not isinstance(msg, dict):
                    continue
                role = str(msg.get("role", "user"))
                kind = "system" if role in ("system", "developer") else "tool_result" if role == "tool" else "text"
                parts = _content_parts(msg, "content", kind)
                for call in msg.get("tool_calls") or []:
                    fn = call.get("function") if isinstance(call, dict) else None
                    if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                        parts.append(TextPart(fn, "arguments", "tool_call"))
                messages.append(Message(role, parts))
        elif endpoint == "responses":
            if isinstance(body.get("instructions"), str):
                messages.append(Message("system", [TextPart(body, "instructions", "system")]))
            items = body.get("input")
            if isinstance(items, str):
                messages.append(Message("user", [TextPart(body, "input")]))
            for item in items if isinstance(items, list) else []:
                if not isinstance(item, dict):
                    continue
                item_type = item.get("type")
                if item_type == "function_call" and isinstance(item.get("arguments"), str):
                    messages.append(Message("assistant", [TextPart(item, "arguments", "tool_call")]))
                elif item_type == "function_call_output" and isinstance(item.get("output"), str):
                    messages.append(Message("tool", [TextPart(item, "output", "tool_result")]))
                elif "content" in item:
                    role = str(item.get("role", "user"))
                    kind = "system" if role in ("system", "developer") else "text"
                    messages.append(Message(role, _content_parts(item, "content", kind)))
        elif endpoint in ("embeddings", "completions"):
            key = "input" if endpoint == "embeddings" else "prompt"
            value = body.get(key)
            if isinstance(value, str):
                messages.append(Message("user", [TextPart(body, key)]))
            elif isinstance(value, list):
                messages.append(Message("user", [TextPart(value, i) for i, v in enumerate(value)
                                                  if isinstance(v, str)]))
        max_tokens = int_or_none(body.get("max_completion_tokens")) or int_or_none(body.get("max_tokens")) \
            or int_or_none(body.get("max_output_tokens"))
        model = body.get("model")
        return CanonicalRequest(endpoint, model if isinstance(model, str) else None, body.get("stream") is True,
                                messages, body, max_tokens)

    def prepare_upstream(self, request: CanonicalRequest) -> bool:
        """Chat streams report usage only when asked: ask, and remember to hide the extra chunk."""
        if request.endpoint != "chat.completions" or not request.stream:
            return False
        opts = request.body.get("stream_options")
        if isinstance(opts, dict) and opts.get("include_usage") is True:
            return False
        request.body["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
        return True

    def parse_response(self, endpoint: str, body: Any) -> CanonicalResponse:
        parts: list[TextPart] = []
        usage = Usage()
        if not isinstance(body, dict):
            return CanonicalResponse(None, parts, usage)
        if endpoint in ("chat.completions", "completions"):
            for choice in body.get("choices") or []:
                if not isinstance(choice, dict):
                    continue
                if isinstance(choice.get("text"), str):
                    parts.append(TextPart(choice, "text"))
                msg = choice.get("message")
                if isinstance(msg, dict):
                    parts.extend(_content_parts(msg, "content", "text"))
                    for call in msg.get("tool_calls") or []:
                        fn = call.get("function") if isinstance(call, dict) else None
                        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                            parts.append(TextPart(fn, "arguments", "tool_call"))
        elif endpoint == "responses":
            parts.extend(self._response_output_parts(body))
        usage = self._usage(body.get("usage"))
        model = body.get("model")
        return CanonicalResponse(model if isinstance(model, str) else None, parts, usage)

    @staticmethod
    def _response_output_parts(response: dict) -> list[TextPart]:
        parts: list[TextPart] = []
        for item in response.get("output") or []:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "function_call" and isinstance(item.get("arguments"), str):
                parts.append(TextPart(item, "arguments", "tool_call"))
            for content in item.get("content") or []:
                if isinstance(content, dict) and isinstance(content.get("text"), str):
                    parts.append(TextPart(content, "text"))
        return parts

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

    def parse_stream_event(self, endpoint: str, event_name: str | None, data: Any,
                           request: CanonicalRequest | None) -> StreamEvent:
        out = StreamEvent()
        if not isinstance(data, dict):
            return out
        if endpoint == "responses":
            kind = data.get("type")
            if kind in ("response.output_text.delta", "response.function_call_arguments.delta") \
                    and isinstance(data.get("delta"), str):
                out.parts.append(TextPart(data, "delta", "text" if "text" in kind else "tool_call"))
            if kind == "response.output_text.done" and isinstance(data.get("text"), str):
                out.snapshots.append(TextPart(data, "text"))
            part = data.get("part")
            if kind == "response.content_part.done" and isinstance(part, dict) and isinstance(part.get("text"), str):
                out.snapshots.append(TextPart(part, "text"))
            item = data.get("item")
            if kind == "response.output_item.done" and isinstance(item, dict):
                out.snapshots.extend(self._response_output_parts({"output": [item]}))
            response = data.get("response")
            if isinstance(response, dict):
                out.snapshots.extend(self._response_output_parts(response))
                out.model = response.get("model") if isinstance(response.get("model"), str) else None
                if response.get("usage"):
                    out.usage = self._usage(response["usage"])
            if kind in ("error", "response.failed"):
                out.error = str(data.get("message") or (response or {}).get("error") or kind)
            return out
        if isinstance(data.get("error"), dict):
            out.error = str(data["error"].get("message"))
        out.model = data.get("model") if isinstance(data.get("model"), str) else None
        choices = data.get("choices")
        for choice in choices or []:
            if isinstance(choice, dict) and choice.get("finish_reason"):
                out.final = True
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                if isinstance(delta.get("content"), str):
                    out.parts.append(TextPart(delta, "content"))
                for call in delta.get("tool_calls") or []:
                    fn = call.get("function") if isinstance(call, dict) else None
                    if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                        out.parts.append(TextPart(fn, "arguments", "tool_call"))
            elif isinstance(choice, dict) and isinstance(choice.get("text"), str):
                out.parts.append(TextPart(choice, "text"))
        if data.get("usage"):
            out.usage = self._usage(data["usage"])
            out.internal = choices == []
        return out

    def error_body(self, status: int, message: str, code: str) -> dict[str, Any]:
        return {"error": {"message": message, "type": self.error_type(status), "param": None, "code": code}}
