"""The set of live audit segments, published in a manifest, merged without readers noticing.

A query on the `requests` view lists the segment files when it binds (reading their footers),
opens them again when it scans, and keeps the rows of the files `manifest.json` names. So that no
query fails on a missing or changed file, counts a row twice, or misses a committed one:
- a segment is written once under a fresh name (atomic rename) and never changed afterwards;
  the manifest (replaced atomically) then names it;
- a merge is first named in the manifest as pending, writes its output the same way (the output
  carries its sources' names in its Parquet metadata), waits `commit_delay` (every query that
  listed files before the output existed has read the manifest by then), then swaps sources for
  output in one manifest replace, naming the sources as doomed;
- doomed files are deleted only when no reader is connected: a DuckDB reader holds a shared
  lock on the .duckdb file for as long as it is connected, which the writer can see (F_GETLK)
  without taking the lock. A reader connecting right after that check lists files only after
  opening the database and binding its query, by which time the deletions are done. With an
  auditor connected for hours, merged files wait on disk (the manifest keeps them out of every
  result) until it disconnects.
Only files the manifest names as doomed or pending are ever deleted. An unreadable segment is
moved to `quarantine/` (out of the view's glob) and reported; a lost manifest is rebuilt from the
segments (manifest.py).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from douane.audit.manifest import (
    KV_LEVEL,
    KV_SOURCES,
    SEGMENT_NAME,
    Manifest,
    inspect_segment,
    read_manifest,
    rebuild,
)
from douane.audit.store import MANIFEST, AuditStore, _sql_str, reader_connected

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
        self.m = Manifest()
        self.merging: list[_Merge] = []
        self.quarantined: list[str] = []  # segments moved aside by this run
        self._published = ""
        self._next_reap = 0.0
        self._seq = 0

    @property
    def live(self) -> list[str]:
        return self.m.live

    @property
    def level(self) -> dict[str, int]:
        return self.m.level

    @property
    def doomed(self) -> list[str]:
        return self.m.doomed

    def _path(self, name: str) -> Path:
        return self.store.segments / name

    def publish(self) -> None:
        text = self.m.to_json()
        tmp = self._path(MANIFEST + ".tmp")
        try:
            tmp.write_text(text)
            os.replace(tmp, self._path(MANIFEST))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._published = text

    def start(self) -> None:
        """Adopt what an earlier run left: a manifest as it is, or one rebuilt from the segments."""
        on_disk = {p.name for p in self.store.segment_files() if SEGMENT_NAME.fullmatch(p.name)}
        manifest, why = read_manifest(self._path(MANIFEST))
        if manifest is None:
            log.warning("audit: %s is %s: rebuilding it from the %d segment(s) on disk; nothing is deleted",
                        self._path(MANIFEST), why, len(on_disk))
            infos = [inspect_segment(self.con, self._path(n)) for n in sorted(on_disk)]
            for info in infos:
                if info.error:
                    self.quarantine(info.name, info.error)
            manifest = rebuild(infos)
        else:
            self._adopt(manifest, on_disk)
        manifest.folded = {spill: seg for spill, seg in manifest.folded.items()
                           if seg in manifest.live and self._path(spill).exists()}
        self.m = manifest
        self.publish()
        self.reap()

    def _adopt(self, manifest: Manifest, on_disk: set[str]) -> None:
        """Check a readable manifest against the disk: gone or unreadable live segments are dropped
        (and said), merges that never committed are doomed, files it does not name are left alone."""
        manifest.doomed = sorted(set(manifest.doomed) | {p for p in manifest.pending if p not in manifest.live})
        manifest.pending = []
        gone = [n for n in manifest.live if n not in on_disk]
        if gone:
            log.error("audit: %d segment(s) named by the manifest are missing, their rows lost: %s",
                      len(gone), ", ".join(gone))
        manifest.live = [n for n in manifest.live if n in on_disk]
        for name in list(manifest.live):
            info = inspect_segment(self.con, self._path(name))
            if info.error:
                self.quarantine(info.name, info.error, manifest)
        stray = sorted(on_disk - set(manifest.live) - set(manifest.doomed) - set(self.quarantined))
        if stray:
            log.warning("audit: %d segment file(s) not named by the manifest are left in place and not queried: "
                        "%s; see douane audit doctor", len(stray), ", ".join(stray))
        manifest.level = {n: manifest.level.get(n, 0) for n in manifest.live}

    def quarantine(self, name: str, why: str, manifest: Manifest | None = None) -> None:
        """Move an unreadable segment out of the view's reach, and say so."""
        m = manifest or self.m
        target = self.store.quarantine / name
        self.store.quarantine.mkdir(exist_ok=True)
        try:
            os.replace(self._path(name), target)
        except FileNotFoundError:
            why, target = f"{why}; the file is gone", self._path(name)
        self.quarantined.append(name)
        m.live = [n for n in m.live if n != name]
        m.level.pop(name, None)
        log.error("audit: segment %s is unreadable (%s): moved to %s; its rows are no longer queried",
                  name, why, target)

    def verify(self) -> None:
        """Put back a manifest someone changed, and quarantine live segments that became unreadable."""
        try:
            on_disk = self._path(MANIFEST).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            on_disk = None
        changed = False
        for name in list(self.m.live):
            if name in {s for m in self.merging for s in m.sources}:
                continue
            info = inspect_segment(self.con, self._path(name))
            if info.error:
                self.quarantine(name, info.error)
                changed = True
        if changed or on_disk != self._published:
            if on_disk != self._published:
                log.error("audit: %s was changed or removed by someone else; writing it again",
                          self._path(MANIFEST))
            self.publish()

    def allocate(self) -> Path:
        """A fresh name for a new segment (names are never reused: readers cache footers by name)."""
        self._seq += 1
        return self._path(f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.parquet")

    def add(self, path: Path, level: int = 0, spill: str | None = None) -> None:
        """Name a written segment in the manifest; if that fails, the segment is removed again so
        that its records, written again later, never count twice."""
        before = copy.deepcopy(self.m)
        self.m.live.append(path.name)
        self.m.level[path.name] = level
        if spill:
            self.m.folded[spill] = path.name
        try:
            self.publish()
        except BaseException:
            self.m = before
            path.unlink(missing_ok=True)
            raise

    def next_deadline(self) -> float | None:
        times = [m.commit_at for m in self.merging] + ([self._next_reap] if self.m.doomed else [])
        return min(times) if times else None

    def tick(self, now: float) -> None:
        due = [m for m in self.merging if m.commit_at <= now]
        if due:
            before, merging = copy.deepcopy(self.m), list(self.merging)
            for m in due:
                self._commit(m)
            try:
                self.publish()
            except BaseException:
                self.m, self.merging = before, merging
                raise
        if self.m.doomed and now >= self._next_reap and not self.reap():
            self._next_reap = now + self.retry  # a reader is connected: try again later
        self._start_merges(now)

    def reap(self) -> bool:
        """Delete doomed files while no reader is connected (else try again later).

        The check is made again before each file: a reader that connects while files are being
        deleted lists the folder right after, and must not list a file that is gone before it reads
        it. Checking once for the whole batch left that window open for as long as the batch took
        (seen under load: a reader failed on a file deleted under it)."""
        while self.m.doomed:
            if reader_connected(self.store.db_path):
                return False
            name = self.m.doomed[0]
            if SEGMENT_NAME.fullmatch(name) and name not in self.m.live:
                self._path(name).unlink(missing_ok=True)
            self.m.doomed.pop(0)
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
        first = self.m.live.index(merge.sources[0])  # the output takes its first source's place
        self.m.live = [n for n in self.m.live[:first] if n not in gone] + [merge.output] + \
                      [n for n in self.m.live[first:] if n not in gone]
        self.m.level[merge.output] = merge.level
        self.m.pending = [n for n in self.m.pending if n != merge.output]
        for name in merge.sources:
            self.m.doomed.append(name)
            del self.m.level[name]
        self.merging.remove(merge)

    def _start_merges(self, now: float) -> None:
        busy = {n for m in self.merging for n in m.sources}
        by_level: dict[int, list[str]] = {}
        for name in self.m.live:
            if name not in busy:
                by_level.setdefault(self.m.level[name], []).append(name)
        for lvl, names in sorted(by_level.items()):
            if len(names) >= (self.fanout0 if lvl == 0 else self.fanout):
                self._merge(names, lvl + 1, now)

    def _merge(self, names: list[str], level: int, now: float) -> None:
        out = self.allocate()
        self.m.pending.append(out.name)  # named before it exists: a crash leaves nothing unnamed
        try:
            self.publish()
        except BaseException:
            self.m.pending.remove(out.name)
            raise
        tmp = out.with_name(out.name + ".tmp")
        listing = "[" + ",".join(_sql_str(str(self._path(n))) for n in names) + "]"
        kv = f"{{{_sql_str(KV_SOURCES)}: {_sql_str(json.dumps(names))}, {_sql_str(KV_LEVEL)}: '{level}'}}"
        try:
            self.con.execute(f"COPY (SELECT * FROM read_parquet({listing}, union_by_name = true)) "
                             f"TO {_sql_str(str(tmp))} (FORMAT parquet, KV_METADATA {kv})")
            os.replace(tmp, out)  # invisible to readers until the manifest names it
        except BaseException:
            tmp.unlink(missing_ok=True)
            self.m.pending.remove(out.name)
            self._quarantine_unreadable(names)
            raise
        self.merging.append(_Merge(now + self.commit_delay, names, out.name, level))

    def _quarantine_unreadable(self, names: list[str]) -> None:
        """After a failed merge: one unreadable source would make every later merge fail too."""
        for name in names:
            if self._path(name).exists() and (info := inspect_segment(self.con, self._path(name))).error:
                self.quarantine(name, info.error)
