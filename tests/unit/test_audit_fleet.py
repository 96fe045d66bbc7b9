"""One audit for a fleet: instances ship their records (bodies left out) to a shared Hive-partitioned
folder, read by stock DuckDB as one table, each record exactly once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from douane.audit import AuditStore, AuditWriter
from douane.audit import fleet as fleet_mod
from douane.audit.fleet import FleetShipper, fleet_glob, query_fleet
from douane.audit.settings import AuditSettings, Retention
from tests.adversarial.audit_support import record


def writer(path: Path, root: Path, instance: str, **kw: object) -> AuditWriter:
    settings = AuditSettings(instance_id=instance, fleet=str(root), fleet_every=3600, **kw)  # type: ignore[arg-type]
    w = AuditWriter(AuditStore(path), min_interval=0, settings=settings)
    w.start()
    return w


def fleet_rows(root: Path) -> list[tuple]:
    """Read as an auditor would: stock DuckDB over the folder, no douane code."""
    con = duckdb.connect()
    return con.execute(f"SELECT id, instance_id, day, seq FROM read_parquet('{fleet_glob(root)}', "
                       "hive_partitioning = true) ORDER BY id").fetchall()


def test_two_instances_writing_at_once_give_one_table_with_every_record_once(tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    writers = [writer(tmp_path / f"{name}.duckdb", root, name) for name in ("east", "west")]

    def load(w: AuditWriter, name: str) -> None:
        for i in range(300):
            w.submit(record(f"{name}-{i}", request_body=f"prompt {i}", response_body="answer"))
            if i % 50 == 0:
                assert w.flush()

    threads = [threading.Thread(target=load, args=(w, n)) for w, n in zip(writers, ("east", "west"), strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in writers:
        assert w.close().ok
    rows = fleet_rows(root)
    assert len(rows) == 600 and len({r[0] for r in rows}) == 600
    assert {r[1] for r in rows} == {"east", "west"}
    assert sorted(r[3] for r in rows if r[1] == "east") == list(range(1, 301)), "each instance's chain, whole"
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert {str(r[2]) for r in rows} <= {today, (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")}
    columns, _ = query_fleet(root, "SELECT * FROM requests LIMIT 1")
    assert "request_body" not in columns and "response_body" not in columns and "body_salt" not in columns
    assert {"hash", "body_digest", "policy_hash", "cost_usd"} <= set(columns), "the rest of the record is there"
    assert not list((root / "_staging").glob("*")), "nothing left half-shipped"


@pytest.mark.parametrize("crash", ["before_placed", "while_clearing"])
def test_a_shipment_cut_short_is_finished_without_losing_or_counting_twice(tmp_path: Path, monkeypatch,
                                                                         crash: str) -> None:
    """A crash after some files are in place (before the journal says the batch is placed), or
    while the outbox is being cleared: the next shipment finishes that batch under its own name,
    and the segments queued since go in a batch of their own."""
    root = tmp_path / "fleet"
    w = writer(tmp_path / "a.duckdb", root, "solo")
    for i in range(3):
        w.submit(record(i))
        assert w.flush()
    shipper = FleetShipper(root, Path(str(w.store.db_path) + ".fleet-outbox"))
    real_journal, real_unlink = FleetShipper._journal, Path.unlink
    cleared: list[Path] = []

    def placed_then_crash(self: FleetShipper, batch: dict) -> None:
        if batch.get("placed"):
            raise OSError("the machine went down")
        real_journal(self, batch)

    def one_unlink_then_crash(self: Path, missing_ok: bool = False) -> None:
        if self.suffix == ".parquet" and "outbox" in str(self):
            if cleared:
                raise OSError("the machine went down")
            cleared.append(self)
        real_unlink(self, missing_ok=missing_ok)

    if crash == "before_placed":
        monkeypatch.setattr(FleetShipper, "_journal", placed_then_crash)
    else:
        monkeypatch.setattr(Path, "unlink", one_unlink_then_crash)
    with pytest.raises(OSError, match="went down"):
        shipper.ship()
    monkeypatch.undo()
    assert len(fleet_rows(root)) == 3 and (shipper.outbox / fleet_mod.JOURNAL).exists()
    w.submit(record(3))  # queued after the cut shipment: not part of it
    assert w.flush() and w.close().ok  # the writer's closing shipment finishes the cut one first
    assert sorted(r[0] for r in fleet_rows(root)) == ["r0", "r1", "r2", "r3"]


def test_a_fleet_folder_that_cannot_be_written_keeps_records_queued_not_lost(tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    root.write_text("not a folder: an unmounted share, say")
    w = writer(tmp_path / "a.duckdb", root, "solo")
    for i in range(4):
        w.submit(record(i))
        assert w.flush()
    health = w.close()
    assert health.ok, "the local store is the record: a fleet folder that fails does not fail it"
    outbox = Path(str(w.store.db_path) + ".fleet-outbox")
    assert len(list(outbox.glob("*.parquet"))) == 4
    root.unlink()
    w = writer(tmp_path / "a.duckdb", root, "solo")  # the next start ships what was left
    assert w.close().ok
    assert [r[0] for r in fleet_rows(root)] == ["r0", "r1", "r2", "r3"]
    assert not list(outbox.glob("*.parquet"))


def test_row_retention_removes_only_this_instances_old_days(tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    for day in ("2026-01-01", "2026-03-01"):
        for inst in ("a", "b"):
            part = root / "requests" / f"day={day}" / f"instance_id={inst}"
            part.mkdir(parents=True)
            (part / "x_0.parquet").write_bytes(b"")
    shipper = FleetShipper(root, tmp_path / "outbox")
    assert shipper.prune("a", 30, now=datetime(2026, 3, 10, tzinfo=UTC)) == 1
    left = sorted(str(p.relative_to(root / "requests")) for p in (root / "requests").glob("*/*"))
    assert left == ["day=2026-01-01/instance_id=b", "day=2026-03-01/instance_id=a", "day=2026-03-01/instance_id=b"]


def test_retention_in_the_writer_prunes_the_fleet_too(tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    old = root / "requests" / "day=2000-01-01" / "instance_id=solo"
    old.mkdir(parents=True)
    w = writer(tmp_path / "a.duckdb", root, "solo", retention=Retention(rows_days=30))
    w.submit(record(1))
    assert w.flush() and w.close().ok
    assert not old.exists() and [r[0] for r in fleet_rows(root)] == ["r1"]


def test_querying_an_empty_fleet_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="audit.fleet"):
        query_fleet(tmp_path, "SELECT 1")
