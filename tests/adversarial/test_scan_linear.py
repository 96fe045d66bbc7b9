"""The scanners' work grows linearly with the text, whatever its shape (issue 9).

Counted, not timed: every detector charges the characters it is about to hand to a recognizer or a
regex to douane.detect.budget. For each adversarial shape (scripts/pii_corpus.py: no whitespace,
all digits, thousands of "@", "a.a.a...@", long base64, "eyJeyJ...", BEGIN lines with no END, ...)
at two sizes, the total stays under a fixed number of characters per character of text. The PII
scan's pieces of work are also bounded by a size that does not grow with the text (its windows
stop growing at _WIDEST, its candidate searches go a chunk at a time), which bounds any regex's own
backtracking inside a piece. Before this, one window could be the whole text and each candidate
widened its window back to the text's start: 1 MB took tens of seconds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from pii_corpus import ADVERSARIAL  # noqa: E402

from douane.detect import pii as pii_module  # noqa: E402
from douane.detect.budget import Budget, metered  # noqa: E402
from douane.detect.injection import InjectionDetector  # noqa: E402
from douane.detect.pii import PiiDetector  # noqa: E402
from douane.detect.secrets import SecretsDetector  # noqa: E402

ENTITIES = ["EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN", "PHONE_NUMBER", "IBAN_CODE"]
SIZES = (20_000, 80_000)

# Characters of work per character of text. PII: a pass for digit runs and one for "@", each entity's
# candidates, then every window read by each of its recognizers (two for cards) plus their reach
# past it; measured up to ~22 on these shapes. Secrets: the 44 patterns over the windows around
# long tokens (a text that is one long token is one window), measured up to ~45. Injection: four
# views, then the rules whose trigger words are there, each over each view; measured up to ~9.
PII_PER_CHAR = 32
SECRETS_PER_CHAR = 48
INJECTION_PER_CHAR = 24
# The largest piece of PII work: one chunk of candidate search (plus its lookahead), or one window
# (at most _WIDEST) with its reach.
PII_PIECE = pii_module._CHUNK + 128


@pytest.fixture(scope="module")
def pii() -> PiiDetector:
    return PiiDetector(ENTITIES)


@pytest.fixture(scope="module")
def secrets() -> SecretsDetector:
    return SecretsDetector()


def work_of(scan: Callable[[], object]) -> Budget:
    with metered(Budget()) as budget:
        scan()
    return budget


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", ADVERSARIAL)
def test_pii_scan_is_linear_in_bounded_pieces(pii: PiiDetector, shape: str, size: int) -> None:
    text = ADVERSARIAL[shape](size)
    budget = work_of(lambda: pii._scan(text))
    assert budget.spent <= PII_PER_CHAR * size, f"{budget.spent / size:.1f} characters of work per character"
    assert budget.largest <= PII_PIECE, f"one piece of work was {budget.largest} characters"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", ADVERSARIAL)
def test_secret_scan_is_linear(secrets: SecretsDetector, shape: str, size: int) -> None:
    text = ADVERSARIAL[shape](size)
    budget = work_of(lambda: secrets.scan(text))
    assert budget.spent <= SECRETS_PER_CHAR * size, f"{budget.spent / size:.1f} characters of work per character"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", ADVERSARIAL)
def test_injection_score_is_linear(shape: str, size: int) -> None:
    text = ADVERSARIAL[shape](size)
    budget = work_of(lambda: InjectionDetector._score(text))
    assert budget.spent <= INJECTION_PER_CHAR * size, f"{budget.spent / size:.1f} characters of work per character"
