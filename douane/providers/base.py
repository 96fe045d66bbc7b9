"""The canonical shape every wire format is read into, and the adapter interface.

A TextPart points into the parsed JSON body, so a guard can rewrite one text in place and the
adapter's body is re-serialized with nothing else disturbed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(slots=True)  # a long chat makes a hundred of these per call
class TextPart:
    container: Any
    key: Any
    kind: str = "text"  # text | system | tool_call | tool_result

    @property
    def text(self) -> str:
        value = self.container[self.key]
        return value if isinstance(value, str) else ""

    def replace(self, new: str) -> None:
        self.container[self.key] = new


@dataclass(slots=True)
class Message:
    role: str
    parts: list[TextPart] = field(default_factory=list)


@dataclass
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None

    def update(self, other: Usage | None) -> None:
        """Take every figure the other report has; later reports in a stream are cumulative."""
        if other is None:
            return
        for name in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"):
            value = getattr(other, name)
            if value is not None:
                setattr(self, name, value)


@dataclass
class CanonicalRequest:
    endpoint: str
    model: str | None
    stream: bool
    messages: list[Message]
    body: Any
    max_tokens: int | None = None

    def text_parts(self) -> Iterator[TextPart]:
        for message in self.messages:
            yield from message.parts


@dataclass
class CanonicalResponse:
    model: str | None
    parts: list[TextPart]
    usage: Usage


@dataclass
class StreamEvent:
    """What one SSE event of a reply carries: text deltas (rewritable), usage, or nothing of note."""

    parts: list[TextPart] = field(default_factory=list)
    usage: Usage | None = None
    model: str | None = None
    error: str | None = None
    internal: bool = False  # added by douane upstream (e.g. a usage chunk the client did not ask for)
    final: bool = False  # the last event that carries text: anything held back must go out with it
    snapshots: list[TextPart] = field(default_factory=list)  # whole texts repeated (Responses API)


class Adapter:
    """One wire format. Subclasses are stateless; per-call facts live in the canonical objects."""

    format: ClassVar[str]
    error_types: ClassVar[dict[int, str]]

    def endpoint(self, method: str, path: str) -> str | None:
        """The endpoint name for a method and path (query included), None when not an LLM call."""
        raise NotImplementedError

    def parse_request(self, endpoint: str, path: str, body: Any) -> CanonicalRequest:
        raise NotImplementedError

    def prepare_upstream(self, request: CanonicalRequest) -> bool:
        """Adjust the body before it leaves (e.g. ask for stream usage); True when the body changed."""
        return False

    def parse_response(self, endpoint: str, body: Any) -> CanonicalResponse:
        raise NotImplementedError

    def parse_stream_event(self, endpoint: str, event_name: str | None, data: Any,
                           request: CanonicalRequest | None) -> StreamEvent:
        raise NotImplementedError

    def error_body(self, status: int, message: str, code: str) -> dict[str, Any]:
        raise NotImplementedError

    def error_event(self, status: int, message: str, code: str) -> bytes:
        """An SSE event that ends a stream with an error the provider's SDK understands."""
        return b"data: " + json.dumps(self.error_body(status, message, code)).encode() + b"\n\n"

    def error_type(self, status: int) -> str:
        if status in self.error_types:
            return self.error_types[status]
        return self.error_types[500] if status >= 500 else self.error_types[400]


def int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def string_leaves(obj: Any, kind: str) -> Iterator[TextPart]:
    """Every string inside nested JSON (tool arguments, tool results) as rewritable parts."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, str):
                yield TextPart(obj, key, kind)
            else:
                yield from string_leaves(value, kind)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            if isinstance(value, str):
                yield TextPart(obj, i, kind)
            else:
                yield from string_leaves(value, kind)
