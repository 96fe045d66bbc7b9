"""A tap on a streamed (SSE) reply: re-frames raw chunks into events, reads text and usage as they
pass, hides what douane itself asked for, and runs the rewriting stages (output guard, pseudonym
restore) over the text as it flows, with a bounded hold-back.

Held-back text goes out with the next text event, or in a synthetic text event (a copy of the last
one) placed before the next event that carries none (a finish chunk, content_block_stop, [DONE]).
A block ends the stream with an error event in the provider's own format.
"""

from __future__ import annotations

import copy
import json
import zlib
from collections.abc import Callable
from typing import Any

from douane.providers import Adapter, CanonicalRequest, Usage
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


class StreamTap:
    def __init__(self, adapter: Adapter, endpoint: str, request: CanonicalRequest | None,
                 strip_internal: bool = False, decoder: Callable[[bytes], bytes] | None = None,
                 stages: list[Stage] | None = None, audit_after: int = 0):
        self.adapter = adapter
        self.endpoint = endpoint
        self.request = request
        self.strip_internal = strip_internal
        self.decoder = decoder
        self.stages = stages or []
        self.audit_after = audit_after  # the audit keeps the text after this many stages
        self.framer = SSEFramer()
        self.usage = Usage()
        self.model: str | None = None
        self.error: str | None = None
        self.text: list[str] = []
        self.bytes_in = 0
        self.bytes_out = 0
        self.events = 0
        self.finished = False
        self.blocked: Blocked | None = None
        self._template: tuple[SSEEvent, Any] | None = None  # the last text event, for synthetic ones

    def __call__(self, chunk: bytes) -> list[bytes]:
        """mitmproxy calls this per raw chunk, then once with b"" at the end of the stream."""
        self.bytes_in += len(chunk)
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
        for event in events:
            try:
                out.extend(b for b in self._on_event(event) if b)
            except Blocked as b:
                self.blocked = b
                out.append(self.adapter.error_event(403, f"douane blocked this answer: {b} [rule: {b.rule}]",
                                                    b.rule))
                break
        if end and self.blocked is None and self._holding():
            out.extend(self._synthetic())
        self.bytes_out += sum(len(b) for b in out)
        return out

    @property
    def rewrites(self) -> bool:
        return any(not isinstance(s, OutputGuard) or s.rewrites for s in self.stages)

    def _holding(self) -> bool:
        return any(s.held for s in self.stages)

    def _record(self, text: str) -> None:
        if text:
            self.text.append(text)

    def _on_event(self, event: SSEEvent) -> list[bytes]:
        self.events += 1
        if event.data is None:
            return [event.raw]
        try:
            payload: Any = json.loads(event.data) if event.data.strip() != "[DONE]" else None
        except ValueError:
            payload = None
        if payload is None:  # [DONE] or not JSON: release what is held first
            return [*self._synthetic(), event.raw]
        info = self.adapter.parse_stream_event(self.endpoint, event.name, payload, self.request)
        self.usage.update(info.usage)
        self.model = info.model or self.model
        self.error = info.error or self.error
        if info.internal and self.strip_internal:
            return []
        if not self.rewrites:  # nothing may change on the wire: monitor stages only see the text
            for part in info.parts:
                if part.kind == "text":
                    self._run(part.text, info.final)
            return [event.raw]
        texts = [p for p in info.parts if p.kind == "text"]
        if not texts and not info.snapshots:
            return [*self._synthetic(), event.raw]
        if texts and not info.final:
            self._template = (event, copy.deepcopy(payload))
        for i, part in enumerate(texts):
            final = info.final and i == len(texts) - 1
            part.replace(self._run(part.text, final))
        for part in info.snapshots:  # whole texts repeated at the end: rewrite them the same way
            part.replace(self._whole(part.text))
        return [event.with_data(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))]

    def _run(self, text: str, final: bool) -> str:
        for i, stage in enumerate(self.stages):
            if i == self.audit_after:
                self._record(text)
            text = stage.push(text) + (stage.drain() if final else "")
        if self.audit_after >= len(self.stages):
            self._record(text)
        return text

    def _whole(self, text: str) -> str:
        for stage in self.stages:
            text = stage.check(text) if isinstance(stage, OutputGuard) else stage.restore(text) \
                if isinstance(stage, PseudonymRestorer) else text
        return text

    def _synthetic(self) -> list[bytes]:
        """Held-back text, drained through the remaining stages, in a copy of the last text event."""
        if not self._holding():
            return []
        text = ""
        for i, stage in enumerate(self.stages):
            if i == self.audit_after:
                self._record(text)
            text = (stage.push(text) if text else "") + stage.drain()
        if self.audit_after >= len(self.stages):
            self._record(text)
        if not text or self._template is None:
            return []
        event, template = self._template
        payload = copy.deepcopy(template)
        info = self.adapter.parse_stream_event(self.endpoint, event.name, payload, self.request)
        texts = [p for p in info.parts if p.kind == "text"]
        if not texts:
            return []
        texts[0].replace(text)
        for part in texts[1:]:
            part.replace("")
        return [event.with_data(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))]

    @property
    def assembled(self) -> str:
        return "".join(self.text)
