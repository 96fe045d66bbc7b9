"""Answers streamed through the output guard: bounded work per event (issue 9).

The guard holds back a window of text that could still change (half a secret, half a placeholder)
and scans what it holds with each event. Two shapes made that hold, and its rescans, grow with the
answer: an unterminated private key block (held up to 16 KB and rescanned whole on every event)
and text with no spaces (held whole, since only "the word still being written" was held back).
Counted with douane.detect.budget, not timed.
"""

from __future__ import annotations

import base64
import random

import pytest

from douane.detect.budget import Budget, metered
from douane.detect.pii import PiiDetector
from douane.detect.secrets import SecretsDetector
from douane.rewrite import OutputGuard


@pytest.fixture(scope="module")
def pii() -> PiiDetector:
    return PiiDetector(["EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN", "PHONE_NUMBER", "IBAN_CODE"])


@pytest.fixture(scope="module")
def secrets() -> SecretsDetector:
    return SecretsDetector()


def stream(guard: OutputGuard, text: str, event: int) -> str:
    out = [guard.push(text[i:i + event]) for i in range(0, len(text), event)]
    return "".join(out) + guard.drain()


@pytest.mark.parametrize("size", [4_000, 16_000])
def test_a_streamed_private_key_block_is_not_rescanned_on_every_event(pii: PiiDetector, secrets: SecretsDetector,
                                                                       size: int) -> None:
    """An unterminated key block is held back (up to max_block) until its END line: each event used
    to rescan the whole held block, quadratic in it (16 KB in 64-character events: ~250 rescans).
    Now the block is scanned when its END arrives and once more as the stream drains: two scans of
    ~50 characters of work per character."""
    body = base64.b64encode(random.Random(size).randbytes(size))[:size].decode()
    text = f"here it is: -----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY----- done"
    guard = OutputGuard(secrets, pii, secrets_action="redact", pii_action="redact")
    with metered(Budget()) as budget:
        stream(guard, text, 64)
    assert budget.spent <= 128 * len(text), f"{budget.spent / len(text):.1f} characters of work per character"
    redacted = stream(OutputGuard(secrets, pii, secrets_action="redact"), text, 64)
    assert redacted == "here it is: <SECRET:Private Key> done"


@pytest.mark.parametrize("size", [20_000, 80_000])
def test_a_stream_without_spaces_is_not_held_back_whole(pii: PiiDetector, secrets: SecretsDetector,
                                                        size: int) -> None:
    """Text with no spaces and nothing to find (Chinese, say) was held back until the end, every
    event rescanning all of it: at most a window is held now."""
    text = "漢字" * (size // 2)
    guard = OutputGuard(secrets, pii, secrets_action="redact", pii_action="redact")
    out, held = [], []
    for i in range(0, len(text), 100):
        out.append(guard.push(text[i:i + 100]))
        held.append(len(guard.held))
    out.append(guard.drain())
    assert "".join(out) == text
    assert max(held) <= guard.window
