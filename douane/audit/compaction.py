"""The set of live audit segments, published in a manifest, merged without readers noticing.

A query on the `requests` view lists the segment files when it binds (reading their footers),
opens them again when it scans, and keeps the rows of the files `manifest.json` names. So that no
query fails on a missing or changed file, counts a row twice, or misses a committed one:
- a segment is written once under a fresh name (atomic rename) and never changed afterwards;
  the manifest (replaced atomically) then names it;
- a merge writes its output the same way, waits `commit_delay` (every query that listed files
  before the output existed has read the manifest by then), then swaps sources for output in one
  manifest replace;
- merged sources are deleted only when no reader is connected: a DuckDB reader holds a shared
  lock on the .duckdb file for as long as it is connected, which the writer can see (F_GETLK)
  without taking the lock. A reader connecting right after that check lists files only after
  opening the database and binding its query, by which time the deletions are done. With an
  auditor connected for hours, merged files wait on disk (the manifest keeps them out of every
  result) until it disconnects.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from douane.audit.store import MANIFEST, SCHEMA_SEGMENT, AuditStore, _sql_str, reader_connected

log = logging.getLogger(__name__)


@dataclass
class _Merge:
    commit_at: float
    sources: list[str]
    output: str
    level: int


class SegmentSet:
    def __init__(self, store: AuditStore, con: duckdb.DuckDBPyConnection, fanout0: int = 64,
                 fanout: int = 16, commit_delay: float = 1.0, retry: float = 5.0):
        self.store = store
        self.con = con
        self.fanout0 = fanout0
        self.fanout = fanout
        self.commit_delay = commit_delay
        self.retry = retry
        self.live: list[str] = []
        self.level: dict[str, int] = {}
        self.merging: list[_Merge] = []
        self.doomed: list[str] = []  # merged away, to delete once no reader is connected
        self._next_reap = 0.0
        self._seq = 0

    def _path(self, name: str) -> Path:
        return self.store.segments / name

    def publish(self) -> None:
        tmp = self._path(MANIFEST + ".tmp")
        tmp.write_text(json.dumps({"live": [SCHEMA_SEGMENT, *self.live],
                                   "level": [0, *(self.level[n] for n in self.live)]}))
        os.replace(tmp, self._path(MANIFEST))

    def start(self) -> None:
        """Adopt what an earlier run left: named files stay, others are deleted when it is safe."""
        manifest = self._path(MANIFEST)
        on_disk = {p.name for p in self.store.segment_files()}
        data = json.loads(manifest.read_text()) if manifest.exists() else {}
        named = data.get("live", [])
        levels = data.get("level", [0] * len(named))
        for name, lvl in zip(named, levels, strict=False):
            if name in on_disk and name != SCHEMA_SEGMENT:
                self.live.append(name)
                self.level[name] = int(lvl)
        if not manifest.exists():  # a store from before manifests: every segment is live
            self.live = sorted(on_disk)
            self.level = dict.fromkeys(self.live, 0)
        self.doomed = sorted(on_disk - set(self.live))
        self.publish()
        self.reap()

    def allocate(self) -> Path:
        """A fresh name for a new segment (names are never reused: readers cache footers by name)."""
        self._seq += 1
        return self._path(f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.parquet")

    def add(self, path: Path, level: int = 0) -> None:
        self.live.append(path.name)
        self.level[path.name] = level
        self.publish()

    def next_deadline(self) -> float | None:
        times = [m.commit_at for m in self.merging] + ([self._next_reap] if self.doomed else [])
        return min(times) if times else None

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        due = [m for m in self.merging if m.commit_at <= now]
        for m in due:
            self._commit(m)
        if due:
            self.publish()
        if self.doomed and now >= self._next_reap and not self.reap():
            self._next_reap = now + self.retry  # a reader is connected: try again later
        self._start_merges(now)

    def reap(self) -> bool:
        """Delete merged-away files if no reader is connected (else try again later)."""
        if not self.doomed:
            return True
        if reader_connected(self.store.db_path):
            return False
        for name in self.doomed:
            self._path(name).unlink(missing_ok=True)
        self.doomed.clear()
        return True

    def commit_all(self) -> None:
        """At close: commit merges already written; nothing new is started."""
        if self.merging:
            for m in list(self.merging):
                self._commit(m)
            self.publish()
        self.reap()

    def _commit(self, merge: _Merge) -> None:
        gone = set(merge.sources)
        first = self.live.index(merge.sources[0])  # the output takes its first source's place
        self.live = [n for n in self.live[:first] if n not in gone] + [merge.output] + \
                    [n for n in self.live[first:] if n not in gone]
        self.level[merge.output] = merge.level
        for name in merge.sources:
            self.doomed.append(name)
            del self.level[name]
        self.merging.remove(merge)

    def _start_merges(self, now: float) -> None:
        busy = {n for m in self.merging for n in m.sources}
        by_level: dict[int, list[str]] = {}
        for name in self.live:
            if name not in busy:
                by_level.setdefault(self.level[name], []).append(name)
        for lvl, names in sorted(by_level.items()):
            if len(names) >= (self.fanout0 if lvl == 0 else self.fanout):
                out = self.allocate()
                tmp = out.with_name(out.name + ".tmp")
                listing = "[" + ",".join(_sql_str(str(self._path(n))) for n in names) + "]"
                self.con.execute(f"COPY (SELECT * FROM read_parquet({listing}, union_by_name = true)) "
                                 f"TO {_sql_str(str(tmp))} (FORMAT parquet)")
                os.replace(tmp, out)  # invisible to readers until the manifest names it
                self.merging.append(_Merge(now + self.commit_delay, names, out.name, lvl + 1))
