"""A tap on a streamed (SSE) reply: re-frames raw chunks into events, reads text and usage as they
pass, hides what douane itself asked for, and lets later stages rewrite an event's text."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

from douane.providers import Adapter, CanonicalRequest, StreamEvent, Usage
from douane.providers.sse import SSEEvent, SSEFramer

# A stage that may rewrite an event's text parts; returns True when it changed something.
EventFilter = Callable[[StreamEvent], bool]


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
                 filters: list[EventFilter] | None = None):
        self.adapter = adapter
        self.endpoint = endpoint
        self.request = request
        self.strip_internal = strip_internal
        self.decoder = decoder
        self.filters = filters or []
        self.framer = SSEFramer()
        self.usage = Usage()
        self.model: str | None = None
        self.error: str | None = None
        self.text: list[str] = []
        self.bytes_in = 0
        self.bytes_out = 0
        self.events = 0
        self.finished = False

    def __call__(self, chunk: bytes) -> list[bytes]:
        """mitmproxy calls this per raw chunk, then once with b"" at the end of the stream."""
        self.bytes_in += len(chunk)
        end = chunk == b""
        data = self.decoder(chunk) if self.decoder else chunk
        events = self.framer.feed(data) if data else []
        if end:
            self.finished = True
            rest = self.framer.flush()
            if rest is not None:
                events.append(rest)
        out = [b for b in (self._on_event(e) for e in events) if b]
        self.bytes_out += sum(len(b) for b in out)
        return out

    def _on_event(self, event: SSEEvent) -> bytes:
        self.events += 1
        if event.data is None or event.data.strip() == "[DONE]":
            return event.raw
        try:
            payload: Any = json.loads(event.data)
        except ValueError:
            return event.raw
        info = self.adapter.parse_stream_event(self.endpoint, event.name, payload, self.request)
        self.usage.update(info.usage)
        self.model = info.model or self.model
        self.error = info.error or self.error
        if info.internal and self.strip_internal:
            return b""
        changed = False
        for stage in self.filters:
            changed = stage(info) or changed
        self.text.extend(p.text for p in info.parts)
        if changed:
            return event.with_data(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))
        return event.raw

    @property
    def assembled(self) -> str:
        return "".join(self.text)
