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


def random_texts(pieces: list[str], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 24))) for _ in range(count)]


@pytest.mark.parametrize("literal", ["eyJ", "sk-", "//"])
def test_patterns_tried_once_per_run_find_what_finditer_finds(literal: str) -> None:
    """JWT, OpenAI Token and NPM are tried only at their literal's first place in a run (a start
    later in the run cannot do better); finditer tries every start. The same matches, on texts
    made of the patterns' own pieces."""
    finders = [f for _, f in secrets._patterns() if isinstance(f, secrets._FirstInRun) and f.literal == literal]
    assert len(finders) == 1
    finder = finders[0]
    pieces = {"eyJ": ["eyJ", "AbC9", "a" * 20, ".", "-", "_", "=", " ", "x", ":"],
              "sk-": ["sk-", "T3BlbkFJ", "a" * 20, "AbC9", "-", "_", " ", "x", ".",
                      "sk-" + "a" * 20 + "T3BlbkFJ" + "b" * 20],
              "//": ["//", "/:_authToken=", "npm_", "x", "0123456789abcdef" * 2 + "0123", "\n", " ", "/", ":"]}[literal]
    texts = random_texts(pieces, 4000, seed=len(literal))
    matched = 0
    for text in texts:
        expected = [m.span() for m in finder.pattern.finditer(text)]
        assert [m.span() for m in finder.finditer(text, 0, len(text))] == expected, text
        matched += bool(expected)
    assert matched > 200


def test_private_key_blocks_in_one_pass_are_the_patterns() -> None:
    pieces = ["-----BEGIN PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY BLOCK-----", "-----END PRIVATE KEY-----",
              "-----END RSA PRIVATE KEY-----", "MIIB", "\n", " ", "-----", "BEGIN", "END", "PRIVATE KEY"]
    found = 0
    for text in random_texts(pieces, 4000, seed=7):
        expected = [m.span() for m in secrets.PRIVATE_KEY.finditer(text)]
        assert list(secrets.private_keys(text)) == expected, text
        found += bool(expected)
        last = max((m.start() for m in secrets.PRIVATE_KEY_START.finditer(text)), default=None)
        unterminated = None if last is None or secrets.PRIVATE_KEY.search(text, last) else last
        assert SecretsDetector.open_block(text) == unterminated, text
    assert found > 500
