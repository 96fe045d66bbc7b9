"""The time that rate-limit and budget windows and circuit-breaker cooldowns read.

In production it is the system's. Tests give components a `FixedClock` they move by hand, so that
nothing waits on the wall clock and no result depends on when the test runs (a minute boundary
crossed mid-test would otherwise reset a rate limit). A test of a running proxy does the same with
an environment variable, honoured only with fault injection on (douane.faults):

    DOUANE_FAULT_INJECTION=1 DOUANE_TEST_CLOCK=/tmp/now douane run ...

where /tmp/now holds the time as ISO-8601 (`2030-01-01T00:00:10Z`) or epoch seconds; the file is
read whenever the clock is asked, so the test moves time by rewriting it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from douane import faults

log = logging.getLogger(__name__)

ENV = "DOUANE_TEST_CLOCK"


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC: what calendar windows (minute, day, month) are cut from."""
        ...

    def monotonic(self) -> float:
        """Seconds that only ever go forward: what cooldowns and timeouts are measured in."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM = SystemClock()


class FixedClock:
    """A clock that stands still until moved: `advance(seconds)` or `set(when)`."""

    def __init__(self, when: datetime | str = "2030-01-01T00:00:00Z"):
        self.at = parse_time(when) if isinstance(when, str) else when.astimezone(UTC)
        self._start = self.at

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return (self.at - self._start).total_seconds()

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)

    def set(self, when: datetime | str) -> None:
        self.at = parse_time(when) if isinstance(when, str) else when.astimezone(UTC)


class FileClock:
    """The time written in a file (a running proxy's test clock); monotonic as long as the test only
    moves it forward."""

    def __init__(self, path: Path):
        self.path = path
        self.now()  # a missing or unreadable file stops start-up, not a call

    def now(self) -> datetime:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"{ENV}: cannot read {self.path}: {e.strerror}") from None
        return parse_time(text)

    def monotonic(self) -> float:
        return self.now().timestamp()


def parse_time(text: str) -> datetime:
    """ISO-8601 (a time without an offset is UTC) or epoch seconds, as an aware UTC datetime."""
    text = text.strip()
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{ENV}: {text[:60]!r} is neither an ISO-8601 time (2030-01-01T00:00:10Z) "
                         "nor epoch seconds") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def from_environment(environ: Mapping[str, str] = os.environ, fault_injection: bool | None = None) -> Clock:
    """The system clock, or with fault injection on, the test clock DOUANE_TEST_CLOCK names."""
    path = environ.get(ENV)
    if not path:
        return SYSTEM
    if not (faults.ENABLED if fault_injection is None else fault_injection):
        log.warning("%s is set but ignored: a test clock needs DOUANE_FAULT_INJECTION=1", ENV)
        return SYSTEM
    log.warning("test clock ON (%s=%s): limits, budgets and breakers read the time from that file", ENV, path)
    return FileClock(Path(path))
