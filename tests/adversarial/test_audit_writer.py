"""The writer's failure handling, driven by a virtual clock: no sleeps (issue 9, section 6.6)."""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import pytest

from douane.audit import AuditStore, AuditWriter, query
from tests.adversarial.audit_support import VirtualClock, record, wait_until


def flaky_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: set[int],
                 **kw: object) -> tuple[AuditWriter, list[int]]:
    """A writer whose n-th segment writes (1-based) in `failing` raise OSError."""
    w = AuditWriter(AuditStore(tmp_path / "a.duckdb"), clock=VirtualClock(), **kw)  # type: ignore[arg-type]
    real = w._write_segment
    calls = [0]

    def write(lines: list[bytes], spill: str | None = None) -> None:
        calls[0] += 1
        if calls[0] in failing or -1 in failing:
            raise OSError(28, "No space left on device")
        real(lines, spill)

    monkeypatch.setattr(w, "_write_segment", write)
    return w, calls


def test_failures_are_forgotten_after_a_success_so_close_does_not_give_up_early(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three failures, a success, then one failure while closing: the close still writes."""
    w, calls = flaky_writer(tmp_path, monkeypatch, failing={1, 2, 3, 5})
    w.start()
    w.submit(record(1))
    assert w.flush()
    assert w.failures == 0
    w.submit(record(2))
    report = w.close()
    assert calls[0] == 6
    assert (report.written, report.spilled, report.lost) == (2, 0, 0)
    assert query(w.store.db_path, "SELECT count(*) FROM requests")[1] == [(2,)]


def test_a_failing_store_is_reported_once_then_at_most_every_log_every(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    w, calls = flaky_writer(tmp_path, monkeypatch, failing={-1}, log_every=30.0)
    with caplog.at_level(logging.WARNING, logger="douane.audit.writer"):
        w.start()
        assert w.health().ok
        start = w.clock.now()
        for i in range(5):
            w.submit(record(i))
        wait_until(lambda: w.failures >= 60, "sixty failed attempts")
        health = w.health()
        assert health.status == "degraded" and "No space left on device" in (health.reason or "")
        assert health.pending == 5 and health.written == 0
        assert health.degraded_for is not None and health.degraded_for > 0
        elapsed = w.clock.now() - start
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) <= 2 + elapsed / 30.0, f"{len(errors)} error lines for {w.failures} attempts"
        assert "calls are still served" in errors[0].getMessage()
        monkeypatch.setattr(w, "_write_segment", AuditWriter._write_segment.__get__(w))  # space is back
        assert w.flush(timeout=20)
    recovered = [r for r in caplog.records if r.levelno == logging.WARNING and "works again" in r.getMessage()]
    assert len(recovered) == 1
    assert w.health().ok and w.health().written == 5
    w.close()


def test_a_connection_duckdb_gave_up_on_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a fatal error DuckDB refuses further work on a connection: the retry opens a new one."""
    w = AuditWriter(AuditStore(tmp_path / "a.duckdb"), clock=VirtualClock())
    real = w._write_segment
    calls = [0]

    def write(lines: list[bytes], spill: str | None = None) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise duckdb.FatalException("FATAL Error: database has been invalidated")
        real(lines, spill)

    monkeypatch.setattr(w, "_write_segment", write)
    w.start()
    first = w._con
    w.submit(record(1))
    assert w.flush()
    assert w._con is not first and w.health().ok
    w.close()
    assert query(w.store.db_path, "SELECT count(*) FROM requests")[1] == [(1,)]
