"""Secrets in text: detect-secrets' regex plugins, plus the keys it does not know.

Only the regex plugins are used: its entropy plugins flag ordinary words in prose (~164 false hits
per KB measured), and its keyword plugin is built for source code. Private keys are matched as a
whole block (detect-secrets matches only the BEGIN line, which would leave the key itself).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.plugins.base import RegexBasedDetector

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
PRIVATE_KEY_START = re.compile(r"-----BEGIN[A-Z ]*PRIVATE KEY")


@dataclass(frozen=True)
class Secret:
    kind: str
    start: int
    end: int


def _patterns() -> list[tuple[str, re.Pattern[str]]]:
    out: list[tuple[str, re.Pattern[str]]] = []
    mapping: dict[str, type] = get_mapping_from_secret_type_to_class()
    for name, cls in mapping.items():
        if name in _SKIP or not issubclass(cls, RegexBasedDetector):
            continue
        out.extend((name, regex) for regex in cls().denylist)
    out.extend((name, re.compile(p)) for name, p in _EXTRA)
    return out


# Every secret the patterns know is, or sits next to, a long unbroken token (or one of these words):
# the patterns run only on windows around those, so ordinary prose costs almost nothing.
_LONG_TOKEN = re.compile(r"[\w\-+/=.:]{16,}")
_KEYWORDS = re.compile(r"cloudant|softlayer|\bibm|\bcos\b|://[^\s/@]+@", re.IGNORECASE)
_KEYWORD_HINTS = ("cloudant", "softlayer", "ibm", "cos", "://")
_MARGIN = 64
# _LONG_TOKEN's characters as "x" in the UTF-8 bytes (every non-ASCII byte too, so a token of
# non-ASCII word characters still shows): sixteen x in a row is a C-speed test for a long token,
# where the regex itself walks every word of the text (~70 us per 2 KB).
_TOKEN_BYTES = bytes(120 if c >= 128 or chr(c).isalnum() or chr(c) in "_-+/=.:" else 32 for c in range(256))


def _windows(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    lowered = text.lower()
    long_token = b"x" * 16 in text.encode("utf-8", "surrogatepass").translate(_TOKEN_BYTES)
    matches = list(_LONG_TOKEN.finditer(text)) if long_token else []
    if any(h in lowered for h in _KEYWORD_HINTS):
        matches = sorted(matches + list(_KEYWORDS.finditer(text)), key=lambda m: m.start())
    for m in matches:
        start, end = max(0, m.start() - _MARGIN), min(len(text), m.end() + _MARGIN)
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    return spans


class SecretsDetector:
    def __init__(self) -> None:
        self.patterns = _patterns()

    def scan(self, text: str) -> list[Secret]:
        found = [Secret("Private Key", m.start(), m.end()) for m in PRIVATE_KEY.finditer(text)] \
            if "-----BEGIN" in text else []
        for start, end in _windows(text):
            chunk = text[start:end]
            for name, regex in self.patterns:
                # the whole match: some plugins' groups mark a prefix (ghp), not the secret
                found.extend(Secret(name, m.start() + start, m.end() + start) for m in regex.finditer(chunk)
                             if m.end() > m.start())
        kept: list[Secret] = []
        for s in sorted(found, key=lambda s: (s.start, -(s.end - s.start))):
            if not kept or s.start >= kept[-1].end:
                kept.append(s)
        return kept

    @staticmethod
    def open_block(text: str) -> int | None:
        """Where an unterminated private key block starts (a stream must hold it back), if any."""
        last = None
        for m in PRIVATE_KEY_START.finditer(text):
            last = m.start()
        if last is None or PRIVATE_KEY.search(text, last):
            return None
        return last
