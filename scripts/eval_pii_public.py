"""PII recall and precision on data douane's engine was not written against: the sentence templates
of presidio-research's data generator (presidio-evaluator 0.3.2, MIT; tests/data/
presidio_evaluator_templates.txt) filled with Faker's values (en_US, a fixed seed), as that
generator does. Per entity: recall (planted values wholly inside a finding of their type) and
precision (findings of the type that lie on a planted value of it); and how many sentences with no
planted value of the five entities were altered at all (their names, addresses, dates, companies
and ages are all fakes too). Stock Presidio (pattern recognizers, no NER model) beside it. Writes a
BENCHMARKS.md section unless --no-write.

    .venv/bin/python scripts/eval_pii_public.py [--per-template 25] [--seed 20261130]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

TEMPLATES = ROOT / "tests" / "data" / "presidio_evaluator_templates.txt"
# the generator's placeholders for the entities douane's default policy redacts
MEASURED = {"credit_card_number": "CREDIT_CARD", "phone_number": "PHONE_NUMBER", "email": "EMAIL_ADDRESS",
            "iban": "IBAN_CODE", "ssn": "US_SSN"}
ENTITIES = sorted(set(MEASURED.values()))
SLOT = re.compile(r"{{\s*([a-z_]+)\s*}}")


@dataclass
class Sample:
    text: str
    planted: list[tuple[str, int, int]]  # (entity, start, end)


def fill(template: str, fake) -> Sample:  # type: ignore[no-untyped-def]
    out, planted, at = [], [], 0
    for m in SLOT.finditer(template):
        out.append(template[at:m.start()])
        name = m.group(1)
        value = _value(fake, name)
        start = sum(len(p) for p in out)
        out.append(value)
        if name in MEASURED:
            planted.append((MEASURED[name], start, start + len(value)))
        at = m.end()
    out.append(template[at:])
    return Sample("".join(out), planted)


def _value(fake, name: str) -> str:  # type: ignore[no-untyped-def]
    aliases = {"person": "name", "organization": "company", "us_driver_license": "bothify",
               "nation_woman": "country", "nation_plural": "country", "nationality": "country",
               "age": "random_int", "first_name_nonbinary": "first_name", "zipcode": "postcode"}
    attr = aliases.get(name, name)
    if attr == "bothify":
        return str(fake.bothify("?#######"))
    if attr == "random_int":
        return str(fake.random_int(18, 90))
    value = getattr(fake, attr, None)
    return str(value()) if callable(value) else name


def samples(per_template: int, seed: int) -> list[Sample]:
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    templates = [t.strip() for t in TEMPLATES.read_text(encoding="utf-8").splitlines() if t.strip()]
    return [fill(t, fake) for t in templates for _ in range(per_template)]


def evaluate(scan, data: list[Sample]) -> dict:  # type: ignore[no-untyped-def]
    planted, found_planted, findings, true_findings = Counter(), Counter(), Counter(), Counter()
    clean = altered = 0
    for s in data:
        got = [f for f in scan(s.text) if f.entity in ENTITIES]
        for entity, start, end in s.planted:
            planted[entity] += 1
            if any(f.entity == entity and f.start <= start and f.end >= end for f in got):
                found_planted[entity] += 1
        for f in got:
            findings[f.entity] += 1
            if any(e == f.entity and f.start < end and f.end > start for e, start, end in s.planted):
                true_findings[f.entity] += 1
        if not s.planted:
            clean += 1
            altered += bool(got)
    return {"planted": planted, "recall": {e: found_planted[e] / planted[e] for e in planted},
            "precision": {e: (true_findings[e] / findings[e]) if findings[e] else None for e in ENTITIES},
            "findings": findings, "clean": clean, "altered": altered}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-template", type=int, default=25)
    ap.add_argument("--seed", type=int, default=20261130)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from bench_pii import stock_presidio

    from douane.detect.pii import PiiDetector

    data = samples(args.per_template, args.seed)
    results = {"presidio": evaluate(stock_presidio(), data)}  # first: nothing of douane's loaded into it
    results["douane"] = evaluate(PiiDetector(ENTITIES).scan, data)
    engines = ("douane", "presidio")
    planted = results["douane"]["planted"]
    lines = [
        "## scripts/eval_pii_public.py (PII on presidio-research's templates, issue 10)",
        "",
        f"The {len(TEMPLATES.read_text().splitlines())} sentence templates of presidio-research's data generator "
        f"(presidio-evaluator 0.3.2, MIT) filled {args.per_template} times each with Faker's en_US values "
        f"(seed {args.seed}): {len(data)} sentences, {sum(planted.values())} planted values of the five "
        "entities douane redacts by default. Recall: planted values wholly inside a finding of their type; "
        "precision: findings of a type that lie on a planted value of it; altered: sentences with none of the "
        "five (but fake names, addresses, dates, companies, ages) in which anything was found. douane's "
        "engine was not written against these templates. Its first run here leaked 19.1% (cards 87.2%, "
        "phones 60.2% recall); the three general fixes it prompted (a full stop after a card number; "
        "Maestro's and 15-digit JCB's published ranges; a +1/001 country code marks a phone number) are "
        "in the rows below, so they are no longer an unseen-data figure for those shapes. A second round "
        "(2026-12-01), again from this set's misses (7.7% leaked): `\\n`, `\\t` and `\\r` escapes read as "
        "the whitespace they stand for (the templates write line breaks so, as JSON quoted in a prompt "
        "does); office, desk, message, answering and a few more count as phone words; Maestro's wide "
        "historical range (50, 56-69, 0604) is a card near a card word. So the rows below measure the "
        "engine after tuning to these templates; a fresh filling (seed 4242, 40 per template) leaked "
        "0.1% (2 cards after `cc`, a card word since added) with 1 of 6840 clean sentences altered.",
        "",
        "| entity | planted | douane recall | douane precision | presidio recall | presidio precision |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in ENTITIES:
        row = [e, str(planted[e])]
        for name in engines:
            r = results[name]
            rec, prec = r["recall"].get(e), r["precision"][e]
            row += [f"{rec:.1%}" if rec is not None else "-", f"{prec:.1%}" if prec is not None else "-"]
        lines.append("| " + " | ".join(row) + " |")
    for name in engines:
        r = results[name]
        lines.append("")
        leaked = 1 - sum(r["recall"][e] * planted[e] for e in planted) / sum(planted.values())
        lines.append(f"{name}: {leaked:.1%} of planted values leaked; {r['altered']} of {r['clean']} sentences "
                     f"without them altered ({r['altered'] / max(1, r['clean']):.1%}).")
    lines += ["", "Presidio's own figures move by about a point from run to run on the same sentences; douane's do "
              "not. What douane would still miss: bare ten-digit numbers with no phone word near them, and card "
              "numbers of Maestro's wide range with no card word near them."]
    out = "\n".join(lines)
    print(out)
    if not args.no_write:
        from benchmarks_md import write_section

        print(f"wrote {write_section('eval-pii-public', out)}")


if __name__ == "__main__":
    main()
