"""A scan's work, counted, and its deadline, kept.

Python cannot stop a thread, so a guard that gives up on a scan cannot kill it: the scan would go on
burning a core. Instead the detectors charge each piece of work before doing it (the characters
they are about to hand to a recognizer or a regex) to the budget of the current context, and the
charge raises ScanTimeout once the budget's deadline has passed. The pieces are bounded, so a scan
stops within one piece of its deadline. The same count lets tests prove, without timing anything,
that the work grows linearly with the text.

The budget lives in a context variable: `asyncio.to_thread` copies the caller's context into the
worker thread, and scans on the event loop (small texts) run with no budget at all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


class ScanTimeout(TimeoutError):
    """A scan ran past its deadline and stopped where it was."""


@dataclass
class Budget:
    deadline: float = math.inf  # on `clock`'s scale; past it, the next charge raises
    clock: Callable[[], float] = time.monotonic
    spent: int = 0  # characters handed to recognizers and regexes so far
    largest: int = 0  # the largest single piece charged

    def charge(self, chars: int) -> None:
        if self.clock() > self.deadline:
            raise ScanTimeout(f"the scan passed its deadline after {self.spent} characters of work")
        self.spent += chars
        if chars > self.largest:
            self.largest = chars


_CURRENT: ContextVar[Budget | None] = ContextVar("douane_scan_budget", default=None)


def charge(chars: int) -> None:
    """Count `chars` characters of work about to be done; raise ScanTimeout past the deadline."""
    budget = _CURRENT.get()
    if budget is not None:
        budget.charge(chars)


@contextmanager
def metered(budget: Budget) -> Iterator[Budget]:
    """Charge the detectors' work in this context to `budget`."""
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


def run_until[T](deadline: float, work: Callable[[], T]) -> T:
    """Run `work` so that its scans stop (ScanTimeout) once time.monotonic() passes `deadline`."""
    with metered(Budget(deadline)):
        return work()
