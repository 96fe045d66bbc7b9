"""A full disk: the writer waits, says so, recovers, cleans up, and never claims what it did not
write (issue 9, section 6.4). Each test mounts its own small tmpfs (root only)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from douane.audit import AuditStore, AuditWriter, query
from tests.adversarial.audit_support import VirtualClock, fill, record, small_disk, wait_until


@pytest.fixture()
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", "4m") as mounted:
        yield mounted


@pytest.fixture()
def temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temp folder, where records go when the store's own disk is full."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_writing_resumes_by_itself_when_space_returns(disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    w = AuditWriter(AuditStore(disk / "a.duckdb"), clock=VirtualClock())
    w.start()
    try:
        w.submit(record("before"))
        assert w.flush()
        filler = fill(disk)
        with caplog.at_level(logging.ERROR, logger="douane.audit.writer"):
            for i in range(100):
                w.submit(record(i, request_body="x" * 2000))
            wait_until(lambda: w.failures >= 20, "twenty failed attempts on the full disk")
        health = w.health()
        assert health.status == "degraded" and "No space left" in (health.reason or "") and health.pending == 100
        assert not list(w.store.segments.glob("*.tmp")), "failed writes leave no temporary files"
        assert len(caplog.records) <= 5, "said once (then rarely), not once per attempt"
        filler.unlink()
        assert w.flush(timeout=30), "writing resumes once there is space again"
        assert w.health().ok
        assert query(w.store.db_path, "SELECT count(*), count(DISTINCT id) FROM requests")[1] == [(101, 101)]
        assert not list(w.store.segments.glob("*.tmp"))
    finally:
        w.close()


def test_closing_on_a_full_disk_keeps_the_records_elsewhere_and_says_where(disk: Path, temp_folder: Path) -> None:
    w = AuditWriter(AuditStore(disk / "a.duckdb"), clock=VirtualClock())
    w.start()
    w.submit(record("before"))
    assert w.flush()
    filler = fill(disk)
    for i in range(50):
        w.submit(record(i))
    report = w.close(timeout=5)
    assert (report.status, report.written, report.spilled, report.lost) == ("degraded", 1, 50, 0)
    assert len(report.spill_files) == 1 and report.spill_files[0].startswith(str(temp_folder))
    assert "could not be written" in (report.reason or "")
    filler.unlink()
    w2 = AuditWriter(AuditStore(disk / "a.duckdb"))
    w2.start()
    assert w2.close().folded == 50
    assert query(w.store.db_path, "SELECT count(*), count(DISTINCT id) FROM requests")[1] == [(51, 51)]
    assert not Path(report.spill_files[0]).exists()


def test_records_that_can_be_kept_nowhere_are_counted_as_lost(disk: Path, temp_folder: Path) -> None:
    w = AuditWriter(AuditStore(disk / "a.duckdb"), clock=VirtualClock())
    w.start()
    fill(disk)
    temp_folder.chmod(0o500)
    (temp_folder / w.store.spill_fallback.name).write_text("a file where the spill folder would go")
    for i in range(3):
        w.submit(record(i))
    report = w.close(timeout=2)
    assert (report.written, report.spilled, report.lost) == (0, 0, 3)


def test_a_restart_on_a_full_disk_serves_degraded_then_recovers(disk: Path) -> None:
    w = AuditWriter(AuditStore(disk / "a.duckdb"))
    w.start()
    w.submit(record("first"))
    w.close()
    filler = fill(disk)
    w2 = AuditWriter(AuditStore(disk / "a.duckdb"), clock=VirtualClock())
    w2.start()  # does not raise: the store exists, it is only full
    try:
        w2.submit(record("second"))
        wait_until(lambda: w2.failures >= 3, "failed attempts on the full disk")
        assert w2.health().status == "degraded"
        filler.unlink()
        assert w2.flush(timeout=30)
        assert query(w2.store.db_path, "SELECT id FROM requests ORDER BY id")[1] == [("rfirst",), ("rsecond",)]
    finally:
        w2.close()
