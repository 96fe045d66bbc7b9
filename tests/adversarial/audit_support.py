"""Helpers for the audit store's adversarial tests: a virtual clock, bounded waits, a small disk."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from douane.audit import AuditRecord


class VirtualClock:
    """Time that moves only when the writer waits with a timeout: a wait that nobody cuts short
    (within a real millisecond) jumps to its end.

    Backoffs, batching intervals and log rate limits then take no real time, and a test can tell
    how much (virtual) time passed. Not for tests whose readers race merges: a merge's
    commit_delay protects readers in other processes, who live in real time.
    """

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        if timeout is None:
            cond.wait()
            return
        if not cond.wait(0.001):  # woken early (notified): no time passed; else the wait ran out
            self.t += max(timeout, 0.0)


def record(i: object, **kw: object) -> AuditRecord:
    kw.setdefault("pii_entities", ["EMAIL_ADDRESS"])
    return AuditRecord(id=f"r{i}", ts=datetime.now(UTC), provider="openai", **kw)  # type: ignore[arg-type]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Wait (bounded) for a condition; fail loudly, naming it, when it does not come."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        time.sleep(0.01)


@contextmanager
def small_disk(path: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (root only); unmounted afterwards, whatever happens."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Fill the disk to the last byte; returns the filler file (delete it to free the space)."""
    filler = disk / "filler"
    with open(filler, "ab", buffering=0) as fh:
        for size in (65536, 1):  # then the last few bytes
            try:
                while fh.write(b"\0" * size):
                    pass
            except OSError:
                pass
    return filler
