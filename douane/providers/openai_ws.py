"""OpenAI's WebSocket transports, as wire formats: the Responses API over WebSocket and the Realtime API.

Responses (`wss://api.openai.com/v1/responses`, Codex's default): the client sends `response.create`
frames, each the body of a `POST /v1/responses` plus `"type": "response.create"` (`stream` implicit,
`generate: false` for a warm-up, `previous_response_id` to go on from an earlier response with only
the new items); `response.steer`, `response.append` and `response.inject` add input to a running or
next response. The server answers with the typed events of the Responses SSE stream, one per frame,
and errors as `{"type": "error", "status": 400, "error": {...}}`.

Realtime (`wss://api.openai.com/v1/realtime?model=...`): prompt text in `session.update`
(instructions), `conversation.item.create` (items) and `response.create` (instructions, input
items); text comes back as `response.output_text.delta` (beta: `response.text.delta`) or as an
audio transcript `response.output_audio_transcript.delta` (beta: `response.audio_transcript.delta`),
with whole texts again in the `.done` events, output items and `response.done` (with usage).
Audio travels base64 in `input_audio_buffer.append` and `response.output_audio.delta`
(beta: `response.audio.delta`).

Nothing here knows of policy: a frame becomes a canonical request and a server event a StreamEvent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from douane.providers.base import CanonicalRequest, Message, StreamEvent, TextPart, Usage, int_or_none
from douane.providers.openai import OpenAIAdapter

RESPONSES = "responses"
REALTIME = "realtime"

_OPENAI = OpenAIAdapter()

# what a client event is for: asks for a response | carries prompt text | audio | anything else
CREATE, PROMPT, AUDIO, CONTROL = "create", "prompt", "audio", "control"

_CLIENT_KINDS: dict[str, dict[str, str]] = {
    RESPONSES: {"response.create": CREATE, "response.steer": PROMPT, "response.append": PROMPT,
                "response.inject": PROMPT, "response.processed": CONTROL, "response.cancel": CONTROL},
    REALTIME: {"response.create": CREATE, "session.update": PROMPT, "conversation.item.create": PROMPT,
               "transcription_session.update": PROMPT, "input_audio_buffer.append": AUDIO,
               "input_audio_buffer.commit": CONTROL, "input_audio_buffer.clear": CONTROL,
               "response.cancel": CONTROL, "conversation.item.delete": CONTROL,
               "conversation.item.truncate": CONTROL, "conversation.item.retrieve": CONTROL,
               "output_audio_buffer.clear": CONTROL},
}

# server events: a response begins, a response is over (any outcome), audio (counted, not read)
RESPONSE_STARTED = "response.created"
RESPONSE_ENDED = {RESPONSES: frozenset({"response.completed", "response.failed", "response.incomplete"}),
                  REALTIME: frozenset({"response.done"})}
AUDIO_DELTAS = frozenset({"response.output_audio.delta", "response.audio.delta"})

_TEXT_DELTAS = frozenset({"response.output_text.delta", "response.text.delta",
                          "response.output_audio_transcript.delta", "response.audio_transcript.delta"})
_TEXT_DONE = {"response.output_text.done": "text", "response.text.done": "text",
              "response.output_audio_transcript.done": "transcript", "response.audio_transcript.done": "transcript",
              "response.function_call_arguments.done": "arguments"}


def protocol_of(path: str) -> str | None:
    """The WebSocket protocol a provider path speaks, None for one douane does not model."""
    bare = path.split("?", 1)[0].rstrip("/")
    if bare.endswith("/responses"):
        return RESPONSES
    if bare.endswith("/realtime"):
        return REALTIME
    return None


def model_of(path: str) -> str | None:
    """The model a Realtime socket names in its URL (`?model=gpt-realtime`)."""
    _, _, query = path.partition("?")
    values = parse_qs(query).get("model")
    return values[-1] if values else None


@dataclass(slots=True)
class ClientEvent:
    type: str
    kind: str  # CREATE | PROMPT | AUDIO | CONTROL
    request: CanonicalRequest  # the frame's text parts, pointing into the frame; body is the frame
    numbers: dict[str, Any]  # where its output cap is, under the names douane.classify.check_numbers reads
    audio_bytes: int = 0  # decoded size of the audio it carries


def read_client_event(protocol: str, frame: dict[str, Any]) -> ClientEvent:
    """What a client frame (a JSON object) is and the text it carries. An event type douane does not
    know is read as prompt: all its strings are scanned (the caller walks the whole frame)."""
    kind_name = frame.get("type")
    kind_name = kind_name if isinstance(kind_name, str) else ""
    kind = _CLIENT_KINDS[protocol].get(kind_name, PROMPT)
    if protocol == RESPONSES:
        request = _OPENAI.parse_request("responses", "/responses", frame)
        request.stream = True
        return ClientEvent(kind_name, kind, request, frame)
    messages: list[Message] = []
    model: str | None = None
    numbers = {}
    audio = 0
    if kind_name == "session.update" and isinstance(frame.get("session"), dict):
        session = frame["session"]
        messages += _instructions(session)
        model = session.get("model") if isinstance(session.get("model"), str) else None
    elif kind_name == "conversation.item.create" and isinstance(frame.get("item"), dict):
        messages += _item_messages(frame["item"])
    elif kind_name == "response.create":
        params: dict[str, Any] = frame["response"] if isinstance(frame.get("response"), dict) else {}
        messages += _instructions(params)
        for item in params["input"] if isinstance(params.get("input"), list) else []:
            messages += _item_messages(item)
        cap = _realtime_cap(params)
        numbers = {"max_output_tokens": cap} if cap is not None else {}
    elif kind == AUDIO and isinstance(frame.get("audio"), str):
        audio = base64_size(frame["audio"])
    request = CanonicalRequest(REALTIME, model, True, messages, frame, int_or_none(numbers.get("max_output_tokens")))
    return ClientEvent(kind_name, kind, request, numbers, audio)


def base64_size(data: str) -> int:
    """How many bytes a base64 text decodes to (audio is counted, not decoded)."""
    return len(data) * 3 // 4 - (len(data) - len(data.rstrip("=")))


def _realtime_cap(params: dict[str, Any]) -> Any:
    """A response's output cap: `max_output_tokens` (beta: `max_response_output_tokens`); "inf" is none."""
    for name in ("max_output_tokens", "max_response_output_tokens"):
        if name in params:
            return None if params[name] == "inf" else params[name]
    return None


def _instructions(container: dict[str, Any]) -> list[Message]:
    if isinstance(container.get("instructions"), str):
        return [Message("system", [TextPart(container, "instructions", "system")])]
    return []


def _item_messages(item: Any) -> list[Message]:
    """A Realtime conversation item's text: message content (text, transcripts), tool calls and results."""
    if not isinstance(item, dict):
        return []
    kind = item.get("type")
    if kind == "function_call" and isinstance(item.get("arguments"), str):
        return [Message("assistant", [TextPart(item, "arguments", "tool_call")])]
    if kind == "function_call_output" and isinstance(item.get("output"), str):
        return [Message("tool", [TextPart(item, "output", "tool_result")])]
    role = str(item.get("role", "user"))
    part_kind = "system" if role in ("system", "developer") else "text"
    return [Message(role, list(_content_parts(item, part_kind)))]


def _content_parts(item: dict[str, Any], kind: str = "text") -> Iterator[TextPart]:
    for content in item["content"] if isinstance(item.get("content"), list) else []:
        if isinstance(content, dict):
            for key in ("text", "transcript"):
                if isinstance(content.get(key), str):
                    yield TextPart(content, key, kind)


def parse_server_event(protocol: str, data: Any, request: CanonicalRequest | None = None) -> StreamEvent:
    """What one server event carries: text deltas to rewrite as they flow, whole texts repeated,
    usage, the model, an error."""
    if not isinstance(data, dict):
        return StreamEvent()
    if protocol == RESPONSES:
        out = _OPENAI.parse_stream_event("responses", None, data, request)
    else:
        out = _realtime_event(data)
    if data.get("type") == "error":
        error = data.get("error")
        out.error = str(error.get("message") if isinstance(error, dict) else error or "error")
    return out


def _realtime_event(data: dict[str, Any]) -> StreamEvent:
    out = StreamEvent()
    kind = data.get("type")
    if kind in _TEXT_DELTAS and isinstance(data.get("delta"), str):
        out.parts.append(TextPart(data, "delta", "text"))
    elif kind == "response.function_call_arguments.delta" and isinstance(data.get("delta"), str):
        out.parts.append(TextPart(data, "delta", "tool_call"))
    elif kind in _TEXT_DONE and isinstance(data.get(_TEXT_DONE[kind]), str):
        out.snapshots.append(TextPart(data, _TEXT_DONE[kind]))
    if isinstance(data.get("part"), dict):  # response.content_part.added / .done
        out.snapshots.extend(_content_parts({"content": [data["part"]]}))
    if isinstance(data.get("item"), dict):  # response.output_item.*, conversation.item.*
        out.snapshots.extend(_item_snapshots(data["item"]))
    response = data.get("response")
    if isinstance(response, dict):  # response.created / response.done
        for item in response["output"] if isinstance(response.get("output"), list) else []:
            out.snapshots.extend(_item_snapshots(item))
        usage = response.get("usage")
        if isinstance(usage, dict):
            details = usage.get("input_token_details")
            out.usage = Usage(input_tokens=int_or_none(usage.get("input_tokens")),
                              output_tokens=int_or_none(usage.get("output_tokens")),
                              cached_tokens=int_or_none(details.get("cached_tokens"))
                              if isinstance(details, dict) else None)
        if response.get("status") == "failed":
            details = response.get("status_details")
            error = details.get("error") if isinstance(details, dict) else None
            out.error = str(error.get("message") if isinstance(error, dict) else "response failed")
    return out


def _item_snapshots(item: Any) -> list[TextPart]:
    if not isinstance(item, dict):
        return []
    if isinstance(item.get("arguments"), str):
        return [TextPart(item, "arguments")]
    return list(_content_parts(item))


def response_id(protocol: str, data: dict[str, Any]) -> str | None:
    """The response an event belongs to, when it says (Realtime deltas do; Responses deltas do not)."""
    response = data.get("response")
    if isinstance(response, dict) and isinstance(response.get("id"), str):
        return response["id"]
    value = data.get("response_id")
    return value if isinstance(value, str) else None


def error_event(protocol: str, status: int, message: str, code: str, event_id: str | None = None,
                client_event_id: str | None = None) -> dict[str, Any]:
    """An error event in the protocol's own shape: Responses clients (Codex, the SDK) read `status`
    as the HTTP status the call would have had; Realtime clients read `error.event_id` as the
    client event that caused it."""
    error = {"type": _OPENAI.error_type(status), "code": code, "message": message, "param": None}
    if protocol == RESPONSES:
        return {"type": "error", "status": status, "error": error}
    return {"type": "error", "event_id": event_id, "error": {**error, "event_id": client_event_id}}


def cancel_event(protocol: str, response: str | None) -> dict[str, Any] | None:
    """What stops a response upstream once douane has stopped it for the client (Realtime only:
    a Responses socket has no cancel event; its response runs out and is dropped)."""
    if protocol != REALTIME:
        return None
    return {"type": "response.cancel", **({"response_id": response} if response else {})}
