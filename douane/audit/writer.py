"""The batched background writer: records queue in memory, one thread turns them into segments.

A record is written as soon as the thread is free and the last segment is older than
`min_interval` (group commit): at low load every call lands within a few milliseconds, under load
one segment per interval carries every record that arrived meanwhile, so the per-segment cost
(a Parquet file) does not grow with traffic. Rows reach DuckDB as JSON lines read by its own C++
reader, which keeps Python (and the GIL) out of the per-value work.

Nothing blocks the queue and nothing is dropped quietly:
- a record JSON or DuckDB cannot take (lone surrogates, numbers out of range) is fixed to fit its
  column, its `error` saying what changed; one that still fails is found by halving the batch,
  kept whole in `quarantine/records.jsonl`, and leaves a row saying so;
- when the store cannot be written (a full disk, a removed folder) the proxy keeps serving, the
  records wait in memory, the log says so (once, then at most every `log_every` seconds),
  `health()` reports it, and every retry reopens what it needs, so writing resumes by itself;
- at close, whatever still cannot be written goes to a JSON-lines spill file (in the segments
  folder, else in the system temp folder), folded back in by the next start; the close report
  says how many records are where.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import duckdb

from douane.audit.chain import (
    ERASABLE,
    KV_CHAIN,
    Head,
    SegmentChain,
    Span,
    body_digest_sql,
    chain_links,
    content_digest_sql,
    new_salt,
)
from douane.audit.compaction import SEGMENT_FORMAT, SegmentSet
from douane.audit.fleet import FleetShipper
from douane.audit.jobs import Executor, Job, finish_job, new_job_name, pending_jobs
from douane.audit.manifest import KV_SPILL, SPILL_NAME
from douane.audit.record import COLUMNS, AuditRecord, from_json, json_line, sanitized, spill_line
from douane.audit.settings import AuditSettings
from douane.audit.store import AuditStore, _sql_str
from douane.audit.trail import TRAIL, Trail

log = logging.getLogger(__name__)

_COLUMN_STRUCT = "{" + ", ".join(f"{name!r}: {sql_type!r}" for name, sql_type in COLUMNS) + "}"
_CONTENT_DIGEST = content_digest_sql(COLUMNS)
_BODY_DIGEST = body_digest_sql(ERASABLE)
_BATCH = "douane_batch"

# What DuckDB raises for a value it cannot read into its column: the record's fault, not the disk's.
RECORD_ERRORS = (duckdb.InvalidInputException, duckdb.ConversionException)
QUARANTINED_RECORDS = "records.jsonl"


class Clock(Protocol):
    """Monotonic time, and waiting on the writer's condition: injected so tests need no sleeps."""

    def now(self) -> float: ...

    def wait(self, cond: threading.Condition, timeout: float | None) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        cond.wait(timeout)


@dataclass(frozen=True)
class WriterHealth:
    """What the writer can vouch for: `ok` only when every record so far is, or will be, a row."""

    status: str  # "ok" or "degraded"
    reason: str | None
    pending: int  # records in memory, not yet on disk
    written: int  # records written as rows by this writer
    folded: int  # records from earlier spill files written as rows
    quarantined: int  # records kept whole in quarantine/ (their rows say so)
    spilled: int  # records kept in spill files instead of rows
    lost: int  # records that could be kept nowhere
    failures: int  # failed attempts in a row
    degraded_for: float | None  # seconds since writing last worked, while it does not
    spill_files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class AuditWriter:
    def __init__(self, store: AuditStore, compact_at: int = 64, max_batch: int = 20000,
                 min_interval: float = 0.25, fanout: int = 16, commit_delay: float = 1.0,
                 clock: Clock | None = None, max_backoff: float = 2.0, log_every: float = 30.0,
                 verify_every: float = 30.0, close_attempts: int = 5, settings: AuditSettings | None = None):
        self.store = store
        self.settings = settings or AuditSettings()
        self.compact_at = compact_at
        self.fanout = fanout
        self.commit_delay = commit_delay
        self.max_batch = max_batch
        self.min_interval = min_interval
        self.max_backoff = max_backoff
        self.log_every = log_every
        self.verify_every = verify_every
        self.close_attempts = close_attempts  # failures in a row after which close() stops trying
        self.clock: Clock = clock or SystemClock()
        self._pending: deque[AuditRecord] = deque()
        self._cond = threading.Condition()
        self._submitted = 0
        self._done = 0  # records handled for good: written, or set apart in quarantine
        self._written = self._folded = self._quarantined = self._spilled = self._lost = 0
        self._spill_files: list[str] = []
        self._closing = False
        self._close_by = math.inf
        self._abandoned = False
        self._idle = False
        self._flushing = 0
        self._failures = 0
        self._problem: str | None = None
        self._failing_since: float | None = None
        self._retry_at = -math.inf
        self._last_write = -math.inf
        self._last_alarm: float | None = None
        self._last_upkeep_alarm: float | None = None
        self._next_verify = 0.0
        self._next_checkpoint = 0.0
        self._trail: Trail | None = None
        self._next_jobs = 0.0
        self._next_retention = 0.0
        self._retention_jobs: list[Job] = []
        self._job_after: dict[str, int] = {}  # job -> records submitted before it was seen: written first
        self._job_failures: dict[str, int] = {}
        self._jobs_done = 0
        self._ready = False
        self._prepared = False
        self._lock_fd: int | None = None
        self._fleet = FleetShipper(Path(self.settings.fleet), Path(str(store.db_path) + ".fleet-outbox")) \
            if self.settings.fleet else None
        self._next_shipment = 0.0
        self._last_fleet_alarm: float | None = None
        self._thread = threading.Thread(target=self._run, name="douane-audit-writer", daemon=True)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._segments: SegmentSet
        self._head: Head  # the chain's last record: set when the store is opened

    @property
    def failures(self) -> int:
        return self._failures

    # -- the public side: called from the proxy's threads -------------------------------------

    def start(self, lock: int | None = None) -> None:
        """Take the store's writer lock (or the one given, already held) and prepare the store;
        raise OSError when it cannot be used at all (StoreBusy: another process writes to it).

        The store is opened before this returns (a lost manifest rebuilt, unreadable segments set
        apart, spill files folded in), so what the proxy serves is recorded in a sound store. An
        existing store that cannot be written right now (a full disk) does not stop the start:
        the writer begins degraded and keeps trying.
        """
        if self.store.db_path.is_dir():  # a mistake in --db, not a disk that may come back
            raise OSError(f"{self.store.db_path} is a folder: the store is a .duckdb file (its segments go beside it)")
        existed = self.store.segments.exists()
        self._lock_fd = lock if lock is not None else self.store.lock_writer()
        try:
            self._con = duckdb.connect(config={"threads": 1})
            self.store.prepare(self._con, view=False)
        except (OSError, duckdb.Error) as e:
            if not existed:
                self._release_lock()
                raise OSError(f"cannot create the audit store at {self.store.db_path}: {e}") from e
            with self._cond:
                self._fail("preparing the store", e)
        else:
            self._open_step()
            if not existed and not self._ready:  # a new store that cannot be opened: nothing to wait for
                self._release_lock()
                raise OSError(f"cannot create the audit store at {self.store.db_path}: {self._problem}")
        self._thread.start()

    def submit(self, record: AuditRecord) -> None:
        with self._cond:
            if self._abandoned:
                late = True
            else:
                late = False
                self._pending.append(record)
                self._submitted += 1
                if self._idle:  # wake the writer only when it waits for work, not while a batch grows
                    self._cond.notify_all()
        if late:
            log.error("audit: a record arrived after the writer closed: %s", record.id)
            self._spill([record])

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is on disk."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
        try:
            with self._cond:
                target = self._submitted
                while self._done < target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._thread.is_alive():
                        return False
                    self._cond.wait(remaining)
            return True
        finally:
            with self._cond:
                self._flushing -= 1

    def close(self, timeout: float = 30.0) -> WriterHealth:
        """Write what is pending, retrying for up to `timeout` seconds or `close_attempts` failures
        in a row; spill what still cannot be written. Returns the account of where every record went."""
        with self._cond:
            self._closing = True
            self._close_by = self.clock.now() + timeout
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout + 5)
        with self._cond:
            left = list(self._pending)
            self._pending.clear()
            self._abandoned = True  # a writer thread still busy must not pop what was spilled
        if left:
            self._spill(left)
        if not self._thread.is_alive():
            self._release_lock()
        return self.health()

    def health(self) -> WriterHealth:
        with self._cond:
            notes = [self._problem] if self._problem else []
            if self._spilled or self._lost:
                notes.append(f"{self._spilled + self._lost} record(s) could not be written to the store")
            reason = "; ".join(notes) or None
            return WriterHealth(
                status="ok" if reason is None else "degraded", reason=reason, pending=len(self._pending),
                written=self._written, folded=self._folded, quarantined=self._quarantined,
                spilled=self._spilled, lost=self._lost, failures=self._failures,
                degraded_for=None if self._failing_since is None else self.clock.now() - self._failing_since,
                spill_files=list(self._spill_files))

    # -- the writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while (work := self._wait_for_work()) is not None:
            if not self._ready:
                self._open_step()
            elif work:
                self._write_step(work)
            else:
                self._maintain()
        self._finish()

    def _wait_for_work(self) -> list[AuditRecord] | None:
        """Block until there is something to do: a batch to write, an empty list for upkeep (or to
        open the store), None to stop."""
        with self._cond:
            while True:
                now = self.clock.now()
                if self._closing and (now >= self._close_by or self._failures >= self.close_attempts):
                    return None  # close() spills what is left
                if not self._ready and now >= self._retry_at:
                    return []  # open first, even to close: an earlier run's spill files are folded in
                if self._closing and not self._pending:
                    return None
                wake = [self._retry_at]
                if now >= self._retry_at:
                    if self._pending:
                        ready_at = self._last_write + self.min_interval
                        if self._closing or self._flushing or now >= ready_at:
                            return [self._pending[i] for i in range(min(len(self._pending), self.max_batch))]
                        wake.append(ready_at)  # let the batch grow; close() and flush() cut this short
                    upkeep = min(self._next_verify, self._segments.next_deadline() or math.inf,
                                 self._next_checkpoint if self._chain_moved() else math.inf,
                                 self._next_jobs, self._next_retention if self.settings.retention.any else math.inf,
                                 self._shipment_due())
                    if upkeep <= now:
                        return []
                    wake.append(upkeep)
                if self._closing:
                    wake.append(self._close_by)
                until = min(t for t in wake if t > now) if any(t > now for t in wake) else None
                self._idle = not self._pending
                self.clock.wait(self._cond, None if until is None or math.isinf(until) else until - now)
                self._idle = False

    def _open_step(self) -> None:
        """(Re)open the store: folder, schema, view, manifest, leftovers of an earlier run."""
        try:
            if self._con is None:  # dropped after an error DuckDB does not recover from
                self._con = duckdb.connect(config={"threads": 1})
            for stale in self.store.segments.glob("*.tmp"):  # we hold the writer lock: nobody else writes
                stale.unlink(missing_ok=True)
            if not self._prepared or not self.store.prepared():  # e.g. the folder was removed
                self.store.prepare(self._con, view=False)
            segments = SegmentSet(self.store, self._con, fanout0=self.compact_at, fanout=self.fanout,
                                  commit_delay=self.commit_delay, signer=self.settings.signer)
            segments.start()
            instance = self.settings.instance_id or self.store.instance_id()
            head = segments.m.heads.get(instance)
            self._head = Head(instance, head[0], head[1]) if head else Head.start(instance)
            if not self._prepared or not self.store.prepared():
                self.store.ensure_view()  # binds the manifest: after start() has written one
                self._prepared = True
            trail = Trail(self.store.segments / TRAIL, self.settings.signer, self.settings.checkpoint_copy)
            trail.open()
            self._segments = segments
            self._trail = trail
            self._ready = True
            self._next_verify = self.clock.now() + self.verify_every
            self._next_checkpoint = self.clock.now() + self.settings.checkpoint_every
            self._fold_spills()
        except Exception as e:
            with self._cond:
                self._fail("opening the store", e)
            return
        with self._cond:
            if not self._pending:  # else writing them says whether it works again
                self._recovered()

    def _write_step(self, batch: list[AuditRecord]) -> None:
        self._last_write = self.clock.now()
        try:
            self._store(batch, self._commit_pending)
        except Exception as e:
            with self._cond:
                self._fail(f"writing {len(batch)} record(s)", e)
            return
        with self._cond:
            self._recovered()
        self._maintain()

    def _maintain(self) -> None:
        now = self.clock.now()
        try:
            if now >= self._next_verify:
                self._next_verify = now + self.verify_every
                self._segments.verify()
            self._segments.tick(now)
            if now >= self._next_checkpoint:
                self._next_checkpoint = now + self.settings.checkpoint_every
                self._checkpoint()
            if self.settings.retention.any and now >= self._next_retention:
                self._next_retention = now + self.settings.retention_every
                self._retention_jobs.append(self._expiry_job())
                if self._fleet is not None and self.settings.retention.rows_days is not None:
                    self._fleet.prune(self._head.instance, self.settings.retention.rows_days)
            if now >= self._next_jobs:
                self._next_jobs = now + self.settings.job_poll
                self._run_jobs(now)
            self._ship(now)
        except Exception as e:
            self._next_verify = now + self.max_backoff
            if self._last_upkeep_alarm is None or now - self._last_upkeep_alarm >= self.log_every:
                self._last_upkeep_alarm = now
                log.error("audit: upkeep of the segments (merging, deleting merged files) failed: %s; rows are "
                          "not affected and it is tried again (this message repeats at most every %g s)",
                          _describe(e), self.log_every)

    def _shipment_due(self) -> float:
        return self._next_shipment if self._fleet is not None and self._fleet.has_work() else math.inf

    def _ship(self, now: float, closing: bool = False) -> None:
        """Ship new records to the fleet folder when due; a failure is retried (the outbox keeps them).
        The fleet's expired days go with the store's own expiry (_maintain)."""
        if self._fleet is None or (now < self._next_shipment and not closing):
            return
        self._next_shipment = now + self.settings.fleet_every
        try:
            self._fleet.ship()
        except Exception as e:
            if closing or self._last_fleet_alarm is None or now - self._last_fleet_alarm >= self.log_every:
                self._last_fleet_alarm = now
                log.error("audit: shipping records to the fleet folder %s failed: %s; they stay queued in %s "
                          "and are shipped when it works again (this message repeats at most every %g s)",
                          self._fleet.root, _describe(e), self._fleet.outbox, self.log_every)

    def _finish(self) -> None:
        if self._ready:
            try:
                self._segments.commit_all()
            except Exception:
                log.exception("audit: committing merged segments failed; the next start cleans up")
            try:
                self._checkpoint()
            except Exception as e:
                log.error("audit: the closing checkpoint could not be written: %s", _describe(e))
            if self._trail is not None:
                self._trail.wait_copies()
            self._ship(self.clock.now(), closing=True)
        if self._con is not None:
            self._con.close()

    # -- failures and recovery (called with the condition held) ---------------------------------

    def _fail(self, what: str, error: Exception) -> None:
        now = self.clock.now()
        self._failures += 1
        self._retry_at = now + min(0.05 * 2 ** (self._failures - 1), self.max_backoff)
        self._problem = f"{what} in {self.store.segments} failed: {_describe(error)}"
        if self._failing_since is None:
            self._failing_since = now
            self._last_alarm = now
            log.error("audit: %s; %d record(s) wait in memory; calls are still served and recorded when "
                      "writing works again (free space or fix the folder's permissions; this message "
                      "repeats at most every %g s)", self._problem, len(self._pending), self.log_every)
        elif self._last_alarm is not None and now - self._last_alarm >= self.log_every:
            self._last_alarm = now
            log.error("audit: still failing after %.0f s and %d attempt(s): %s; %d record(s) wait in memory",
                      now - self._failing_since, self._failures, self._problem, len(self._pending))
        self._ready = False  # the next attempt reopens the store
        if isinstance(error, duckdb.FatalException | duckdb.InternalException) or "invalidated" in str(error):
            self._reconnect()  # DuckDB refuses further work on a connection after such errors

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.warning("audit: writing works again after %.0f s and %d failed attempt(s)",
                        self.clock.now() - self._failing_since, self._failures)
        self._failures = 0
        self._problem = None
        self._failing_since = None
        self._retry_at = -math.inf

    def _reconnect(self) -> None:
        if self._con is not None:
            with contextlib.suppress(duckdb.Error):
                self._con.close()
        self._con = None

    # -- writing ----------------------------------------------------------------------------------

    def _commit_pending(self, count: int) -> None:
        with self._cond:
            if self._abandoned:
                return
            for _ in range(count):
                self._pending.popleft()
            self._done += count
            self._cond.notify_all()

    def _store(self, records: list[AuditRecord], commit: Callable[[int], None]) -> None:
        """Write records as segments, in order, calling `commit` for each run that is done for good."""
        try:
            self._write_segment(records)
        except RECORD_ERRORS as e:
            if len(records) > 1:  # halve until the record DuckDB refuses is alone
                mid = len(records) // 2
                self._store(records[:mid], commit)
                self._store(records[mid:], commit)
                return
            self._set_apart(records[0], e)
            commit(1)
            return
        with self._cond:
            self._written += len(records)
        commit(len(records))

    def _set_apart(self, record: AuditRecord, error: Exception) -> None:
        """One record DuckDB refused: stored fixed to fit if that works, else kept whole in quarantine
        with a row that says so."""
        fixed = sanitized(record)
        if fixed != record:
            try:
                self._write_segment([fixed])
                with self._cond:
                    self._written += 1
                return
            except RECORD_ERRORS:
                pass
        why = _describe(error)
        self.store.quarantine.mkdir(exist_ok=True)
        kept = self.store.quarantine / QUARANTINED_RECORDS
        with open(kept, "a", encoding="ascii") as fh:
            fh.write(json.dumps({"error": why, "record": json.loads(spill_line(record))}) + "\n")
        with self._cond:
            self._quarantined += 1
        log.error("audit: record %s could not be stored as a row (%s); it is kept whole in %s",
                  fixed.id, why, kept)
        stub = AuditRecord(id=fixed.id, ts=fixed.ts, client=fixed.client, team=fixed.team, provider=fixed.provider,
                           status=None, decision=fixed.decision,
                           error=f"audit: this call's record could not be stored ({why}); it is kept whole in "
                                 f"{QUARANTINE_NOTE}")
        try:
            self._write_segment([stub])
        except RECORD_ERRORS:
            log.error("audit: not even a placeholder row could be written for %s", fixed.id)

    def _write_segment(self, records: list[AuditRecord], spill: str | None = None) -> None:
        """Write records as one sealed segment, each taking the next place in the instance's chain.

        DuckDB reads the records (JSON lines) into a temporary table and computes each one's
        content digest (chain.py); the links are chained here, and the segment is written with its
        commitment in its metadata. The head moves on only once the manifest names the segment.
        """
        assert self._con is not None
        con = self._con
        head = self._head
        self._stamp(records, head)
        final = self._segments.allocate()
        tmp = final.with_name(final.name + ".tmp")
        rows = final.with_name(final.name + ".jsonl.tmp")
        try:
            with open(rows, "wb") as fh:
                fh.writelines(_line(r) for r in records)
            con.execute(f"CREATE OR REPLACE TEMP TABLE {_BATCH} AS SELECT * REPLACE ({_BODY_DIGEST} AS body_digest) "
                        f"FROM read_json({_sql_str(str(rows))}, format = 'newline_delimited', "
                        f"columns = {_COLUMN_STRUCT})")
            digests = _digests(con)
            if len(digests) != len(records):
                raise RuntimeError(f"DuckDB read {len(digests)} of {len(records)} record(s)")
            hashes, after = chain_links(head, digests)
            chain = SegmentChain(list(COLUMNS), list(ERASABLE),
                                 {head.instance: Span(head.seq + 1, hashes[0], after.seq, after.hash, len(records),
                                                      head.hash)})
            kv = {KV_CHAIN: chain.to_json(), **({KV_SPILL: spill} if spill else {})}
            options = f"{SEGMENT_FORMAT}, KV_METADATA {{" + ", ".join(f"{_sql_str(k)}: {_sql_str(v)}"
                                                                  for k, v in kv.items()) + "}"
            con.execute(f"COPY (SELECT b.* REPLACE (h.hash AS hash) FROM temp.{_BATCH} b JOIN "
                        f"(SELECT unnest(?::BIGINT[]) AS s, unnest(?::VARCHAR[]) AS hash) h ON b.seq = h.s "
                        f"ORDER BY b.seq) TO {_sql_str(str(tmp))} ({options})",
                        [list(range(head.seq + 1, after.seq + 1)), hashes])
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            rows.unlink(missing_ok=True)
            with contextlib.suppress(duckdb.Error):
                con.execute(f"DROP TABLE IF EXISTS temp.{_BATCH}")
        self._segments.add(final, spill=spill, head=after, chain=chain)
        self._head = after
        if self._fleet is not None:
            self._fleet.enqueue(final)

    # -- erasure and expiry (jobs.py) ----------------------------------------------------------------

    def _expiry_job(self) -> Job:
        r = self.settings.retention
        now = datetime.now(UTC)
        said = [f"{what} older than {days:g} days" for what, days in (("bodies", r.bodies_days), ("rows", r.rows_days))
                if days is not None]
        return Job(name=new_job_name("retention"), kind="purge", reason="retention: " + " and ".join(said),
                   by="douane (audit.retention_days)", selector="audit.retention_days",
                   bodies_before=(now - timedelta(days=r.bodies_days)).isoformat() if r.bodies_days else None,
                   rows_before=(now - timedelta(days=r.rows_days)).isoformat() if r.rows_days else None)

    def _run_jobs(self, now: float) -> None:
        """Start the next job when nothing else rewrites segments, once every record submitted
        before it was seen is written (an erasure covers the calls made before it was asked)."""
        if self._segments.rewriting is not None or self._segments.merging:
            return
        for job in [*pending_jobs(self.store), *self._retention_jobs]:
            with self._cond:
                after = self._job_after.setdefault(job.name, self._submitted)
                if self._done < after:
                    return
            try:
                self._start_job(job, now)
            except Exception as e:
                failures = self._job_failures[job.name] = self._job_failures.get(job.name, 0) + 1
                log.error("audit: job %s failed (attempt %d): %s", job.name, failures, _describe(e))
                if failures >= 3:
                    self._forget_job(job)
                    finish_job(self.store, job, {"ok": False, "job": job.name,
                                                 "error": f"failed {failures} times: {_describe(e)}"})
            return  # one job at a time

    def _start_job(self, job: Job, now: float) -> None:
        assert self._con is not None and self._trail is not None
        executor = Executor(self.store, self._con, self._segments, self._trail)
        selection = executor.select(job)
        if selection.empty:
            self._forget_job(job)
            finish_job(self.store, job, {"ok": True, "job": job.name, "records": 0, "segments": 0})
            return
        entry = executor.tombstone(job, selection)

        def committed() -> None:
            self._forget_job(job)
            self._jobs_done += 1
            finish_job(self.store, job, {"ok": True, "job": job.name, "records": entry["records"],
                                         "segments": segments, "tombstone": entry["n"],
                                         "old_files": len(self._segments.doomed)})
        segments = executor.rewrite(selection, now, committed)
        log.warning("audit: %s %s: %d record(s) in %d segment(s), tombstone #%d (%s)", job.kind, job.name,
                    entry["records"], segments, entry["n"], job.reason)

    def _forget_job(self, job: Job) -> None:
        self._retention_jobs = [j for j in self._retention_jobs if j.name != job.name]
        self._job_after.pop(job.name, None)
        self._job_failures.pop(job.name, None)

    def _chain_moved(self) -> bool:
        """Whether records were chained since the instance's last checkpoint."""
        if not self._ready or self._trail is None or self._head.seq == 0:
            return False
        last = self._trail.checkpoints.get(self._head.instance)
        return last is None or last.get("seq") != self._head.seq

    def _checkpoint(self) -> None:
        if self._chain_moved():
            assert self._trail is not None
            head = self._head
            self._trail.append("checkpoint", {"instance": head.instance, "seq": head.seq, "hash": head.hash})

    def _stamp(self, records: list[AuditRecord], head: Head) -> None:
        """Give each record its place in the chain (again, if an earlier attempt failed), and a salt
        for its bodies."""
        version = self.settings.version
        for i, rec in enumerate(records, 1):
            rec.instance_id = head.instance
            rec.seq = head.seq + i
            rec.douane_version = version
            rec.hash = rec.body_digest = None
            if rec.body_salt is None and (rec.request_body is not None or rec.response_body is not None
                                          or rec.tool_calls):
                rec.body_salt = new_salt()

    # -- spill files --------------------------------------------------------------------------------

    def _spill(self, records: list[AuditRecord]) -> None:
        """Keep records that could not be written: in the segments folder, else the temp folder."""
        path = keep_unwritten(self.store, records)
        with self._cond:
            if path is None:
                self._lost += len(records)
            else:
                self._spilled += len(records)
                self._spill_files.append(str(path))

    def _fold_spills(self) -> None:
        """Write back the records an earlier run spilled, once each (the manifest remembers)."""
        for path in self._spill_paths():
            if path.name in self._segments.m.folded:  # folded, the file not yet removed
                path.unlink(missing_ok=True)
                continue
            records, bad = _read_spill(path)
            try:
                if records:
                    self._write_segment([sanitized(r) for r in records], spill=path.name)
            except RECORD_ERRORS as e:
                self.store.quarantine.mkdir(exist_ok=True)
                path.replace(self.store.quarantine / path.name)
                log.error("audit: spill file %s could not be folded in (%s); moved to %s", path, _describe(e),
                          self.store.quarantine)
                continue
            if bad:
                self.store.quarantine.mkdir(exist_ok=True)
                with open(self.store.quarantine / QUARANTINED_RECORDS, "a", encoding="utf-8") as fh:
                    fh.writelines(json.dumps({"error": f"unreadable line in {path.name}", "line": line}) + "\n"
                                  for line in bad)
            path.unlink()
            self._segments.m.folded.pop(path.name, None)
            with self._cond:
                self._folded += len(records)
            log.warning("audit: folded %d record(s) from %s back into the store%s", len(records), path,
                        f" ({len(bad)} unreadable line(s) kept in quarantine)" if bad else "")

    def _spill_paths(self) -> list[Path]:
        found = [*self.store.segments.glob("unwritten-*.jsonl"), *self.store.spill_fallback.glob("unwritten-*.jsonl")]
        return sorted((p for p in found if SPILL_NAME.fullmatch(p.name)), key=lambda p: p.name)

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


QUARANTINE_NOTE = f"quarantine/{QUARANTINED_RECORDS} beside the segments"


def keep_unwritten(store: AuditStore, records: Sequence[AuditRecord]) -> Path | None:
    """Records that cannot reach the store as rows, kept in a spill file that the store's next start
    folds in: in the segments folder, else the temp folder. The file, or None when neither took it
    (the records are lost, and the log names them)."""
    text = "".join(spill_line(r) for r in records)
    errors = []
    for folder in (store.segments, store.spill_fallback):
        path = folder / f"unwritten-{time.time_ns()}.jsonl"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="ascii") as fh:
                fh.write(text)
        except OSError as e:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            errors.append(f"{folder}: {e.strerror or e}")
            continue
        log.error("audit: %d record(s) could not be written as rows; they are kept in %s and the next start "
                  "folds them into the store", len(records), path)
        return path
    ids = ", ".join(r.id for r in records[:20]) + (", ..." if len(records) > 20 else "")
    log.critical("audit: %d record(s) could not be kept anywhere (%s); they are lost: %s",
                 len(records), "; ".join(errors), ids)
    return None


def _digests(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The batch's content digests in seq order. DuckDB's optimizer spent about two thirds of this
    query's time rewriting its one long expression (forty fields, each cast, measured and joined) and
    has nothing to improve in a scan of a small temporary table: it is off for this query only."""
    con.execute("PRAGMA disable_optimizer")
    try:
        return [r[0] for r in con.execute(f"SELECT {_CONTENT_DIGEST} FROM temp.{_BATCH} ORDER BY seq").fetchall()]
    finally:
        con.execute("PRAGMA enable_optimizer")


def _line(record: AuditRecord) -> bytes:
    try:
        return json_line(record)
    except TypeError:  # orjson refuses lone surrogates and integers past 64 bits
        return json_line(sanitized(record))


def _read_spill(path: Path) -> tuple[list[AuditRecord], list[str]]:
    records, bad = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            records.append(from_json(data))
        except (ValueError, TypeError):
            bad.append(line)
    return records, bad


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:300]


__all__ = ["AuditWriter", "Clock", "SystemClock", "WriterHealth"]
