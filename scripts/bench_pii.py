"""PII engine vs stock Presidio on the same labelled text: throughput, recall and benign alterations;
and each scanner's time on adversarial shapes at 10 KB, 100 KB and 1 MB, before and after the
scans were made linear (issue 9).

Recall = share of planted values that no longer appear after redaction (i.e. did not reach the
upstream); benign altered = share of PII-free prompts changed at all. Writes a BENCHMARKS.md section.

Shape timings are CPU milliseconds of one scan, each (scanner, shape) in its own subprocess so that a
scan past the cap can be killed. The "before" column comes from scripts/bench_pii_before.json,
written by running this script with `--before ROOT --out scripts/bench_pii_before.json` on a
checkout of the engine before the change (ROOT holds its `douane` package).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

from pii_corpus import ADVERSARIAL, corpus, held_out  # noqa: E402

ENTITIES = ["EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN", "PHONE_NUMBER", "IBAN_CODE"]
SCANNERS = ("PII scan", "secret scan", "injection score", "output guard, streamed")
SIZES = (10_000, 100_000, 1_000_000)
BEFORE = ROOT / "scripts" / "bench_pii_before.json"


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
    from douane.detect.pii import redact

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


def held_out_table(engines: dict[str, Callable[[str], list]]) -> str:
    """Recall on the held-out shapes of issue 10, and how often a key glued to a value kept its name."""
    from douane.detect.pii import redact

    samples = held_out()
    kinds = list(dict.fromkeys(s.kind for s in samples))
    lines = ["| shape | samples | " + " | ".join(f"{name} leaked | {name} key kept" for name in engines) + " |",
             "| --- | --- | " + " | ".join("--- | ---" for _ in engines) + " |"]
    for kind in kinds:
        group = [s for s in samples if s.kind == kind]
        cells = []
        for scan in engines.values():
            outs = [redact(s.text, scan(s.text)) for s in group]
            leaked = sum(s.value in out for s, out in zip(group, outs, strict=True)) / len(group)
            keyed = [s.keep in out for s, out in zip(group, outs, strict=True) if s.keep]
            cells.append(f"{leaked:.1%} | " + (f"{sum(keyed) / len(keyed):.1%}" if keyed else "-"))
        lines.append(f"| {kind} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scanner(name: str) -> Callable[[str], object]:
    """One scan of a text by the engine on sys.path, with no cache in the way."""
    from douane.detect.injection import InjectionDetector
    from douane.detect.pii import PiiDetector
    from douane.detect.secrets import SecretsDetector
    from douane.rewrite import OutputGuard

    if name == "PII scan":
        return PiiDetector(ENTITIES)._scan
    if name == "secret scan":
        return SecretsDetector().scan
    if name == "injection score":
        return InjectionDetector._score
    pii, secrets = PiiDetector(ENTITIES), SecretsDetector()

    def stream(text: str) -> None:  # an answer in 200-character events, redacting both kinds
        guard = OutputGuard(secrets, pii, secrets_action="redact", pii_action="redact")
        for i in range(0, len(text), 200):
            guard.push(text[i:i + 200])
        guard.drain()
    return stream


def time_cells(name: str, shape: str, cap_s: float) -> None:
    """Child process: print the CPU ms of one scan per size, smallest first, as they finish; a size
    past the cap ends it (the next, ten times larger, would not finish either)."""
    import resource

    scan = scanner(name)
    scan(ADVERSARIAL[shape](1000))  # warm-up: regex compilation, caches of metadata
    for size in SIZES:
        text = ADVERSARIAL[shape](size)
        start = time.process_time()
        # past the cap in CPU seconds the kernel stops this process (SIGXCPU): the parent records "> cap"
        resource.setrlimit(resource.RLIMIT_CPU, (int(start + cap_s) + 1, resource.RLIM_INFINITY))
        scan(text)
        ms = (time.process_time() - start) * 1000
        print(json.dumps([size, ms]), flush=True)
        if ms > cap_s * 1000:
            return


def shape_timings(root: Path, cap_s: float) -> dict[str, dict[str, dict[str, float | None]]]:
    """{scanner: {shape: {size: ms, or None past the cap}}} for the engine under `root`."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for name in SCANNERS:
        for shape in ADVERSARIAL:
            cells: dict[str, float | None] = dict.fromkeys(map(str, SIZES))
            proc = subprocess.Popen([sys.executable, __file__, "--cap", str(cap_s), "--cell", name, shape], env=env,
                                    cwd=root, stdout=subprocess.PIPE, text=True)
            try:  # the child's own CPU limit ends a scan past the cap; this is a safety net
                stdout, _ = proc.communicate(timeout=max(3600, 20 * cap_s * len(SIZES)))
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, _ = proc.communicate()
            for line in stdout.splitlines():
                size, ms = json.loads(line)
                cells[str(size)] = ms if ms <= cap_s * 1000 else None
            out.setdefault(name, {})[shape] = cells
            print(f"  {name}, {shape}: " + ", ".join(f"{k}: {v and round(v)}" for k, v in cells.items()),
                  file=sys.stderr, flush=True)
    return out


def time_2kb() -> None:
    """Child process: the least of seven runs' mean CPU us per PII scan of a ~2 KB bench prompt
    (fresh PII in each, as scripts/bench sends them)."""
    from bench import prompt

    from douane.detect.pii import PiiDetector

    detector, rng = PiiDetector(ENTITIES), random.Random(3)
    prompts = [prompt(rng, i) for i in range(1500)]
    for text in prompts[:100]:
        detector._scan(text)
    runs = []
    for _ in range(7):
        start = time.process_time()
        for text in prompts[100:]:
            detector._scan(text)
        runs.append((time.process_time() - start) / len(prompts[100:]) * 1e6)
    print(min(runs))


def per_2kb_us(root: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, __file__, "--per-2kb"], env=env, cwd=root, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.split()[-1])


def shape_tables(after: dict, before: dict) -> str:
    def cell(ms: float | None) -> str:
        return "-" if ms is None else f"{ms:,.0f}" if ms >= 10 else f"{ms:.1f}"

    def pair(name: str, shape: str, size: int) -> str:
        old = before.get(name, {}).get(shape, {}).get(str(size), "n/a")
        new = after[name][shape][str(size)]
        return f"{'n/a' if old == 'n/a' else cell(old) if old is not None else '> cap'} -> {cell(new)}"

    parts = []
    for name in SCANNERS:
        lines = [f"**{name}**, CPU ms per scan, before -> after:", "",
                 "| shape | 10 KB | 100 KB | 1 MB |", "| --- | --- | --- | --- |"]
        for shape in ADVERSARIAL:
            lines.append(f"| {shape} | " + " | ".join(pair(name, shape, size) for size in SIZES) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--no-shapes", action="store_true", help="skip the adversarial shape timings")
    ap.add_argument("--cap", type=float, default=60.0, help="seconds after which one shape's scan is cut off")
    ap.add_argument("--before", type=Path, help="time the engine under this root instead, writing --out")
    ap.add_argument("--out", type=Path, default=BEFORE)
    ap.add_argument("--cell", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--per-2kb", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.per_2kb:
        time_2kb()
        return
    if args.cell:
        time_cells(*args.cell, args.cap)
        return
    if args.before:
        timings = shape_timings(args.before.resolve(), args.cap)
        record = {"engine": str(args.before), "measured": time.strftime("%Y-%m-%d"), "cap_s": args.cap,
                  "per_2kb_us": per_2kb_us(args.before.resolve()), "timings": timings}
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.out}")
        return

    sys.path.insert(0, str(ROOT))
    from douane.detect.pii import PiiDetector

    samples = corpus(seed=20261128)
    big = " ".join(s.text for s in samples)  # ~100 KB of mixed text, scanned in one go for MB/s
    ours, presidio = PiiDetector(ENTITIES), stock_presidio()
    results = [evaluate("douane", lambda t: ours._scan(t), samples, big),  # _scan: no cache, honest speed
               evaluate("presidio", presidio, samples, big)]
    lines = ["| engine | MB/s | leaked (1 - recall) | " + " | ".join(ENTITIES) + " | benign altered |",
             "| --- | --- | --- | " + " | ".join("---" for _ in ENTITIES) + " | --- |"]
    for r in results:
        lines.append(f"| {r['name']} | {r['mbps']:.3f} | {1 - r['overall']:.1%} | "
                     + " | ".join(f"{r['recall'].get(e, 0):.1%}" for e in ENTITIES) + f" | {r['altered']:.1%} |")
    report = "\n".join(lines)
    print(f"{len(samples)} samples ({sum(1 for s in samples if s.entity)} with PII), {len(big) / 1000:.0f} KB "
          f"for throughput\n\n{report}")
    held = held_out_table({"douane": ours._scan, "presidio": presidio})
    print(f"\nheld out (issue 10)\n\n{held}")
    sections = [f"Run {time.strftime('%Y-%m-%d')}: the labelled corpus of scripts/pii_corpus.py (seed 20261128, "
                f"{len(samples)} prompts, every one dense with candidates, so MB/s is a worst case); recall per "
                f"entity = planted values that did not survive redaction.\n\n{report}",
                "Held out (scripts/pii_corpus.py held_out, written after the engine, issue 10): values glued to "
                "a key, and US numbers in phone context that libphonenumber rejects or that are written "
                "`001-...` or `(212)555-0100`; key kept = the key's name survived redaction.\n\n" + held]
    if not args.no_shapes:
        before = json.loads(BEFORE.read_text()) if BEFORE.exists() else {}
        now_2kb = statistics.median(per_2kb_us(ROOT) for _ in range(3))
        old_2kb = before.get("per_2kb_us")
        intro = (f"Adversarial shapes (scripts/pii_corpus.py ADVERSARIAL), each scanner's CPU time for one scan; "
                 f"before = {before.get('engine', 'not measured')} measured {before.get('measured', '')}, "
                 f"'> cap' = cut off after {before.get('cap_s', '?')} s. One PII scan of a ~2 KB bench prompt: "
                 f"{old_2kb and f'{old_2kb:.0f} us before, '}{now_2kb:.0f} us now.")
        print(f"\n{intro}", file=sys.stderr)
        tables = shape_tables(shape_timings(ROOT, args.cap), before.get("timings", {}))
        print(f"\n{intro}\n\n{tables}")
        sections.append(f"{intro}\n\n{tables}")
    if not args.no_write:
        from benchmarks_md import write_section

        path = write_section("bench-pii", "## scripts/bench-pii\n\n" + "\n\n".join(sections))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
