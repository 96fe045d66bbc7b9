"""The issue's accuracy goals on a labelled corpus (a seed never used while writing the engine)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from pii_corpus import card, corpus, iban  # noqa: E402

from douane.detect.pii import PiiDetector, redact  # noqa: E402

ENTITIES = ["EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN", "PHONE_NUMBER", "IBAN_CODE"]


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiDetector(ENTITIES)


def test_planted_pii_does_not_reach_upstream_and_benign_text_is_left_alone(detector: PiiDetector) -> None:
    samples = corpus(n_per_entity=120, n_benign=300, seed=424242)
    planted = [s for s in samples if s.entity]
    leaked = [s for s in planted if s.value in redact(s.text, detector.scan(s.text))]
    benign = [s for s in samples if not s.entity]
    altered = [s for s in benign if redact(s.text, detector.scan(s.text)) != s.text]
    assert len(leaked) / len(planted) <= 0.02, [s.value for s in leaked][:10]
    assert len(altered) / len(benign) <= 0.05, [s.text for s in altered][:10]


def test_cards_and_ibans_found_in_text(detector: PiiDetector) -> None:
    import random

    rng = random.Random(5)
    for make, entity in ((card, "CREDIT_CARD"), (iban, "IBAN_CODE")):
        value = make(rng)
        assert [f.entity for f in detector.scan(f"pay with {value} today")] == [entity], value


def test_bare_digit_runs_need_phone_context(detector: PiiDetector) -> None:
    assert detector.scan("Timestamp 1725972006 marks the outage.") == []
    found = detector.scan("Call me on 2125550143 tonight.")
    assert [f.entity for f in found] == ["PHONE_NUMBER"]


def test_held_out_glued_values_and_us_numbers(detector: PiiDetector) -> None:
    """Issue 10: `card=...` and `email=...` (the key's name survives: an email's span used to take
    `email=` with it), and US numbers in phone context that libphonenumber rejects (unassigned area
    codes) or that are written `001-212-...` or `(212)555-0100`. Held out: scripts/pii_corpus.py."""
    from pii_corpus import held_out

    samples = held_out(n_per_kind=80, seed=77)
    redacted = [(s, redact(s.text, detector.scan(s.text))) for s in samples]
    assert [s.text for s, out in redacted if s.value in out] == []
    assert [s.text for s, out in redacted if s.keep and s.keep not in out] == []
