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

Most text has none: `Sanitizer.check` answers that with C-speed byte tests (microseconds on 2 KB,
see BENCHMARKS.md) before any character is looked at one by one.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import regex

from douane.detect.cache import TextCache

TAG, VARIATION, ZERO_WIDTH, BIDI, CONTROL = "tag", "variation", "zero_width", "bidi", "control"
CLASSES = (TAG, VARIATION, ZERO_WIDTH, BIDI, CONTROL)

# (first, last) code points of each class
_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    # C0 and C1 but \t \n \v \f \r and U+0085 (NEL), which are whitespace; DEL
    CONTROL: ((0x00, 0x08), (0x0E, 0x1F), (0x7F, 0x84), (0x86, 0x9F)),
    BIDI: ((0x061C, 0x061C), (0x200E, 0x200F), (0x202A, 0x202E), (0x2066, 0x2069)),
    ZERO_WIDTH: ((0x00AD, 0x00AD), (0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180E, 0x180E),
                 (0x200B, 0x200D), (0x2060, 0x2065), (0x206A, 0x206F), (0x3164, 0x3164), (0xFEFF, 0xFEFF),
                 (0xFFA0, 0xFFA0), (0xFFF9, 0xFFFB), (0x1D173, 0x1D17A)),
    VARIATION: ((0xFE00, 0xFE0F), (0xE0100, 0xE01EF)),
    TAG: ((0xE0000, 0xE007F),),
}
_KIND = {chr(cp): kind for kind, ranges in _RANGES.items() for first, last in ranges for cp in range(first, last + 1)}
# Maximal runs of candidates; each character of a run is then judged with its neighbours.
_RUNS = re.compile("[" + "".join(f"\\U{first:08x}-\\U{last:08x}" for ranges in _RANGES.values()
                                 for first, last in ranges) + "]+")

ZWJ, ZWNJ, VS16 = "\u200d", "\u200c", "\ufe0f"

# The quick test reads UTF-8 bytes. Bytes that can start a candidate: the C0 controls and DEL
# themselves, and the lead bytes of the multi-byte candidates (below, one pattern per lead byte,
# starting with it, so that the regex engine skips to it at C speed).
_ASCII_MARKS = bytes(0 if c < 9 or 14 <= c < 32 or c == 127 else 1 for c in range(256))  # 0: a control
_BY_LEAD: dict[int, re.Pattern[bytes]] = {lead: re.compile(pattern) for lead, pattern in (
    (0xC2, rb"\xc2[\x80-\x84\x86-\x9f\xad]"),  # C1 controls but NEL, soft hyphen
    (0xCD, rb"\xcd\x8f"),  # U+034F
    (0xD8, rb"\xd8\x9c"),  # U+061C
    (0xE1, rb"\xe1(?:\x85[\x9f\xa0]|\x9e[\xb4\xb5]|\xa0\x8e)"),  # U+115F, 1160, 17B4, 17B5, 180E
    (0xE2, rb"\xe2(?:\x80[\x8b-\x8f\xaa-\xae]|\x81[\xa0-\xaf])"),  # U+200B-200F, 202A-202E, 2060-206F
    (0xE3, rb"\xe3\x85\xa4"),  # U+3164
    (0xEF, rb"\xef(?:\xb8[\x80-\x8f]|\xbb\xbf|\xbe\xa0|\xbf[\xb9-\xbb])"),  # FE00-FE0F, FEFF, FFA0, FFF9-FFFB
    (0xF0, rb"\xf0\x9d\x85[\xb3-\xba]"),  # U+1D173-1D17A
    (0xF3, rb"\xf3\xa0[\x80\x81\x84-\x87]"),  # tags U+E0000-E007F, selectors U+E0100-E01EF
)}
_PLAIN_BYTES = bytes(c for c in range(256) if _ASCII_MARKS[c] and c not in _BY_LEAD)
_LEADS = bytes(_BY_LEAD)

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
_SELECTOR_CHARS = frozenset(c for c, kind in _KIND.items() if kind == VARIATION)
# Candidates whose fate their neighbours decide; a run without them is taken out whole.
_CONTEXTUAL = _SELECTOR_CHARS | {ZWJ, ZWNJ}
# Tag characters as the ASCII they stand for (U+E0020-E007E); the others (language tag, cancel tag,
# the unassigned ones) spell nothing.
_TAG_TO_ASCII = {cp: (cp - 0xE0000 if 0xE0020 <= cp <= 0xE007E else None) for cp in range(0xE0000, 0xE0080)}
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
        return summary(self.counts)


def summary(counts: Mapping[str, int]) -> str:
    """e.g. "tag x41, zero_width x2": the classes found and how many of each, in a fixed order."""
    return ", ".join(f"{kind} x{counts[kind]}" for kind in CLASSES if counts.get(kind))


NOTHING = Sanitized("")  # Sanitizer's answer for a text that holds none: nothing to take out, nothing hidden


def may_hold_any(text: str) -> bool:
    """False when the text certainly holds no candidate (a character of the classes above, kept or
    not); C-speed tests only: most text stops here.

    ASCII text can hold only controls: its bytes are mapped and one is looked for. Other text is
    read as UTF-8: the bytes no candidate starts with are dropped, and for each lead byte left the
    candidates it starts are looked for (a typographic quote leaves the lead byte of U+2018, and
    only the U+2000 block's candidates are then looked for)."""
    if text.isascii():
        return b"\0" in text.encode("ascii").translate(_ASCII_MARKS)
    data = text.encode("utf-8", "surrogatepass")
    rest = data.translate(None, _PLAIN_BYTES)  # controls, and the lead bytes of candidates
    if not rest:
        return False
    if rest.translate(None, _LEADS):
        return True  # a C0 control or DEL
    return any(lead in rest and pattern.search(data) for lead, pattern in _BY_LEAD.items())


def sanitize(text: str) -> Sanitized:
    """The text's invisible and control characters (see the module's doc), and the text without them."""
    return _judge(text) if may_hold_any(text) else Sanitized(text)


def _judge(text: str) -> Sanitized:
    """sanitize past the quick test: each run of candidates judged, character by character where
    a character's neighbours decide (joiners, selectors, a flag's tags), whole otherwise."""
    spans: list[Span] = []
    for run in _RUNS.finditer(text):
        start, end = run.span()
        if _CONTEXTUAL.isdisjoint(run.group()) and not (start and text[start - 1] == _BLACK_FLAG):
            _add(spans, start, end, text)
        else:
            for i in _judge_run(text, start, end):
                _add(spans, i, i + 1, text)
    if not spans:
        return Sanitized(text)
    counts: Counter[str] = Counter()
    for span in spans:
        counts[span.kind] += span.end - span.start
    return Sanitized(_without(text, spans), tuple(spans), dict(counts), _hidden(text, spans))


def _add(spans: list[Span], start: int, end: int, text: str) -> None:
    """Characters start..end taken out, as spans of one class each (merged with the last when it goes on)."""
    i = start
    while i < end:
        kind = _KIND[text[i]]
        j = i + 1
        while j < end and _KIND[text[j]] == kind:
            j += 1
        if spans and spans[-1].end == i and spans[-1].kind == kind:
            spans[-1] = Span(spans[-1].start, j, kind)
        else:
            spans.append(Span(i, j, kind))
        i = j


def _judge_run(text: str, start: int, end: int) -> list[int]:
    """The indices of a run's characters to take out; the others are part of what they join (an
    emoji sequence, a script's spelling, a flag, a presentation selector)."""
    out: list[int] = []
    flag = _flag_tags(text, start, end)
    before = text[start - 1] if start > 0 else ""  # the last character kept before this one
    after = text[end] if end < len(text) else ""
    for i in range(start, end):
        char = text[i]
        nxt = text[i + 1] if i + 1 < end else after
        if i in flag or _kept(char, before, nxt):
            before = char
            continue
        out.append(i)
        before = ""  # what follows a character taken out has nothing before it to join or select
    return out


def _kept(char: str, before: str, nxt: str) -> bool:
    if char == ZWJ and _ends_emoji(before) and _pictographic(nxt):
        return True
    if char in (ZWJ, ZWNJ):
        return _joining(before) and _joining(nxt)
    if char in _SELECTOR_CHARS:
        # one selector, after a character it can select (not a space, not another selector)
        return bool(before) and not before.isspace() and before not in _SELECTOR_CHARS and nxt not in _SELECTOR_CHARS
    return False


@functools.lru_cache(maxsize=4096)
def _pictographic(char: str) -> bool:
    return bool(char) and _PICTOGRAPHIC.match(char) is not None


@functools.lru_cache(maxsize=4096)
def _ends_emoji(char: str) -> bool:
    return bool(char) and (char == VS16 or _pictographic(char) or _EMOJI_MODIFIER.match(char) is not None)


@functools.lru_cache(maxsize=4096)
def _joining(char: str) -> bool:
    return bool(char) and _JOINING_SCRIPT.match(char) is not None


def _flag_tags(text: str, start: int, end: int) -> range:
    """The indices of a subdivision flag's tag sequence at the start of this run, if there is one."""
    if start == 0 or text[start - 1] != _BLACK_FLAG:
        return range(0)
    for tags in _FLAG_TAGS:
        if text.startswith(tags, start) and start + len(tags) <= end:
            return range(start, start + len(tags))
    return range(0)


def _without(text: str, spans: list[Span]) -> str:
    out, last = [], 0
    for span in spans:
        out.append(text[last:span.start])
        last = span.end
    out.append(text[last:])
    return "".join(out)


def _hidden(text: str, spans: list[Span]) -> str:
    """What the tag characters taken out spell (all of them, in order: an attacker may interleave
    them with visible text), then each run of selectors taken out read as bytes, one line each."""
    tags = "".join(text[s.start:s.end] for s in spans if s.kind == TAG).translate(_TAG_TO_ASCII)
    decoded = []
    for span in spans:
        if span.kind == VARIATION and span.end - span.start > 1:
            data = bytes(ord(c) - 0xFE00 if c <= "\ufe0f" else ord(c) - 0xE0100 + 16 for c in text[span.start:span.end])
            decoded.append(data.decode("utf-8", "replace"))
    return "\n".join(filter(None, [tags, *decoded]))


class Sanitizer:
    """`sanitize` with its answers on texts that hold candidates remembered: chat clients resend
    their history every turn. Thread-safe."""

    def __init__(self, cache_size: int = 4096):
        self._cache: TextCache[Sanitized] = TextCache(cache_size)

    def lookup(self, text: str) -> Sanitized | None:
        """The answer when it costs next to nothing (the quick test, or one judged before): NOTHING
        when the text holds none; None when it must be judged character by character (`judge`)."""
        if text.isascii() and text.isprintable():  # a key, a role, a model name: the usual short string
            return NOTHING
        return self._cache.get(text) if may_hold_any(text) else NOTHING

    def judge(self, text: str) -> Sanitized:
        """The answer for a text `lookup` had none for; remembered."""
        result = _judge(text)
        self._cache.put(text, result)
        return result

    def check(self, text: str) -> Sanitized | None:
        """The answer, None when the text holds nothing to take out."""
        result = self.lookup(text) or self.judge(text)
        return result if result.found else None
