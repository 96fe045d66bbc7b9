"""Invisible and control characters in text: what a person reviewing a prompt cannot see.

Classes (each a finding, stripped by `strip`):
- tag: Unicode tag characters U+E0000-E007F. They map one to one onto ASCII (U+E0041 is "A"), so a
  run of them is a hidden message ("ASCII smuggling"); what they spell is decoded (`hidden`) for
  the injection scan. Kept only as the tag sequence of an emoji subdivision flag (England,
  Scotland, Wales), the one standard use.
- variation: runs of variation selectors (U+FE00-FE0F, U+E0100-E01EF). One selector after a
  character picks its presentation (U+FE0F makes an emoji) and is kept; two or more in a row, or
  one with nothing to select, encode bytes (one selector per byte, "emoji smuggling"): decoded too.
- zero_width: zero-width and other invisible formatting characters (U+200B-200D, U+2060-2064,
  U+FEFF, soft hyphen, Hangul fillers, ...). A zero-width joiner (U+200D) is kept inside an emoji
  ZWJ sequence (a family emoji is several emoji joined by it: stripping it would split the family
  into its members), and a single joiner or non-joiner (U+200C) between two letters of a script
  that needs them (Arabic, Persian, the Indic scripts, Sinhala, ...) is kept: it is spelling there.
- bidi: bidirectional embeddings, overrides, isolates and marks (U+202A-202E, U+2066-2069,
  U+200E, U+200F, U+061C): they reorder what a reviewer sees ("Trojan Source") and change nothing
  a model needs; Arabic and Hebrew text reads the same without them.
- control: C0 and C1 control characters other than whitespace (tab, line feed, vertical tab, form
  feed, carriage return and U+0085 are kept), and DEL.

Most text has none: `Sanitizer.check` answers that with C-speed string tests (a few microseconds
on 2 KB) before any character is looked at one by one.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import regex

from douane.detect.cache import TextCache

TAG, VARIATION, ZERO_WIDTH, BIDI, CONTROL = "tag", "variation", "zero_width", "bidi", "control"
CLASSES = (TAG, VARIATION, ZERO_WIDTH, BIDI, CONTROL)

_CONTROLS = "\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f"  # C0 and C1 but \t \n \v \f \r and U+0085 (NEL): whitespace
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_ZERO_WIDTH = ("\u00ad\u034f\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200d\u2060-\u2065\u206a-\u206f\u3164\ufeff"
               "\uffa0\ufff9-\ufffb\U0001d173-\U0001d17a")
_SELECTORS = "\ufe00-\ufe0f\U000e0100-\U000e01ef"
_TAGS = "\U000e0000-\U000e007f"
# Maximal runs of candidates; each character of a run is then judged with its neighbours.
_RUNS = re.compile(f"[{_CONTROLS}{_BIDI}{_ZERO_WIDTH}{_SELECTORS}{_TAGS}]+")
_CLASS_OF = [(re.compile(f"[{chars}]"), name) for chars, name in
             ((_TAGS, TAG), (_SELECTORS, VARIATION), (_BIDI, BIDI), (_CONTROLS, CONTROL), (_ZERO_WIDTH, ZERO_WIDTH))]

ZWJ, ZWNJ, VS16 = "\u200d", "\u200c", "\ufe0f"
# Candidates that str.isprintable() passes (letters and marks that render as nothing): looked for
# one by one, since the fast test below cannot see them.
_PRINTABLE_INVISIBLE = ("\u034f", "\u115f", "\u1160", "\u17b4", "\u17b5", "\u3164", "\uffa0")
# In UTF-8, U+FE00-FE0F start with EF B8 and U+E0000-E0FFF (tags, supplementary selectors) with F3 A0.
_SELECTOR_BYTES = (b"\xef\xb8", b"\xf3\xa0")

_PICTOGRAPHIC = regex.compile(r"\p{Extended_Pictographic}")
_EMOJI_MODIFIER = regex.compile(r"\p{Emoji_Modifier}")
# Scripts whose spelling uses ZWJ/ZWNJ between letters (joining forms, conjuncts, half forms).
_JOINING_SCRIPT = regex.compile(
    r"[\p{Script_Extensions=Arabic}\p{Script_Extensions=Syriac}\p{Script_Extensions=Nko}"
    r"\p{Script_Extensions=Mongolian}\p{Script_Extensions=Devanagari}\p{Script_Extensions=Bengali}"
    r"\p{Script_Extensions=Gurmukhi}\p{Script_Extensions=Gujarati}\p{Script_Extensions=Oriya}"
    r"\p{Script_Extensions=Tamil}\p{Script_Extensions=Telugu}\p{Script_Extensions=Kannada}"
    r"\p{Script_Extensions=Malayalam}\p{Script_Extensions=Sinhala}\p{Script_Extensions=Khmer}"
    r"\p{Script_Extensions=Myanmar}\p{Script_Extensions=Tibetan}]")
# The RGI emoji tag sequences: U+1F3F4 then these tags (gbeng, gbsct, gbwls) and CANCEL TAG.
_FLAG_TAGS = frozenset("".join(chr(0xE0000 + ord(c)) for c in name) + "\U000e007f"
                       for name in ("gbeng", "gbsct", "gbwls"))
_BLACK_FLAG = "\U0001f3f4"


@dataclass(frozen=True, slots=True)
class Span:
    start: int  # in the text as given
    end: int
    kind: str  # one of CLASSES


@dataclass(frozen=True, slots=True)
class Sanitized:
    """What one text holds of invisible and control characters, and the text without them."""

    text: str  # the text without them (the text itself when there are none)
    spans: tuple[Span, ...] = ()  # where they are, in the text as given: runs of one class
    counts: dict[str, int] = field(default_factory=dict)  # class -> characters
    hidden: str = ""  # what tag characters and selector runs spell, decoded: for the injection scan

    @property
    def found(self) -> bool:
        return bool(self.spans)

    def summary(self) -> str:
        """e.g. "tag x41, zero_width x2", classes in a fixed order."""
        return ", ".join(f"{kind} x{self.counts[kind]}" for kind in CLASSES if kind in self.counts)


def may_hold_any(text: str) -> bool:
    """False when the text certainly holds none of them; C-speed string tests only.

    str.isprintable() is False for every control and format character (tags, zero-width, bidi),
    and for whitespace other than the space: the usual whitespace is taken out first. It is True
    for variation selectors and a few invisible letters, looked for on their own."""
    t = text
    if not t.isprintable():
        for space in ("\n", "\r", "\t"):
            if space in t:
                t = t.replace(space, "")
        if not t.isprintable():
            return True
    if t.isascii():
        return False
    if any(c in t for c in _PRINTABLE_INVISIBLE):
        return True
    data = t.encode("utf-8", "surrogatepass")
    return any(b in data for b in _SELECTOR_BYTES)


def sanitize(text: str) -> Sanitized:
    """The text's invisible and control characters (see the module's doc), and the text without them."""
    if not may_hold_any(text):
        return Sanitized(text)
    dropped: list[tuple[int, str]] = []  # (index, class) of each character to take out
    for run in _RUNS.finditer(text):
        dropped += _judge_run(text, run.start(), run.end())
    if not dropped:
        return Sanitized(text)
    return Sanitized(_without(text, dropped), _spans(dropped), dict(Counter(kind for _, kind in dropped)),
                     _hidden(text, dropped))


def _kind(char: str) -> str:
    for pattern, name in _CLASS_OF:
        if pattern.match(char):
            return name
    raise AssertionError(f"U+{ord(char):04X} is not a candidate")


def _judge_run(text: str, start: int, end: int) -> list[tuple[int, str]]:
    """The characters of one run of candidates to take out; the others are part of what they join
    (an emoji sequence, a script's spelling, a flag, a presentation selector)."""
    out: list[tuple[int, str]] = []
    flag = _flag_tags(text, start, end)
    before = text[start - 1] if start > 0 else ""  # the last character kept before this one
    after = text[end] if end < len(text) else ""
    for i in range(start, end):
        char = text[i]
        nxt = text[i + 1] if i + 1 < end else after
        if i in flag or _kept(char, before, nxt):
            before = char
            continue
        out.append((i, _kind(char)))
        before = ""  # what follows a character taken out has nothing before it to join or select
    return out


def _kept(char: str, before: str, nxt: str) -> bool:
    if char == ZWJ and _ends_emoji(before) and _PICTOGRAPHIC.match(nxt):
        return True
    if char in (ZWJ, ZWNJ):
        return bool(before and nxt and _JOINING_SCRIPT.match(before) and _JOINING_SCRIPT.match(nxt))
    if "\ufe00" <= char <= "\ufe0f" or "\U000e0100" <= char <= "\U000e01ef":
        # one selector, after a character it can select (not a space, not another selector)
        return bool(before) and not before.isspace() and not _is_selector(before) and not _is_selector(nxt)
    return False


def _ends_emoji(char: str) -> bool:
    return bool(char) and (char == VS16 or bool(_PICTOGRAPHIC.match(char)) or bool(_EMOJI_MODIFIER.match(char)))


def _is_selector(char: str) -> bool:
    return bool(char) and ("\ufe00" <= char <= "\ufe0f" or "\U000e0100" <= char <= "\U000e01ef")


def _flag_tags(text: str, start: int, end: int) -> range:
    """The indices of a subdivision flag's tag sequence at the start of this run, if there is one."""
    if start == 0 or text[start - 1] != _BLACK_FLAG:
        return range(0)
    for tags in _FLAG_TAGS:
        if text.startswith(tags, start) and start + len(tags) <= end:
            return range(start, start + len(tags))
    return range(0)


def _without(text: str, dropped: list[tuple[int, str]]) -> str:
    out, last = [], 0
    for i, _ in dropped:
        out.append(text[last:i])
        last = i + 1
    out.append(text[last:])
    return "".join(out)


def _spans(dropped: list[tuple[int, str]]) -> tuple[Span, ...]:
    spans: list[Span] = []
    for i, kind in dropped:
        if spans and spans[-1].end == i and spans[-1].kind == kind:
            spans[-1] = Span(spans[-1].start, i + 1, kind)
        else:
            spans.append(Span(i, i + 1, kind))
    return tuple(spans)


def _hidden(text: str, dropped: list[tuple[int, str]]) -> str:
    """What the dropped tag characters spell (all of them, in order: an attacker may interleave them
    with visible text), then each run of dropped selectors read as bytes, one line each."""
    tags = "".join(chr(ord(text[i]) - 0xE0000) for i, kind in dropped
                   if kind == TAG and 0xE0020 <= ord(text[i]) <= 0xE007E)
    runs: list[bytearray] = []
    last = -2
    for i, kind in dropped:
        if kind != VARIATION:
            continue
        if i != last + 1:
            runs.append(bytearray())
        cp = ord(text[i])
        runs[-1].append(cp - 0xFE00 if cp <= 0xFE0F else cp - 0xE0100 + 16)
        last = i
    decoded = [b.decode("utf-8", "replace") for b in runs if len(b) > 1]
    return "\n".join(filter(None, [tags, *decoded]))


class Sanitizer:
    """`sanitize` with its answers on texts that hold any remembered: chat clients resend their
    history every turn. Thread-safe."""

    def __init__(self, cache_size: int = 4096):
        self._cache: TextCache[Sanitized] = TextCache(cache_size)

    def check(self, text: str) -> Sanitized | None:
        """None when the text holds none of them (the usual case, decided at C speed)."""
        if not may_hold_any(text):
            return None
        result = self._cache.get(text)
        if result is None:
            result = sanitize(text)
            self._cache.put(text, result)
        return result if result.found else None
