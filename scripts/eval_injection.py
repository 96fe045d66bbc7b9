"""Measure the injection detector on the labelled sets in tests/data: TPR and FPR per threshold.

injection_dev.jsonl was used while writing the rules; injection_heldout.jsonl was written after
the rules were fixed and is only measured. Usage: .venv/bin/python scripts/eval_injection.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from douane.detect.injection import InjectionDetector  # noqa: E402


def measure(path: Path, threshold: float) -> dict[str, float]:
    detector = InjectionDetector()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    tp = fn = fp = tn = 0
    misses, false_hits = [], []
    for row in rows:
        verdict = detector.score(row["text"])
        hit = verdict.score >= threshold
        if row["label"] and hit:
            tp += 1
        elif row["label"]:
            fn += 1
            misses.append(row["text"][:80])
        elif hit:
            fp += 1
            false_hits.append(row["text"][:80])
        else:
            tn += 1
    return {"tpr": tp / max(1, tp + fn), "fpr": fp / max(1, fp + tn), "attacks": tp + fn, "benign": fp + tn,
            "misses": misses, "false_hits": false_hits}  # type: ignore[dict-item]


def write_results() -> None:
    import time

    rows = ["| set | threshold | TPR | FPR | attacks | benign |", "| --- | --- | --- | --- | --- | --- |"]
    for name in ("injection_dev.jsonl", "injection_heldout.jsonl"):
        for threshold in (0.4, 0.5, 0.6):
            r = measure(ROOT / "tests" / "data" / name, threshold)
            rows.append(f"| {name.split('_')[1].split('.')[0]} | {threshold} | {r['tpr']:.3f} | {r['fpr']:.3f} | "
                        f"{r['attacks']} | {r['benign']} |")
    sys.path.insert(0, str(ROOT / "scripts"))
    from benchmarks_md import write_section as write

    write("injection", f"## scripts/eval_injection.py\n\nRun {time.strftime('%Y-%m-%d')}. `dev` was used while "
          "writing the rules; `heldout` was written after they were fixed and is only measured (tests assert "
          "TPR >= 0.85 at FPR <= 0.05 on it at the default threshold 0.5). Both sets are small and hand-written: "
          "treat them as a floor check, not a benchmark of the state of the art.\n\n" + "\n".join(rows))


if __name__ == "__main__":
    if "--write" in sys.argv:
        write_results()
    for name in ("injection_dev.jsonl", "injection_heldout.jsonl"):
        for threshold in (0.4, 0.5, 0.6):
            r = measure(ROOT / "tests" / "data" / name, threshold)
            print(f"{name:26} threshold {threshold}: TPR {r['tpr']:.3f} FPR {r['fpr']:.3f} "
                  f"({r['attacks']} attacks, {r['benign']} benign)")
        r = measure(ROOT / "tests" / "data" / name, 0.5)
        for text in r["misses"]:
            print("   missed:", text)
        for text in r["false_hits"]:
            print("   false hit:", text)
