"""A guard timeout stops the scan itself (issue 9).

Python cannot kill a thread: a scan that ran past `limits.guard_timeout_s` kept a core busy for as
long as it needed (35 s more, for 1 MB), and its caller had long answered 503. The detectors now
charge their work to a budget (douane.detect.budget) and stop at the first charge past its
deadline. In the detector tests below the clock *is* the work done (one tick per character
charged), so both "past the deadline" and "how much work after it" are counts, not times.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from addons import flows
from douane.detect import budget as budgets
from douane.detect.budget import ScanTimeout


async def test_a_scan_handed_to_a_worker_thread_stops_when_its_guard_times_out() -> None:
    """The wiring in addons.flows.scan: the worker runs under the guard's deadline. The work here
    would take 50 million charges; it must stop long before (a count, not a time)."""
    gw = SimpleNamespace(policy=SimpleNamespace(limits=SimpleNamespace(guard_timeout_s=0.05)))
    steps, outcome, finished = [0], [], threading.Event()

    def endless_scan() -> None:
        try:
            while steps[0] < 50_000_000:
                budgets.charge(1)
                steps[0] += 1
            outcome.append("ran to the end")
        except ScanTimeout:
            outcome.append("stopped")
            raise
        finally:
            finished.set()

    with pytest.raises(TimeoutError):
        await flows.scan(gw, flows.INLINE_SCAN_CHARS + 1, endless_scan)  # type: ignore[arg-type]
    assert finished.wait(60), "the worker thread is still scanning a minute later"
    assert outcome == ["stopped"] and steps[0] < 50_000_000
