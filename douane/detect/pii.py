"""PII findings in text, with Presidio's recognizers as the reference.

Presidio's engine runs every recognizer over the whole text (the phone recognizer alone costs ~2 ms
per 2 KB). Here each entity has one EntitySpec: a cheap candidate test, how much context its
recognizers need around a candidate and how far past it a match may reach, what Presidio lacks (a
card recognizer for every issuer) and what makes a value plausible (phone words). Presidio's
recognizers run only on windows around candidates: pattern recognizers through their own patterns,
validation and invalidation without Presidio's per-match bookkeeping, phone numbers through
douane.detect.phone (libphonenumber's matcher, replayed cheaply), emails anchored at each "@".

Every piece of that work is bounded (windows stop growing at _WIDEST characters; candidates are
found a chunk at a time) and charged to douane.detect.budget before it is done, so a scan costs
time linear in its text, whatever its shape, and stops at its deadline. Findings are cached per
text, since chat clients resend the whole history every turn.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import regex
from presidio_analyzer import (
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine, NoOpNlpEngine
from presidio_analyzer.predefined_recognizers import EmailRecognizer, PhoneRecognizer

from douane.detect import budget, phone
from douane.detect.cache import TextCache

log = logging.getLogger(__name__)
logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)  # one INFO line per recognizer otherwise

_NER_ENTITIES = {"PERSON", "LOCATION", "NRP", "DATE_TIME", "ORGANIZATION"}
_SPACY_MODELS = ("en_core_web_lg", "en_core_web_md", "en_core_web_sm", "en_core_web_trf")


@dataclass(frozen=True)
class Finding:
    entity: str
    start: int
    end: int
    score: float


@functools.cache
def keep_tldextract_offline() -> None:
    """tldextract, which the email recognizer validates with, fetches the public suffix list over the
    network on first use, with no timeout: make its default extractor read its bundled snapshot
    instead. Called once, by PiiDetector's constructor, before any recognizer runs."""
    import tldextract
    import tldextract.tldextract

    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None,
                                                                fallback_to_snapshot=True)


def _installed_spacy_model() -> str | None:
    try:
        import spacy.util
    except ImportError:
        return None
    for name in _SPACY_MODELS:
        if spacy.util.is_package(name):
            return name
    return None


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return total % 10 == 0


# (issuer prefix ranges, allowed lengths): what Presidio's card pattern misses among them is
# Mastercard's 2221-2720 range, 19-digit Visa and UnionPay. Visa 4; Mastercard 51-55, 2221-2720;
# American Express 34, 37; Discover 6011, 644-649, 65; JCB 3528-3589; Diners Club 300-305, 3095, 36,
# 38-39 (14 to 19 digits); UnionPay 62 (16 to 19); Maestro 5018, 5020, 5038, 5893, 6304, 6759,
# 6761-6763 (12 to 19); JCB's 15-digit 1800 and 2131. tests/unit/test_pii.py holds it to the test
# cards the networks and processors publish, and to Faker's own issuer tables.
_CARD_IIN = [((4, 4), (13, 16, 19)), ((51, 55), (16,)), ((2221, 2720), (16,)), ((34, 34), (15,)), ((37, 37), (15,)),
             ((6011, 6011), (16, 17, 18, 19)), ((644, 649), (16, 19)), ((65, 65), (16, 19)),
             ((3528, 3589), (16, 17, 18, 19)), ((300, 305), (14, 15, 16, 17, 18, 19)), ((3095, 3095), (16, 17, 18, 19)),
             ((36, 36), (14, 15, 16, 17, 18, 19)), ((38, 39), (14, 15, 16, 17, 18, 19)), ((62, 62), (16, 17, 18, 19)),
             *[((p, p), tuple(range(12, 20))) for p in (5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763)],
             ((1800, 1800), (15,)), ((2131, 2131), (15,))]


_NOT_DIGIT = re.compile(r"\D")


def card_number_ok(digits: str) -> bool:
    """Luhn, and a length that the issuer of the prefix uses."""
    if not _luhn(digits):
        return False
    for (low, high), lengths in _CARD_IIN:
        width = len(str(low))
        if low <= int(digits[:width]) <= high and len(digits) in lengths:
            return True
    return False


class CardRecognizer(PatternRecognizer):
    """Card numbers of every major issuer and length, validated by Luhn and issuer ranges (a pattern
    recognizer, so it runs like Presidio's own: on windows, with its left context in view)."""

    # not inside a longer number or a decimal; a full stop after it ends a sentence, not the number
    PATTERN = r"(?<![\d.-])\d(?:[ -]?\d){11,18}(?![\d-]|\.\d|[ -]\d)"

    def __init__(self) -> None:
        super().__init__(supported_entity="CREDIT_CARD", name="CardRecognizer", supported_language="en",
                         patterns=[Pattern("card, any issuer", self.PATTERN, 1.0)], global_regex_flags=0)

    def validate_result(self, pattern_text: str) -> bool:
        return card_number_ok(_NOT_DIGIT.sub("", pattern_text))


Span = tuple[int, int, float]
# (text, start, end, artifacts) -> the recognizer's findings that start in [start, end), in text
# coordinates; it may read the text before the window and up to its spec's `reach` past it (the
# scan charges that much to the budget before calling it).
Matcher = Callable[[str, int, int, NlpArtifacts], list[Span]]

_WINDOW = 64  # characters of context kept on each side of a candidate
_REACH = 64  # how much further a window's edge may move to land on whitespace
_WIDEST = 4096  # merged windows stop growing here; the next one starts over, overlapping
_PIECE = 256  # a longer candidate (a digit run of a megabyte) is cut into pieces this long
_CHUNK = 16384  # characters one candidate search walks at a time (plus its lookahead)
_WHITESPACE = re.compile(r"\s")


class _Text:
    """One scan's text and what its entities' candidates share: the digit runs, found once."""

    __slots__ = ("text", "_runs")

    # Every digit-led candidate lies inside one run of digits joined by at most three separators.
    # One pass of the `regex` engine (about twice as fast as `re` on this pattern, 2 KB in ~8 us)
    # finds the runs; each entity's own candidate pattern then runs inside them only.
    DIGIT_RUNS = regex.compile(r"\d(?:[\s().+/-]{0,3}\d)+")

    def __init__(self, text: str):
        self.text = text
        self._runs: list[tuple[int, int]] | None = None

    @property
    def runs(self) -> list[tuple[int, int]]:
        if self._runs is None:  # runs longer than a chunk come in overlapping pieces
            self._runs = _chunked(self.DIGIT_RUNS, self.text, lookahead=64)
        return self._runs


def _chunked(pattern: re.Pattern[str] | Any, text: str, lookahead: int) -> list[tuple[int, int]]:
    """The pattern's matches, searched a chunk at a time so that no search walks more than _CHUNK +
    `lookahead` characters: those that start in a chunk, read up to `lookahead` past it. A longer
    match is cut there; the next chunk starts inside it and reads on."""
    n = len(text)
    if n <= _CHUNK:
        budget.charge(n)
        return [m.span() for m in pattern.finditer(text)]
    spans = []
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        limit = min(n, stop + lookahead)
        budget.charge(limit - start)
        for m in pattern.finditer(text, start, limit):
            if m.start() >= stop:
                break
            spans.append(m.span())
    return spans


def _in_digit_runs(pattern: str, fewest: int) -> Callable[[_Text], list[tuple[int, int]]]:
    """Candidates of a digit-led pattern needing at least `fewest` characters, looked for in digit
    runs only; one longer than _PIECE (a digit run of a megabyte) comes in pieces of that size."""
    compiled = re.compile(pattern)

    def candidates(scan: _Text) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        read = 0  # charged a window's worth at a time (a charge per run would cost more than the runs)
        for start, end in scan.runs:
            if end - start >= fewest:
                if read > _WIDEST:
                    budget.charge(read)
                    read = 0
                read += end - start
                for m in compiled.finditer(scan.text, start, end):
                    c_start, c_end = m.span()
                    if c_end - c_start <= _PIECE:
                        spans.append((c_start, c_end))
                    else:
                        spans += _split(c_start, c_end)
        budget.charge(read)
        return spans
    return candidates


def _matching(pattern: str) -> Callable[[_Text], Iterable[tuple[int, int]]]:
    compiled = re.compile(pattern)
    return lambda scan: [piece for start, end in _chunked(compiled, scan.text, lookahead=8)
                         for piece in _split(start, end)]


def _split(start: int, end: int) -> list[tuple[int, int]]:
    """A candidate span as pieces of at most _PIECE characters (a digit run can be a megabyte long)."""
    return [(piece, min(end, piece + _PIECE)) for piece in range(start, end, _PIECE)]


_IBAN_HEAD = re.compile(r"[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]{4}){2}")
_ASCII_ALNUM = re.compile(r"[A-Za-z0-9]")


def _iban_heads(scan: _Text) -> Iterator[tuple[int, int]]:
    """Presidio's IBAN pattern starts with two letters (not after a letter or digit), two check
    digits and eight more letters or digits: a digit run right after two letters, checked so."""
    text = scan.text
    for start, _ in scan.runs:
        after_alnum = start >= 3 and _ASCII_ALNUM.match(text, start - 3)
        if start >= 2 and _IBAN_HEAD.match(text, start - 2) and not after_alnum:
            yield start - 2, start + 2


def _at_signs(scan: _Text) -> list[tuple[int, int]]:
    return _chunked(_AT, scan.text, lookahead=0)


_AT = re.compile("@")

_DIGITS = re.compile(r"\d+")


def _phone_plausible(spec: EntitySpec, text: str, start: int, end: int) -> bool:
    """A '+' or '(' in or just before it, or two neighbouring digit groups of phone size (at most 5
    digits each), or phone words near: a bare digit run with no phone words around is not worth the
    phone parser's eight passes (bare 10-digit runs are more often timestamps and order numbers).
    Groups are judged pair by pair, not as a whole: a candidate is a run of digit groups, and an id
    written just before a number (`ref 61158210 212-555-0143`) must not hide the number after it."""
    value = text[start:end]
    if "+" in value or "(" in value or text[max(0, start - 1):start] in ("+", "("):
        return True
    groups = _DIGITS.findall(value)
    if any(len(a) <= 5 and len(b) <= 5 for a, b in itertools.pairwise(groups)):
        return True
    return spec.near(text, max(0, start - 40), min(len(text), end + 20))


@dataclass(frozen=True)
class EntitySpec:
    """All douane adds to Presidio's recognizers for one entity, in one place."""

    # cheap spans worth a recognizer's look, in text order; None: the whole text, in pieces
    candidates: Callable[[_Text], Iterable[tuple[int, int]]] | None = None
    margin: int = _WINDOW  # context kept on each side of a candidate
    widen: bool = True  # windows widened to the nearest whitespace (so they start where a word does)
    reach: int = 64  # the longest match its recognizers make: a window is read this far past its end
    extra: tuple[Callable[[], EntityRecognizer], ...] = ()  # recognizers Presidio lacks
    own: tuple[Callable[[EntitySpec], Matcher], ...] = ()  # douane's own, which read the text around a window
    gate: Callable[[EntitySpec, str, int, int], bool] | None = None  # a further test of each candidate
    plausible: Callable[[EntitySpec, str, int, int], bool] | None = None  # and of each finding
    context: tuple[str, ...] = ()  # words that, near a value, make it one (see `plausible`)
    trim: Callable[[str, int, int], int] | None = None  # where a finding starts, once a key glued to it is left out
    last: bool = False  # scanned after the others, skipping windows they already explain
    _context: re.Pattern[str] | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.context:
            words = "|".join(re.escape(w).replace(r"\ ", " ") for w in self.context)
            object.__setattr__(self, "_context", re.compile(rf"\b(?:{words})\b", re.IGNORECASE))

    def near(self, text: str, start: int, end: int) -> bool:
        return self._context is not None and self._context.search(text, start, end) is not None


# A key glued to an email (`email=jo@x.io`, `?to=jo@x.io`, `&cc=ann@y.org`): "=" and "&" may be
# in a local part, so Presidio's pattern takes the key along; the key's name is left for the model.
_EMAIL_KEY = re.compile(r"(?:(?:[^=?&;]*[?&;])?[A-Za-z][\w.-]*=)+")


def _after_email_key(text: str, start: int, end: int) -> int:
    at = text.find("@", start, end)
    key = _EMAIL_KEY.match(text, start, at)
    return key.end() if key is not None and key.end() < at else start


# North American numbers in every usual shape: `212-555-0100`, `(212)555-0100`, `1-212-...`,
# `001-212-...`, `+1 212 ...`. libphonenumber rejects those whose area code is not assigned
# (`200-555-0100`); people still mean them as phone numbers, and write phone words around them.
# A number written with its country code (`+1-335-707-6945`, `001-...`) is a phone number whatever
# is around it; an extension (`x81511`, `ext. 12`) belongs to it.
_NANP = re.compile(r"(?<![\d+])(?P<cc>(?:\+1|001)[ .-]?|1[ .-])?(?:\([2-9]\d\d\) ?|[2-9]\d\d[ .-]?)[2-9]\d\d[ .-]?\d{4}"
                   r"(?:[ ]?(?:x|ext\.?) ?\d{1,6})?(?!\d)")


def _us_numbers_near_phone_words(spec: EntitySpec) -> Matcher:
    def match(text: str, start: int, end: int, _: NlpArtifacts | None = None) -> list[Span]:
        limit = min(len(text), end + 32)
        return [(m.start(), m.end(), 0.4) for m in _NANP.finditer(text, start, limit)
                if m.start() < end and ((m.group("cc") or "").startswith(("+", "00"))
                                        or spec.near(text, max(0, m.start() - 40), min(len(text), m.end() + 20)))]
    return match


# Maestro's whole historical range (50, 56-69, and 0604 of older issuer tables; 12 to 19 digits) is
# wider than the prefixes its network publishes today; issuers and test generators still hand such
# numbers out. Too wide to read bare (one in ten digit runs passes Luhn), so only near a card word.
_MAESTRO_WIDE = re.compile(CardRecognizer.PATTERN)


def _wide_maestro_near_card_words(spec: EntitySpec) -> Matcher:
    def match(text: str, start: int, end: int, _: NlpArtifacts | None = None) -> list[Span]:
        out = []
        for m in _MAESTRO_WIDE.finditer(text, start, min(len(text), end + spec.reach)):
            digits = _NOT_DIGIT.sub("", m.group())
            wide = digits[:2] == "50" or "56" <= digits[:2] <= "69" or digits[:4] == "0604"
            if m.start() < end and wide and _luhn(digits) \
                    and spec.near(text, max(0, m.start() - 40), min(len(text), m.end() + 20)):
                out.append((m.start(), m.end(), 0.5))
        return out
    return match

# Emails: a local part of at most this many characters before the "@" and a domain of at most this
# many after it are read (RFC 5321 allows 64 and 255); a longer one is read from its last characters.
_EMAIL_REACH = 1024

SPECS: dict[str, EntitySpec] = {
    # an email is read from its "@" (see _Emails): its windows need only hold the "@" signs
    "EMAIL_ADDRESS": EntitySpec(_at_signs, margin=_EMAIL_REACH, widen=False, reach=_EMAIL_REACH,
                                trim=_after_email_key),
    "CREDIT_CARD": EntitySpec(_in_digit_runs(r"\d(?:[ -]?\d){11,18}", 12), reach=40, extra=(CardRecognizer,),
                              own=(_wide_maestro_near_card_words,),
                              context=("card", "cc", "debit", "credit", "maestro", "pan", "cardholder")),
    "US_SSN": EntitySpec(_in_digit_runs(r"\d{3}[- .]?\d{2}[- .]?\d{4}", 9), reach=16),
    "IBAN_CODE": EntitySpec(_iban_heads, reach=48),
    # Phone parsing is the dear part (one pass per region): its windows are kept tight, and it runs
    # last, so a digit run already read as a card, SSN or IBAN is not parsed again as a phone.
    "PHONE_NUMBER": EntitySpec(_in_digit_runs(r"\d(?:[\s().-]{0,3}\d){6,}", 7), margin=3, reach=phone.LONGEST,
                               gate=_phone_plausible, plausible=_phone_plausible, last=True,
                               own=(_us_numbers_near_phone_words,),
                               context=("phone", "tel", "telephone", "call", "mobile", "cell", "whatsapp", "sms",
                                        "text me", "number", "reach", "fax", "contact", "office", "desk",
                                        "landline", "extension", "dial", "voicemail", "message", "messages",
                                        "hotline", "pager", "answering")),
    "IP_ADDRESS": EntitySpec(_matching(r"\d{1,3}\.\d{1,3}\.\d|[0-9a-fA-F]{0,4}:[0-9a-fA-F]{0,4}:"), reach=128),
    "URL": EntitySpec(_matching(r"://|www\.|\.[a-z]{2,}\b"), reach=512),
}
_WHOLE_TEXT = EntitySpec(reach=256)  # entities without a spec: the whole text, in overlapping pieces


class _FastPatterns:
    """A Presidio PatternRecognizer's own patterns, validation and invalidation, without the timers
    and explanation objects it builds for every match: the same findings at a tenth of the cost.
    Each pattern reads the window with the text before it in view (pos, not a slice) and up to
    `reach` characters past its end, so a match that starts in the window is read whole."""

    def __init__(self, rec: PatternRecognizer, threshold: float, reach: int):
        self.rec = rec
        self.reach = reach
        # an email's validity (tldextract: a known public suffix) depends on its domain alone
        self.validate = _by_domain(rec.validate_result) if isinstance(rec, EmailRecognizer) else rec.validate_result
        # validate_result may raise a weak pattern's score to 1.0; otherwise a pattern below the
        # threshold can never produce a finding that is kept
        raises = type(rec).validate_result is not PatternRecognizer.validate_result
        flags = rec.global_regex_flags or 0
        own: list[Pattern] = vars(rec)["patterns"]  # mypy cannot read presidio's untyped attribute
        self.patterns = [(re.compile(p.regex, flags), float(p.score)) for p in own if p.score >= threshold or raises]

    def score(self, value: str, base: float) -> float:
        """Presidio's score for a match: its pattern's, or 1.0 / 0.0 when validation decides; 0.0 if invalidated."""
        valid = self.validate(value)
        score = base if valid is None else (1.0 if valid else 0.0)
        return 0.0 if self.rec.invalidate_result(value) else score

    def __call__(self, text: str, start: int, end: int, _: NlpArtifacts | None = None) -> list[Span]:
        out = []
        limit = min(len(text), end + self.reach)
        for pattern, base in self.patterns:
            for m in pattern.finditer(text, start, limit):
                s, e = m.span()
                if s >= end:
                    break
                if s < e and (score := self.score(text[s:e], base)) > 0:
                    out.append((s, e, score))
        return out


def _by_domain(validate: Callable[[str], bool | None]) -> Callable[[str], bool | None]:
    """tldextract reads the host after the last "@" unless the part before it holds a "/", "?", "#"
    or ":" (a path, query or scheme): otherwise the answer is the domain's, and is cached."""
    @functools.lru_cache(maxsize=4096)
    def by_domain(domain: str) -> bool | None:
        return validate("x@" + domain)

    def check(email: str) -> bool | None:
        local, _, domain = email.rpartition("@")
        return validate(email) if any(c in local for c in "/?#:") else by_domain(domain)

    return check


class _Emails(_FastPatterns):
    """Presidio's email pattern, anchored at each "@" of the window.

    A match is a local part (a run of local-part characters and dots that ends at the "@") and a
    domain. Over a whole word the regex tries every start in a long local part and reads it to the
    "@" each time: quadratic on `a.a.a.a...@`. But every start the pattern can take in one run
    (a word boundary before a local-part character) succeeds or fails with the others, since the
    domain does not depend on it; so only the first is tried, as finditer would find it. Runs stop
    at an "@", so each character is read at most twice. tests/unit/test_pii.py holds the findings
    to Presidio's own recognizer.
    """

    _LOCAL = r"!#$%&'*+\-/=?^_`{|}~\w"
    _BEFORE_RUN = regex.compile(rf"(?r)[^{_LOCAL}.]")  # reversed: the nearest character no local part holds
    _START = re.compile(rf"\b[{_LOCAL}]")
    _AROUND = re.compile(rf"[{_LOCAL}]@\w")  # what any match has around its "@"

    def __call__(self, text: str, start: int, end: int, _: NlpArtifacts | None = None) -> list[Span]:
        out = []
        for pattern, base in self.patterns:
            resume = start  # finditer's position: after the last match, or past the last "@"
            at = text.find("@", start, end)
            while at != -1:
                if at == 0 or not self._AROUND.match(text, at - 1):
                    at = text.find("@", at + 1, end)
                    continue
                low = max(resume, at - _EMAIL_REACH)
                wall = self._BEFORE_RUN.search(text, low, at)
                first = self._START.search(text, wall.end() if wall else low, at)
                m = pattern.match(text, first.start(), min(len(text), at + _EMAIL_REACH)) if first else None
                if m is not None:
                    if (score := self.score(m.group(), base)) > 0:
                        out.append((m.start(), m.end(), score))
                    resume = m.end()
                else:
                    resume = at + 1
                at = text.find("@", max(resume, at + 1), end)
        return out


def _phones(rec: PhoneRecognizer) -> Matcher:
    regions, score = tuple(rec.supported_regions), float(rec.SCORE)

    def match(text: str, start: int, end: int, _: NlpArtifacts | None = None) -> list[Span]:
        walked = phone.walk(text, start, end)
        found = [(s, e, score) for s, e in phone.first_region_matches(text, regions, start, end, walked)]
        # a number with digits after it: less sure, so any other reading of the same digits wins
        return found + [(s, e, score - 0.05) for s, e in phone.trimmed_matches(text, regions, start, end, walked)]
    return match


def _analyzer(rec: EntityRecognizer, entity: str, reach: int) -> Matcher:
    """Any other recognizer, on a slice of the text: a finding at a slice edge that is not the
    text's own word boundary may be a piece of something longer, and is left to the window that
    holds it whole."""
    def match(text: str, start: int, end: int, artifacts: NlpArtifacts | None = None) -> list[Span]:
        limit = min(len(text), end + reach)
        chunk = text[start:limit]
        cut_start = start > 0 and not text[start - 1].isspace()
        cut_end = limit < len(text) and not text[limit].isspace()
        out = []
        for r in rec.analyze(chunk, [entity], artifacts or _EMPTY_ARTIFACTS):
            if r.entity_type != entity or r.start >= end - start or (cut_start and r.start == 0) \
                    or (cut_end and r.end == len(chunk)):
                continue
            out.append((r.start + start, r.end + start, r.score))
        return out
    return match


def _matcher(rec: EntityRecognizer, entity: str, threshold: float, spec: EntitySpec) -> Matcher:
    """The cheapest way to get this recognizer's findings on a window."""
    if isinstance(rec, PhoneRecognizer):
        return _phones(rec)
    if isinstance(rec, PatternRecognizer) and type(rec).analyze is PatternRecognizer.analyze:
        if isinstance(rec, EmailRecognizer):
            return _Emails(rec, threshold, spec.reach)
        return _FastPatterns(rec, threshold, spec.reach)
    return _analyzer(rec, entity, spec.reach)


_EMPTY_ARTIFACTS = NlpArtifacts(entities=[], tokens=[], tokens_indices=[], lemmas=[],  # type: ignore[arg-type]
                                nlp_engine=None, language="en")


def _needs_nlp(rec: EntityRecognizer) -> bool:
    return type(rec).__name__ in ("SpacyRecognizer", "StanzaRecognizer", "TransformersRecognizer")


def _windows(text: str, candidates: Iterable[tuple[int, int]], margin: int, widen: bool = True
             ) -> list[tuple[int, int]]:
    """Windows around candidate spans (each at most _PIECE long): `margin` characters each side,
    widened to whitespace within _REACH (so the recognizers start where a word starts, as they would
    on the whole text), merged while they overlap and stay under _WIDEST characters (then the next
    one starts over where its own candidate's window starts). Every candidate's own window lies
    inside one of them."""
    n = len(text)
    windows: list[tuple[int, int]] = []
    first = last = -1
    for c_start, c_end in candidates:  # (conditional expressions: cheaper than min and max, per candidate)
        start = c_start - margin if c_start > margin else 0
        end = c_end + margin if c_end + margin < n else n
        if widen:
            low = start - _REACH if start > _REACH else 0
            space = max(text.rfind(" ", low, start), text.rfind("\n", low, start), text.rfind("\t", low, start))
            start = space + 1 if space >= 0 else 0 if low == 0 else start
            after = _WHITESPACE.search(text, end, end + _REACH)
            end = after.start() if after is not None else n if end + _REACH >= n else end
        if start <= last and end - (first if first < start else start) <= _WIDEST:
            first, last = first if first < start else start, last if last > end else end
            continue
        if last >= 0:
            windows.append((first, last))
        first, last = start, end
    if last >= 0:
        windows.append((first, last))
    return windows


def _pieces(text: str) -> Iterator[tuple[int, int]]:
    """The whole text as windows of at most _WIDEST characters, each starting about _WIDEST / 4 before
    the previous one ends (after a space where there is one near), for entities with no candidate test."""
    n, start = len(text), 0
    while start < n:
        end = min(n, start + _WIDEST)
        if end < n:
            space = max(text.rfind(" ", end - _REACH, end), text.rfind("\n", end - _REACH, end))
            end = space if space > start else end
        yield start, end
        if end >= n:
            return
        back = end - _WIDEST // 4
        space = text.rfind(" ", back - _REACH, back)
        start = max(start + 1, space + 1 if space >= 0 else back)


def _unexplained(windows: Iterable[tuple[int, int]], findings: Sequence[Finding], slack: int = 3
                 ) -> list[tuple[int, int]]:
    """The windows (in order of start) that no single finding holds, less `slack` at each end: a
    digit run already read as a card, SSN or IBAN is not parsed again as a phone. One sweep."""
    spans = sorted((f.start, f.end) for f in findings)
    out, i, furthest = [], 0, -1
    for start, end in windows:
        while i < len(spans) and spans[i][0] <= start + slack:
            furthest = spans[i][1] if spans[i][1] > furthest else furthest
            i += 1
        if furthest < end - slack:
            out.append((start, end))
    return out


class PiiDetector:
    """Text in, findings out. Thread-safe: guards call it from worker threads."""

    def __init__(self, entities: Iterable[str], threshold: float = 0.3, cache_size: int = 8192):
        keep_tldextract_offline()
        self.threshold = threshold
        self.entities = list(dict.fromkeys(entities))
        self._nlp: NlpEngine
        ner_model = _installed_spacy_model() if _NER_ENTITIES & set(self.entities) else None
        if ner_model:
            from presidio_analyzer.nlp_engine import SpacyNlpEngine
            self._nlp = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": ner_model}])
        else:
            self._nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
        self._nlp.load()
        registry = RecognizerRegistry(supported_languages=["en"])
        presidio_log = logging.getLogger("presidio-analyzer")
        level = presidio_log.level
        presidio_log.setLevel(logging.ERROR)  # it logs one line per recognizer, and other languages'
        try:
            registry.load_predefined_recognizers(languages=["en"], nlp_engine=self._nlp)
        finally:
            presidio_log.setLevel(level)
        known = set(registry.get_supported_entities(["en"])) | _NER_ENTITIES
        self.unknown = [e for e in self.entities if e not in known]
        self._plan: list[tuple[str, EntitySpec, list[Matcher]]] = []
        for entity in self.entities:
            if entity in self.unknown or (entity in _NER_ENTITIES and not ner_model):
                continue
            spec = SPECS.get(entity, _WHOLE_TEXT)
            recs = list(registry.get_recognizers("en", entities=[entity])) + [make() for make in spec.extra]
            if not ner_model:
                recs = [r for r in recs if not _needs_nlp(r)]
            if recs:
                matchers = [_matcher(r, entity, threshold, spec) for r in recs] + [own(spec) for own in spec.own]
                self._plan.append((entity, spec, matchers))
        self._plan.sort(key=lambda step: step[1].last)  # phones last (see SPECS)
        self.known_entities = sorted(known)
        # Known to Presidio, but needing what is not installed here (a spaCy model for NER entities).
        scanned = {entity for entity, _, _ in self._plan}
        self.unsupported = [e for e in self.entities if e not in scanned and e not in self.unknown]
        self._cache: TextCache[tuple[Finding, ...]] = TextCache(cache_size)
        self.ner_model = ner_model

    def lookup(self, text: str) -> tuple[Finding, ...] | None:
        """The findings of a text scanned before; None when it needs a scan."""
        return self._cache.get(text) if text else ()

    def scan(self, text: str) -> list[Finding]:
        if not text:
            return []
        hit = self._cache.get(text)
        if hit is not None:
            return list(hit)
        found = tuple(self._scan(text))
        self._cache.put(text, found)
        return list(found)

    def _scan(self, text: str) -> list[Finding]:
        text = _escapes_as_spaces(text)  # same length: the findings' offsets hold for the text as given
        results: list[Finding] = []
        artifacts = None
        if self.ner_model:  # NER needs the whole text's tokens: every recognizer reads the whole text
            budget.charge(len(text))
            artifacts = self._nlp.process_text(text, "en")
        scan = _Text(text)
        for entity, spec, matchers in self._plan:  # phones last
            windows = self._windows(scan, spec, artifacts is not None)
            if spec.last and results:
                windows = _unexplained(windows, results)
            for start, end in windows:
                budget.charge((end - start + spec.reach) * len(matchers))  # what its matchers may read
                for match in matchers:
                    for s, e, score in match(text, start, end, artifacts or _EMPTY_ARTIFACTS):
                        if score >= self.threshold and (spec.plausible is None or spec.plausible(spec, text, s, e)):
                            results.append(Finding(entity, spec.trim(text, s, e) if spec.trim else s, e, score))
        return _resolve_overlaps(results, len(text))

    @staticmethod
    def _windows(scan: _Text, spec: EntitySpec, whole: bool) -> Iterable[tuple[int, int]]:
        if whole:
            return [(0, len(scan.text))]
        if spec.candidates is None:
            return _pieces(scan.text)
        spans = spec.candidates(scan)
        if spec.gate is not None:
            gate = spec.gate
            spans = (span for span in spans if gate(spec, scan.text, *span))
        return _windows(scan.text, spans, spec.margin, spec.widen)


# A newline, tab or carriage return written as an escape (`\n`): text that was JSON-encoded twice,
# a tool result or a document quoting JSON. Read as the space it stands for, or a value right after
# it (`...\n212-555-0143`, `\nFax: ...`) has a letter for a neighbour and no word boundary.
_ESCAPED_SPACE = re.compile(r"\\[nrt]")


def _escapes_as_spaces(text: str) -> str:
    """The text with each `\\n`, `\\r` and `\\t` escape as two spaces: the same length, so every
    offset in it is an offset in the text."""
    return _ESCAPED_SPACE.sub("  ", text) if "\\" in text else text


def _resolve_overlaps(results: list[Finding], length: int) -> list[Finding]:
    """Where findings overlap keep the stronger (score, then length); e.g. a URL inside an email.
    Kept characters are marked in a bytearray, so a finding costs its own length, not one look at
    every finding kept before it."""
    ordered = sorted(set(results), key=lambda f: (f.start, f.end))
    if all(a.end <= b.start for a, b in itertools.pairwise(ordered)):
        return ordered  # the usual case: nothing overlaps
    taken = bytearray(length)
    kept = []
    for f in sorted(ordered, key=lambda f: (-f.score, -(f.end - f.start), f.start, f.entity)):
        if f.end > f.start and taken.find(1, f.start, f.end) == -1:
            budget.charge(f.end - f.start)
            taken[f.start:f.end] = b"\x01" * (f.end - f.start)
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


def redact(text: str, findings: Sequence[Finding]) -> str:
    """Replace each finding with a typed placeholder such as <EMAIL_ADDRESS>."""
    out = []
    last = 0
    for f in sorted(findings, key=lambda f: f.start):
        if f.start < last:
            continue
        out.append(text[last:f.start])
        out.append(f"<{f.entity}>")
        last = f.end
    out.append(text[last:])
    return "".join(out)


class Pseudonyms:
    """Stable typed placeholders for one conversation: the same value gets the same placeholder in
    every message, numbered by first appearance, so a history resent each turn maps the same way."""

    def __init__(self) -> None:
        self.by_value: dict[tuple[str, str], str] = {}
        self.counts: dict[str, int] = {}

    def placeholder(self, entity: str, value: str) -> str:
        key = (entity, value)
        if key not in self.by_value:
            self.counts[entity] = self.counts.get(entity, 0) + 1
            self.by_value[key] = f"<{entity}_{self.counts[entity]}>"
        return self.by_value[key]

    def apply(self, text: str, findings: Sequence[Finding]) -> str:
        out, last = [], 0
        for f in sorted(findings, key=lambda f: f.start):
            if f.start < last:
                continue
            out.append(text[last:f.start])
            out.append(self.placeholder(f.entity, text[f.start:f.end]))
            last = f.end
        out.append(text[last:])
        return "".join(out)

    def copy(self) -> Pseudonyms:
        other = Pseudonyms()
        other.by_value, other.counts = dict(self.by_value), dict(self.counts)
        return other

    @property
    def mapping(self) -> dict[str, str]:
        """placeholder -> original value"""
        return {ph: value for (_, value), ph in self.by_value.items()}


__all__ = ["Finding", "PiiDetector", "Pseudonyms", "RecognizerResult", "redact"]
