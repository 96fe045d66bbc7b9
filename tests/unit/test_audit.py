import subprocess
import sys
import threading
from pathlib import Path

import pytest

from douane.audit import AuditStore, AuditWriter, query
from tests.adversarial.audit_support import VirtualClock, record, wait_until


@pytest.fixture()
def writer(tmp_path: Path):
    # small fan-outs and delays, so that merges commit and merged files are deleted during a test
    w = AuditWriter(AuditStore(tmp_path / "a.duckdb"), compact_at=4, fanout=4, commit_delay=0.3)
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


def test_merges_keep_every_row_once(tmp_path: Path) -> None:
    # the real clock: commit_delay is what keeps a reader that listed files before a merge's output
    # existed from reading the manifest after its commit, and readers run in real time
    w = AuditWriter(AuditStore(tmp_path / "a.duckdb"), compact_at=4, fanout=4, min_interval=0,
                    commit_delay=0.01)
    w.start()
    for i in range(40):
        w.submit(record(i))
        assert w.flush()
        assert query(w.store.db_path, "SELECT count(*), count(DISTINCT id) FROM requests")[1] == [(i + 1, i + 1)]
    segs = w._segments
    wait_until(lambda: not segs.merging and not segs.doomed and len(segs.live) <= 9, "merges committed, files reaped")
    assert max(segs.level[n] for n in segs.live) == 2
    assert {p.name for p in w.store.segment_files()} == set(segs.live), "merged files are deleted"
    w.close()
    # a restart adopts the manifest and deletes nothing it names as live
    w2 = AuditWriter(AuditStore(tmp_path / "a.duckdb"))
    w2.start()
    w2.close()
    assert {p.name for p in w2.store.segment_files()} == set(w2._segments.live) == set(segs.live)
    assert query(w.store.db_path, "SELECT count(*) FROM requests")[1] == [(40,)]


READER = """
import sys, duckdb
errors, last, went_down = [], 0, 0
for _ in range(120):
    try:
        con = duckdb.connect(sys.argv[1], read_only=True)
        n = con.execute("SELECT count(*) FROM requests").fetchone()[0]
        con.close()
    except duckdb.Error as e:
        errors.append(str(e)[:200])
        continue
    went_down += n < last
    last = n
print(len(errors), went_down, last)
print("\\n".join(errors[:3]))
"""


def test_readers_in_other_processes_never_fail_nor_go_back(writer: AuditWriter) -> None:
    """Stock DuckDB readers, read-only, while rows pour in and segments are merged and deleted."""
    stop = threading.Event()
    produced = [0]

    def produce() -> None:
        i = 0
        while not stop.is_set() and i < 30000:
            for _ in range(20):
                writer.submit(record(i))
                i += 1
            produced[0] = i
            stop.wait(0.001)

    t = threading.Thread(target=produce)
    t.start()
    try:
        out = subprocess.run([sys.executable, "-c", READER, str(writer.store.db_path)], capture_output=True,
                             text=True, timeout=120)
    finally:
        stop.set()
        t.join()
    errors, went_down, last = out.stdout.splitlines()[0].split()
    assert (errors, went_down) == ("0", "0"), out.stdout
    assert int(last) > 0
    assert writer.flush()
    assert query(writer.store.db_path, "SELECT count(*), count(DISTINCT id) FROM requests")[1] == \
        [(produced[0], produced[0])]


def test_close_flushes_everything(tmp_path: Path) -> None:
    w = AuditWriter(AuditStore(tmp_path / "a.duckdb"))
    w.start()
    for i in range(500):
        w.submit(record(i))
    w.close()
    assert query(tmp_path / "a.duckdb", "SELECT count(*) FROM requests")[1] == [(500,)]


def test_unwritable_records_are_spilled_not_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = AuditWriter(AuditStore(tmp_path / "a.duckdb"), clock=VirtualClock())
    monkeypatch.setattr(w, "_write_segment", lambda lines, spill=None: (_ for _ in ()).throw(OSError("disk full")))
    w.start()
    w.submit(record(1))
    assert not w.flush(timeout=0.3)
    report = w.close(timeout=5)
    spilled = list((tmp_path / "a.duckdb.segments").glob("unwritten-*.jsonl"))
    assert len(spilled) == 1 and '"id": "r1"' in spilled[0].read_text()
    assert (report.status, report.written, report.spilled, report.lost) == ("degraded", 0, 1, 0)
    assert report.spill_files == [str(spilled[0])]
    # the next start folds them in, once
    w2 = AuditWriter(AuditStore(tmp_path / "a.duckdb"))
    w2.start()
    assert w2.flush()
    assert w2.close().folded == 1
    assert not list((tmp_path / "a.duckdb.segments").glob("unwritten-*.jsonl"))
    assert query(tmp_path / "a.duckdb", "SELECT id FROM requests")[1] == [("r1",)]


def test_query_explains_a_missing_store(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="start the proxy once"):
        query(tmp_path / "none.duckdb", "SELECT 1")
