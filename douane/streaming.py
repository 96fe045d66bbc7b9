"""A tap on a streamed (SSE) reply: re-frames raw chunks into events, reads text and usage as they
pass, hides what douane itself asked for, and runs the rewriting stages (output guard, pseudonym
restore) over the text as it flows, with a bounded hold-back.

Held-back text goes out with the next text event, or in a synthetic text event (a copy of the last
one) placed before the next event that carries none (a finish chunk, content_block_stop, [DONE]).
A block ends the stream with an error event in the provider's own format.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable
from typing import Any

from douane import jsonio
from douane.providers import Adapter, CanonicalRequest, UnreadableBody, Usage
from douane.providers.sse import SSEEvent, SSEFramer
from douane.rewrite import Blocked, OutputGuard, PseudonymRestorer, Stage


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
                 stage_factory: Callable[[], tuple[list[Stage], int]] | None = None):
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

    @property
    def stages(self) -> list[Stage]:
        return [s for lane in self.lanes.values() for s in lane.stages]

    def _lane(self, kind: str) -> _Lane:
        if kind not in self.lanes:
            stages, audited = self._factory() if self._factory else ([], 0)
            self.lanes[kind] = _Lane(stages, audited)
        return self.lanes[kind]

    def __call__(self, chunk: bytes) -> list[bytes]:
        """mitmproxy calls this per raw chunk, then once with b"" at the end of the stream."""
        if self.blocked is not None:
            return []  # the client got its error event: nothing more goes out
        end = chunk == b""
        data = self.decoder(chunk) if self.decoder else chunk
        events = self.framer.feed(data) if data else []
        if end:
            self.finished = True
            rest = self.framer.flush()
            if rest is not None:
                events.append(rest)
        out: list[bytes] = []
        try:
            for event in events:
                out.extend(b for b in self._on_event(event) if b)
            if end:
                out.extend(self._release())
        except (Blocked, UnreadableBody) as e:  # what cannot be read cannot be judged: it does not go out
            b = e if isinstance(e, Blocked) else Blocked("unreadable_answer", f"an event could not be read ({e})")
            self.blocked = b
            out.append(self.adapter.error_event(403, f"douane blocked this answer: {b} [rule: {b.rule}]", b.rule))
        self.bytes_out += sum(len(b) for b in out)
        return out

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
