"""PII engine vs stock Presidio on the same labelled text: throughput, recall and benign alterations.

Recall = share of planted values that no longer appear after redaction (i.e. did not reach the
upstream); benign altered = share of PII-free prompts changed at all. Writes a BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

from pii_corpus import corpus  # noqa: E402

from douane.detect.pii import PiiDetector, redact  # noqa: E402

ENTITIES = ["EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN", "PHONE_NUMBER", "IBAN_CODE"]


def stock_presidio():  # type: ignore[no-untyped-def]
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine

    engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=engine)
    analyzer = AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])

    def scan(text: str) -> list:
        from douane.detect.pii import Finding

        return [Finding(r.entity_type, r.start, r.end, r.score)
                for r in analyzer.analyze(text, language="en", entities=ENTITIES, score_threshold=0.3)]
    return scan


def evaluate(name: str, scan, samples, big_text: str) -> dict:  # type: ignore[no-untyped-def]
    leaks, planted, altered, benign = Counter(), Counter(), 0, 0
    for s in samples:
        out = redact(s.text, scan(s.text))
        if s.entity:
            planted[s.entity] += 1
            leaks[s.entity] += s.value in out
        else:
            benign += 1
            altered += out != s.text
    start = time.perf_counter()
    scan(big_text)
    seconds = time.perf_counter() - start
    recall = {e: 1 - leaks[e] / planted[e] for e in planted}
    return {"name": name, "recall": recall, "overall": 1 - sum(leaks.values()) / sum(planted.values()),
            "altered": altered / benign, "mbps": len(big_text.encode()) / seconds / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    samples = corpus(seed=20261128)
    big = " ".join(s.text for s in samples)  # ~100 KB of mixed text, scanned in one go for MB/s
    ours = PiiDetector(ENTITIES)
    results = [evaluate("douane", lambda t: ours._scan(t), samples, big),  # _scan: no cache, honest speed
               evaluate("presidio", stock_presidio(), samples, big)]
    lines = ["| engine | MB/s | leaked (1 - recall) | " + " | ".join(ENTITIES) + " | benign altered |",
             "| --- | --- | --- | " + " | ".join("---" for _ in ENTITIES) + " | --- |"]
    for r in results:
        lines.append(f"| {r['name']} | {r['mbps']:.3f} | {1 - r['overall']:.1%} | "
                     + " | ".join(f"{r['recall'].get(e, 0):.1%}" for e in ENTITIES) + f" | {r['altered']:.1%} |")
    report = "\n".join(lines)
    print(f"{len(samples)} samples ({sum(1 for s in samples if s.entity)} with PII), {len(big) / 1000:.0f} KB "
          f"for throughput\n\n{report}")
    if not args.no_write:
        from benchmarks_md import write_section

        path = write_section("bench-pii", f"## scripts/bench-pii\n\nRun {time.strftime('%Y-%m-%d')}: the labelled "
                             f"corpus of scripts/pii_corpus.py (seed 20261128, {len(samples)} prompts, every one "
                             "dense with candidates, so MB/s is a worst case); recall per entity = planted values "
                             f"that did not survive redaction.\n\n{report}")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
