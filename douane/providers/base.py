"""The canonical shape every wire format is read into and written from, and the adapter interface.

Each format has one adapter, and the adapter is its only reader and writer: the guards read bodies
through it, and translation between formats reads with one adapter and writes with another.

A TextPart points into the parsed JSON body, so a guard can rewrite one text in place and the
adapter's body is re-serialized with nothing else disturbed. Tool calls and tool results point into
the body the same way, so what translation writes is the body as the guards left it.

A body whose shape the adapter cannot read (a list where the API documents an object, a number
where it documents text) raises UnreadableBody: douane refuses what it cannot inspect.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

# Canonical finish reasons; each adapter maps its own to and from these.
FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter")

_ROLES = {"system": "system", "developer": "system", "assistant": "assistant", "model": "assistant",
          "tool": "tool", "function": "tool"}
_MESSAGE_KINDS = ("text", "system")


class UnreadableBody(ValueError):
    """A body whose shape is not the one the provider documents, at a named place in it."""

    def __init__(self, where: str, expected: str, got: Any):
        self.where = where
        self.problem = f"expected {expected}, got {_json_type(got)}"
        super().__init__(f"{where}: {self.problem}")

    def within(self, outer: str) -> UnreadableBody:
        """The same problem placed from further out: readers name places relative to what they read,
        and each level adds its own (`messages[3]` + `content[0].text`) only when one is raised."""
        inner = self.where
        moved = UnreadableBody.__new__(UnreadableBody)
        moved.where = outer if not inner else outer + inner if inner.startswith("[") else f"{outer}.{inner}"
        moved.problem = self.problem
        moved.args = (f"{moved.where}: {moved.problem}",)
        return moved


class UnknownFormat(ValueError):
    """A wire format no adapter speaks (a policy or a plan naming one is a bug, never a fallback)."""


class Untranslatable(ValueError):
    """A call that cannot be written in another format (an endpoint with no counterpart)."""


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else "a number"


# -- reading shapes: each returns what is there, or raises UnreadableBody naming the place ----------


def as_list(value: Any, where: str, single: bool = False) -> list[Any]:
    """A list (absent or null: empty); `single`: one object stands for a list of one (Gemini)."""
    if value is None:
        return []
    if type(value) is list:
        return value
    if single and type(value) is dict:
        return [value]
    raise UnreadableBody(where, "a list", value)


def as_dict(value: Any, where: str) -> dict[str, Any] | None:
    """An object, or None when absent or null."""
    if value is None or type(value) is dict:
        return value
    raise UnreadableBody(where, "an object", value)


def need_dict(value: Any, where: str = "") -> dict[str, Any]:
    """An object where one must be (an element of a list)."""
    if type(value) is dict:
        return value
    raise UnreadableBody(where, "an object", value)


def need_str(value: Any, where: str) -> str:
    """Text where text must be (the name of a tool a call names)."""
    if type(value) is str:
        return value
    raise UnreadableBody(where, "a string", value)


def has_text(container: dict[str, Any], key: str) -> bool:
    """Whether `container[key]` is text; absent or null is no text, anything else is unreadable."""
    value = container.get(key)
    if value is None:
        return False
    if type(value) is str:
        return True
    raise UnreadableBody(key, "a string", value)


def str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def number_or_none(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def strings(value: Any) -> list[str]:
    """Stop sequences: one string or a list of them; anything else is none."""
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


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


def json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


# -- the canonical model ------------------------------------------------------------------------


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
class ToolCall:
    """A call of a tool by the model: in a request's history, in an answer, or a fragment of one in a
    stream. The arguments stay in the body (`container[key]`): JSON text (OpenAI) or an object
    (Anthropic, Gemini); their strings are also `parts` of the message, where the guards see them."""

    name: str | None
    id: str | None = None
    container: Any = None
    key: Any = None
    parts: list[TextPart] = field(default_factory=list)
    index: Any = None  # streams: the wire's key of the call a fragment belongs to; None: a whole call
    kind: str = "function"  # the caller's own tool; else the provider's (server_tool_use, mcp_tool_use, ...)

    @property
    def arguments(self) -> str:
        """The arguments as JSON text (in a stream: this fragment of it); objects as json.dumps writes them."""
        value = None if self.container is None else self.container.get(self.key)
        if isinstance(value, str):
            return value
        return "" if value is None else json.dumps(value)

    def arguments_object(self) -> dict[str, Any]:
        """The arguments as an object, for formats that carry one; text that is not a JSON object is
        kept whole under "arguments" rather than lost."""
        value = None if self.container is None else self.container.get(self.key)
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except ValueError:
                return {"arguments": value}
        if value is None:
            return {}
        return value if isinstance(value, dict) else {"arguments": value}


@dataclass(slots=True)
class ToolResult:
    """What a tool returned, sent back to the model: `container[key]` holds text, content blocks, or an
    object (Gemini); its strings are `parts` of the message."""

    call_id: str | None
    name: str | None
    container: Any = None
    key: Any = None
    parts: list[TextPart] = field(default_factory=list)

    @property
    def text(self) -> str:
        value = None if self.container is None else self.container.get(self.key)
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return "".join(p.text for p in self.parts)
        if isinstance(value, dict):
            content = value.get("content")
            return content if isinstance(content, str) else json.dumps(value)
        return ""


@dataclass(slots=True)
class ToolDef:
    """A tool the request offers the model. `kind` is "function" for the caller's own tools, else the
    provider's built-in tool (web_search, code_execution, ...), which no other format can run."""

    name: str | None
    description: str = ""
    parameters: dict[str, Any] | None = None  # JSON schema of the arguments
    kind: str = "function"


@dataclass(slots=True)
class Message:
    role: str  # as on the wire: system, developer, user, assistant, model, tool, function
    parts: list[TextPart] = field(default_factory=list)  # every text in it, tool calls' and results' too
    # most messages have neither: empty tuples cost nothing to make (a long chat makes many messages)
    tool_calls: Sequence[ToolCall] = ()
    tool_results: Sequence[ToolResult] = ()

    @property
    def speaker(self) -> str:
        """system | user | assistant | tool, whatever the format calls it."""
        return _ROLES.get(self.role, "user")

    @property
    def text(self) -> str:
        """The message's own text (not its tool calls' or results')."""
        return "".join(p.text for p in self.parts if p.kind in _MESSAGE_KINDS)

    def add_call(self, call: ToolCall) -> None:
        """A tool call, its arguments' texts among the parts."""
        self.tool_calls = [*self.tool_calls, call]
        self.parts.extend(call.parts)

    def add_result(self, result: ToolResult) -> None:
        """A tool result, its texts among the parts."""
        self.tool_results = [*self.tool_results, result]
        self.parts.extend(result.parts)


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
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    tools: list[ToolDef] = field(default_factory=list)

    def text_parts(self) -> Iterator[TextPart]:
        for message in self.messages:
            yield from message.parts

    def tool_calls(self) -> Iterator[ToolCall]:
        """Every tool call in the history."""
        for message in self.messages:
            yield from message.tool_calls

    @property
    def system(self) -> str:
        return "\n\n".join(t for m in self.messages if m.speaker == "system" and (t := m.text))


@dataclass
class CanonicalResponse:
    model: str | None
    parts: list[TextPart]
    usage: Usage
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish: str | None = None  # one of FINISH_REASONS

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if p.kind == "text")


@dataclass
class StreamEvent:
    """What one SSE event of a reply carries: text deltas (rewritable), tool-call fragments, usage,
    the finish reason, or nothing of note."""

    parts: list[TextPart] = field(default_factory=list)
    usage: Usage | None = None
    model: str | None = None
    error: str | None = None
    internal: bool = False  # added by douane upstream (e.g. a usage chunk the client did not ask for)
    final: bool = False  # the last event that carries text: anything held back must go out with it
    snapshots: list[TextPart] = field(default_factory=list)  # whole texts repeated (Responses API)
    tool_calls: list[ToolCall] = field(default_factory=list)  # the first fragment of each names the tool
    finish: str | None = None  # one of FINISH_REASONS

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if p.kind == "text")


class EventWriter:
    """Writes a stream in one format from canonical pieces, for a translated answer: `begin` once,
    then text and tool calls in order, then `end` (or `error`, which ends it too)."""

    def __init__(self, adapter: Adapter, model: str):
        self.adapter = adapter
        self.model = model
        self.id = uuid.uuid4().hex[:24]

    def begin(self) -> bytes:
        return b""

    def text(self, text: str) -> bytes:
        raise NotImplementedError

    def tool_start(self, position: int, call_id: str, name: str) -> bytes:
        raise NotImplementedError

    def tool_arguments(self, position: int, fragment: str) -> bytes:
        raise NotImplementedError

    def error(self, message: str) -> bytes:
        """The upstream's error, in the provider's own error event."""
        return self.adapter.error_event(502, message, "upstream_error")

    def end(self, finish: str, usage: Usage) -> bytes:
        raise NotImplementedError


def sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json_text(data)}\n\n".encode()


class Adapter:
    """One wire format. Subclasses are stateless; per-call facts live in the canonical objects."""

    format: ClassVar[str]
    chat_endpoint: ClassVar[str]  # the endpoint translated calls use
    error_types: ClassVar[dict[int, str]]
    finish_in: ClassVar[dict[str, str]]  # the format's finish reasons -> canonical
    finish_out: ClassVar[dict[str, str]]  # canonical -> the format's

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

    def write_request(self, request: CanonicalRequest, model: str) -> tuple[dict[str, Any], str]:
        """The chat request in this format for `model`: (body, path)."""
        raise Untranslatable(f"{self.format} has no writer for requests")

    def write_response(self, response: CanonicalResponse, model: str) -> dict[str, Any]:
        raise Untranslatable(f"{self.format} has no writer for replies")

    def event_writer(self, model: str) -> EventWriter:
        raise Untranslatable(f"{self.format} has no writer for streams")

    def finish_from(self, reason: Any) -> str | None:
        """The canonical finish reason; an unknown one reads as "stop", none as None."""
        if not reason:
            return None
        return self.finish_in.get(str(reason), "stop")

    def error_body(self, status: int, message: str, code: str) -> dict[str, Any]:
        raise NotImplementedError

    def error_event(self, status: int, message: str, code: str) -> bytes:
        """An SSE event that ends a stream with an error the provider's SDK understands."""
        return b"data: " + json.dumps(self.error_body(status, message, code)).encode() + b"\n\n"

    def error_type(self, status: int) -> str:
        if status in self.error_types:
            return self.error_types[status]
        return self.error_types[500] if status >= 500 else self.error_types[400]
