"""What the relay tries for one call, in which order, and what each outcome means. Pure: no I/O,
no waiting, no clock but the one the breaker is given; the relay does the sending and the sleeping."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Attempt:
    provider: str
    fmt: str
    model: str | None
    url: str  # scheme://host:port/path?query
    headers: dict[str, str]
    body: bytes
    translate_from: str | None = None  # the client's format when it differs from this target's

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model or '?'}"

    @property
    def base(self) -> str:
        """scheme://host:port, the unit the circuit breaker counts failures of."""
        return "/".join(self.url.split("/", 3)[:3])


@dataclass
class Plan:
    call_id: str
    client_fmt: str
    client_model: str | None
    stream: bool
    attempts: list[Attempt]
    retry_on: list[str]
    retries: int = 0
    backoff: float = 0.2
    first_byte_timeout: float | None = 30.0  # None: wait as the direct path does, without a bound
    # a call that takes the shared warm pool only (upstream.pool), with no fallback rule: its one
    # attempt is the direct path's own request, and no circuit breaker judges it (the direct path has none)
    pooled: bool = False
    tried: list[str] = field(default_factory=list)
    served: Attempt | None = None

    def should_retry(self, status: int | None, kind: str) -> bool:
        """kind: status | timeout | error"""
        if kind != "status":
            return kind in self.retry_on or (kind == "error" and "5xx" in self.retry_on)
        assert status is not None
        return str(status) in self.retry_on or f"{status // 100}xx" in self.retry_on


class Breakers:
    """Per-upstream circuit breakers: `failures` in a row open one for `cooldown` seconds; then one
    probe is let through per cooldown until a success closes it. `clock` is injectable for tests."""

    def __init__(self, failures: int = 3, cooldown: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.failures = failures
        self.cooldown = cooldown
        self.clock = clock
        self._count: dict[str, int] = {}
        self._open_until: dict[str, float] = {}

    def allow(self, key: str) -> bool:
        until = self._open_until.get(key)
        if until is None:
            return True
        now = self.clock()
        if now >= until:  # half-open: let one probe through
            self._open_until[key] = now + self.cooldown
            return True
        return False

    def states(self) -> dict[str, tuple[str, int]]:
        """Each upstream that failed lately: ("open" | "half_open" | "closed", failures in a row)."""
        now = self.clock()
        out = {key: ("closed", n) for key, n in self._count.items()}
        for key, until in self._open_until.items():
            out[key] = ("open" if now < until else "half_open", self._count.get(key, 0))
        return out

    def success(self, key: str) -> None:
        self._count.pop(key, None)
        self._open_until.pop(key, None)

    def failure(self, key: str) -> None:
        self._count[key] = self._count.get(key, 0) + 1
        if self._count[key] >= self.failures:
            self._open_until[key] = self.clock() + self.cooldown
            log.warning("relay: %s failed %d times in a row; skipped for %.0f s", key, self._count[key],
                        self.cooldown)


@dataclass(frozen=True)
class Try:
    attempt: Attempt
    number: int  # 0: the first try of this attempt, then its retries
    delay: float  # seconds to wait before sending it (exponential backoff)


class Dispatch:
    """Walks a plan: each target in turn (unless its circuit is open), each retried up to `retries`
    times with exponential backoff. Records every outcome in `plan.tried` and the breakers."""

    def __init__(self, plan: Plan, breakers: Breakers):
        self.plan = plan
        self.breakers = breakers
        self._attempt = 0
        self._tries = 0

    def next(self) -> Try | None:
        """The next try, or None when every target has had its tries."""
        plan = self.plan
        while self._attempt < len(plan.attempts):
            attempt = plan.attempts[self._attempt]
            if self._tries == 0 and not plan.pooled and not self.breakers.allow(attempt.base):
                plan.tried.append(f"{attempt.label}: skipped (circuit open)")
                self._attempt += 1
                continue
            if self._tries > plan.retries:
                self._attempt, self._tries = self._attempt + 1, 0
                continue
            number = self._tries
            self._tries += 1
            return Try(attempt, number, plan.backoff * 2 ** (number - 1) if number else 0.0)
        return None

    def no_answer(self, t: Try, timed_out: bool, detail: str) -> int | None:
        """No answer (no first byte in time, or a connection error): None to go on, else the status to
        give the client now, when the rule does not fall back on this kind of failure."""
        plan = self.plan
        if not plan.pooled:
            self.breakers.failure(t.attempt.base)
        plan.tried.append(f"{t.attempt.label}: no answer within {plan.first_byte_timeout:g} s" if timed_out
                          else f"{t.attempt.label}: {detail}")
        if plan.should_retry(None, "timeout" if timed_out else "error"):
            return None
        return 504 if timed_out else 502

    def answered(self, t: Try, status: int) -> bool:
        """An answer with `status`: True when it goes to the client, False when the rule tries on."""
        plan = self.plan
        plan.tried.append(f"{t.attempt.label}: {status}")
        if plan.should_retry(status, "status"):
            if status >= 500:
                self.breakers.failure(t.attempt.base)
            return False
        if not plan.pooled:
            self.breakers.success(t.attempt.base)
        plan.served = t.attempt
        return True

    def failure_message(self) -> str:
        if self.plan.pooled and self.plan.tried:  # worded as the direct path's own failure is
            a = self.plan.attempts[0]
            return (f"douane could not get an answer from {a.provider} at {a.base}: "
                    f"{self.plan.tried[-1].removeprefix(a.label + ': ')}")
        return "douane: every upstream failed; tried " + "; ".join(self.plan.tried)
