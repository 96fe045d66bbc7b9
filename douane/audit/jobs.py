"""Erasure and expiry: requests (job files), and their execution by whoever holds the writer lock.

Only the process holding the store's writer lock changes its manifest, so `douane audit erase` and
`douane audit purge` do not rewrite segments themselves: they drop a job file in `jobs/` beside the
segments and wait for its result; the running proxy's writer picks it up within a second (when no
proxy runs, the command starts a writer of its own). A job file names what to change as data,
never as SQL: a client, a list of call ids (an `--where` clause is evaluated by the command, with
the rights of whoever runs it), or cut-off times. Expiry (`audit.retention_days`) runs the same
way inside the proxy, every hour and at start.

A job runs in four steps, each leaving the store consistent:
1. select the records: bodies to erase (they still have bodies), and, per instance, the longest
   run of oldest records all past the cut-off (removing records only from the start of a chain
   keeps it verifiable: the tombstone gives the hash of the last record removed);
2. append a tombstone to the trail (what, when, why, on whose request; signed);
3. write each affected segment again without those bodies or records, as pending outputs;
4. after `commit_delay`, swap all of them in with one manifest replace: a reader sees the store
   before the job or after it, never half of it. The old files go once no reader is connected.
A crash before step 4 leaves the job file in place: the next writer runs it again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from douane.audit.chain import ERASABLE, SegmentChain, Span, bodies_present_sql, quote, spans_from_rows, spans_sql
from douane.audit.compaction import SegmentSet
from douane.audit.manifest import inspect_segment
from douane.audit.store import AuditStore, _sql_str
from douane.audit.trail import Trail, now_iso

log = logging.getLogger(__name__)

JOBS = "jobs"
JOB_NAME = re.compile(r"\d{20}-(erase|purge|retention)")
MAX_TEXT = 500
MAX_IDS = 1_000_000
ATTEMPTS = 3


class JobError(ValueError):
    """A job file douane cannot run as it is."""


@dataclass
class Job:
    name: str
    kind: str  # erase: bodies of chosen calls; purge: what expired
    reason: str
    by: str
    requested: str = field(default_factory=now_iso)
    selector: str = ""  # what was asked, for people (the tombstone shows it)
    client: str | None = None  # erase: every call of this client written by the time the job runs
    ids: list[str] | None = None  # erase: these calls (an --where clause, evaluated by the command)
    bodies_before: str | None = None  # purge: erase bodies of calls that arrived before this time
    rows_before: str | None = None  # purge: remove calls that arrived before this time

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def parse(cls, name: str, text: str) -> Job:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise JobError(f"not JSON ({e})") from None
        if not isinstance(data, dict):
            raise JobError("not a JSON object")
        job = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        if job.name != name or not JOB_NAME.fullmatch(name):
            raise JobError(f"the job is named {job.name!r} in a file named {name!r}")
        if job.kind not in ("erase", "purge"):
            raise JobError(f"unknown kind {job.kind!r}")
        for key in ("reason", "by", "requested", "selector"):
            value = getattr(job, key)
            if not isinstance(value, str) or len(value) > MAX_TEXT:
                raise JobError(f"{key} is not a text of at most {MAX_TEXT} characters")
        if job.kind == "erase":
            if (job.client is None) == (job.ids is None):
                raise JobError("an erase names a client or a list of ids")
            if job.client is not None and not isinstance(job.client, str):
                raise JobError("client is not a text")
            if job.ids is not None and (not isinstance(job.ids, list) or len(job.ids) > MAX_IDS
                                        or not all(isinstance(i, str) for i in job.ids)):
                raise JobError("ids is not a list of call ids")
        else:
            for key in ("bodies_before", "rows_before"):
                value = getattr(job, key)
                if value is not None:
                    try:
                        datetime.fromisoformat(value)
                    except (TypeError, ValueError):
                        raise JobError(f"{key} is not an ISO time") from None
            if job.bodies_before is None and job.rows_before is None:
                raise JobError("a purge names bodies_before, rows_before or both")
        return job


def new_job_name(kind: str) -> str:
    return f"{time.time_ns():020d}-{kind}"


def jobs_folder(store: AuditStore) -> Path:
    return store.segments / JOBS


def submit(store: AuditStore, job: Job) -> Path:
    """Drop a job file for the writer (atomic: the writer never reads half of one)."""
    folder = jobs_folder(store)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{job.name}.json"
    tmp = folder / f".{job.name}.json.tmp"
    tmp.write_text(job.to_json(), encoding="utf-8")
    os.replace(tmp, path)
    return path


def result_path(store: AuditStore, name: str) -> Path:
    return jobs_folder(store) / f"{name}.done.json"


def wait_result(store: AuditStore, name: str, timeout: float) -> dict[str, Any] | None:
    """The job's result once the writer has committed it (the result file is removed), or None."""
    path = result_path(store, name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            result = json.loads(path.read_text(encoding="utf-8"))
            path.unlink(missing_ok=True)
            return result if isinstance(result, dict) else {"ok": False, "error": "an unreadable result"}
        time.sleep(0.1)
    return None


def pending_jobs(store: AuditStore) -> list[Job]:
    """Job files waiting, oldest first; a malformed one is moved to quarantine/ and answered."""
    folder = jobs_folder(store)
    if not folder.is_dir():
        return []
    jobs = []
    for path in sorted(folder.glob("*.json")):
        name = path.name.removesuffix(".json")
        if name.endswith(".done") or path.name.startswith("."):
            continue
        try:
            jobs.append(Job.parse(name, path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, TypeError, JobError) as e:
            store.quarantine.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                os.replace(path, store.quarantine / path.name)
            log.error("audit: job file %s cannot be run (%s): moved to %s", path, e, store.quarantine)
            if JOB_NAME.fullmatch(name):
                write_result(store, name, {"ok": False, "error": f"the job file cannot be run: {e}"})
    return jobs


def write_result(store: AuditStore, name: str, result: dict[str, Any]) -> None:
    path = result_path(store, name)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, path)


def finish_job(store: AuditStore, job: Job, result: dict[str, Any]) -> None:
    """Answer the job and remove its file (it is done, for good or not); the proxy's own expiry
    runs have nobody waiting: the log says how they went."""
    if job.name.endswith("-retention"):
        log.info("audit: expiry %s: %s", job.name, result)
        return
    write_result(store, job.name, result)
    (jobs_folder(store) / f"{job.name}.json").unlink(missing_ok=True)


def ranges(seqs: list[int]) -> list[list[int]]:
    """Sorted numbers as [first, last] runs: [1, 2, 3, 7] -> [[1, 3], [7, 7]]."""
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


@dataclass
class Selection:
    """What a job changes: bodies to erase (by call id), and each instance's records removed up to
    a seq (with that record's hash), plus records older than the chain removed by time."""

    bodies: list[tuple[str, str | None, int | None, str]] = field(default_factory=list)  # id, inst, seq, file
    removed: dict[str, dict[str, Any]] = field(default_factory=dict)  # inst -> through, hash, records
    legacy_before: str | None = None  # records without a chain that arrived before this are removed
    legacy_removed: int = 0
    files: set[str] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return not self.bodies and not self.removed and not self.legacy_removed


class Executor:
    """Runs jobs in the writer's thread, on its connection and segment set."""

    def __init__(self, store: AuditStore, con: duckdb.DuckDBPyConnection, segments: SegmentSet, trail: Trail):
        self.store = store
        self.con = con
        self.segments = segments
        self.trail = trail

    def select(self, job: Job) -> Selection:
        sel = Selection()
        files = [n for n in self.segments.live]
        if not files:
            return sel
        listing = "[" + ", ".join(_sql_str(str(self.store.segments / n)) for n in files) + "]"
        source = f"read_parquet({listing}, filename = true, union_by_name = true)"
        has_bodies = bodies_present_sql(ERASABLE)
        params: list[Any]
        if job.kind == "erase":
            if job.client is not None:
                where, params = "client = ?", [job.client]
            else:
                where, params = "id IN (SELECT unnest(?::VARCHAR[]))", [job.ids or []]
        else:
            where, params = ("ts < ?::TIMESTAMPTZ", [job.bodies_before]) if job.bodies_before else ("false", [])
        if job.kind == "purge" and job.rows_before:
            self._select_removed(sel, source, job.rows_before)
        sel.bodies = [r for r in self.con.execute(
            f"SELECT id, instance_id, seq, parse_filename(filename) FROM {source} WHERE {has_bodies} AND ({where})",
            params).fetchall() if not _removed(sel, r[1], r[2], r[3])]
        sel.files.update(r[3] for r in sel.bodies)
        return sel

    def _select_removed(self, sel: Selection, source: str, before: str) -> None:
        """Per instance, the oldest records up to the first one that has not expired."""
        for inst, through in self.con.execute(
                f"SELECT instance_id, coalesce(min(seq) FILTER (WHERE ts >= ?::TIMESTAMPTZ) - 1, max(seq)) "
                f"FROM {source} WHERE seq IS NOT NULL AND instance_id IS NOT NULL GROUP BY instance_id",
                [before]).fetchall():
            if through is None or through < 1:
                continue
            rows = self.con.execute(f"SELECT hash, parse_filename(filename) FROM {source} WHERE instance_id = ? "
                                    f"AND seq <= ? ORDER BY seq DESC", [inst, through]).fetchall()
            if not rows:
                continue
            sel.removed[inst] = {"through": through, "hash": rows[0][0], "records": len(rows)}
            sel.files.update(r[1] for r in rows)
        legacy = self.con.execute(f"SELECT parse_filename(filename), count(*) FROM {source} WHERE seq IS NULL AND "
                                  f"ts < ?::TIMESTAMPTZ GROUP BY ALL", [before]).fetchall()
        if legacy:
            sel.legacy_before = before
            sel.legacy_removed = sum(r[1] for r in legacy)
            sel.files.update(r[0] for r in legacy)

    def tombstone(self, job: Job, sel: Selection) -> dict[str, Any]:
        """The trail entry saying what the job removes, when, why and for whom."""
        bodies: dict[str, list[int]] = {}
        legacy_ids = []
        for rid, inst, seq, _ in sel.bodies:
            if inst is not None and seq is not None:
                bodies.setdefault(inst, []).append(seq)
            else:
                legacy_ids.append(rid)
        fields: dict[str, Any] = {"job": job.name, "reason": job.reason, "by": job.by, "requested": job.requested,
                                  "selector": job.selector, "records": len(sel.bodies),
                                  "bodies": {i: ranges(s) for i, s in sorted(bodies.items())}}
        if legacy_ids:
            fields["legacy_ids"] = sorted(legacy_ids)
        if job.kind == "purge":
            fields["before"] = {"bodies": job.bodies_before, "rows": job.rows_before}
            fields["removed"] = sel.removed
            fields["records"] += sum(r["records"] for r in sel.removed.values()) + sel.legacy_removed
            if sel.legacy_removed:
                fields["legacy_removed"] = sel.legacy_removed
        return self.trail.append(job.kind, fields)

    def rewrite(self, sel: Selection, now: float, on_commit: Any) -> int:
        """Write every affected segment again, as pending outputs committed together later."""
        files = [n for n in self.segments.live if n in sel.files]
        changed = self.segments.check_sealed(files)
        if changed:  # rewriting it would seal what someone else wrote
            raise JobError(f"segment(s) {', '.join(changed)} changed outside douane since it wrote them: nothing "
                           f"was rewritten; see douane audit verify")
        self.con.execute("CREATE OR REPLACE TEMP TABLE job_bodies (id VARCHAR)")
        self.con.execute("INSERT INTO job_bodies SELECT unnest(?::VARCHAR[])", [[b[0] for b in sel.bodies]])
        self.con.execute("CREATE OR REPLACE TEMP TABLE job_removed (instance_id VARCHAR, through BIGINT)")
        for inst, r in sel.removed.items():
            self.con.execute("INSERT INTO job_removed VALUES (?, ?)", [inst, r["through"]])
        rw = self.segments.begin_rewrite(files)
        try:
            for name in files:
                info = inspect_segment(self.con, self.store.segments / name)
                erasable = info.chain.erasable if info.chain else list(ERASABLE)
                select = self._select_sql(name, erasable, sel.legacy_before)
                self.segments.write_rewritten(rw, name, select, self._chain(select, info.chain, sel))
        except BaseException:
            self.segments.abort_rewrite(rw)
            raise
        self.segments.finish_rewrite(rw, now, on_commit)
        return len(files)

    def _select_sql(self, name: str, erasable: list[str], legacy_before: str | None) -> str:
        path = _sql_str(str(self.store.segments / name))
        erase = ", ".join(f"CASE WHEN b.id IS NULL THEN t.{quote(n)} END AS {quote(n)}"
                          for n in [*erasable, "body_salt"])
        legacy = f"t.seq IS NULL AND t.ts < {_sql_str(legacy_before)}::TIMESTAMPTZ" if legacy_before else "false"
        return (f"SELECT t.* REPLACE ({erase}) FROM read_parquet({path}) t "
                f"LEFT JOIN (SELECT DISTINCT id FROM temp.job_bodies) b ON t.id = b.id "
                f"LEFT JOIN temp.job_removed r ON t.instance_id = r.instance_id "
                f"WHERE NOT coalesce(t.seq <= r.through, false) AND NOT ({legacy}) ORDER BY t.seq")

    def _chain(self, select: str, chain: SegmentChain | None, sel: Selection) -> SegmentChain | None:
        """The output's commitment: same columns; spans of what remains, the first linking to the
        record before it (the last one removed, for a chain cut at its start)."""
        if chain is None:
            return None
        prev = {inst: (sel.removed[inst]["hash"] if inst in sel.removed and
                       sel.removed[inst]["through"] >= span.first else span.prev)
                for inst, span in chain.spans.items()}
        spans: dict[str, Span] = spans_from_rows(self.con.execute(spans_sql(f"({select})")).fetchall(), prev)
        return SegmentChain(chain.columns, chain.erasable, spans)


def _removed(sel: Selection, inst: str | None, seq: int | None, file: str) -> bool:
    if inst is not None and seq is not None and inst in sel.removed:
        return seq <= sel.removed[inst]["through"]
    return False
