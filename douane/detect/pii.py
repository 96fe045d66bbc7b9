"""PII findings in text, with Presidio's recognizers as the reference.

Presidio's engine runs every recognizer over the whole text (the phone recognizer alone costs ~2 ms
per 2 KB). Here one pass finds the digit runs and each entity gets a cheap candidate test; the
recognizer then runs only on the windows around candidates: pattern recognizers through their own
patterns, validation and invalidation without Presidio's per-match bookkeeping, phone numbers
through douane.detect.phone (libphonenumber's matcher, replayed cheaply). Findings are cached per
text, since chat clients resend the whole history every turn.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import regex

from douane.detect.cache import TextCache

# tldextract (used by the email and URL recognizers) would fetch the public suffix list over the
# network on first use; point it at its bundled snapshot before presidio imports it.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
import tldextract  # noqa: E402
import tldextract.tldextract  # noqa: E402

tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None,
                                                            fallback_to_snapshot=True)

from presidio_analyzer import (  # noqa: E402
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine, NoOpNlpEngine  # noqa: E402
from presidio_analyzer.predefined_recognizers import EmailRecognizer, PhoneRecognizer  # noqa: E402

from douane.detect import phone  # noqa: E402

log = logging.getLogger(__name__)
logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)  # one INFO line per recognizer otherwise

# Cheap candidates per entity; a window around each goes to Presidio's recognizer. Entities not
# listed here are scanned over the whole text.
_CANDIDATES: dict[str, re.Pattern[str]] = {
    "EMAIL_ADDRESS": re.compile(r"@"),
    "CREDIT_CARD": re.compile(r"\d(?:[ -]?\d){11,18}"),
    "US_SSN": re.compile(r"\d{3}[- .]?\d{2}[- .]?\d{4}"),
    "PHONE_NUMBER": re.compile(r"\d(?:[\s().-]{0,3}\d){6,}"),
    # tried only where a digit run starts (see _candidates): the head of Presidio's IBAN pattern
    "IBAN_CODE": re.compile(r"[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]{4}){2}"),
    "IP_ADDRESS": re.compile(r"\d{1,3}\.\d{1,3}\.\d|[0-9a-fA-F]{0,4}:[0-9a-fA-F]{0,4}:"),
    "URL": re.compile(r"://|www\.|\.[a-z]{2,}\b"),
}
# Every digit-led candidate lies inside one run of digits joined by at most three separators. One
# pass of the `regex` engine (about twice as fast as `re` on this pattern, 2 KB in ~8 us) finds the
# runs; each entity's own candidate pattern then runs inside them only.
_DIGIT_RUNS = regex.compile(r"\d(?:[\s().+/-]{0,3}\d)+")
# digit-led entity -> fewest digits its candidate pattern needs (so the fewest characters of a run)
_DIGIT_LED = {"CREDIT_CARD": 12, "US_SSN": 9, "PHONE_NUMBER": 7}
_ASCII_ALNUM = re.compile(r"[A-Za-z0-9]")
_WINDOW = 64  # characters of context kept on each side of a candidate
_WHITESPACE = re.compile(r"\s")
# Phone parsing is the dear part (one pass per region): keep its windows tight. An email address
# holds no whitespace, so the word around its "@" is all its pattern needs to see.
_WINDOW_BY_ENTITY = {"PHONE_NUMBER": 3, "EMAIL_ADDRESS": 0}
_NER_ENTITIES = {"PERSON", "LOCATION", "NRP", "DATE_TIME", "ORGANIZATION"}
_SPACY_MODELS = ("en_core_web_lg", "en_core_web_md", "en_core_web_sm", "en_core_web_trf")


@dataclass(frozen=True)
class Finding:
    entity: str
    start: int
    end: int
    score: float


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
# Mastercard's 2221-2720 range and 19-digit Visa.
_CARD_IIN = [((4, 4), (13, 16, 19)), ((51, 55), (16,)), ((2221, 2720), (16,)), ((34, 34), (15,)), ((37, 37), (15,)),
             ((6011, 6011), (16, 17, 18, 19)), ((644, 649), (16, 19)), ((65, 65), (16, 19)),
             ((3528, 3589), (16, 17, 18, 19)), ((300, 305), (14,)), ((36, 36), (14,)), ((38, 39), (14,))]


def card_number_ok(digits: str) -> bool:
    """Luhn, and a length that the issuer of the prefix uses."""
    if not _luhn(digits):
        return False
    for (low, high), lengths in _CARD_IIN:
        width = len(str(low))
        if low <= int(digits[:width]) <= high and len(digits) in lengths:
            return True
    return False


class CardRecognizer(EntityRecognizer):
    """Card numbers of every major issuer and length, validated by Luhn and issuer ranges."""

    _PATTERN = re.compile(r"(?<![\d.-])\d(?:[ -]?\d){12,18}(?![\d.-]|[ -]\d)")

    def __init__(self) -> None:
        super().__init__(supported_entities=["CREDIT_CARD"], name="CardRecognizer", supported_language="en")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
                ) -> list[RecognizerResult]:
        out = []
        for m in self._PATTERN.finditer(text):
            digits = re.sub(r"\D", "", m.group())
            if card_number_ok(digits):
                out.append(RecognizerResult("CREDIT_CARD", m.start(), m.end(), 1.0))
        return out


# A digit run with no separators and no "+" is a phone number only when the words around say so:
# bare 10-digit runs are more often timestamps and order numbers.
_PHONE_CONTEXT = re.compile(r"\b(?:phone|tel|telephone|call|mobile|cell|whatsapp|sms|text me|number|reach|fax|"
                            r"contact)\b", re.IGNORECASE)


class PiiDetector:
    """Text in, findings out. Thread-safe: guards call it from worker threads."""

    def __init__(self, entities: Iterable[str], threshold: float = 0.3, cache_size: int = 8192):
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
        self._recognizers: dict[str, list[Matcher]] = {}
        known = set(registry.get_supported_entities(["en"])) | _NER_ENTITIES
        self.unknown = [e for e in self.entities if e not in known]
        for entity in self.entities:
            if entity in self.unknown or (entity in _NER_ENTITIES and not ner_model):
                continue
            recs = list(registry.get_recognizers("en", entities=[entity]))
            if entity == "CREDIT_CARD":
                recs.append(CardRecognizer())
            if not ner_model:
                recs = [r for r in recs if not _needs_nlp(r)]
            if recs:
                self._recognizers[entity] = [_matcher(r, entity, threshold) for r in recs]
        # Phones last: a digit run already read as a card, SSN or IBAN is not parsed again as a phone.
        if "PHONE_NUMBER" in self._recognizers:
            self._recognizers["PHONE_NUMBER"] = self._recognizers.pop("PHONE_NUMBER")
        self.known_entities = sorted(known)
        # Known to Presidio, but needing what is not installed here (a spaCy model for NER entities).
        self.unsupported = [e for e in self.entities if e not in self._recognizers and e not in self.unknown]
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
        results: list[Finding] = []
        artifacts = self._nlp.process_text(text, "en") if self.ner_model else None
        runs: list[tuple[int, int]] | None = None
        for entity, recognizers in self._recognizers.items():  # phones last (see __init__)
            candidate = _CANDIDATES.get(entity)
            if candidate is None or artifacts is not None:
                windows = [(0, len(text))]
            else:
                # a bare digit run with no phone words around is not worth the phone parser's eight passes
                if runs is None:
                    runs = [m.span() for m in _DIGIT_RUNS.finditer(text)]
                spans = _candidates(text, entity, candidate, runs)
                if entity == "PHONE_NUMBER":
                    spans = (span for span in spans if _phone_plausible(text, *span))
                windows = _windows(text, spans, _WINDOW_BY_ENTITY.get(entity, _WINDOW))
            if entity == "PHONE_NUMBER":
                taken = [(f.start, f.end) for f in results]
                windows = [w for w in windows if not any(s <= w[0] + 3 and w[1] - 3 <= e for s, e in taken)]
            for start, end in windows:
                chunk = text[start:end]
                whole = artifacts if artifacts is not None and start == 0 and end == len(text) else _EMPTY_ARTIFACTS
                for match in recognizers:
                    for s, e, score in match(chunk, whole):
                        if score < self.threshold:
                            continue
                        if entity == "PHONE_NUMBER" and not _phone_plausible(text, s + start, e + start):
                            continue
                        results.append(Finding(entity, s + start, e + start, score))
        return _resolve_overlaps(results)


Span = tuple[int, int, float]
Matcher = Callable[[str, NlpArtifacts], list[Span]]


class _FastPatterns:
    """A Presidio PatternRecognizer's own patterns, validation and invalidation, without the timers
    and explanation objects it builds for every match: the same findings at a tenth of the cost."""

    def __init__(self, rec: PatternRecognizer, threshold: float):
        self.rec = rec
        # an email's validity (tldextract: a known public suffix) depends on its domain alone
        self.validate = _by_domain(rec.validate_result) if isinstance(rec, EmailRecognizer) else rec.validate_result
        # validate_result may raise a weak pattern's score to 1.0; otherwise a pattern below the
        # threshold can never produce a finding that is kept
        raises = type(rec).validate_result is not PatternRecognizer.validate_result
        flags = rec.global_regex_flags or 0
        own: list[Pattern] = vars(rec)["patterns"]  # mypy cannot read presidio's untyped attribute
        self.patterns = [(re.compile(p.regex, flags), float(p.score)) for p in own if p.score >= threshold or raises]

    def __call__(self, text: str, _: NlpArtifacts) -> list[Span]:
        out = []
        for pattern, base in self.patterns:
            for m in pattern.finditer(text):
                start, end = m.span()
                if start == end:
                    continue
                value = text[start:end]
                valid = self.validate(value)
                score = base if valid is None else (1.0 if valid else 0.0)
                if self.rec.invalidate_result(value):
                    score = 0.0
                if score > 0:
                    out.append((start, end, score))
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


def _matcher(rec: EntityRecognizer, entity: str, threshold: float) -> Matcher:
    """The cheapest way to get this recognizer's findings on a window."""
    if isinstance(rec, PhoneRecognizer):
        regions, score = tuple(rec.supported_regions), float(rec.SCORE)
        return lambda text, _: [(s, e, score) for s, e in phone.first_region_matches(text, regions)]
    if isinstance(rec, PatternRecognizer) and type(rec).analyze is PatternRecognizer.analyze:
        return _FastPatterns(rec, threshold)
    return lambda text, artifacts: [(r.start, r.end, r.score) for r in rec.analyze(text, [entity], artifacts)
                                    if r.entity_type == entity]


_EMPTY_ARTIFACTS = NlpArtifacts(entities=[], tokens=[], tokens_indices=[], lemmas=[],  # type: ignore[arg-type]
                                nlp_engine=None, language="en")


def _phone_plausible(text: str, start: int, end: int) -> bool:
    """A '+' or '(' start, or digit groups of phone size (at most 5 digits each), or phone words near."""
    value = text[start:end]
    if value.startswith("+") or text[max(0, start - 1):start] in ("+", "("):
        return True
    groups = re.findall(r"\d+", value)
    if len(groups) > 1 and max(map(len, groups)) <= 5:
        return True
    return bool(_PHONE_CONTEXT.search(text, max(0, start - 40), min(len(text), end + 20)))


def _needs_nlp(rec: EntityRecognizer) -> bool:
    return type(rec).__name__ in ("SpacyRecognizer", "StanzaRecognizer", "TransformersRecognizer")


def _candidates(text: str, entity: str, candidate: re.Pattern[str],
                runs: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Spans of the entity's candidate pattern, found inside digit runs where that is the same thing."""
    if entity in _DIGIT_LED:
        shortest = _DIGIT_LED[entity]
        for start, end in runs:
            if end - start >= shortest:
                for m in candidate.finditer(text, start, end):
                    yield m.span()
    elif entity == "IBAN_CODE":
        # Presidio's IBAN pattern starts with two letters (not after a letter or digit), two check
        # digits and eight more letters or digits: a digit run right after two letters, checked so.
        for start, _ in runs:
            after_alnum = start >= 3 and _ASCII_ALNUM.match(text, start - 3)
            if start >= 2 and candidate.match(text, start - 2) and not after_alnum:
                yield start - 2, start + 2
    else:
        for m in candidate.finditer(text):
            yield m.span()


def _windows(text: str, candidates: Iterable[tuple[int, int]], margin: int) -> list[tuple[int, int]]:
    """Merged windows around candidate spans, widened to whitespace so word boundaries hold."""
    spans: list[tuple[int, int]] = []
    for m_start, m_end in candidates:
        start = max(0, m_start - margin)
        end = min(len(text), m_end + margin)
        # widen to whitespace, so the recognizers' word boundaries hold
        start = max(text.rfind(" ", 0, start), text.rfind("\n", 0, start), text.rfind("\t", 0, start)) + 1
        after = _WHITESPACE.search(text, end)
        end = after.start() if after else len(text)
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    return spans


def _resolve_overlaps(results: list[Finding]) -> list[Finding]:
    """Where findings overlap keep the stronger (score, then length); e.g. a URL inside an email."""
    ordered = sorted(set(results), key=lambda f: (-f.score, -(f.end - f.start), f.start))
    kept: list[Finding] = []
    for f in ordered:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
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
