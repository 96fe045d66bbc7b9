"""Measure the injection guard on the labelled sets in tests/data: rules alone, the learned model alone,
and both (the detector as the proxy runs it), per set and language, at the default threshold 0.5.

- dev, heldout: hand-written; dev was used while writing the rules, heldout only measured.
- bastion: bastioncorpus 0.6.0 (MIT), en/de/fr/es/it, never used in training (scripts/train_injection
  drops anything near it from the training data).
- spikee_lowres: spikee 0.9.2 (Apache-2.0) jailbreaks in Zulu, Albanian, Irish and Scottish Gaelic
  (attacks only), never used in training.
Usage: .venv/bin/python scripts/eval_injection.py [--write]   (--write rewrites BENCHMARKS.md's section)
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from douane.detect.injection import InjectionDetector, _base_view  # noqa: E402
from douane.detect.injection_model import default_model  # noqa: E402

SETS = ("dev", "heldout", "bastion", "spikee_lowres")
THRESHOLD = 0.5


def load(name: str) -> list[dict]:
    path = ROOT / "tests" / "data" / f"injection_{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def scorers() -> dict[str, Callable[[str], float]]:
    rules = InjectionDetector(model=False)
    both = InjectionDetector()
    model = default_model()
    return {"rules": lambda t: rules.score(t).score, "model": lambda t: model.score(_base_view(t)),
            "combined": lambda t: both.score(t).score}


def rates(scores: list[float], labels: list[int]) -> tuple[float | None, float | None]:
    attacks = [s for s, y in zip(scores, labels, strict=True) if y]
    benign = [s for s, y in zip(scores, labels, strict=True) if not y]
    tpr = sum(s >= THRESHOLD for s in attacks) / len(attacks) if attacks else None
    fpr = sum(s >= THRESHOLD for s in benign) / len(benign) if benign else None
    return tpr, fpr


def auc(scores: list[float], labels: list[int]) -> float | None:
    """The chance that an attack outscores a benign text (ties count half)."""
    attacks = [s for s, y in zip(scores, labels, strict=True) if y]
    benign = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not attacks or not benign:
        return None
    wins = sum((a > b) + 0.5 * (a == b) for a in attacks for b in benign)
    return wins / (len(attacks) * len(benign))


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def table() -> list[str]:
    score = scorers()
    out = ["| set | lang | attacks | benign | rules TPR / FPR | model TPR / FPR | combined TPR / FPR | "
           "combined AUC |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in SETS:
        rows = load(name)
        langs = sorted({r.get("lang", "en") for r in rows})
        for lang in ["all", *langs] if len(langs) > 1 else ["all"]:
            sel = [r for r in rows if lang in ("all", r.get("lang", "en"))]
            labels = [int(r["label"]) for r in sel]
            cells = []
            for which in ("rules", "model", "combined"):
                tpr, fpr = rates([score[which](r["text"]) for r in sel], labels)
                cells.append(f"{fmt(tpr)} / {fmt(fpr)}")
            combined = [score["combined"](r["text"]) for r in sel]
            out.append(f"| {name} | {lang} | {sum(labels)} | {len(labels) - sum(labels)} | {' | '.join(cells)} | "
                       f"{fmt(auc(combined, labels))} |")
    return out


def write_results(rows: list[str]) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_injection import table as cost
    from benchmarks_md import write_section as write

    load = os.getloadavg()[0]
    write("injection", f"## scripts/eval_injection.py\n\nRun {time.strftime('%Y-%m-%d')}, threshold {THRESHOLD}. "
          "`dev` was used while writing the rules; `heldout` was written after they were fixed; `bastion` "
          "(bastioncorpus 0.6.0, MIT) and `spikee_lowres` (spikee 0.9.2, Apache-2.0, Zulu/Albanian/Irish/"
          "Scottish Gaelic) never entered the model's training (see douane/detect/models/README.md). `model` "
          "is the learned tier alone (injection-v1), `combined` the detector as the proxy runs it. Goal on "
          "bastion: TPR >= 0.90 at FPR <= 0.02 (not met: see douane/detect/models/README.md).\n\n" + "\n".join(rows)
          + f"\n\nCost per fresh text, in-process CPU time (scripts/bench_injection.py; load average {load:.1f} on "
          "2 cores while measured: divide by the rules' ratio to their unloaded 66 us per 2 KB for a quiet "
          "machine):\n\n" + "\n".join(cost()))


if __name__ == "__main__":
    lines = table()
    print("\n".join(lines))
    if "--write" in sys.argv:
        write_results(lines)
