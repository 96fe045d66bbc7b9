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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from douane.audit.chain import KV_CHAIN, Head, SegmentChain
from douane.audit.manifest import (
    KV_LEVEL,
    KV_PLACE,
    KV_REWRITE,
    KV_SOURCES,
    SEGMENT_NAME,
    Manifest,
    inspect_segment,
    read_manifest,
    rebuild,
)
from douane.audit.seal import make_seal, seal_matches
from douane.audit.signing import Signer
from douane.audit.store import MANIFEST, AuditStore, _sql_str, reader_connected

log = logging.getLogger(__name__)

# Segments are zstd-compressed, and a merge orders its rows by caller and time: a chat client
# resends its whole history every turn, so a caller's consecutive calls repeat each other and
# zstd stores the repetition once (a 40-turn chat: BENCHMARKS.md, bench_audit_storage). Row order
# inside a segment means nothing to the chain: verify orders by instance and seq.
SEGMENT_FORMAT = "FORMAT parquet, COMPRESSION zstd"
MERGE_ORDER = "ORDER BY client, ts, instance_id, seq"


@dataclass
class _Merge:
    commit_at: float
    sources: list[str]
    output: str
    level: int
    seal: dict[str, Any] = field(default_factory=dict)


@dataclass
class Rewrite:
    """Segments rewritten together (bodies erased, expired rows removed): each output takes its
    source's place, all in one manifest replace, so no reader sees a half-done job."""

    outputs: dict[str, str]  # source -> output
    seals: dict[str, dict[str, Any]] = field(default_factory=dict)  # output -> seal
    commit_at: float = 0.0
    written: bool = False
    on_commit: Callable[[], None] | None = None


class SegmentSet:
    def __init__(self, store: AuditStore, con: duckdb.DuckDBPyConnection, fanout0: int = 64,
                 fanout: int = 16, commit_delay: float = 1.0, retry: float = 5.0, signer: Signer | None = None):
        self.store = store
        self.con = con
        self.fanout0 = fanout0
        self.fanout = fanout
        self.commit_delay = commit_delay
        self.retry = retry
        self.signer = signer
        self.m = Manifest()
        self.merging: list[_Merge] = []
        self.rewriting: Rewrite | None = None
        self.suspect: dict[str, str] = {}  # live segments whose bytes no longer match their seal: never merged
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
        m.seals.pop(name, None)
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

    def add(self, path: Path, level: int = 0, spill: str | None = None, head: Head | None = None,
            chain: SegmentChain | None = None) -> None:
        """Name a written segment in the manifest, with its seal and the chain's new head; if that
        fails, the segment is removed again so that its records, written again later, never count twice."""
        before = copy.deepcopy(self.m)
        try:
            self.m.seals[path.name] = make_seal(path, chain, self.signer)
            self.m.live.append(path.name)
            self.m.level[path.name] = level
            if spill:
                self.m.folded[spill] = path.name
            if head is not None:
                self.m.heads[head.instance] = [head.seq, head.hash]
            self.publish()
        except BaseException:
            self.m = before
            path.unlink(missing_ok=True)
            raise

    def next_deadline(self) -> float | None:
        times = [m.commit_at for m in self.merging] + ([self._next_reap] if self.m.doomed else [])
        if self.rewriting is not None and self.rewriting.written:
            times.append(self.rewriting.commit_at)
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
        rw = self.rewriting
        if rw is not None and rw.written and rw.commit_at <= now:
            self._commit_rewrite(rw)
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
        """At close: commit merges and rewrites already written; nothing new is started."""
        if self.merging:
            for m in list(self.merging):
                self._commit(m)
            self.publish()
        if self.rewriting is not None and self.rewriting.written:
            self._commit_rewrite(self.rewriting)
        self.reap()

    def _commit(self, merge: _Merge) -> None:
        gone = set(merge.sources)
        first = self.m.live.index(merge.sources[0])  # the output takes its first source's place
        self.m.live = [n for n in self.m.live[:first] if n not in gone] + [merge.output] + \
                      [n for n in self.m.live[first:] if n not in gone]
        self.m.level[merge.output] = merge.level
        if merge.seal:
            self.m.seals[merge.output] = merge.seal
        self.m.pending = [n for n in self.m.pending if n != merge.output]
        for name in merge.sources:
            self.m.doomed.append(name)
            del self.m.level[name]
            self.m.seals.pop(name, None)
        self.merging.remove(merge)

    # -- rewrites (erasure, expiry) ---------------------------------------------------------------

    def begin_rewrite(self, sources: list[str]) -> Rewrite:
        """Name the outputs of a rewrite as pending (a crash leaves nothing unnamed); the caller
        writes each with write_rewritten(), then finish_rewrite() schedules the one commit."""
        assert self.rewriting is None and not self.merging, "one rewrite at a time, and no merge under way"
        rw = Rewrite({src: self.allocate().name for src in sources})
        self.m.pending.extend(rw.outputs.values())
        try:
            self.publish()
        except BaseException:
            self.m.pending = [n for n in self.m.pending if n not in rw.outputs.values()]
            raise
        self.rewriting = rw
        return rw

    def write_rewritten(self, rw: Rewrite, source: str, select_sql: str, chain: SegmentChain | None) -> None:
        """Write one output: `select_sql` (rows of the source, changed) copied to a sealed segment
        that claims its source, at the source's level and place."""
        out = self._path(rw.outputs[source])
        tmp = out.with_name(out.name + ".tmp")
        place = self._place(source)
        kv = {KV_SOURCES: json.dumps([source]), KV_LEVEL: str(self.m.level.get(source, 0)), KV_REWRITE: "1",
              KV_PLACE: place}
        if chain is not None:
            kv[KV_CHAIN] = chain.to_json()
        try:
            self.con.execute(f"COPY ({select_sql}) TO {_sql_str(str(tmp))} ({SEGMENT_FORMAT}, KV_METADATA {_kv(kv)})")
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        rw.seals[out.name] = make_seal(out, chain, self.signer)

    def _place(self, source: str) -> str:
        info = inspect_segment(self.con, self._path(source))
        return info.place or source

    def finish_rewrite(self, rw: Rewrite, now: float, on_commit: Callable[[], None] | None = None) -> None:
        rw.commit_at = now + self.commit_delay
        rw.written = True
        rw.on_commit = on_commit

    def abort_rewrite(self, rw: Rewrite) -> None:
        """Give up a rewrite not yet committed: its outputs are doomed (the manifest names them)."""
        outputs = set(rw.outputs.values())
        self.m.pending = [n for n in self.m.pending if n not in outputs]
        self.m.doomed.extend(n for n in outputs if self._path(n).exists())
        self.rewriting = None
        self.publish()

    def _commit_rewrite(self, rw: Rewrite) -> None:
        before = copy.deepcopy(self.m)
        for src, out in rw.outputs.items():
            if src in self.m.live:
                self.m.live[self.m.live.index(src)] = out
                self.m.level[out] = self.m.level.pop(src)
                self.m.seals.pop(src, None)
                self.m.seals[out] = rw.seals[out]
                self.m.doomed.append(src)
            else:  # gone meanwhile (quarantined): its output is not wanted either
                self.m.doomed.append(out)
            self.m.pending = [n for n in self.m.pending if n != out]
        try:
            self.publish()
        except BaseException:
            self.m = before
            raise
        self.rewriting = None
        if rw.on_commit is not None:
            rw.on_commit()

    # -- merges -----------------------------------------------------------------------------------

    def _start_merges(self, now: float) -> None:
        if self.rewriting is not None:
            return  # a rewrite holds segments in place until it commits; merges resume after
        busy = {n for m in self.merging for n in m.sources} | set(self.suspect)
        by_level: dict[int, list[str]] = {}
        for name in self.m.live:
            if name not in busy:
                by_level.setdefault(self.m.level[name], []).append(name)
        for lvl, names in sorted(by_level.items()):
            if len(names) >= (self.fanout0 if lvl == 0 else self.fanout):
                self._merge(names, lvl + 1, now)

    def _merge(self, names: list[str], level: int, now: float) -> None:
        if not self._still_sealed(names):
            return
        infos = [inspect_segment(self.con, self._path(n)) for n in names]
        chain = _combined([i.chain for i in infos])
        place = min(i.place or i.name for i in infos)
        out = self.allocate()
        self.m.pending.append(out.name)  # named before it exists: a crash leaves nothing unnamed
        try:
            self.publish()
        except BaseException:
            self.m.pending.remove(out.name)
            raise
        tmp = out.with_name(out.name + ".tmp")
        listing = "[" + ",".join(_sql_str(str(self._path(n))) for n in names) + "]"
        kv = {KV_SOURCES: json.dumps(names), KV_LEVEL: str(level), KV_PLACE: place}
        if chain is not None:
            kv[KV_CHAIN] = chain.to_json()
        try:
            self.con.execute(f"COPY (SELECT * FROM read_parquet({listing}, union_by_name = true) {MERGE_ORDER}) "
                             f"TO {_sql_str(str(tmp))} ({SEGMENT_FORMAT}, KV_METADATA {_kv(kv)})")
            os.replace(tmp, out)  # invisible to readers until the manifest names it
            seal = make_seal(out, chain, self.signer)
        except BaseException:
            tmp.unlink(missing_ok=True)
            self.m.pending.remove(out.name)
            self._quarantine_unreadable(names)
            raise
        self.merging.append(_Merge(now + self.commit_delay, names, out.name, level, seal))

    def _still_sealed(self, names: list[str]) -> bool:
        """Whether every segment about to be read still has the bytes douane sealed: one changed on
        disk is left as it is (never merged into a freshly sealed file) for verify to report."""
        ok = True
        for name in names:
            seal = self.m.seals.get(name)
            problem = seal_matches(self._path(name), seal) if seal else None
            if problem:
                self.suspect[name] = problem
                log.error("audit: segment %s was changed outside douane (%s); it is no longer merged, and "
                          "douane audit verify says which records differ", name, problem)
                ok = False
        return ok

    def check_sealed(self, names: list[str]) -> list[str]:
        """The segments among `names` whose bytes no longer match their seal (logged, set apart from merges)."""
        self._still_sealed(names)
        return [n for n in names if n in self.suspect]

    def _quarantine_unreadable(self, names: list[str]) -> None:
        """After a failed merge: one unreadable source would make every later merge fail too."""
        for name in names:
            if self._path(name).exists() and (info := inspect_segment(self.con, self._path(name))).error:
                self.quarantine(name, info.error)


def _kv(values: dict[str, str]) -> str:
    return "{" + ", ".join(f"{_sql_str(k)}: {_sql_str(v)}" for k, v in values.items()) + "}"


def _combined(chains: list[SegmentChain | None]) -> SegmentChain | None:
    """The chain commitment of a merge's output, from its sources' (in their order)."""
    out: SegmentChain | None = None
    for chain in chains:
        if chain is not None:
            out = chain if out is None else out.merged_with(chain)
    return out
