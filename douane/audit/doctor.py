"""`douane audit doctor`: what is wrong with an audit store, and the repairs that lose nothing.

Diagnosis only reads. Repair takes the store's writer lock (so never while `douane run` writes
to it), then: removes stale temporary files, moves unreadable segments to `quarantine/`, deletes
merge outputs the manifest names as never committed, rebuilds a lost or broken manifest from the
segments, sets aside segments the manifest does not name whose rows are all in the store anyway
(and adopts those whose rows are not), rewrites an outdated view, and folds spill files back in.
Nothing the manifest does not name is ever deleted: what is set aside goes to `quarantine/`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from douane.audit.manifest import SEGMENT_NAME, SPILL_NAME, Manifest, SegmentInfo, inspect_segment, read_manifest
from douane.audit.store import MANIFEST, AuditStore, _sql_str, open_reader
from douane.audit.writer import AuditWriter

log = logging.getLogger(__name__)


@dataclass
class Problem:
    kind: str  # manifest, missing_segment, corrupt_segment, stray_segment, uncommitted_merge, temp_file, spill, view
    path: str
    detail: str
    repair: str  # what --repair does about it
    fixed: bool = False


@dataclass
class Report:
    db: str
    writer_running: bool
    rows: int | None = None
    live_segments: int = 0
    quarantined_files: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not [p for p in self.problems if not p.fixed]

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "ok": self.ok}


def diagnose(store: AuditStore) -> Report:
    """Every problem found, reading every value of every segment (a footer can be fine over
    corrupt pages)."""
    running = store.writer_running()
    report = Report(str(store.db_path), running)
    if not store.db_path.exists() and not store.segments.exists():
        report.problems.append(Problem("store", str(store.db_path), "no audit store here",
                                       "none: start the proxy once (douane run) or pass --db PATH"))
        return report
    manifest, why = read_manifest(store.segments / MANIFEST)
    infos = _inspect_all(store)
    if manifest is None:
        report.problems.append(Problem("manifest", str(store.segments / MANIFEST), f"the manifest is {why}",
                                       "rebuild it from the segments"))
    for info in infos.values():
        if info.error:
            report.problems.append(Problem("corrupt_segment", str(store.segments / info.name), info.error,
                                           "move it to quarantine/ (its rows are no longer queried)"))
    if manifest is not None:
        _check_against_manifest(store, manifest, infos, report)
        report.live_segments = len(manifest.live)
    if not running:
        for tmp in sorted(store.segments.glob("*.tmp")):
            report.problems.append(Problem("temp_file", str(tmp), "left by a run that did not finish", "remove it"))
    for spill in _spill_files(store):
        report.problems.append(Problem("spill", str(spill), f"{_count_lines(spill)} record(s) not in the store",
                                       "fold them into the store"))
    if store.db_path.exists() and manifest is not None and not store.view_is_current():
        report.problems.append(Problem("view", str(store.db_path), "the requests view is missing or outdated",
                                       "rewrite it"))
    report.quarantined_files = len(list(store.quarantine.glob("*"))) if store.quarantine.exists() else 0
    report.rows = _rows(store)
    return report


def _check_against_manifest(store: AuditStore, manifest: Manifest, infos: dict[str, SegmentInfo],
                            report: Report) -> None:
    for name in manifest.live:
        if name not in infos:
            report.problems.append(Problem("missing_segment", str(store.segments / name),
                                           "named as live by the manifest but gone: its rows are lost",
                                           "drop it from the manifest"))
    if not report.writer_running:
        for name in manifest.pending:
            if name in infos and name not in manifest.live:
                report.problems.append(Problem("uncommitted_merge", str(store.segments / name),
                                               "a merge output that was never committed (its sources hold "
                                               "its rows)", "delete it (the manifest names it)"))
    named = set(manifest.live) | set(manifest.doomed) | set(manifest.pending)
    for name, info in infos.items():
        if name not in named and info.error is None:
            report.problems.append(Problem("stray_segment", str(store.segments / name),
                                           f"{info.rows} row(s) in a segment the manifest does not name",
                                           "set aside in quarantine/ if the store holds all its rows, "
                                           "else adopt it"))


def repair(store: AuditStore) -> Report:
    """Fix what diagnose() finds; raises StoreBusy while a proxy writes to the store."""
    before = diagnose(store)
    fd = store.lock_writer()
    writer = AuditWriter(store)
    handed_over = False
    try:
        for tmp in store.segments.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        infos = _inspect_all(store)
        for info in infos.values():
            if info.error:
                _set_aside(store, info.name, f"unreadable: {info.error}")
        manifest, _ = read_manifest(store.segments / MANIFEST)
        if manifest is not None:
            _repair_manifest(store, manifest, {n: i for n, i in infos.items() if i.error is None})
        handed_over = True
        writer.start(lock=fd)  # then close(): it opens the store first, rebuilding a lost manifest,
    finally:                   # rewriting the view and folding spill files in
        if handed_over:
            writer.close(timeout=30)
        else:
            os.close(fd)
    after = diagnose(store)
    remaining = {(p.kind, p.path) for p in after.problems}
    for p in before.problems:
        p.fixed = (p.kind, p.path) not in remaining
    after.problems = before.problems + [p for p in after.problems
                                        if (p.kind, p.path) not in {(b.kind, b.path) for b in before.problems}]
    return after


def _repair_manifest(store: AuditStore, manifest: Manifest, good: dict[str, SegmentInfo]) -> None:
    """Drop what is gone, delete uncommitted merge outputs, and place stray segments by their rows."""
    for name in manifest.pending:
        if name not in manifest.live:
            (store.segments / name).unlink(missing_ok=True)
    manifest.pending = []
    manifest.live = [n for n in manifest.live if n in good]
    named = set(manifest.live) | set(manifest.doomed)
    con = duckdb.connect()
    try:
        for name in sorted(set(good) - named):
            unique = _rows_not_in(con, store, store.segments / name, manifest.live)
            if unique == 0:
                _set_aside(store, name, "not named by the manifest; the store holds all its rows")
            elif unique == good[name].rows:
                manifest.live.append(name)
                manifest.level[name] = good[name].level
                log.warning("audit doctor: adopted %s (%d row(s) the store did not have)", name, unique)
            else:
                log.error("audit doctor: %s holds %d of its %d row(s) that the store lacks; left in place",
                          name, unique, good[name].rows)
    finally:
        con.close()
    tmp = store.segments / (MANIFEST + ".tmp")
    tmp.write_text(manifest.to_json())
    os.replace(tmp, store.segments / MANIFEST)


def _rows_not_in(con: duckdb.DuckDBPyConnection, store: AuditStore, path: Path, live: list[str]) -> int:
    if not live:
        return int(con.execute(f"SELECT count(*) FROM read_parquet({_sql_str(str(path))})").fetchone()[0])  # type: ignore[index]
    listing = "[" + ",".join(_sql_str(str(store.segments / n)) for n in live) + "]"
    return int(con.execute(
        f"SELECT count(*) FROM read_parquet({_sql_str(str(path))}) WHERE id NOT IN "
        f"(SELECT id FROM read_parquet({listing}, union_by_name = true))").fetchone()[0])  # type: ignore[index]


def _set_aside(store: AuditStore, name: str, why: str) -> None:
    store.quarantine.mkdir(exist_ok=True)
    os.replace(store.segments / name, store.quarantine / name)
    log.warning("audit doctor: moved %s to %s (%s)", name, store.quarantine, why)


def _inspect_all(store: AuditStore) -> dict[str, SegmentInfo]:
    con = duckdb.connect()
    try:
        return {p.name: inspect_segment(con, p, deep=True) for p in store.segment_files()
                if SEGMENT_NAME.fullmatch(p.name)}
    finally:
        con.close()


def _spill_files(store: AuditStore) -> list[Path]:
    found = [*store.segments.glob("unwritten-*.jsonl"), *store.spill_fallback.glob("unwritten-*.jsonl")]
    return sorted(p for p in found if SPILL_NAME.fullmatch(p.name))


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return 0


def _rows(store: AuditStore) -> int | None:
    try:
        con = open_reader(store.db_path, attempts=5)
    except (OSError, duckdb.Error):
        return None
    try:
        return int(con.execute("SELECT count(*) FROM requests").fetchone()[0])  # type: ignore[index]
    except duckdb.Error:
        return None
    finally:
        con.close()
