"""The clock that windows and cooldowns read: the system's, or a test's."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from douane import clock
from douane.meter.limits import Limits
from douane.meter.state import MemoryState
from douane.policy.model import Policy, Team


def test_parse_time_reads_iso_and_epoch_as_utc() -> None:
    assert clock.parse_time("2030-01-01T00:00:10Z") == datetime(2030, 1, 1, 0, 0, 10, tzinfo=UTC)
    assert clock.parse_time("2030-01-01T01:00:10+01:00") == datetime(2030, 1, 1, 0, 0, 10, tzinfo=UTC)
    assert clock.parse_time("2030-01-01 00:00:10") == datetime(2030, 1, 1, 0, 0, 10, tzinfo=UTC)
    assert clock.parse_time(" 1893456010\n") == datetime(2030, 1, 1, 0, 0, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="neither an ISO-8601 time"):
        clock.parse_time("tomorrow")


def test_the_test_clock_needs_fault_injection(tmp_path: Path) -> None:
    now = tmp_path / "now"
    now.write_text("2030-01-01T00:00:10Z")
    env = {clock.ENV: str(now)}
    assert clock.from_environment({}, fault_injection=True) is clock.SYSTEM
    assert clock.from_environment(env, fault_injection=False) is clock.SYSTEM
    test_clock = clock.from_environment(env, fault_injection=True)
    assert test_clock.now() == datetime(2030, 1, 1, 0, 0, 10, tzinfo=UTC)
    before = test_clock.monotonic()
    now.write_text("2030-01-01T00:01:00Z")  # the test moves time by rewriting the file
    assert test_clock.monotonic() - before == 50
    with pytest.raises(ValueError, match="cannot read"):
        clock.from_environment({clock.ENV: str(tmp_path / "missing")}, fault_injection=True)


def test_limits_cut_their_windows_from_their_clock() -> None:
    fixed = clock.FixedClock("2030-01-01T00:00:50Z")
    lim = Limits(Policy(teams={"t": Team(requests_per_minute=1)}), MemoryState(), fixed)

    def refusal() -> object:
        return asyncio.run(lim.reserve("t", "c", 1, None))[1]

    assert refusal() is None
    second = refusal()
    assert second is not None and second.retry_after == 10  # type: ignore[attr-defined]
    fixed.advance(9)
    assert refusal() is not None, "still the same minute"
    fixed.advance(1)
    assert refusal() is None, "a new minute, a new window"
