"""A lost, emptied or broken manifest, or a corrupt segment, loses no rows (issue 9, section 6.2-3)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from douane.audit import AuditStore, AuditWriter, query
from tests.adversarial.audit_support import VirtualClock, record, wait_until
from tests.e2e.conftest import Douane, certs, make_douane, mock  # noqa: F401  (fixtures)

CHAT = "https://api.openai.com/v1/chat/completions"


def merged_store(db: Path, n: int = 40) -> AuditStore:
    """A store of n rows in merged segments whose merged-away sources are still on disk (a reader
    was connected when they would have been deleted)."""
    w = AuditWriter(AuditStore(db), compact_at=4, fanout=4, min_interval=0, commit_delay=0.01)
    w.start()
    w.submit(record("first"))
    assert w.flush()
    # a reader in another process (the writer sees other processes' locks only) keeps doomed files
    reader = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "connected"
        for i in range(n - 1):
            w.submit(record(i))
            assert w.flush()
        wait_until(lambda: not w._segments.merging and len(w._segments.doomed) >= 8,
                   "merges committed, their sources waiting for the reader")
        w.close()
    finally:
        reader.communicate("", timeout=30)
    return w.store


HOLD = "import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=True); print('connected', flush=True); " \
       "sys.stdin.read()"


@pytest.mark.parametrize("manifest", [None, "{}", "{not json", '{"live": ["../../../etc/passwd"]}',
                                      '{"live": "nope"}'])
def test_a_lost_or_broken_manifest_is_rebuilt_from_the_segments(tmp_path: Path, manifest: str | None,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    store = merged_store(tmp_path / "a.duckdb")
    on_disk = {p.name for p in store.segment_files()}
    doomed = set(json.loads((store.segments / "manifest.json").read_text())["doomed"])
    assert doomed and doomed <= on_disk, "merged sources are still on disk beside their merge outputs"
    if manifest is None:
        (store.segments / "manifest.json").unlink()
    else:
        (store.segments / "manifest.json").write_text(manifest)
    with caplog.at_level(logging.WARNING):
        w = AuditWriter(AuditStore(tmp_path / "a.duckdb"))
        w.start()
        w.submit(record("after"))
        assert w.flush()
        w.close()
    assert "rebuilding it from the" in caplog.text
    assert query(store.db_path, "SELECT count(*), count(DISTINCT id) FROM requests")[1] == [(41, 41)]
    left = {p.name for p in store.segment_files()}
    assert on_disk - left <= doomed, "only merged-away sources, whose rows a merge output holds, may go"


def test_a_truncated_segment_is_quarantined_at_start_and_the_rest_stays_queryable(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    w = AuditWriter(AuditStore(tmp_path / "a.duckdb"), min_interval=0)
    w.start()
    for i in range(3):
        w.submit(record(i))
        assert w.flush()
    w.close()
    victim = w.store.segment_files()[1]
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(duckdb.Error):
        query(w.store.db_path, "SELECT count(*) FROM requests")
    with caplog.at_level(logging.ERROR):
        w2 = AuditWriter(AuditStore(tmp_path / "a.duckdb"))
        w2.start()
        w2.submit(record("after"))
        assert w2.flush()
        w2.close()
    assert f"segment {victim.name} is unreadable" in caplog.text
    assert (w.store.quarantine / victim.name).exists() and not victim.exists()
    assert query(w.store.db_path, "SELECT id FROM requests ORDER BY id")[1] == [("r0",), ("r2",), ("rafter",)]


def test_a_running_writer_repairs_a_broken_manifest_and_sets_a_corrupt_segment_apart(tmp_path: Path) -> None:
    w = AuditWriter(AuditStore(tmp_path / "a.duckdb"), min_interval=0, verify_every=1, clock=VirtualClock())
    w.start()
    try:
        for i in range(3):
            w.submit(record(i))
            assert w.flush()
        manifest = w.store.segments / "manifest.json"
        manifest.write_text("garbage")
        victim = w.store.segment_files()[0]
        victim.write_bytes(b"PAR1 not really")

        def healed() -> bool:
            try:
                return query(w.store.db_path, "SELECT count(*) FROM requests")[1] == [(2,)]
            except duckdb.Error:
                return False

        wait_until(healed, "the writer's upkeep puts the manifest back and quarantines the segment")
        assert (w.store.quarantine / victim.name).exists()
        w.submit(record("after"))
        assert w.flush()
        assert query(w.store.db_path, "SELECT count(*) FROM requests")[1] == [(3,)]
    finally:
        w.close()


def test_douane_run_starts_on_a_broken_store_and_says_what_it_did(make_douane) -> None:  # noqa: F811
    d: Douane = make_douane()
    with d.http() as http:
        for i in range(3):
            assert http.post(CHAT, json={"model": "gpt-4o-mini", "messages": [
                {"role": "user", "content": f"before {i}"}]}).status_code == 200
    d.rows(expect=3)
    assert d.stop() == 0
    segments = d.db.parent / (d.db.name + ".segments")
    (segments / "manifest.json").write_text("{")
    victim = sorted(segments.glob("0*-*-*.parquet"))[-1]
    held = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{victim}')").fetchone()[0]
    victim.write_bytes(victim.read_bytes()[:50])
    d.start()
    with d.http() as http:
        assert http.post(CHAT, json={"model": "gpt-4o-mini", "messages": [
            {"role": "user", "content": "after"}]}).status_code == 200
    rows = d.rows(expect=3 - held + 1)
    assert len(rows) == 3 - held + 1, "the rows of the other segments, and the new call's"
    assert d.stop() == 0
    log = d.log()
    assert "Traceback" not in log
    assert "rebuilding it from the" in log and f"segment {victim.name} is unreadable" in log
