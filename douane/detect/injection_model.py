"""The learned tier of the injection guard: a linear model over word-prefix features, trained by
scripts/train_injection (see douane/detect/models/README.md for its data and evaluation).

The rules catch the phrasings they name and explain themselves; this model catches paraphrases,
other languages and persona jailbreaks the rules do not name. It reads the same normalised view the
rules read (compatibility forms, confusable letters and invisible characters undone, lower case).
Features are 5-character word prefixes ("ignor", "instr": one feature for ignore / ignora /
ignorez / ignoriere) and pairs of neighbouring prefixes; each occurrence counts 1/sqrt(window
length). A long text is scored in overlapping windows and the strongest window decides, so an
instruction buried in a résumé or a tool result is not diluted by the document around it.
The weights are plain JSON (inspectable, never a pickle); scoring is a dict lookup per feature.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import string
from dataclasses import dataclass
from functools import cache
from itertools import accumulate, repeat
from operator import add
from pathlib import Path

MODELS = Path(__file__).resolve().parent / "models"
DEFAULT = MODELS / "injection-v1.json"
_PUNCTUATION = string.punctuation + "“”„‘’‚«»‹›¿¡—–…·•"
_PUNCT_RE = re.compile("[" + re.escape(_PUNCTUATION) + "]")
_PUNCT_TABLE = str.maketrans(dict.fromkeys(_PUNCTUATION, " "))


def tokens(view: str) -> list[str]:
    """The words of a normalised view: runs between whitespace and punctuation (C-speed either way:
    str.translate on ASCII text, a one-class regex on the rest)."""
    return (view.translate(_PUNCT_TABLE) if view.isascii() else _PUNCT_RE.sub(" ", view)).split()


def prefixes(toks: list[str], size: int) -> list[str]:
    return [t[:size] for t in toks]


def pairs(pre: list[str]) -> list[str]:
    """The feature of each pair of neighbouring prefixes ("ignor previ"); one fewer than `pre`."""
    return list(map(add, [p + " " for p in pre[:-1]], pre[1:]))


def windows(n: int, size: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) token spans covering n tokens: one span when the text is short."""
    if n <= size:
        return [(0, n)]
    starts = list(range(0, n - size, stride)) + [n - size]
    return [(s, s + size) for s in starts]


def window_features(view: str, size: int, window: int, stride: int, with_pairs: bool, with_words: bool
                    ) -> list[dict[str, float]]:
    """Feature values per window, as the model sees them (the training script fits on these)."""
    toks = tokens(view)
    pre = prefixes(toks, size)
    bi = pairs(pre) if with_pairs else []
    out = []
    for start, end in windows(len(pre), window, stride):
        value = 1.0 / math.sqrt(max(1, end - start))
        feats: dict[str, float] = {}
        words = toks[start:end] if with_words else []
        for f in pre[start:end] + words + bi[start:max(start, end - 1)]:
            feats[f] = feats.get(f, 0.0) + value
        out.append(feats)
    return out


@dataclass(frozen=True)
class InjectionModel:
    """A logistic model: P(injection) of a window is sigmoid(bias + sum of its features' weights × value).
    `bias` is already shifted so that 0.5 is the operating point chosen at training."""

    name: str
    prefix: int
    window: int
    stride: int
    pairs: bool
    words: bool
    bias: float
    weights: dict[str, float]

    @classmethod
    def load(cls, path: Path = DEFAULT) -> InjectionModel:
        """Read an artifact; a missing or malformed file is an error naming the file and what to do."""
        try:
            raw = json.loads(path.read_bytes())
            model = cls(name=str(raw["name"]), prefix=int(raw["prefix"]), window=int(raw["window"]),
                        stride=int(raw["stride"]), pairs=bool(raw["pairs"]),
                        words=bool(raw["words"]), bias=float(raw["bias"]),
                        weights={str(k): float(v) for k, v in raw["weights"].items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"injection model {path}: cannot be read ({e}); restore it from git or re-run "
                             f"scripts/train_injection") from e
        if model.prefix < 1 or model.window < 1 or not 1 <= model.stride <= model.window:
            raise ValueError(f"injection model {path}: prefix, window and stride must be positive and stride "
                             f"<= window; re-run scripts/train_injection")
        return model

    def logit(self, view: str) -> float:
        """The strongest window's logit; the bias alone for text with no words."""
        toks = tokens(view)
        pre = prefixes(toks, self.prefix)
        n = len(pre)
        if n == 0:
            return self.bias
        get = self.weights.get
        contributions = map(get, pre, repeat(0.0))
        if self.words:  # a word no longer than the prefix is the same key, counted twice, as in training
            contributions = map(add, contributions, map(get, toks, repeat(0.0)))
        if n <= self.window and not self.pairs:  # one window: no running sums needed
            return self.bias + sum(contributions) / math.sqrt(n)
        uni = [0.0, *accumulate(contributions)]
        bi = [0.0, *accumulate(map(get, pairs(pre), repeat(0.0)))] if self.pairs else [0.0] * n
        best = -math.inf
        for start, end in windows(n, self.window, self.stride):
            s = (uni[end] - uni[start] + bi[max(start, end - 1)] - bi[start]) / math.sqrt(end - start)
            best = max(best, s)
        return self.bias + best

    def score(self, *views: str) -> float:
        """P(injection) of the text, read through each of its views: the most suspicious decides."""
        z = max(self.logit(v) for v in views)
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


@cache
def default_model() -> InjectionModel:
    """The shipped artifact, read once."""
    return InjectionModel.load(DEFAULT)


def artifact_sha256(path: Path = DEFAULT) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
