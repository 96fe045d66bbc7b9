import threading
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from douane.audit import AuditRecord, AuditStore, AuditWriter, query


def record(i: int, **kw: object) -> AuditRecord:
    return AuditRecord(id=f"r{i}", ts=datetime.now(UTC), provider="openai", pii_entities=["EMAIL_ADDRESS"],
                       **kw)  # type: ignore[arg-type]


@pytest.fixture()
def writer(tmp_path: Path):
    w = AuditWriter(AuditStore(tmp_path / "a.duckdb"), compact_at=8)
    w.start()
    yield w
    w.close()


def test_rows_land_with_contract_types(writer: AuditWriter) -> None:
    writer.submit(record(1, input_tokens=3, cost_usd=None, stream=True))
    assert writer.flush()
    cols, rows = query(writer.store.db_path, "SELECT typeof(ts), typeof(pii_entities), typeof(input_tokens), "
                                             "typeof(stream), typeof(status), pii_entities FROM requests")
    assert rows == [("TIMESTAMP WITH TIME ZONE", "VARCHAR[]", "BIGINT", "BOOLEAN", "INTEGER", ["EMAIL_ADDRESS"])]


def test_empty_store_is_queryable(tmp_path: Path) -> None:
    AuditStore(tmp_path / "a.duckdb").prepare()
    assert query(tmp_path / "a.duckdb", "SELECT count(*) FROM requests")[1] == [(0,)]


def test_compaction_keeps_every_row(writer: AuditWriter) -> None:
    for i in range(40):
        writer.submit(record(i))
        writer.flush()
    assert len(writer.store.segment_files()) < 8
    assert query(writer.store.db_path, "SELECT count(DISTINCT id) FROM requests")[1] == [(40,)]


def test_readers_never_see_a_lock_while_writing(writer: AuditWriter) -> None:
    stop = threading.Event()
    errors: list[Exception] = []

    def produce() -> None:
        i = 0
        while not stop.is_set() and i < 20000:
            for _ in range(20):
                writer.submit(record(i))
                i += 1
            stop.wait(0.001)

    t = threading.Thread(target=produce)
    t.start()
    try:
        last = 0
        for _ in range(30):
            try:
                con = duckdb.connect(str(writer.store.db_path), read_only=True)
                n = con.execute("SELECT count(*) FROM requests").fetchone()[0]
                con.close()
                assert n >= last
                last = n
            except duckdb.Error as e:  # noqa: PERF203 - the point of the test
                errors.append(e)
    finally:
        stop.set()
        t.join()
    # A compaction can rarely remove a segment between a reader's listing and its read; the
    # CLI retries that, a stock reader would see it once. Locks must never happen.
    assert not [e for e in errors if "lock" in str(e).lower()]
    assert len(errors) <= 1
    writer.flush()


def test_close_flushes_everything(tmp_path: Path) -> None:
    w = AuditWriter(AuditStore(tmp_path / "a.duckdb"))
    w.start()
    for i in range(500):
        w.submit(record(i))
    w.close()
    assert query(tmp_path / "a.duckdb", "SELECT count(*) FROM requests")[1] == [(500,)]


def test_unwritable_records_are_spilled_not_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = AuditWriter(AuditStore(tmp_path / "a.duckdb"))
    monkeypatch.setattr(w, "_write", lambda batch: (_ for _ in ()).throw(OSError("disk full")))
    w.start()
    w.submit(record(1))
    assert not w.flush(timeout=0.3)
    w.close(timeout=5)
    spilled = list((tmp_path / "a.duckdb.segments").glob("unwritten-*.jsonl"))
    assert len(spilled) == 1 and '"id": "r1"' in spilled[0].read_text()


def test_query_explains_a_missing_store(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="start the proxy once"):
        query(tmp_path / "none.duckdb", "SELECT 1")
