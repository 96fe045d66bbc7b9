"""The batched background writer: records queue in memory, one thread turns them into segments.

A record is written as soon as the thread is free (group commit): at low load every call lands
within a few milliseconds, under load batches grow by themselves. Nothing is dropped: a failed
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

from douane.audit.record import COLUMNS, AuditRecord
from douane.audit.store import AuditStore, _sql_str

log = logging.getLogger(__name__)

_ROWS_PER_INSERT = 256


class AuditWriter:
    def __init__(self, store: AuditStore, compact_at: int = 64, max_batch: int = 5000):
        self.store = store
        self.compact_at = compact_at
        self.max_batch = max_batch
        self._pending: deque[AuditRecord] = deque()
        self._cond = threading.Condition()
        self._submitted = 0
        self._written = 0
        self._closing = False
        self._abandoned = False
        self._seq = 0
        self._thread = threading.Thread(target=self._run, name="douane-audit-writer", daemon=True)
        self._con: duckdb.DuckDBPyConnection | None = None
        self.failures = 0

    def start(self) -> None:
        self.store.prepare()
        self._thread.start()

    def submit(self, record: AuditRecord) -> None:
        with self._cond:
            self._pending.append(record)
            self._submitted += 1
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is on disk."""
        deadline = time.monotonic() + timeout
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
        self._con = duckdb.connect()
        self._con.execute(self.store.create_table_sql("buf"))
        backoff = 0.05
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending and self._closing:
                    break
                batch = [self._pending[i] for i in range(min(len(self._pending), self.max_batch))]
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
            try:
                self._maybe_compact()
            except Exception:
                log.exception("audit: compaction failed; segments are left as they are")
        try:
            self._maybe_compact(force=True)
        except Exception:
            log.exception("audit: final compaction failed")
        self._con.close()

    def _write(self, batch: list[AuditRecord]) -> None:
        assert self._con is not None
        con = self._con
        con.execute("DELETE FROM buf")
        width = len(COLUMNS)
        row_sql = "(" + ",".join("?" * width) + ")"
        for i in range(0, len(batch), _ROWS_PER_INSERT):
            chunk = batch[i:i + _ROWS_PER_INSERT]
            params = [value for rec in chunk for value in rec.row()]
            con.execute(f"INSERT INTO buf VALUES {','.join([row_sql] * len(chunk))}", params)
        self._seq += 1
        final = self.store.segments / f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.parquet"
        tmp = final.with_suffix(".tmp")
        con.execute(f"COPY buf TO {_sql_str(str(tmp))} (FORMAT parquet)")
        os.replace(tmp, final)

    def _maybe_compact(self, force: bool = False) -> None:
        """Merge small segments into one so a long-running proxy does not leave thousands of files."""
        files = self.store.segment_files()
        if len(files) < (2 if force else self.compact_at):
            return
        assert self._con is not None
        merged = files[0].with_name(files[0].stem + "-m.parquet")
        if merged in files:
            merged = files[0].with_name(files[0].stem + f"-m{self._seq}.parquet")
        tmp = merged.with_suffix(".tmp")
        listing = "[" + ",".join(_sql_str(str(f)) for f in files) + "]"
        self._con.execute(f"COPY (SELECT * FROM read_parquet({listing}, union_by_name = true)) "
                          f"TO {_sql_str(str(tmp))} (FORMAT parquet)")
        os.replace(tmp, merged)
        for f in files:
            if f != merged:
                f.unlink(missing_ok=True)

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
