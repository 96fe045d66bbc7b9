"""A guard timeout stops the scan itself (issue 9).

Python cannot kill a thread: a scan that ran past `limits.guard_timeout_s` kept a core busy for as
long as it needed (35 s more, for 1 MB), and its caller had long answered 503. The detectors now
charge their work to a budget (douane.detect.budget) and stop at the first charge past its
deadline. In the detector tests below the clock *is* the work done (one tick per character
charged), so both "past the deadline" and "how much work after it" are counts, not times.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from pii_corpus import ADVERSARIAL  # noqa: E402

from douane import guard as flows  # noqa: E402
from douane.detect import budget as budgets  # noqa: E402
from douane.detect.budget import Budget, ScanTimeout, metered  # noqa: E402
from douane.detect.injection import InjectionDetector  # noqa: E402
from douane.detect.pii import PiiDetector  # noqa: E402
from douane.detect.secrets import SecretsDetector  # noqa: E402
from tests.adversarial.test_scan_linear import PII_PIECE  # noqa: E402

DEADLINE = 50_000  # characters of work


@pytest.fixture(scope="module")
def pii() -> PiiDetector:
    return PiiDetector(["EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN", "PHONE_NUMBER", "IBAN_CODE"])


def on_work_clock(deadline: float) -> Budget:
    budget = Budget(deadline=deadline)
    budget.clock = lambda: budget.spent
    return budget


def work_to_finish(scan: Callable[[], Any]) -> int:
    with metered(Budget()) as budget:
        scan()
    return budget.spent


def stopped_at(scan: Callable[[], Any]) -> Budget:
    with metered(on_work_clock(DEADLINE)) as budget, pytest.raises(ScanTimeout):
        scan()
    return budget


@pytest.mark.parametrize("shape", ["prose dense with PII", "digits with separators", "thousands of @",
                                   "a@a@a@", "no whitespace", "overlapping findings"])
def test_a_pii_scan_stops_within_one_bounded_piece_of_its_deadline(pii: PiiDetector, shape: str) -> None:
    text = ADVERSARIAL[shape](400_000)
    assert work_to_finish(lambda: pii._scan(text)) > 10 * DEADLINE, "the whole scan is far more work"
    budget = stopped_at(lambda: pii._scan(text))
    assert budget.spent <= DEADLINE + PII_PIECE, f"{budget.spent - DEADLINE} characters of work past the deadline"


@pytest.mark.parametrize("shape", ["prose dense with PII", "base64", "eyJeyJ"])
def test_a_secret_scan_stops_at_its_deadline(shape: str) -> None:
    """Its pieces are a pass over the text, or one pattern over one window (a window is at most
    4 KB, or one long token): it stops at the first check past the deadline."""
    text = ADVERSARIAL[shape](400_000)
    secrets = SecretsDetector()
    whole = work_to_finish(lambda: secrets.scan(text))
    budget = stopped_at(lambda: secrets.scan(text))
    assert budget.spent <= DEADLINE + budget.largest < whole


@pytest.mark.parametrize("shape", ["prose dense with PII", "leetspeak"])
def test_an_injection_score_stops_at_its_deadline(shape: str) -> None:
    """Its pieces are one view of the text, or one rule over one view."""
    text = ADVERSARIAL[shape](400_000)
    whole = work_to_finish(lambda: InjectionDetector._score(text))
    budget = stopped_at(lambda: InjectionDetector._score(text))
    assert budget.spent <= DEADLINE + budget.largest < whole


def test_no_budget_no_limit(pii: PiiDetector) -> None:
    """Scans on the event loop (small texts) run with no budget: charging is a no-op."""
    assert pii.scan("call 212-555-0143") and budgets._CURRENT.get() is None


async def test_a_scan_handed_to_a_worker_thread_stops_when_its_guard_times_out() -> None:
    """The wiring in douane.guard.scan: the worker runs under the guard's deadline. The work here
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
