"""A tap on a streamed (SSE) reply: re-frames raw chunks into events, reads text and usage as they
pass, hides what douane itself asked for, and runs the rewriting stages (output guard, pseudonym
restore) over the text as it flows, with a bounded hold-back.

Held-back text goes out with the next text event, or in a synthetic text event (a copy of the last
one) placed before the next event that carries none (a finish chunk, content_block_stop, [DONE]).
A block ends the stream with an error event in the provider's own format.
"""

from __future__ import annotations

import copy
import logging
import zlib
from collections.abc import Callable
from typing import Any

from douane import faults, jsonio
from douane.providers import Adapter, CanonicalRequest, Usage
from douane.providers.sse import SSEEvent, SSEFramer
from douane.rewrite import Blocked, OutputGuard, PseudonymRestorer, Stage

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
        self.template: tuple[SSEEvent, Any] | None = None

    @property
    def holding(self) -> bool:
        return any(s.held for s in self.stages)


class StreamTap:
    def __init__(self, adapter: Adapter, endpoint: str, request: CanonicalRequest | None,
                 strip_internal: bool = False, decoder: Callable[[bytes], bytes] | None = None,
                 stages: list[Stage] | None = None, audit_after: int = 0,
                 stage_factory: Callable[[], tuple[list[Stage], int]] | None = None, fail_closed: bool = True):
        self.adapter = adapter
        self.endpoint = endpoint
        self.request = request
        self.strip_internal = strip_internal
        self.decoder = decoder
        # text goes through `stages`; other kinds (tool-call arguments) get their own from the factory
        self.lanes: dict[str, _Lane] = {"text": _Lane(stages or [], audit_after)}
        self._factory = stage_factory
        self.framer = SSEFramer()
        self.usage = Usage()
        self.model: str | None = None
        self.error: str | None = None
        self.text: list[str] = []
        self.bytes_out = 0
        self.events = 0
        self.finished = False
        self.blocked: Blocked | None = None
        self.fail_closed = fail_closed
        self.failed_closed = False  # inspection failed under fail: closed; the client got an error event
        self.passthrough = False  # inspection failed under fail: open; the rest goes through as it comes
        self.failure: str | None = None
        self.faults: frozenset[str] = frozenset()  # fault injection points armed for this call (tests)
        self.seen_chars = 0  # text the provider produced, sent on or not: an estimate when usage never comes

    @property
    def stages(self) -> list[Stage]:
        return [s for lane in self.lanes.values() for s in lane.stages]

    def _lane(self, kind: str) -> _Lane:
        if kind not in self.lanes:
            stages, audited = self._factory() if self._factory else ([], 0)
            self.lanes[kind] = _Lane(stages, audited)
        return self.lanes[kind]

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
                self._observe(event)
            return []
        out: list[bytes] = []
        for i, event in enumerate(events):
            try:
                out.extend(b for b in self._on_event(event) if b)
            except Blocked as b:
                self.blocked = b
                out.append(self.adapter.error_event(403, f"douane blocked this answer: {b} [rule: {b.rule}]", b.rule))
                return out
            except Exception as e:
                return out + self._failed(e, [ev.raw for ev in events[i:]])
        if end:
            out.extend(self._release())
        return out

    def _failed(self, error: Exception, unsent: list[bytes]) -> list[bytes]:
        """Closed: the provider's error event ends the stream. Open: `unsent` (the raw events not yet
        sent) and everything after go through as they come; text held back by a stage is lost."""
        if self.failed_closed:  # already ended: reading usage of the rest failed too
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

    def _observe(self, event: SSEEvent) -> None:
        """Usage, model and text size of an event that is not sent on (the stream was stopped)."""
        if event.data is None or event.data.strip() == "[DONE]":
            return
        try:
            payload = jsonio.loads(event.data)
        except ValueError:
            return
        info = self.adapter.parse_stream_event(self.endpoint, event.name, payload, self.request)
        self.usage.update(info.usage)
        self.model = info.model or self.model
        self.seen_chars += sum(len(p.text) for p in info.parts)

    @property
    def rewrites(self) -> bool:
        """Whether any stage may change the text (the factory builds the same kinds as the text lane)."""
        return any(not isinstance(s, OutputGuard) or s.rewrites for s in self.lanes["text"].stages)

    def _record(self, kind: str, text: str) -> None:
        if text and kind == "text":
            self.text.append(text)

    def _release(self, keep: set[str] | None = None) -> list[bytes]:
        """Synthetic events for every lane still holding text (but those in `keep`)."""
        return [b for kind, lane in self.lanes.items() if lane.holding and kind not in (keep or set())
                for b in self._synthetic(kind, lane)]

    def _on_event(self, event: SSEEvent) -> list[bytes]:
        self.events += 1
        if event.data is None:
            return [event.raw]
        try:
            payload: Any = jsonio.loads(event.data) if event.data.strip() != "[DONE]" else None
        except ValueError:
            payload = None
        if payload is None:  # [DONE] or not JSON: release what is held first
            return [*self._release(), event.raw]
        info = self.adapter.parse_stream_event(self.endpoint, event.name, payload, self.request)
        self.usage.update(info.usage)
        self.model = info.model or self.model
        self.error = info.error or self.error
        self.seen_chars += sum(len(p.text) for p in info.parts)
        if info.internal and self.strip_internal:
            return []
        if not self.rewrites:  # nothing may change on the wire: monitor stages only see the text
            for part in info.parts:
                self._run(part.kind, self._lane(part.kind), part.text, info.final)
            return [event.raw]
        kinds: dict[str, list] = {}
        for part in info.parts:
            kinds.setdefault(part.kind, []).append(part)
        prefix = self._release(keep=set(kinds))
        if not kinds and not info.snapshots:
            return [*prefix, event.raw]
        for kind, parts in kinds.items():
            lane = self._lane(kind)
            if not info.final:
                lane.template = (event, jsonio.loads(event.data))  # a copy: re-reading beats deepcopy
            for i, part in enumerate(parts):
                part.replace(self._run(kind, lane, part.text, info.final and i == len(parts) - 1))
        for part in info.snapshots:  # whole texts repeated at the end: rewrite them the same way
            part.replace(self._whole(part.text))
        return [*prefix, event.with_data(jsonio.dumps(payload).decode())]

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
            text = stage.check(text) if isinstance(stage, OutputGuard) else stage.restore(text) \
                if isinstance(stage, PseudonymRestorer) else text
        return text

    def _synthetic(self, kind: str, lane: _Lane) -> list[bytes]:
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
        event, template = lane.template
        payload = copy.deepcopy(template)
        info = self.adapter.parse_stream_event(self.endpoint, event.name, payload, self.request)
        parts = [p for p in info.parts if p.kind == kind]
        if not parts:
            return []
        for part in info.parts:  # the copy carries only the held text
            part.replace(text if part is parts[0] else "")
        return [event.with_data(jsonio.dumps(payload).decode())]

    @property
    def assembled(self) -> str:
        return "".join(self.text)
