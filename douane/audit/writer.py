"""The batched background writer: records queue in memory, one thread turns them into segments.

A record is written as soon as the thread is free and the last segment is older than
`min_interval` (group commit): at low load every call lands within a few milliseconds, under load
one segment per interval carries every record that arrived meanwhile, so the per-segment cost
(a Parquet file) does not grow with traffic. Rows reach DuckDB as JSON lines read by its own C++
reader, which keeps Python (and the GIL) out of the per-value work. Nothing is dropped: a failed
write is retried, and at close whatever still cannot be written goes to a JSON-lines file.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import duckdb

from douane import jsonio
from douane.audit.compaction import SegmentSet
from douane.audit.record import COLUMNS, AuditRecord
from douane.audit.store import AuditStore, _sql_str

log = logging.getLogger(__name__)

_COLUMN_STRUCT = "{" + ", ".join(f"{name!r}: {sql_type!r}" for name, sql_type in COLUMNS) + "}"


class AuditWriter:
    def __init__(self, store: AuditStore, compact_at: int = 64, max_batch: int = 20000,
                 min_interval: float = 0.25, fanout: int = 16, commit_delay: float = 1.0):
        self.store = store
        self.compact_at = compact_at
        self.fanout = fanout
        self.commit_delay = commit_delay
        self.max_batch = max_batch
        self.min_interval = min_interval
        self._pending: deque[AuditRecord] = deque()
        self._cond = threading.Condition()
        self._submitted = 0
        self._written = 0
        self._closing = False
        self._abandoned = False
        self._idle = False
        self._flushing = 0
        self._thread = threading.Thread(target=self._run, name="douane-audit-writer", daemon=True)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._segments: SegmentSet
        self.failures = 0

    def start(self) -> None:
        self.store.prepare()
        self._thread.start()

    def submit(self, record: AuditRecord) -> None:
        with self._cond:
            self._pending.append(record)
            self._submitted += 1
            if self._idle:  # wake the writer only when it waits for work, not while a batch grows
                self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is on disk."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
        try:
            return self._wait_written(deadline)
        finally:
            with self._cond:
                self._flushing -= 1

    def _wait_written(self, deadline: float) -> bool:
        with self._cond:
            target = self._submitted
            while self._written < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._cond:
            left = list(self._pending)
            self._pending.clear()
            self._abandoned = True  # a writer thread still busy must not pop what was spilled
        if left:
            self._spill(left)

    def _run(self) -> None:
        # one thread: a batch is small, and a pool of worker threads costs more than it saves
        self._con = duckdb.connect(config={"threads": 1})
        self._segments = SegmentSet(self.store, self._con, fanout0=self.compact_at, fanout=self.fanout,
                                    commit_delay=self.commit_delay)
        self._segments.start()
        backoff = 0.05
        last_write = 0.0
        while True:
            with self._cond:
                self._idle = True
                while not self._pending and not self._closing:
                    deadline = self._segments.next_deadline()
                    if deadline is None:
                        self._cond.wait()
                        continue
                    if deadline <= time.monotonic():
                        break
                    self._cond.wait(deadline - time.monotonic())
                self._idle = False
                if not self._pending and self._closing:
                    break
            if not self._pending:  # woken for a merge to commit or a merged file to delete
                self._maintain()
                continue
            with self._cond:
                ready_at = last_write + self.min_interval
                while not self._closing and not self._flushing and (wait := ready_at - time.monotonic()) > 0:
                    self._cond.wait(wait)  # let the batch grow; close() and flush() cut this short
                batch = [self._pending[i] for i in range(min(len(self._pending), self.max_batch))]
            last_write = time.monotonic()
            try:
                self._write(batch)
            except Exception:
                self.failures += 1
                log.exception("audit: writing %d records to %s failed; will retry", len(batch),
                              self.store.segments)
                if self._closing and self.failures > 3:
                    break
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            with self._cond:
                if self._abandoned:
                    break
                for _ in batch:
                    self._pending.popleft()
                self._written += len(batch)
                self._cond.notify_all()
            self._maintain()
        try:
            self._segments.commit_all()
        except Exception:
            log.exception("audit: committing merged segments failed; the next start cleans up")
        self._con.close()

    def _maintain(self) -> None:
        try:
            self._segments.tick()
        except Exception:
            log.exception("audit: merging segments failed; they are left as they are")

    def _write(self, batch: list[AuditRecord]) -> None:
        assert self._con is not None
        final = self._segments.allocate()
        tmp = final.with_name(final.name + ".tmp")
        lines = final.with_name(final.name + ".jsonl.tmp")
        names = [name for name, _ in COLUMNS]
        with open(lines, "wb") as fh:
            fh.writelines(jsonio.dumps(dict(zip(names, rec.row(), strict=True)), default=_json_default) + b"\n"
                          for rec in batch)
        try:
            self._con.execute(
                f"COPY (SELECT * FROM read_json({_sql_str(str(lines))}, format = 'newline_delimited', "
                f"columns = {_COLUMN_STRUCT})) TO {_sql_str(str(tmp))} (FORMAT parquet)")
        finally:
            lines.unlink(missing_ok=True)
        os.replace(tmp, final)
        self._segments.add(final)

    def _spill(self, records: list[AuditRecord]) -> None:
        path = self.store.segments / f"unwritten-{time.time_ns()}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(asdict(rec), default=_json_default) + "\n")
        log.error("audit: %d records could not be written as Parquet; they are kept in %s", len(records), path)


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


__all__ = ["AuditWriter", "Path"]
