"""The secrets detector: what it finds in prose, and that its cheap gate never hides a long token."""

from __future__ import annotations

import random

import pytest

from douane.detect import secrets
from douane.detect.secrets import SecretsDetector

AWS = "AKIAIOSFODNN7EXAMPLE"
GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


@pytest.mark.parametrize("text, kind", [
    (f"the key is {AWS} ok", "AWS Access Key"),
    (f"token={GITHUB}", "GitHub Token"),
    ("see https://admin:hunter2pass@db.example.com/x", "Basic Auth Credentials"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK\n-----END RSA PRIVATE KEY-----", "Private Key"),
])
def test_finds_secrets_in_prose(text: str, kind: str) -> None:
    assert [s.kind for s in SecretsDetector().scan(text)] == [kind]


def test_prose_has_no_secrets() -> None:
    text = "the customer reports the invoice for order 1499-865081072 was charged twice, ship 2024-01-02"
    assert SecretsDetector().scan(text) == []


def test_long_token_gate_is_never_narrower_than_the_pattern() -> None:
    rng = random.Random(3)
    alphabet = "ab1_-+/=.:é世" * 3 + "€ \n\t,;!?\u00a0"
    long_ones = 0
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        if secrets._LONG_TOKEN.search(text):
            long_ones += 1
            assert secrets._windows(text), repr(text)
    assert long_ones > 300


def test_placeholders_are_blanked_for_the_secret_scan_and_secrets_beside_them_still_found() -> None:
    from douane.rewrite import OutputGuard, without_placeholders

    text = f"mail <EMAIL_ADDRESS_12> with {AWS}<PHONE_NUMBER_3> now"
    assert without_placeholders(text) == text.replace("<EMAIL_ADDRESS_12>", " " * 18).replace("<PHONE_NUMBER_3>",
                                                                                                " " * 16)
    assert not secrets._windows(without_placeholders("echo <EMAIL_ADDRESS_12>, <PHONE_NUMBER_13>"))
    guard = OutputGuard(SecretsDetector(), None, secrets_action="redact")
    assert guard.check(text) == "mail <EMAIL_ADDRESS_12> with <SECRET:AWS Access Key><PHONE_NUMBER_3> now"
