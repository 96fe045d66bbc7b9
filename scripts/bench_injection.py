"""In-process cost of the injection guard per fresh text: rules alone, the model alone, both (CPU time).

Usage: .venv/bin/python scripts/bench_injection.py   (prints a table; BENCHMARKS.md quotes it)
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from douane.detect.injection import InjectionDetector, _base_view  # noqa: E402
from douane.detect.injection_model import default_model  # noqa: E402

WORDS = ["please", "summarise", "the", "following", "report", "for", "our", "team", "focusing", "on", "revenue",
         "costs", "and", "the", "outlook", "for", "next", "year", "the", "meeting", "is", "on", "thursday", "in",
         "room", "b", "bring", "your", "badge", "and", "the", "draft", "of", "the", "budget"]
ACCENTED = ["résumé", "des", "coûts", "prévus", "pour", "l'année", "prochaine", "équipe", "réunion", "jeudi"]


def texts(n: int, size: int, rng: random.Random, words: list[str]) -> list[str]:
    """n distinct texts of about `size` characters (distinct, so no cache helps)."""
    out = []
    for i in range(n):
        parts, length = [f"ticket {i}:"], 0
        while length < size:
            parts.append(rng.choice(words))
            length += len(parts[-1]) + 1
        out.append(" ".join(parts)[:size])
    return out


def per_text_us(fn, items: list[str]) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for t in items:
            fn(t)
        best = min(best, (time.process_time() - start) / len(items) * 1e6)
    return best


def table() -> list[str]:
    rng = random.Random(5)
    model = default_model()
    rules = InjectionDetector(model=False)._score
    out = ["| text | rules alone | model alone (view + score) | detector (both, uncached) |",
           "| --- | --- | --- | --- |"]
    for label, size, words in (("200 B", 200, WORDS), ("2 KB", 2048, WORDS), ("2 KB accented", 2048,
                               WORDS + ACCENTED), ("20 KB", 20480, WORDS)):
        items = texts(200 if size < 10000 else 40, size, rng, words)

        def both(t: str) -> None:
            InjectionDetector(cache_size=1).score(t)

        alone = per_text_us(lambda t: model.score(_base_view(t)), items)
        together = per_text_us(both, items)
        out.append(f"| {label} | {per_text_us(rules, items):.0f} us | {alone:.0f} us | {together:.0f} us |")
    return out


def main() -> None:
    print("\n".join(table()))


if __name__ == "__main__":
    main()
