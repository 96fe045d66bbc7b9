"""Translation between wire formats (OpenAI chat, Anthropic messages, Gemini), for routes and
fallbacks that cross providers: requests, plain replies, and streams event by event.

Nothing here reads or writes a wire format: the source format's adapter reads the body into the
canonical model (the very reading the guards use) and the target format's adapter writes it. What
the target cannot express is dropped (images, provider-specific options, the provider's own tools).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from douane.providers import (
    CanonicalRequest,
    CanonicalResponse,
    StreamEvent,
    ToolCall,
    UnreadableBody,
    Untranslatable,
    Usage,
    adapter_for,
)

# Endpoints whose requests and replies translate between formats.
CHAT_ENDPOINTS = frozenset({"chat.completions", "messages", "generateContent", "streamGenerateContent"})


# -- requests -----------------------------------------------------------------------------------


def request(source_fmt: str, endpoint: str, path: str, body: dict[str, Any], target_fmt: str,
            model: str) -> tuple[dict[str, Any], str]:
    """The client's request (as the guards left it) written for `model` in the target format: (body, path)."""
    if endpoint not in CHAT_ENDPOINTS:
        raise Untranslatable(f"{source_fmt} {endpoint} has no counterpart in {target_fmt}")
    canonical = adapter_for(source_fmt).parse_request(endpoint, path, body)
    pair_tool_calls(canonical)
    return write_request(target_fmt, canonical, model)


def read_request(fmt: str, body: dict[str, Any], model: str | None = None, stream: bool = False) -> CanonicalRequest:
    """A chat request of `fmt`; Gemini's model and streaming are in its path, given here."""
    adapter = adapter_for(fmt)
    endpoint = "streamGenerateContent" if fmt == "gemini" and stream else adapter.chat_endpoint
    canonical = adapter.parse_request(endpoint, f"/v1beta/models/{model or '-'}:{endpoint}", body)
    pair_tool_calls(canonical)
    return canonical


def write_request(fmt: str, request: CanonicalRequest, model: str) -> tuple[dict[str, Any], str]:
    return adapter_for(fmt).write_request(request, model)


def pair_tool_calls(request: CanonicalRequest) -> None:
    """OpenAI and Anthropic pair each tool result with its call by id; Gemini may give neither an id.
    A call without one gets one, and a result without one takes the id of the earliest unanswered
    call of the same tool."""
    unanswered: dict[str | None, list[str]] = {}
    made = 0
    for message in request.messages:
        for call in message.tool_calls:
            if call.id is None:
                made += 1
                call.id = f"call_douane_{made}"
            unanswered.setdefault(call.name, []).append(call.id)
        for result in message.tool_results:
            if result.call_id is not None:
                for waiting in unanswered.values():
                    if result.call_id in waiting:
                        waiting.remove(result.call_id)
            elif unanswered.get(result.name):
                result.call_id = unanswered[result.name].pop(0)
            else:
                made += 1
                result.call_id = f"call_douane_{made}"


# -- plain replies ------------------------------------------------------------------------------


def read_reply(fmt: str, body: Any) -> CanonicalResponse:
    adapter = adapter_for(fmt)
    return adapter.parse_response(adapter.chat_endpoint, body)


def write_reply(fmt: str, reply: CanonicalResponse, model: str) -> dict[str, Any]:
    return adapter_for(fmt).write_response(reply, model)


def reply(source_fmt: str, body: Any, client_fmt: str, model: str) -> dict[str, Any]:
    """A plain reply of the source format's chat endpoint, written in the client's format."""
    return write_reply(client_fmt, read_reply(source_fmt, body), model)


# -- streams ------------------------------------------------------------------------------------


class StreamReader:
    """The events of a source format's stream, read by its adapter; one that cannot be read reads as
    an error (which ends the translated stream: nothing of it goes out)."""

    def __init__(self, fmt: str):
        self.adapter = adapter_for(fmt)

    def feed(self, data: Any, event_name: str | None = None) -> Iterator[StreamEvent]:
        if not isinstance(data, dict):
            return
        try:
            yield self.adapter.parse_stream_event(self.adapter.chat_endpoint, event_name, data, None)
        except UnreadableBody as e:
            yield StreamEvent(error=f"douane cannot read the upstream's stream event: {e}")


class StreamWriter:
    """Canonical stream events written in the client's format as they come; `close()` ends the stream.

    Tool calls are numbered in the order they start (a call's fragments carry the wire's own key: an
    OpenAI index, an Anthropic content block); an error ends the stream with the client's own error
    event, and nothing follows it."""

    def __init__(self, fmt: str, model: str):
        self.out = adapter_for(fmt).event_writer(model)
        self.usage = Usage()
        self.finish: str | None = None
        self.started = False
        self.ended = False
        self._calls = 0
        self._positions: dict[Any, int | None] = {}  # wire key -> position (None: a provider's own tool)

    def write(self, event: StreamEvent) -> bytes:
        if self.ended:
            return b""
        out = [b""] if self.started else [self.out.begin()]
        self.started = True
        if event.text:
            out.append(self.out.text(event.text))
        out.extend(self._tool_call(call) for call in event.tool_calls)
        self.usage.update(event.usage)
        self.finish = event.finish or self.finish
        if event.error is not None:
            self.ended = True
            out.append(self.out.error(event.error))
        return b"".join(out)

    def _tool_call(self, call: ToolCall) -> bytes:
        key = call.index
        if key is None or key not in self._positions:  # a new call
            position = None
            if call.kind == "function":
                position, self._calls = self._calls, self._calls + 1
            if key is not None:
                self._positions[key] = position
            if position is None:
                return b""
            start = self.out.tool_start(position, call.id or f"call_douane_{position + 1}", call.name or "")
        else:
            position = self._positions[key]
            if position is None:
                return b""
            start = b""
        fragment = call.arguments
        return start + self.out.tool_arguments(position, fragment) if fragment else start

    def close(self) -> bytes:
        """The end of the stream (nothing more after an error)."""
        if self.ended:
            return b""
        self.ended = True
        out = b"" if self.started else self.out.begin()
        finish = self.finish or "stop"
        if self._calls and finish == "stop":
            finish = "tool_calls"
        return out + self.out.end(finish, self.usage)
