"""Counters for limits and budgets: check-and-reserve across several counters atomically.

`memory` serves one proxy process; `redis` serves any number of them behind a load balancer: the
check and the increments run in one Lua script, so no burst of concurrent calls on any instance
can pass a limit. Amounts are integers (requests, tokens, micro-dollars).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from douane.urls import without_password

log = logging.getLogger(__name__)


class StateUnavailable(Exception):
    """The shared state cannot be reached; the policy's `fail` decides what happens."""


@dataclass(frozen=True)
class Take:
    key: str  # full counter key, window included
    amount: int
    limit: int
    ttl: int  # seconds the counter must outlive its window


class State(Protocol):
    async def reserve(self, takes: list[Take]) -> int | None:
        """Add every amount if all fit under their limits; else change nothing and return the index of
        the first take that does not fit."""
        ...

    async def adjust(self, deltas: list[tuple[str, int]]) -> None:
        """Correct reserved amounts with what was really used (deltas may be negative)."""
        ...

    async def close(self) -> None: ...


class MemoryState:
    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self._windows: set[str] = set()

    async def reserve(self, takes: list[Take]) -> int | None:
        # No await between check and increment: atomic on the event loop.
        for i, t in enumerate(takes):
            if self.counters.get(t.key, 0) + t.amount > t.limit:
                return i
        for t in takes:
            self.counters[t.key] = self.counters.get(t.key, 0) + t.amount
        self._forget_old(takes)
        return None

    async def adjust(self, deltas: list[tuple[str, int]]) -> None:
        for key, delta in deltas:
            if key in self.counters:
                self.counters[key] += delta

    def _forget_old(self, takes: list[Take]) -> None:
        """Counters of past windows are dropped when a new window appears for the same counter."""
        for t in takes:
            base, _, window = t.key.rpartition("@")
            if t.key not in self._windows:
                self._windows.add(t.key)
                for old in [k for k in self._windows if k.startswith(base + "@") and k != t.key]:
                    self._windows.discard(old)
                    self.counters.pop(old, None)

    async def close(self) -> None:
        pass


_RESERVE = """
local n = #KEYS
for i = 1, n do
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if current + tonumber(ARGV[i]) > tonumber(ARGV[n + i]) then
    return i
  end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[i], ARGV[i])
  redis.call('EXPIRE', KEYS[i], ARGV[2 * n + i])
end
return 0
"""

_ADJUST = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCRBY', KEYS[i], ARGV[i])
  end
end
return 0
"""


class RedisState:
    def __init__(self, url: str, prefix: str = "douane:"):
        import redis.asyncio as redis

        self.url = url
        self.where = without_password(url)  # what messages and logs may name
        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
        self._reserve = self.client.register_script(_RESERVE)
        self._adjust = self.client.register_script(_ADJUST)

    async def reserve(self, takes: list[Take]) -> int | None:
        keys = [self.prefix + t.key for t in takes]
        args = [t.amount for t in takes] + [t.limit for t in takes] + [t.ttl for t in takes]
        try:
            result = int(await self._reserve(keys=keys, args=args))
        except Exception as e:
            raise self._unavailable(e) from None
        return None if result == 0 else result - 1

    async def adjust(self, deltas: list[tuple[str, int]]) -> None:
        if not deltas:
            return
        try:
            await self._adjust(keys=[self.prefix + k for k, _ in deltas], args=[d for _, d in deltas])
        except Exception as e:
            raise self._unavailable(e) from None

    def _unavailable(self, error: Exception) -> StateUnavailable:
        """Any failure of Redis is the state being unavailable, not only a lost connection: a Redis
        out of memory (OOM), a read-only replica (READONLY), a script error or an answer that is not a
        number would otherwise escape the meter, and the call go out with nothing reserved."""
        import redis

        if isinstance(error, redis.ConnectionError | redis.TimeoutError | OSError):
            return StateUnavailable(f"redis at {self.where} is unreachable: {error}")
        return StateUnavailable(f"redis at {self.where} failed ({type(error).__name__}: {error})")

    async def close(self) -> None:
        await self.client.aclose()
