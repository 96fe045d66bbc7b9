"""`douane policy replay`: recorded calls re-judged under a candidate policy, in time order.

Each recorded call is rebuilt from its audit row (caller, provider, path, the stored request body
with the model the client asked for, the answer's text and token counts) and put through the same
offline chain as `douane policy test` (douane.policy.testing), under a clock set to the row's time,
with one set of counters for the whole replay: the candidate's limits and budgets refuse calls as
they would have, in the order they came. The report is the difference from what was recorded.

What replay cannot know is said in CANNOT_KNOW and in every report.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from douane.policy.model import Policy
from douane.policy.testing import Case, CaseFileError, Collector, connections, one_call, placeholder_keys

CANNOT_KNOW = [
    "bodies were stored redacted (audit.bodies: redacted): PII and other content rules are judged on "
    "the placeholders, so a stricter PII rule finds nothing new in them",
    "calls refused before they left have no stored body and are not replayed, so replay cannot say "
    "whether a looser policy would now let them through",
    "answers are not re-asked: a call the candidate reroutes is judged on the answer recorded from the "
    "model that served it, with the recorded token counts (its cost is estimated at the new model's prices)",
    "calls served through a translation to another format stored the translated body: not replayed",
    "a client the candidate no longer names would be refused at CONNECT (407): reported, not replayed",
]
SINCE = re.compile(r"^(\d+)([mhdw])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
ROW_COLUMNS = ("id", "ts", "client", "team", "provider", "endpoint", "path", "model_requested", "model", "served_by",
               "stream", "status", "decision", "reason", "pii_entities", "output_findings", "input_tokens",
               "output_tokens", "cost_usd", "request_body", "response_body")
EXAMPLES = 3


def parse_since(text: str) -> timedelta:
    """`30m`, `24h`, `7d`, `2w`; ValueError saying what is expected."""
    m = SINCE.match(text.strip())
    if m is None:
        raise ValueError(f"--since {text!r}: expected a number and a unit, m h d or w (e.g. 7d, 24h)")
    return timedelta(**{UNITS[m.group(2)]: int(m.group(1))})


@dataclass
class Report:
    policy: str
    policy_hash: str
    replayed: int = 0
    seconds: float = 0.0
    skipped: Counter[str] = field(default_factory=Counter)
    changed: list[dict[str, Any]] = field(default_factory=list)  # decision changed
    rerouted: list[dict[str, Any]] = field(default_factory=list)  # served by another model or provider
    new_findings: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        by_rule: dict[tuple[str, str | None, str], list[str]] = defaultdict(list)
        for c in self.changed:
            by_rule[(c["after"], c["team"], c["after_rule"] or c["before_rule"] or "")].append(c["id"])
        cost = sum((r["after_cost_usd"] or 0) - (r["before_cost_usd"] or 0) for r in self.rerouted)
        return {
            "policy": self.policy, "policy_hash": self.policy_hash, "replayed": self.replayed,
            "calls_per_second": round(self.replayed / self.seconds) if self.seconds else None,
            "skipped": dict(self.skipped), "changed": self.changed,
            "by_rule": [{"now": now, "team": team, "rule": rule, "calls": len(ids), "examples": ids[:EXAMPLES]}
                        for (now, team, rule), ids in sorted(by_rule.items(), key=lambda kv: -len(kv[1]))],
            "rerouted": self.rerouted, "rerouted_cost_difference_usd": round(cost, 6),
            "new_findings": self.new_findings, "cannot_know": CANNOT_KNOW,
        }


def read_rows(db: str | Path, since: timedelta | None, where: str | None) -> list[dict[str, Any]]:
    """The recorded calls to replay, oldest first."""
    from douane.audit import query

    clauses, params = [], []
    if since is not None:
        clauses.append("ts >= ?")
        params.append(datetime.now(UTC) - since)
    if where:
        clauses.append(f"({where})")
    sql = f"SELECT {', '.join(ROW_COLUMNS)} FROM requests"
    sql += (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY ts, id"
    columns, rows = query(db, sql, params)
    return [dict(zip(columns, r, strict=True)) for r in rows]


def replay(policy: Policy, policy_path: str, rows: list[dict[str, Any]],
           progress: Callable[[int], None] | None = None) -> Report:
    return asyncio.run(_replay(policy, policy_path, rows, progress))


async def _replay(policy: Policy, policy_path: str, rows: list[dict[str, Any]],
                  progress: Callable[[int], None] | None) -> Report:
    from addons import build
    from douane.clock import FixedClock
    from douane.gateway import Gateway
    from douane.meter.state import MemoryState

    clock = FixedClock()
    gw = Gateway(policy, None, writer=Collector(), clock=clock, state=MemoryState(),  # type: ignore[arg-type]
                 keys=placeholder_keys)
    chain = build(gw)
    conns = connections()  # one keep-alive connection for every call: building one costs more than a call
    report = Report(policy_path, gw.policy_hash)
    started = time.perf_counter()
    for n, row in enumerate(rows, 1):
        if progress is not None:
            progress(n)
        why_not = not_replayable(gw, row)
        if why_not is not None:
            report.skipped[why_not] += 1
            continue
        who = caller(gw, row)
        if who is None:
            report.replayed += 1
            report.changed.append(_change(row, {"decision": "blocked", "status": 407, "model": None,
                                                "reason": "proxy credentials: the client is not in the policy"}))
            continue
        clock.set(row["ts"])
        try:
            got = await one_call(gw, chain, case_of(gw, row), who, conns)
        except CaseFileError as e:
            report.skipped[str(e).split(": ", 1)[-1]] += 1
            continue
        finally:
            gw.writer.records.clear()  # type: ignore[attr-defined]
        report.replayed += 1
        compare(report, row, got)
    report.seconds = time.perf_counter() - started
    return report


def not_replayable(gw: Any, row: dict[str, Any]) -> str | None:
    """Why a row cannot be replayed, or None."""
    if not row["request_body"]:
        return "no stored request body (refused before it left, or audit.bodies: none)"
    if row["endpoint"] in (None, "other", "connect"):
        return "not an LLM call douane models"
    if "...[truncated " in row["request_body"][-40:]:
        return "stored request body truncated (audit.max_body_chars)"
    names = {s.name: s for s in gw.providers.specs}
    if row["provider"] not in names:
        return "its provider is not in the candidate policy"
    served = names.get(row["served_by"] or row["provider"])
    if served is not None and served.format != names[row["provider"]].format:
        return "served through a translation: the stored body is the translated one"
    return None


def caller(gw: Any, row: dict[str, Any]) -> Any:
    """The caller as the candidate knows them: None when it no longer names the client."""
    from douane.identity import ANONYMOUS, Identity

    clients = gw.policy.clients
    if clients is None:
        return Identity(ANONYMOUS, None)
    named = {c.name: c for c in clients}
    client = named.get(row["client"])
    return Identity(client.name, client.team) if client is not None else None


def case_of(gw: Any, row: dict[str, Any]) -> Case:
    """The recorded call as a test case: its stored body with the model the client asked for."""
    body = json.loads(row["request_body"])
    asked = row["model_requested"]
    path = row["path"]
    fmt = gw.providers.by_name(row["provider"]).format
    if asked and isinstance(body, dict) and "model" in body:
        body["model"] = asked
    if fmt == "gemini" and asked:
        path = re.sub(r"models/[^:/]+:", f"models/{asked}:", path)
    if fmt == "gemini" and row["stream"]:
        path += "?alt=sse"
    return Case(name=row["id"], where=f"row {row['id']}", client=row["client"], provider=row["provider"], path=path,
                body=body, stream=bool(row["stream"]), answer=answer_text(fmt, row["response_body"]), repeat=1,
                expect={}, usage=(row["input_tokens"], row["output_tokens"]))


def answer_text(fmt: str, stored: str | None) -> str:
    """The recorded answer's text: read from the provider's JSON, or the text a stream assembled."""
    from douane import translate

    if not stored:
        return ""
    try:
        return translate.read_reply(fmt, json.loads(stored)).text
    except Exception:  # a stream's assembled text, or an answer rewritten for the audit
        return stored


def compare(report: Report, row: dict[str, Any], got: dict[str, Any]) -> None:
    if got["decision"] != row["decision"]:
        report.changed.append(_change(row, got))
    served_before = (row["served_by"] or row["provider"], row["model"])
    served_after = (got["provider"], got["model"])
    if got["decision"] == "allowed" and row["decision"] == "allowed" and served_after != served_before:
        report.rerouted.append({"id": row["id"], "team": row["team"], "before": "/".join(map(str, served_before)),
                                "after": "/".join(map(str, served_after)), "before_cost_usd": row["cost_usd"],
                                "after_cost_usd": got["cost_usd"]})
    new = {"pii_entities": sorted(set(got["pii_entities"]) - set(row["pii_entities"] or [])),
           "output_findings": sorted(set(got["output_findings"]) - set(row["output_findings"] or []))}
    if new["pii_entities"] or new["output_findings"]:
        report.new_findings.append({"id": row["id"], "team": row["team"], **new})


def _change(row: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "ts": row["ts"].isoformat() if isinstance(row["ts"], datetime) else row["ts"],
            "client": row["client"], "team": row["team"], "model": row["model_requested"],
            "before": row["decision"], "after": got["decision"], "before_status": row["status"],
            "after_status": got["status"], "before_rule": row["reason"], "after_rule": got["reason"]}
