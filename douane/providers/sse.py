"""Server-sent events: re-frame raw chunks into whole events, read them, rewrite their data."""

from __future__ import annotations

import re
from dataclasses import dataclass

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")


@dataclass
class SSEEvent:
    raw: bytes
    name: str | None
    data: str | None  # data lines joined by "\n"; None for comment-only events

    def with_data(self, data: str) -> bytes:
        """The same event with its data replaced; other fields (event:, id:) are kept as they were."""
        lines = [line for line in self.raw.decode("utf-8", "replace").splitlines()
                 if line and not line.startswith("data")]
        lines.extend(f"data: {line}" for line in data.split("\n"))
        return ("\n".join(lines) + "\n\n").encode()


class SSEFramer:
    """Feed arbitrary byte chunks, get whole events back; raw chunks never align with events."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buf += chunk
        events = []
        start = 0
        for m in _BOUNDARY.finditer(self._buf):
            events.append(parse_event(bytes(self._buf[start:m.end()])))
            start = m.end()
        del self._buf[:start]
        return events

    def flush(self) -> SSEEvent | None:
        """Whatever is left when the stream ends (an event the server did not terminate)."""
        if not self._buf:
            return None
        rest = bytes(self._buf)
        self._buf.clear()
        return parse_event(rest)

    def drain(self) -> bytes:
        """The bytes of an event not yet terminated, as they came; the framer is empty after."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    @property
    def pending(self) -> int:
        return len(self._buf)


def parse_event(raw: bytes) -> SSEEvent:
    name = None
    data: list[str] = []
    for line in raw.decode("utf-8", "replace").splitlines():
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    return SSEEvent(raw, name, "\n".join(data) if data else None)
