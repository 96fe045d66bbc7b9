"""Usage insight reports over a generated audit store: duplicates, patterns, savings."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from douane.audit import query
from douane.cli import main
from douane.ops.insight import Template, patterns
from douane.ops.simulate import TEMPLATES, synthetic_audit


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    db = tmp_path_factory.mktemp("insight") / "audit.duckdb"
    return db, synthetic_audit(str(db), 1500, seed=4)


def report(db: Path, *args: str, fmt: str = "json") -> Any:
    result = CliRunner().invoke(main, ["audit", "report", *args, "--db", str(db), "--format", fmt])
    assert result.exit_code == 0, result.output
    return json.loads(result.output) if fmt == "json" else result.output


def test_duplicates_count_the_repeats_and_what_they_cost(store: tuple[Path, dict[str, Any]]) -> None:
    db, planted = store
    rows = report(db, "duplicates", "--limit", "10000")
    repeats: dict[str, int] = {}
    for r in rows:
        repeats[r["team"]] = repeats.get(r["team"], 0) + r["repeats"]
        assert r["calls"] == r["repeats"] + 1 >= 2
    assert repeats == planted["duplicates"]
    _, cost = query(db, "SELECT sum(cost_usd) - sum(first) FROM (SELECT sum(cost_usd) AS cost_usd, "
                        "arg_min(cost_usd, ts) AS first FROM requests GROUP BY request_body HAVING count(*) > 1)")
    assert sum(r["spent_again_usd"] for r in rows) == pytest.approx(cost[0][0], abs=1e-6 * len(rows))  # rounded
    assert rows == sorted(rows, key=lambda r: -r["spent_again_usd"]), "the costliest first"


def test_near_identical_requests_are_duplicates() -> None:
    import tempfile
    from datetime import UTC, datetime

    from douane.audit import AuditRecord, AuditStore, AuditWriter
    db = Path(tempfile.mkdtemp()) / "a.duckdb"
    w = AuditWriter(AuditStore(db))
    w.start()
    bodies = ['{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello  World"}]}',
              '{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hello world"}]}',
              '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]}']
    for i, body in enumerate(bodies):
        w.submit(AuditRecord(id=f"r{i}", ts=datetime.now(UTC), client="c", team="t", provider="openai",
                             model="gpt-4o", status=200, decision="allowed", cost_usd=0.5, request_body=body))
    w.close()
    rows = report(db, "duplicates")
    assert [(r["calls"], r["spent_again_usd"]) for r in rows] == [(2, 0.5)]
    assert rows[0]["prompt"] == "Hello  World"[:100].replace("  ", " ")


def test_patterns_find_the_planted_templates_per_team(store: tuple[Path, dict[str, Any]]) -> None:
    db, planted = store
    rows = report(db, "patterns", "--limit", "50")
    per_team: dict[str, int] = {}
    for r in rows:
        per_team[r["team"]] = per_team.get(r["team"], 0) + 1
    assert per_team == planted["templates"]
    assert sum(r["calls"] for r in rows) == 1500
    for r in rows:  # each pattern is one of the team's templates, its variables masked
        stems = [t.split("{")[0].lower() for t in TEMPLATES[r["team"]]]
        assert any(r["template"].startswith(stem.replace("#", "")) for stem in stems), r["template"]
        assert "<pii>" in r["template"] or "@" not in r["template"]


def test_unrelated_prompts_stay_apart() -> None:
    items = [Template("t", "summarize the quarterly revenue report for the board", 3, 0.1),
             Template("t", "write a haiku about autumn leaves falling slowly", 2, 0.1),
             Template("t", "summarize the quarterly revenue report for the team", 4, 0.1),
             Template("u", "summarize the quarterly revenue report for the board", 1, 0.1)]
    found = patterns(items, min_calls=1)
    assert [(p.team, p.calls, p.variants) for p in found] == [("t", 7, 2), ("t", 2, 1), ("u", 1, 1)]


def test_savings_price_premium_calls_with_the_cheapest_allowed_model(store: tuple[Path, dict[str, Any]],
                                                                    tmp_path: Path) -> None:
    db, _ = store
    rows = report(db, "savings")
    gpt4o = [r for r in rows if r["model"] == "gpt-4o"]
    assert {r["team"] for r in gpt4o} == set(TEMPLATES)
    assert all(r["cheaper_model"] == "gpt-4.1-nano" and 0 < r["cheaper_cost_usd"] < r["cost_usd"]
               and r["saving_usd"] == pytest.approx(r["cost_usd"] - r["cheaper_cost_usd"], abs=1e-5) for r in gpt4o)
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nteams:\n  support: {models: ['gpt-4o*']}\n")
    bounded = report(db, "savings", "--policy", str(policy))
    support = [r for r in bounded if r["team"] == "support" and r["model"] == "gpt-4o"]
    assert [r["cheaper_model"] for r in support] == ["gpt-4o-mini"], "only models the team may use"
    assert report(db, "savings", "--max-input-tokens", "0") == [], "no call is that small"
    table = report(db, "savings", "--to", "gpt-4o-mini", fmt="csv")
    parsed = list(csv.DictReader(io.StringIO(table)))
    assert parsed and {r["cheaper_model"] for r in parsed} == {"gpt-4o-mini"}
