"""A tap on a streamed reply: reads text and usage of each event as it passes, hides what douane
itself asked for, and runs the rewriting stages (output guard, pseudonym restore) over the text as
it flows, with a bounded hold-back.

EventTap does this over events already parsed, whatever their transport; StreamTap feeds it an SSE
answer's raw chunks, re-framed into events (douane.websocket feeds it WebSocket messages).

Held-back text goes out with the next text event, or in a synthetic text event (a copy of the last
one) placed before the next event that carries none (a finish chunk, content_block_stop, [DONE]).
A block ends the stream with an error event in the provider's own format.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from douane import faults, jsonio
from douane.call import Call
from douane.moderation import Moderator
from douane.providers import Adapter, CanonicalRequest, StreamEvent, UnreadableBody, Usage
from douane.providers.sse import SSEEvent, SSEFramer
from douane.rewrite import Blocked, OutputGuard, Stage, is_guard, may_rewrite, whole
from douane.toolguard import ToolWatch, lead_with

log = logging.getLogger(__name__)


def make_decoder(encoding: str | None) -> Callable[[bytes], bytes] | None:
    """An incremental decoder for a Content-Encoding the upstream used despite `identity`."""
    enc = (encoding or "").strip().lower()
    if enc in ("", "identity"):
        return None
    if enc in ("gzip", "x-gzip", "deflate"):
        d = zlib.decompressobj(wbits=47 if enc != "deflate" else 15)
        return lambda chunk: d.decompress(chunk) if chunk else d.flush()
    if enc == "br":
        import brotli

        b = brotli.Decompressor()
        return lambda chunk: b.process(chunk) if chunk else b""
    if enc == "zstd":
        import zstandard

        z = zstandard.ZstdDecompressor().decompressobj()
        return lambda chunk: z.decompress(chunk) if chunk else b""
    raise ValueError(f"unsupported content-encoding {encoding!r}")


class _Lane:
    """The stages for one kind of text (reply text, tool-call arguments) and its last event."""

    def __init__(self, stages: list[Stage], audit_after: int):
        self.stages = stages
        self.audit_after = audit_after
        self.template: tuple[Any, str | None] | None = None  # (frame, event name) of the lane's last event

    @property
    def holding(self) -> bool:
        return any(s.held for s in self.stages)


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()  # an Emit's payload when the frame goes out as it came


@dataclass(frozen=True, slots=True)
class Emit[F]:
    """One event to send on: `frame` as it came (payload KEEP), or in its shape carrying `payload`."""

    frame: F
    payload: Any = KEEP


class EventTap[F]:
    """The answer stages over a stream of already-parsed events, whatever carried them.

    A transport (SSE bytes, WebSocket messages) frames its events and hands each one here with its
    JSON payload; it gets back the events to send on, as Emits it turns into bytes or messages:
    the frame as it came, the frame with a rewritten payload, or a synthetic copy of a lane's last
    text event carrying held-back text. `parse` reads a payload (text parts, usage, snapshots);
    `reparse` reads a frame's payload afresh (the template of a synthetic event). A stage's Blocked
    propagates: the transport ends the stream in its own way.
    """

    def __init__(self, parse: Callable[[str | None, Any], StreamEvent], reparse: Callable[[F], Any],
                 stages: list[Stage] | None = None, audit_after: int = 0,
                 stage_factory: Callable[[], tuple[list[Stage], int]] | None = None, strip_internal: bool = False,
                 tools: ToolWatch | None = None, text_overtakes_tools: bool = False):
        self.parse = parse
        self.reparse = reparse
        self.strip_internal = strip_internal
        # tool calls: gathered and recorded; held until judged when rules apply (see _hold)
        self.tools = tools
        self.text_overtakes_tools = text_overtakes_tools  # the format lets text frames pass held ones
        self.held: list[tuple[F, str | None, Any, StreamEvent]] = []
        self._tools_rewritten = False  # a complete call's arguments were changed by the stages
        self._tool_guards: list[Stage] = []  # the stages that judged whole arguments (their findings count)
        # text goes through `stages`; other kinds (tool-call arguments) get their own from the factory
        self.lanes: dict[str, _Lane] = {"text": _Lane(stages or [], audit_after)}
        self._factory = stage_factory
        self.usage = Usage()
        self.model: str | None = None
        self.error: str | None = None
        self.text: list[str] = []
        self.events = 0
        self.seen_chars = 0  # text the provider produced, sent on or not: an estimate when usage never comes

    @property
    def stages(self) -> list[Stage]:
        return [s for lane in self.lanes.values() for s in lane.stages] + self._tool_guards

    def _lane(self, kind: str) -> _Lane:
        if kind not in self.lanes:
            stages, audited = self._factory() if self._factory else ([], 0)
            self.lanes[kind] = _Lane(stages, audited)
        return self.lanes[kind]

    @property
    def rewrites(self) -> bool:
        """Whether any stage may change the text (the factory builds the same kinds as the text lane)."""
        return any(may_rewrite(s) for s in self.lanes["text"].stages)

    def _read(self, name: str | None, payload: Any) -> StreamEvent:
        info = self.parse(name, payload)
        self.usage.update(info.usage)
        self.model = info.model or self.model
        self.error = info.error or self.error
        self.seen_chars += sum(len(p.text) for p in info.parts)
        return info

    def observe(self, name: str | None, payload: Any) -> None:
        """Usage, model and text size of an event that is not sent on (the stream was stopped)."""
        if payload is not None:
            self._read(name, payload)

    def feed(self, frame: F, name: str | None, payload: Any) -> list[Emit[F]]:
        """One event; `payload` None for one that is not JSON (or [DONE]): what is held goes out first."""
        self.events += 1
        if payload is None:
            return [*self.settle_tools(), *self.release(), Emit(frame)]
        info = self._read(name, payload)
        if info.internal and self.strip_internal:
            return []
        if self.tools is not None:
            if info.tool_calls:
                self.tools.gather(info.tool_calls)
            if self.tools.holds and (self.held or info.tool_calls):
                return self._hold(frame, name, payload, info)
            if self.tools.pending:
                out = self._pass(frame, name, payload, info)
                self._judge(self.tools.completed(info))
                return out
        return self._pass(frame, name, payload, info)

    def _pass(self, frame: F, name: str | None, payload: Any, info: StreamEvent,
              raw_tools: bool = False) -> list[Emit[F]]:
        """An event through the stages; `raw_tools`: its tool-call arguments were judged whole and need
        no change, so they go out as they came. A frame whose texts all come out unchanged is sent as
        it came, byte for byte."""
        if not self.rewrites:  # nothing may change on the wire: monitor stages only see the text
            for part in info.parts:
                self._run(part.kind, self._lane(part.kind), part.text, info.final)
            return [Emit(frame)]
        kinds: dict[str, list] = {}
        for part in info.parts:
            if not (raw_tools and part.kind == "tool_call"):
                kinds.setdefault(part.kind, []).append(part)
        prefix = self.release(keep=set(kinds))
        if not kinds and not info.snapshots:
            return [*prefix, Emit(frame)]
        changed = False
        for kind, parts in kinds.items():
            lane = self._lane(kind)
            if not info.final:
                lane.template = (frame, name)
            for i, part in enumerate(parts):
                old = part.text
                new = self._run(kind, lane, old, info.final and i == len(parts) - 1)
                if new != old:
                    part.replace(new)
                    changed = True
        for part in info.snapshots:  # whole texts repeated at the end: rewrite them the same way
            old = part.text
            new = self._whole(old)
            if new != old:
                part.replace(new)
                changed = True
        return [*prefix, Emit(frame, payload) if changed else Emit(frame)]

    # -- tool calls: held from their first fragment until judged whole ----------------------------------

    def _hold(self, frame: F, name: str | None, payload: Any, info: StreamEvent) -> list[Emit[F]]:
        """Frames from a tool call's first fragment on wait, in order, until every call in progress is
        complete and judged; then they go on (unchanged, unless the stages rewrite the arguments). Text
        frames pass them when the format allows it (their order does not matter to its clients)."""
        if self.held and self.text_overtakes_tools and _text_only(info):
            return self._pass(frame, name, payload, info)
        self.held.append((frame, name, payload, info))
        assert self.tools is not None
        self._judge(self.tools.completed(info))
        return [] if self.tools.pending else self._flush()

    def _judge(self, done: list[Any]) -> None:
        """Complete calls judged on their arguments as the client would get them (Blocked stops the
        stream); the audit keeps them as the stages left them before the user's values went back."""
        assert self.tools is not None
        for pending in done:
            raw = "".join(pending.fragments)
            audited: str | None
            try:
                final, audited = self._whole_arguments(raw)
            except Blocked:
                if self.tools.holds:
                    raise
                final, audited = raw, None  # only recorded: the lane's own stages block the stream
            self.tools.decide(pending, final, audited)
            self._tools_rewritten |= final != raw

    def _whole_arguments(self, text: str) -> tuple[str, str]:
        """A complete call's arguments through fresh stages of the tool-call lane: (as the client gets
        them, as the audit keeps them)."""
        stages, audit_after = self._factory() if self._factory else ([], 0)
        audited = text
        for i, stage in enumerate(stages):
            if i == audit_after:
                audited = text
            text = whole(stage, text)
        if audit_after >= len(stages):
            audited = text
        self._tool_guards.extend(s for s in stages if is_guard(s))
        return text, audited

    def _flush(self) -> list[Emit[F]]:
        held, self.held = self.held, []
        raw, self._tools_rewritten = not self._tools_rewritten, False
        return [e for frame, name, payload, info in held for e in self._pass(frame, name, payload, info, raw)]

    def settle_tools(self) -> list[Emit[F]]:
        """The stream ends: calls still in progress are complete as they are, judged, and sent on."""
        if self.tools is None or not (self.tools.pending or self.held):
            return []
        self._judge(self.tools.completed(None))
        return self._flush()

    def finish(self) -> list[Emit[F]]:
        """What is still held when the stream ends: tool calls (judged), then held-back text."""
        return [*self.settle_tools(), *self.release()]

    def release(self, keep: set[str] | None = None) -> list[Emit[F]]:
        """Synthetic events for every lane still holding text (but those in `keep`)."""
        return [e for kind, lane in self.lanes.items() if lane.holding and kind not in (keep or set())
                for e in self._synthetic(kind, lane)]

    def _record(self, kind: str, text: str) -> None:
        if text and kind == "text":
            self.text.append(text)

    def _run(self, kind: str, lane: _Lane, text: str, final: bool) -> str:
        for i, stage in enumerate(lane.stages):
            if i == lane.audit_after:
                self._record(kind, text)
            text = stage.push(text) + (stage.drain() if final else "")
        if lane.audit_after >= len(lane.stages):
            self._record(kind, text)
        return text

    def _whole(self, text: str) -> str:
        for stage in self.lanes["text"].stages:
            text = whole(stage, text)
        return text

    def _synthetic(self, kind: str, lane: _Lane) -> list[Emit[F]]:
        """Held-back text, drained through the remaining stages, in a copy of the lane's last event."""
        text = ""
        for i, stage in enumerate(lane.stages):
            if i == lane.audit_after:
                self._record(kind, text)
            text = (stage.push(text) if text else "") + stage.drain()
        if lane.audit_after >= len(lane.stages):
            self._record(kind, text)
        if not text or lane.template is None:
            return []
        frame, name = lane.template
        payload = self.reparse(frame)  # the lane's last event as it came
        info = self.parse(name, payload)
        parts = [p for p in info.parts if p.kind == kind]
        if not parts:
            return []
        for part in info.parts:  # the copy carries only the held text
            part.replace(text if part is parts[0] else "")
        return [Emit(frame, payload)]

    @property
    def assembled(self) -> str:
        return "".join(self.text)


def _text_only(info: StreamEvent) -> bool:
    """An event that carries text and nothing that ends or belongs to a tool call."""
    return not info.tool_calls and not info.tool_calls_done and info.finish is None and not info.final \
        and not info.snapshots and all(p.kind == "text" for p in info.parts)


def _sse_payload(event: SSEEvent) -> Any:
    return jsonio.loads(event.data or "null")


class StreamTap(EventTap[SSEEvent]):
    """The EventTap of a streamed (SSE) HTTP answer: raw chunks in, re-framed events out."""

    def __init__(self, adapter: Adapter, endpoint: str, request: CanonicalRequest | None,
                 strip_internal: bool = False, decoder: Callable[[bytes], bytes] | None = None,
                 stages: list[Stage] | None = None, audit_after: int = 0,
                 stage_factory: Callable[[], tuple[list[Stage], int]] | None = None, fail_closed: bool = True,
                 tools: ToolWatch | None = None):
        # OpenAI chat clients gather each field of a choice apart: text may pass a held tool call
        super().__init__(lambda name, data: adapter.parse_stream_event(endpoint, name, data, request),
                         _sse_payload, stages, audit_after, stage_factory, strip_internal, tools,
                         text_overtakes_tools=adapter.format == "openai" and endpoint == "chat.completions")
        self.adapter = adapter
        self.endpoint = endpoint
        self.request = request
        self.decoder = decoder
        self.framer = SSEFramer()
        self.bytes_out = 0
        self.finished = False
        self.blocked: Blocked | None = None
        self.fail_closed = fail_closed
        self.failed_closed = False  # inspection failed under fail: closed; the client got an error event
        self.passthrough = False  # inspection failed under fail: open; the rest goes through as it comes
        self.failure: str | None = None
        self.faults: frozenset[str] = frozenset()  # fault injection points armed for this call (tests)

    def __call__(self, chunk: bytes) -> list[bytes]:
        """mitmproxy calls this per raw chunk, then once with b"" at the end of the stream.

        It never raises: an inspection that fails follows the policy's `fail`. Closed ends the
        stream with the provider's error event; open lets the rest through uninspected."""
        try:
            out = self._feed(chunk)
        except Exception as e:  # a bug or a shape nobody foresaw: not a reason to let text out unread
            out = self._failed(e, [chunk] if not self.decoder else [])
        out = [b for b in out if b]  # an empty piece is the end of a chunked body: the client would stop there
        self.bytes_out += sum(len(b) for b in out)
        return out

    def _feed(self, chunk: bytes) -> list[bytes]:
        faults.check("answer.stream", self.faults)
        end = chunk == b""
        data = self.decoder(chunk) if self.decoder else chunk
        if self.passthrough:
            return [data] if data else []
        events = self.framer.feed(data) if data else []
        if end:
            self.finished = True
            rest = self.framer.flush()
            if rest is not None:
                events.append(rest)
        if self.stopped:  # the client has its error event: only usage is still read, for the meter
            for event in events:
                self.observe(event.name, _payload(event))
            return []
        out: list[bytes] = []
        for i, event in enumerate(events):
            try:
                out.extend(b for b in self._on_event(event) if b)
            except (Blocked, UnreadableBody) as e:  # what cannot be read cannot be judged: it does not go out
                return [*out, self._stopped_by(e)]
            except Exception as e:
                return out + self._failed(e, [ev.raw for ev in events[i:]])
        if end:
            try:
                out.extend(self._encode(e) for e in self.finish())
            except Blocked as e:
                out.append(self._stopped_by(e))
        return out

    def _stopped_by(self, error: Blocked | UnreadableBody) -> bytes:
        """The provider's error event that ends the stream, naming the rule."""
        b = error if isinstance(error, Blocked) else \
            Blocked("unreadable_answer", f"an event could not be read ({error})")
        self.blocked = b
        return self.adapter.error_event(403, f"douane blocked this answer: {b} [rule: {b.rule}]", b.rule)

    def _failed(self, error: Exception, unsent: list[bytes]) -> list[bytes]:
        """Closed: the provider's error event ends the stream. Open: `unsent` (the raw events not yet
        sent) and everything after go through as they come; text held back by a stage is lost."""
        if self.stopped:  # already ended: reading usage of the rest failed too
            return []
        log.exception("answer: inspecting a streamed answer failed")
        self.failure = f"{type(error).__name__}: {error}"
        if self.fail_closed:
            self.failed_closed = True
            return [self.adapter.error_event(503, "douane could not inspect this answer, so it was stopped "
                                                  f"({type(error).__name__}); try again [rule: fail.closed]",
                                             "fail.closed")]
        self.passthrough = True
        return [*unsent, self.framer.drain()]

    @property
    def stopped(self) -> bool:
        return self.blocked is not None or self.failed_closed

    def _on_event(self, event: SSEEvent) -> list[bytes]:
        if event.data is None:  # a comment or an event without data: passed as it came
            self.events += 1
            return [event.raw]
        return [self._encode(e) for e in self.feed(event, event.name, _payload(event))]

    @staticmethod
    def _encode(emit: Emit[SSEEvent]) -> bytes:
        if emit.payload is KEEP:
            return emit.frame.raw
        return emit.frame.with_data(jsonio.dumps(emit.payload).decode())


def _payload(event: SSEEvent) -> Any:
    """An SSE event's JSON payload; None for [DONE], data that is not JSON, or no data."""
    if event.data is None or event.data.strip() == "[DONE]":
        return None
    try:
        return jsonio.loads(event.data)
    except ValueError:
        return None


def record_findings(call: Call, stages: list[Stage]) -> None:
    """What the output guards of an answer found, on its call (the row's output_findings and reason).
    Moderation leads the reason: the rule that blocked, else what it redacted or monitored."""
    for stage in stages:
        if isinstance(stage, Moderator):  # a category once: a stream's closing snapshot is judged again
            call.output_findings.extend(dict.fromkeys(f"{f.kind}:{f.name}" for f in stage.findings))
            if stage.blocked is not None:
                lead_with(call, stage.blocked)
            elif call.decision != "blocked":
                for note in reversed(stage.notes()):
                    lead_with(call, note)
        elif isinstance(stage, OutputGuard):
            call.output_findings.extend(f"{f.kind}:{f.name}" for f in stage.findings)
            if stage.findings and call.decision != "blocked":
                kinds = sorted({f"{f.kind}:{f.name}" for f in stage.findings})
                call.note(f"output: {', '.join(kinds)} ({stage.secrets_action}/{stage.pii_action})")
