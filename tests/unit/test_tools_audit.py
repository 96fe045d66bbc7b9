"""Tool calls in the audit store: the requests.tool_calls column, the tool_calls view, the report."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from douane.audit import AuditRecord, AuditStore, AuditWriter, query
from douane.call import ToolUse, new_call_id
from douane.classify import open_call
from douane.cli import main
from douane.providers import ProviderSpec


def use(direction: str, tool: str, decision: str = "allowed", rule: str | None = None) -> dict[str, str | None]:
    return {"direction": direction, "tool": tool, "arguments": '{"a": 1}' if direction == "call" else None,
            "decision": decision, "rule": rule}


def store_with(tmp_path: Path, records: list[AuditRecord]) -> Path:
    db = tmp_path / "a.duckdb"
    w = AuditWriter(AuditStore(db))
    w.start()
    for r in records:
        w.submit(r)
    w.close()
    return db


def test_the_view_has_one_row_per_tool_call_with_its_request(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    db = store_with(tmp_path, [
        AuditRecord(id="r1", ts=now, team="ops", tool_calls=[use("definition", "fetch"), use("call", "fetch")]),
        AuditRecord(id="r2", ts=now, team="dev", decision="blocked",
                    tool_calls=[use("call", "shell", "blocked", "tools.deny")]),
        AuditRecord(id="r3", ts=now)])
    columns, rows = query(db, "SELECT request_id, team, position, direction, tool, arguments, decision, rule "
                              "FROM tool_calls ORDER BY request_id, position")
    assert rows == [("r1", "ops", 1, "definition", "fetch", None, "allowed", None),
                    ("r1", "ops", 2, "call", "fetch", '{"a": 1}', "allowed", None),
                    ("r2", "dev", 1, "call", "shell", '{"a": 1}', "blocked", "tools.deny")]
    report = CliRunner().invoke(main, ["audit", "report", "tools", "--db", str(db), "--format", "json"])
    assert report.exit_code == 0, report.output
    by_tool = {r["tool"]: r for r in json.loads(report.output)}
    assert (by_tool["fetch"]["calls"], by_tool["fetch"]["offered"], by_tool["fetch"]["blocked"]) == (1, 1, 0)
    assert (by_tool["shell"]["calls"], by_tool["shell"]["blocked"], by_tool["shell"]["teams"],
            by_tool["shell"]["rules"]) == (1, 1, "dev", "tools.deny")
    table = CliRunner().invoke(main, ["audit", "report", "tools", "--db", str(db)])
    assert table.exit_code == 0 and "tool calls" in table.output


def test_calls_without_tool_calls_have_no_rows_and_an_empty_list(tmp_path: Path) -> None:
    db = store_with(tmp_path, [AuditRecord(id="r1", ts=datetime.now(UTC))])
    assert query(db, "SELECT count(*) FROM tool_calls")[1] == [(0,)]
    assert query(db, "SELECT tool_calls FROM requests")[1] == [([],)]


def test_record_keeps_arguments_only_as_they_left() -> None:
    call = open_call(new_call_id(), time.time(), ProviderSpec("openai", "openai", ("h",)), "h", "POST",
                     "/v1/chat/completions")
    call.tool_calls.append(ToolUse("call", "fetch", arguments="x" * 20_000))
    row = call.to_record("enforce").tool_calls[0]
    assert row["arguments"] is not None and row["arguments"].endswith("[truncated 3616 chars]")
    assert call.to_record("enforce", bodies=False).tool_calls[0]["arguments"] is None
