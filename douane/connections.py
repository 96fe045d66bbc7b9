"""Bounds on what a client connection may hold: how many per address, how long to send a request.

mitmproxy closes a connection only after `tcp_timeout` (600 s) without a byte, so a client sending a
request body one byte every two seconds, or a thousand connections that never send a request, are
held forever. Here each connection is in one of three states:
- waiting for a request head (new, or kept alive after an answer): at most `idle_timeout_s`;
- reading a request body, from its head to its last byte: at most `request_body_timeout_s`;
- waiting on the provider, or streaming its answer: unbounded here (a long generation is legitimate).
Pure bookkeeping with an injectable clock; addons/connections.py glues it to mitmproxy's hooks.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

TUNNEL = "tunnel"  # a pseudo-flow that keeps a tunnelled connection out of the idle bound


@dataclass
class _Conn:
    address: str
    since: float  # when the current wait began
    reading: dict[str, float] = field(default_factory=dict)  # flow id -> when its head arrived
    active: set[str] = field(default_factory=set)  # flows read, not answered yet


@dataclass(frozen=True)
class Expired:
    connection: str
    why: str
    flows: tuple[str, ...]  # requests still being read when the connection expired


class ConnectionBounds:
    def __init__(self, max_per_address: int, idle_timeout: float, body_timeout: float,
                 clock: Callable[[], float] = time.monotonic):
        self.max_per_address = max_per_address
        self.idle_timeout = idle_timeout
        self.body_timeout = body_timeout
        self.clock = clock
        self._conns: dict[str, _Conn] = {}
        self._per_address: Counter[str] = Counter()

    def opened(self, connection: str, address: str) -> bool:
        """Count a new connection; False when its address already holds the most it may."""
        if self._per_address[address] >= self.max_per_address:
            return False
        self._per_address[address] += 1
        self._conns[connection] = _Conn(address, self.clock())
        return True

    def closed(self, connection: str) -> None:
        conn = self._conns.pop(connection, None)
        if conn is not None:
            self._per_address[conn.address] -= 1
            if self._per_address[conn.address] <= 0:
                del self._per_address[conn.address]

    def tunnel(self, connection: str) -> None:
        """A CONNECT to a host douane does not intercept: the tunnel's traffic is not ours to bound
        (unless requests appear in it after all: the TLS server name may name a provider)."""
        conn = self._conns.get(connection)
        if conn is not None:
            conn.active.add(TUNNEL)

    def head(self, connection: str, flow: str) -> None:
        """A request head arrived: its body is now being read."""
        conn = self._conns.get(connection)
        if conn is not None:
            conn.active.discard(TUNNEL)
            conn.reading[flow] = self.clock()

    def body(self, connection: str, flow: str) -> None:
        """A request was read whole: from now on the provider has it."""
        conn = self._conns.get(connection)
        if conn is not None:
            conn.reading.pop(flow, None)
            conn.active.add(flow)

    def done(self, connection: str, flow: str) -> None:
        """A request was answered (or failed): the connection waits for the next one."""
        conn = self._conns.get(connection)
        if conn is None:
            return
        conn.reading.pop(flow, None)
        conn.active.discard(flow)
        if not conn.reading and not conn.active:
            conn.since = self.clock()

    def expired(self) -> list[Expired]:
        """Connections past a bound, to be closed; they are forgotten here."""
        now = self.clock()
        out = []
        for cid, conn in self._conns.items():
            slow = [f for f, t in conn.reading.items() if now - t > self.body_timeout]
            if slow:
                out.append(Expired(cid, f"the request body was not received within {self.body_timeout:g} s "
                                        "(limits.request_body_timeout_s)", tuple(conn.reading)))
            elif not conn.reading and not conn.active and now - conn.since > self.idle_timeout:
                out.append(Expired(cid, f"no request within {self.idle_timeout:g} s (limits.idle_timeout_s)", ()))
        for gone in out:
            self.closed(gone.connection)
        return out

    @property
    def open(self) -> int:
        return len(self._conns)
