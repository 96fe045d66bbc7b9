"""Secrets in text: detect-secrets' regex plugins, plus the keys it does not know.

Only the regex plugins are used: its entropy plugins flag ordinary words in prose (~164 false hits
per KB measured), and its keyword plugin is built for source code. Private keys are matched as a
whole block (detect-secrets matches only the BEGIN line, which would leave the key itself).

The patterns run on windows around long tokens, with the text before each window in view (a
window is a start position, not a slice). Every window but a single long token is at most _WIDEST characters, and
each is charged to douane.detect.budget, so a scan is linear in its text and stops at its deadline.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.plugins.base import RegexBasedDetector

from douane.detect import budget

_SKIP = {"Public IP (ipv4)", "Private Key", "Basic Auth Credentials"}

# Keys detect-secrets 1.5 lacks. (name, pattern)
_EXTRA: list[tuple[str, str]] = [
    ("Anthropic API Key", r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
    ("OpenAI API Key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}"),
    ("Google API Key", r"\bAIza[0-9A-Za-z_-]{35}"),
    ("Hugging Face Token", r"\bhf_[A-Za-z0-9]{30,}"),
    ("GitHub Fine-grained Token", r"\bgithub_pat_[A-Za-z0-9_]{60,}"),
    ("Basic Auth Credentials", r"(?<=://)[^\s:/@]+:[^\s:/@]{3,}(?=@)"),
]
PRIVATE_KEY = re.compile(r"-----BEGIN[A-Z ]*PRIVATE KEY( BLOCK)?-----[\s\S]*?-----END[A-Z ]*PRIVATE KEY( BLOCK)?-----")
PRIVATE_KEY_START = re.compile(r"-----BEGIN[A-Z ]*PRIVATE KEY( BLOCK)?-----")
PRIVATE_KEY_END = re.compile(r"-----END[A-Z ]*PRIVATE KEY( BLOCK)?-----")


@dataclass(frozen=True)
class Secret:
    kind: str
    start: int
    end: int


def private_keys(text: str, start: int = 0) -> Iterator[tuple[int, int]]:
    """PRIVATE_KEY.finditer's spans, in one pass: that pattern reads from every BEGIN line to the end
    of the text when no END follows (quadratic on BEGIN lines repeated); once no END follows one
    BEGIN, none follows any later one."""
    while (begin := PRIVATE_KEY_START.search(text, start)) is not None:
        end = PRIVATE_KEY_END.search(text, begin.end())
        if end is None:
            return
        yield begin.start(), end.end()
        start = end.end()


class _FirstInRun:
    """A detect-secrets pattern tried only where its literal first appears in a run of the text
    (`run_end` finds where a run ends). For these patterns a start later in the same run succeeds
    only if the first does (what follows the run decides), so finditer finds the same matches;
    but finditer tries every start and reads to the run's end from each: quadratic on "eyJeyJ...",
    "sk-sk-sk-..." or a line of "//". tests/unit/test_secrets.py holds the two to each other."""

    def __init__(self, pattern: re.Pattern[str], literal: str, run_end: str):
        self.pattern, self.literal, self.run_end = pattern, literal, re.compile(run_end)

    def finditer(self, text: str, pos: int, endpos: int) -> Iterator[re.Match[str]]:
        at = text.find(self.literal, pos, endpos)
        while at != -1:
            m = self.pattern.match(text, at, endpos)
            if m is not None:
                yield m
                resume = m.end() if m.end() > at else at + 1
            else:
                wall = self.run_end.search(text, at, endpos)
                resume = wall.end() if wall is not None else endpos
            at = text.find(self.literal, resume, endpos)


# detect-secrets patterns read from every start of a long run: (literal, what ends a run).
_RUNS = {
    "eyJ[A-Za-z0-9-_=]+\\.[A-Za-z0-9-_=]+\\.?[A-Za-z0-9-_.+/=]*?": ("eyJ", r"[^A-Za-z0-9\-_=]"),
    "sk-[A-Za-z0-9-_]*[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}": ("sk-", r"[^A-Za-z0-9\-_]"),
    "\\/\\/.+\\/:_authToken=\\s*((npm_.+)|([A-Fa-f0-9-]{36})).*": ("//", r"\n"),
}

Finder = re.Pattern[str] | _FirstInRun


def _patterns() -> list[tuple[str, Finder]]:
    out: list[tuple[str, Finder]] = []
    mapping: dict[str, type] = get_mapping_from_secret_type_to_class()
    for name, cls in mapping.items():
        if name in _SKIP or not issubclass(cls, RegexBasedDetector):
            continue
        for regex in cls().denylist:
            out.append((name, _FirstInRun(regex, *_RUNS[regex.pattern]) if regex.pattern in _RUNS else regex))
    out.extend((name, re.compile(p)) for name, p in _EXTRA)
    return out


# Every secret the patterns know is, or sits next to, a long unbroken token (or one of these words):
# the patterns run only on windows around those, so ordinary prose costs almost nothing.
_LONG_TOKEN = re.compile(r"[\w\-+/=.:]{16,}")
_KEYWORDS = re.compile(r"cloudant|softlayer|\bibm|\bcos\b|://[^\s/@]+@", re.IGNORECASE)
_KEYWORD_HINTS = ("cloudant", "softlayer", "ibm", "cos", "://")
_MARGIN = 64
_WIDEST = 4096  # merged windows stop growing here (a single longer token is one window)
# _LONG_TOKEN's characters as "x" in the UTF-8 bytes (every non-ASCII byte too, so a token of
# non-ASCII word characters still shows): sixteen x in a row is a C-speed test for a long token,
# where the regex itself walks every word of the text (~70 us per 2 KB).
_TOKEN_BYTES = bytes(120 if c >= 128 or chr(c).isalnum() or chr(c) in "_-+/=.:" else 32 for c in range(256))


def _windows(text: str) -> list[tuple[int, int]]:
    budget.charge(len(text))
    spans: list[tuple[int, int]] = []
    lowered = text.lower()
    long_token = b"x" * 16 in text.encode("utf-8", "surrogatepass").translate(_TOKEN_BYTES)
    matches = list(_LONG_TOKEN.finditer(text)) if long_token else []
    if any(h in lowered for h in _KEYWORD_HINTS):
        matches = sorted(matches + list(_KEYWORDS.finditer(text)), key=lambda m: m.start())
    for m in matches:
        start, end = max(0, m.start() - _MARGIN), min(len(text), m.end() + _MARGIN)
        if spans and start <= spans[-1][1] and end - spans[-1][0] <= _WIDEST:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    return spans


class SecretsDetector:
    def __init__(self) -> None:
        self.patterns = _patterns()

    def scan(self, text: str) -> list[Secret]:
        found = []
        if "-----BEGIN" in text:
            budget.charge(len(text))
            found = [Secret("Private Key", s, e) for s, e in private_keys(text)]
        for start, end in _windows(text):
            for name, pattern in self.patterns:
                budget.charge(end - start)
                # the whole match: some plugins' groups mark a prefix (ghp), not the secret
                for m in pattern.finditer(text, start, end):
                    if m.end() > m.start():
                        found.append(Secret(name, m.start(), m.end()))
        kept: list[Secret] = []
        for s in sorted(found, key=lambda s: (s.start, -(s.end - s.start))):
            if not kept or s.start >= kept[-1].end:
                kept.append(s)
        return kept

    @staticmethod
    def open_block(text: str) -> int | None:
        """Where an unterminated private key block starts (a stream must hold it back), if any."""
        budget.charge(len(text))
        last = None
        for m in PRIVATE_KEY_START.finditer(text):
            last = m
        if last is None or PRIVATE_KEY_END.search(text, last.end()):
            return None
        return last.start()
