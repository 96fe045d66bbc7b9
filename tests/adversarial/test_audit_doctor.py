"""`douane audit doctor`: says what is wrong with a store, and repairs it without losing a row."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from douane.audit import AuditStore, AuditWriter, query
from douane.audit.record import spill_line
from douane.cli import main
from tests.adversarial.audit_support import record


def written_store(db: Path, n: int = 4) -> AuditStore:
    w = AuditWriter(AuditStore(db), min_interval=0)
    w.start()
    for i in range(n):
        w.submit(record(i))
        assert w.flush()
    w.close()
    return w.store


def doctor(db: Path, *args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["audit", "doctor", "--db", str(db), "--format", "json", *args])
    return result.exit_code, json.loads(result.output)


def test_a_healthy_store_passes(tmp_path: Path) -> None:
    written_store(tmp_path / "a.duckdb")
    code, report = doctor(tmp_path / "a.duckdb")
    assert (code, report["ok"], report["problems"], report["rows"]) == (0, True, [], 4)


def test_doctor_names_every_problem_and_repair_fixes_them(tmp_path: Path) -> None:
    db = tmp_path / "a.duckdb"
    store = written_store(db)
    segments = store.segment_files()
    segments[0].write_bytes(segments[0].read_bytes()[:60])  # truncated
    (store.segments / "manifest.json").write_text("[]")  # broken
    (store.segments / "01234567890123456789-1-000001.parquet.tmp").write_bytes(b"half a file")
    (store.segments / "unwritten-1.jsonl").write_text(spill_line(record("spilled")))
    code, report = doctor(db)
    assert code == 1 and not report["ok"]
    kinds = sorted(p["kind"] for p in report["problems"])
    assert kinds == ["corrupt_segment", "manifest", "spill", "temp_file"]
    table = CliRunner().invoke(main, ["audit", "doctor", "--db", str(db)])
    assert table.exit_code == 1 and "corrupt_segment" in table.output and "--repair" in table.output
    assert "[/]" not in table.output

    code, repaired = doctor(db, "--repair")
    assert code == 0, repaired
    assert all(p["fixed"] for p in repaired["problems"])
    assert (store.quarantine / segments[0].name).exists(), "set aside, not deleted"
    assert not list(store.segments.glob("*.tmp")) and not list(store.segments.glob("unwritten-*"))
    assert query(db, "SELECT id FROM requests ORDER BY id")[1] == [("r1",), ("r2",), ("r3",), ("rspilled",)]
    assert doctor(db) == (0, doctor(db)[1])


def test_stray_segments_are_adopted_or_set_aside_by_their_rows(tmp_path: Path) -> None:
    db = tmp_path / "a.duckdb"
    store = written_store(db)
    manifest = json.loads((store.segments / "manifest.json").read_text())
    first, second = manifest["live"][1], manifest["live"][2]
    # a copy of a live segment under another name (all its rows are in the store) ...
    twin = store.segments / "01111111111111111111-1-000001.parquet"
    twin.write_bytes((store.segments / first).read_bytes())
    # ... and a live segment the manifest forgot (its rows are not)
    manifest["live"].remove(second)
    manifest["level"].pop()
    (store.segments / "manifest.json").write_text(json.dumps(manifest))
    code, report = doctor(db)
    assert code == 1
    assert sorted(p["path"] for p in report["problems"]) == sorted([str(twin), str(store.segments / second)])
    code, _ = doctor(db, "--repair")
    assert code == 0
    assert query(db, "SELECT count(*), count(DISTINCT id) FROM requests")[1] == [(4, 4)]
    assert (store.quarantine / twin.name).exists()


def test_repair_refuses_while_a_proxy_writes(tmp_path: Path) -> None:
    w = AuditWriter(AuditStore(tmp_path / "a.duckdb"))
    w.start()
    try:
        result = CliRunner().invoke(main, ["audit", "doctor", "--db", str(tmp_path / "a.duckdb"), "--repair"])
        assert result.exit_code == 1 and "is writing to the audit store" in result.output
        checked = CliRunner().invoke(main, ["audit", "doctor", "--db", str(tmp_path / "a.duckdb")])
        assert checked.exit_code == 0 and "a proxy is writing to it" in checked.output
    finally:
        w.close()


def test_a_second_writer_on_one_store_is_refused(tmp_path: Path) -> None:
    first = AuditWriter(AuditStore(tmp_path / "a.duckdb"))
    first.start()
    try:
        second = AuditWriter(AuditStore(tmp_path / "a.duckdb"))
        try:
            second.start()
        except OSError as e:
            assert "one proxy per store" in str(e)
        else:
            second.close()
            raise AssertionError("two writers on one store would overwrite each other's manifest")
    finally:
        first.close()
