"""Output moderation: harmful content (harassment, hate, sexual, violence, self-harm) and the policy's
own deny patterns in a model's answer, judged sentence by sentence with a bounded look-behind.

Text is cut into sentences (a run of `.!?…` before whitespace, `。！？`, a newline; a sentence longer
than MAX_SENTENCE is cut at its last space before that). Each sentence is scored per category by a
linear model (moderation-v1, trained by scripts/train_moderation, plain JSON weights) over the words
and 5-character word prefixes of a window: the sentence plus the whole sentences before it within
LOOK_BEHIND characters, so "Then do it again." after an instruction to hurt someone is read in its
context. A sentence is flagged for a category when that window's probability reaches the threshold
and the sentence itself leans towards the category (or, alone, reaches it): a harmful sentence does
not drag the innocent one after it along. Deny patterns are RE2 expressions (linear time whatever the
pattern: an answer is text the caller does not control), compiled once, matched case-insensitively
over the look-behind and the sentence; a match belongs to the sentence it ends in.

Judge keeps the look-behind state, so a stream and a whole text give the same verdicts sentence for
sentence; everything here is linear in the length of the text.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import re2

MODELS = Path(__file__).resolve().parent / "models"
DEFAULT = MODELS / "moderation-v1.json"
CATEGORIES = ("harassment", "hate", "sexual", "violence", "self_harm")
DENY = "deny"  # the category name of a deny-pattern finding
MAX_SENTENCE = 400  # characters: a longer run without a sentence end is cut at a space
LOOK_BEHIND = 240  # characters of earlier whole sentences read with a sentence
LEAN = 1.0  # how much a sentence's own words must raise a category's log-odds for its context to count

# a sentence ends after a run of .!?… followed by whitespace, after a run of CJK full stops, at a newline;
# candidates are found by one character class (a C-speed scan), then checked
_CANDIDATE = re.compile(r"[.!?…。！？\n]")
_LATIN_STOPS = frozenset(".!?…")
_CJK_STOPS = frozenset("。！？")


class DenyPatternError(ValueError):
    """A deny pattern RE2 cannot compile (RE2 has no backreferences or look-around)."""


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # errors are raised and reported by the policy check, not logged by RE2
    options.case_sensitive = False
    return options


def searcher(compiled: Any) -> Callable[[str], bool]:
    """`compiled.search(text) is not None`, by RE2's own Match on the text's UTF-8 bytes: a yes or no
    needs none of the wrapper's offset bookkeeping, which costs as much as the search on a sentence.
    The public search where the wrapper's internals are not the ones this was written against
    (tests/unit/test_moderation.py holds the two to the same answers)."""
    regexp = getattr(compiled, "_regexp", None)
    anchor = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
    if anchor is None or not callable(getattr(regexp, "Match", None)):
        return lambda text: compiled.search(text) is not None
    match = regexp.Match  # type: ignore[union-attr]

    def search(text: str) -> bool:
        data = text.encode("utf-8")  # as the wrapper encodes (and fails on a lone surrogate, as it does)
        return bool(match(anchor, data, 0, len(data))[0] != (-1, -1))
    return search


def compile_deny(pattern: str) -> Any:
    """One deny pattern, compiled by RE2 (case-insensitive); DenyPatternError says why not."""
    try:
        compiled = re2.compile(pattern, _re2_options())
    except re2.error as e:
        detail = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        raise DenyPatternError(f"not an RE2 regular expression ({detail}); RE2 has no backreferences or "
                               "look-around, e.g. '\\bproject bluebird\\b'") from None
    if compiled.search("") is not None:
        raise DenyPatternError("matches the empty text, so it would deny every answer; e.g. '\\bproject bluebird\\b'")
    return compiled


def sentence_end(text: str, start: int, final: bool = False, max_len: int = MAX_SENTENCE) -> int | None:
    """Where the sentence starting at `start` ends, or None when `text` does not tell yet (a stream
    will bring more). `final`: nothing more comes, the rest is one sentence."""
    limit = min(len(text), start + max_len + 1)
    m = _CANDIDATE.search(text, start, limit)
    while m is not None:
        i = m.start()
        if text[i] == "\n":
            return i + 1
        stops = _CJK_STOPS if text[i] in _CJK_STOPS else _LATIN_STOPS
        end = i + 1
        while end < limit and text[end] in stops:
            end += 1
        if end < limit and (stops is _CJK_STOPS or text[end].isspace()):
            return end
        m = _CANDIDATE.search(text, end, limit)
    if len(text) - start > max_len:  # too long without an end: cut at its last space
        space = text.rfind(" ", start + 1, start + max_len)
        return space + 1 if space > start else start + max_len
    return len(text) if final and start < len(text) else None


def may_end(text: str, known: int, max_len: int = MAX_SENTENCE, start: int = 0) -> bool:
    """Whether the sentence starting at `start` may end in `text`, now that text[start:known] held no
    end (a stream's incomplete sentence, grown by a delta): only a stop at or after the last known
    character can end it (a stop ends a sentence once what follows it is seen), or the run growing
    past `max_len`. Lets a stream skip sentence_end for the deltas in mid-sentence."""
    return len(text) - start > max_len or _CANDIDATE.search(text, known - 1 if known > start else start) is not None


def sentences(text: str, max_len: int = MAX_SENTENCE) -> Iterator[tuple[int, int]]:
    """The [start, end) spans of a whole text's sentences, cut as a stream would cut them."""
    start = 0
    while start < len(text):
        end = sentence_end(text, start, final=True, max_len=max_len)
        assert end is not None and end > start
        yield start, end
        start = end


_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The words of `text`, lower case, compatibility forms folded."""
    return _WORD.findall((text if text.isascii() else unicodedata.normalize("NFKC", text)).lower())


def features(text: str, prefix: int) -> list[str]:
    """The words of `text` and their `prefix`-character prefixes (`stabbed`, `stabbing` share `stabb`; a
    short word counts twice, itself and its prefix), as the model was trained: the artifact's weights and
    bias assume exactly this list. ModerationModel.sums adds the same weights a word at a time."""
    found = words(text)
    return found + [w[:prefix] for w in found]


@dataclass(frozen=True)
class ModerationModel:
    """Per category a logistic model: P(category) of a window = sigmoid(bias + sum of weights / sqrt(n)),
    n its feature count. Biases are shifted at training so that 0.5 is each category's operating point."""

    name: str
    prefix: int
    bias: dict[str, float]
    weights: dict[str, dict[str, float]]
    # feature -> its weight in every category (CATEGORIES' order)
    table: dict[str, tuple[float, ...]] = field(init=False, repr=False, compare=False)
    # a feature that is a word -> what its two features (itself and its prefix) add: one lookup per word
    by_word: dict[str, tuple[float, ...]] = field(init=False, repr=False, compare=False)
    biases: tuple[float, ...] = field(init=False, repr=False, compare=False)  # bias per category, in order
    # what a word's features add (by_word's, else its prefix's, else zeros), two categories to a complex
    # number (real: the even one, imaginary: the odd one) so that C's sum() adds a sentence's words
    packs: tuple[_WordWeights, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = sorted({k for w in self.weights.values() for k in w})
        table = {k: tuple(self.weights[c].get(k, 0.0) for c in CATEGORIES) for k in keys}
        by_word = {k: tuple(a + b for a, b in zip(v, table.get(k[:self.prefix], _ZEROS), strict=True))
                   for k, v in table.items()}
        object.__setattr__(self, "table", table)
        object.__setattr__(self, "by_word", by_word)
        object.__setattr__(self, "biases", tuple(self.bias[c] for c in CATEGORIES))
        object.__setattr__(self, "packs", tuple(
            _WordWeights(_pair(by_word, i), _pair(table, i), self.prefix) for i in range(0, len(CATEGORIES), 2)))

    @classmethod
    def load(cls, path: Path = DEFAULT) -> ModerationModel:
        """Read an artifact; a missing or malformed file is an error naming the file and what to do."""
        try:
            raw = json.loads(path.read_bytes())
            model = cls(name=str(raw["name"]), prefix=int(raw["prefix"]),
                        bias={c: float(raw["bias"][c]) for c in CATEGORIES},
                        weights={c: {str(k): float(v) for k, v in raw["weights"][c].items()} for c in CATEGORIES})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"moderation model {path}: cannot be read ({e}); restore it from git or re-run "
                             "scripts/train_moderation") from e
        if model.prefix < 1:
            raise ValueError(f"moderation model {path}: prefix must be positive; re-run scripts/train_moderation")
        return model

    def sums(self, text: str) -> tuple[tuple[float, ...], int]:
        """Per category, the summed weights of the text's features, and how many features it has: the
        weights of `features(text)`, looked up a word at a time (a word the model does not know may
        still have a known prefix)."""
        found = words(text)
        if not found:
            return _ZEROS, 0
        totals: list[float] = []
        for pack in self.packs:
            z = sum(map(pack.__getitem__, found), 0j)
            totals += (z.real, z.imag)
        return tuple(totals[:len(CATEGORIES)]), 2 * len(found)

    def logit(self, category: int, total: float, n: int) -> float:
        return self.bias[CATEGORIES[category]] + (total / math.sqrt(n) if n else 0.0)

    def probability(self, category: int, total: float, n: int) -> float:
        return _sigmoid(self.logit(category, total, n))

    def scores(self, text: str) -> dict[str, float]:
        """P(category) of `text` read as one window (what training fits)."""
        totals, n = self.sums(text)
        return {c: self.probability(i, totals[i], n) for i, c in enumerate(CATEGORIES)}


_ZEROS = (0.0,) * len(CATEGORIES)


def _pair(weights: dict[str, tuple[float, ...]], i: int) -> dict[str, complex]:
    """Categories i and i + 1 of each feature's weights as one complex number (i + 1 past the last: 0)."""
    return {k: complex(v[i], v[i + 1] if i + 1 < len(v) else 0.0) for k, v in weights.items()}


class _WordWeights(dict[str, complex]):
    """ModerationModel.by_word (one pack of it) for every word: a word it lacks adds its prefix's
    weights, if the prefix is known (a short word has no other prefix), else nothing; worked out once
    per word and remembered, up to MAX words (then forgotten at once: an answer of random words
    cannot grow it)."""

    MAX = 100_000

    def __init__(self, by_word: dict[str, complex], table: dict[str, complex], prefix: int):
        super().__init__(by_word)
        self._by_word, self._table, self._prefix = by_word, table, prefix

    def __missing__(self, word: str) -> complex:
        weights = self._table.get(word[:self._prefix], 0j) if len(word) > self._prefix else 0j
        if len(self) >= len(self._by_word) + self.MAX:
            self.clear()
            self.update(self._by_word)
        self[word] = weights
        return weights


def _log_odds_of(p: float) -> float:
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p / (1.0 - p))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


@cache
def default_model() -> ModerationModel:
    """The shipped artifact, read once."""
    return ModerationModel.load(DEFAULT)


def artifact_sha256(path: Path = DEFAULT) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True, slots=True)
class Hit:
    """A sentence flagged for a category (or for a deny pattern: category DENY, `pattern` its index)."""

    category: str
    score: float
    pattern: int | None = None


class ModerationDetector:
    """The shipped model and one policy's deny patterns (compiled once). Stateless: a Judge per text
    or stream holds the look-behind."""

    def __init__(self, deny: Sequence[str] = (), model: ModerationModel | None = None,
                 look_behind: int = LOOK_BEHIND, max_sentence: int = MAX_SENTENCE):
        self.model = model if model is not None else default_model()
        self.deny = [compile_deny(p) for p in deny]
        # every pattern in one pass; which one matched is looked up only on a hit
        self._any_deny = searcher(compile_deny("|".join(f"(?:{p})" for p in deny))) if deny else None
        self.look_behind = look_behind
        self.max_sentence = max_sentence

    def judge(self, thresholds: dict[str, float]) -> Judge:
        """A fresh judge: `thresholds` per category (a category absent is not judged)."""
        return Judge(self, thresholds)

    def scores(self, text: str) -> dict[str, float]:
        """Per category, the highest sentence score over a whole text (what evaluation ranks)."""
        judge = Judge(self, {})
        best = dict.fromkeys(CATEGORIES, 0.0)
        for start, end in sentences(text, self.max_sentence):
            for c, s in judge.sentence_scores(text[start:end]).items():
                best[c] = max(best[c], s)
        return best

    def deny_hit(self, context: str, sentence: str) -> int | None:
        """The index of a deny pattern matching in context + sentence and ending inside the sentence."""
        if self._any_deny is None:
            return None
        text = context + sentence
        for i, pattern in enumerate(self.deny):
            for m in pattern.finditer(text):
                if m.end() > len(context):
                    return i
        return None

    def could_deny(self, context: str, sentence: str) -> bool:
        return self._any_deny is not None and self._any_deny(context + sentence)


@dataclass
class Judge:
    """Sentences judged one after another, each with the whole sentences before it within the look-behind."""

    detector: ModerationDetector
    thresholds: dict[str, float]
    _window: deque[tuple[str, tuple[float, ...], int]] = field(default_factory=deque)
    _text: str = ""  # the look-behind's sentences, joined (what deny patterns read before a sentence)
    _totals: list[float] = field(default_factory=lambda: [0.0] * len(CATEGORIES))  # the window's sums
    _count: int = 0  # the window's feature count
    # per category judged: a log-odds below which its threshold cannot be reached (a hair under the exact one)
    _judged: list[tuple[int, str, float, float]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # (index, category, floor, threshold) of each category judged, in CATEGORIES' order
        self._judged = [(i, c, _log_odds_of(self.thresholds[c]) - 1e-9, self.thresholds[c])
                        for i, c in enumerate(CATEGORIES) if c in self.thresholds]

    def sentence_scores(self, sentence: str) -> dict[str, float]:
        """Per category, the sentence's score, and the sentence joins the look-behind."""
        return {c: _sigmoid(z) for c, z in zip(CATEGORIES, self._log_odds(sentence), strict=True)}

    def _log_odds(self, sentence: str) -> list[float]:
        """Per category, the log-odds of the sentence's score, and the sentence joins the look-behind.
        The score is the sentence's own probability, or its window's where the sentence itself leans
        towards the category (its words raise the log-odds by LEAN or more): context makes "Then do it
        again." harmful after a harmful instruction, but not "Have a nice day." after one."""
        model = self.detector.model
        own, n = model.sums(sentence)
        bias = model.biases
        if not n:
            return list(bias)
        root = math.sqrt(n)
        out = [b + o / root for b, o in zip(bias, own, strict=True)]
        if self._count and max(own) / root >= LEAN:  # (division by a positive number keeps the order)
            both = math.sqrt(n + self._count)
            for i, b in enumerate(bias):
                if own[i] / root >= LEAN:
                    out[i] = max(out[i], b + (own[i] + self._totals[i]) / both)
        self._remember(sentence, own, n)
        return out

    def _remember(self, sentence: str, sums: tuple[float, ...], n: int) -> None:
        if not n:
            return
        self._window.append((sentence, sums, n))
        self._text += sentence
        self._count += n
        self._totals = [t + s for t, s in zip(self._totals, sums, strict=True)]
        while len(self._text) > self.detector.look_behind:
            old, old_sums, k = self._window.popleft()
            self._text = self._text[len(old):]
            self._count -= k
            self._totals = [t - s for t, s in zip(self._totals, old_sums, strict=True)]

    def context(self) -> str:
        return self._text

    def sentence(self, sentence: str) -> list[Hit]:
        """What one sentence is flagged for: categories over their threshold, then a deny pattern."""
        if not sentence.strip():
            return []
        context = self.context() if self.detector.deny else ""  # before the sentence joins the look-behind
        hits = []
        odds = self._log_odds(sentence)
        for i, c, floor, threshold in self._judged:
            # a sigmoid only for a score that can reach its threshold: most sentences reach none
            if odds[i] >= floor and (s := _sigmoid(odds[i])) >= threshold:
                hits.append(Hit(c, s))
        if self.detector.could_deny(context, sentence):
            index = self.detector.deny_hit(context, sentence)
            if index is not None:
                hits.append(Hit(DENY, 1.0, index))
        return sorted(hits, key=lambda h: -h.score)
