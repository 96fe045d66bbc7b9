"""One audit for a fleet: every instance ships its records to a shared folder that stock DuckDB,
Spark or Trino read as one table.

Layout (Hive partitioning, Parquet):

    <root>/requests/day=YYYY-MM-DD/instance_id=ID/<batch>_<n>.parquet

Each instance keeps its own local store (the chain, verify, erase, purge) and ships, off the
request path, the records of each segment it writes, *without* the erasable columns (the bodies,
the tool calls and the salt): a data subject's erasure then never has to reach into the shared
copy, and the fleet holds who called what, when, under which policy, with what outcome and cost,
each row with its chain hash and body digest. Bodies stay on the instance that served the call.

Exactly once. A segment is linked into a local outbox when written; a shipment is journaled
(`batch.json`: its name and segments) before it starts, writes its files to `<root>/_staging`
and renames them into place (atomic on one file system), then removes its outbox entries and
journal. A crash at any point replays the same batch under the same names, which overwrites what
was already moved: no record is lost or counted twice. Readers never see a partial file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from douane.audit.chain import ERASABLE
from douane.audit.store import _sql_str

log = logging.getLogger(__name__)

TABLE = "requests"
LEFT_OUT = (*ERASABLE, "body_salt")  # stays on the instance: erasable, and the salt that goes with it
JOURNAL = "batch.json"


def fleet_glob(root: Path | str) -> str:
    """The files of the fleet's `requests` table, for read_parquet(..., hive_partitioning = true)."""
    return str(Path(root) / TABLE / "*" / "*" / "*.parquet")


def fleet_view_sql(root: Path | str) -> str:
    """SQL making `requests` the whole fleet's audit (an empty fleet gives an error DuckDB words)."""
    return (f"CREATE OR REPLACE VIEW {TABLE} AS SELECT * FROM read_parquet({_sql_str(fleet_glob(root))}, "
            "hive_partitioning = true, union_by_name = true)")


def query_fleet(root: Path | str, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run SQL with `requests` as the whole fleet's audit; FileNotFoundError when nothing is shipped yet."""
    if not any((Path(root) / TABLE).glob("*/*/*.parquet")):
        raise FileNotFoundError(f"no audit records in {root} yet: instances ship theirs every audit.fleet_every_s "
                                "(and at stop) once their policy sets audit.fleet to this folder")
    con = duckdb.connect()
    try:
        con.execute(fleet_view_sql(root).replace("CREATE OR REPLACE VIEW", "CREATE TEMP VIEW", 1))
        cur = con.execute(sql)
        return [d[0] for d in cur.description or []], cur.fetchall()
    finally:
        con.close()


class FleetShipper:
    """Ships an instance's new segments to the fleet folder (see the module's docstring)."""

    def __init__(self, root: Path, outbox: Path):
        self.root = root
        self.outbox = outbox
        self._has_work = bool(self._queued()) or (outbox / JOURNAL).exists()  # left by an earlier run

    def has_work(self) -> bool:
        """Segments queued, or a batch to replay; cheap (the writer asks before each wait)."""
        return self._has_work

    def enqueue(self, segment: Path) -> None:
        """Queue a segment just written (a hard link: compaction may delete the original first)."""
        self.outbox.mkdir(parents=True, exist_ok=True)
        target = self.outbox / segment.name
        try:
            os.link(segment, target)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            shutil.copyfile(segment, target)
        self._has_work = True

    def ship(self) -> int:
        """Ship what is queued as one batch (after finishing an interrupted one); records shipped."""
        shipped = 0
        journal = self.outbox / JOURNAL
        if journal.exists():
            batch = json.loads(journal.read_text())
            if not batch.get("placed"):
                shipped += self._place(batch["name"], batch["segments"])
            self._clear(batch["name"], batch["segments"])
        queued = self._queued()
        if queued:
            name = queued[0].removesuffix(".parquet")
            self._journal({"name": name, "segments": queued})
            shipped += self._place(name, queued)
            self._clear(name, queued)
        self._has_work = False
        return shipped

    def prune(self, instance: str, keep_days: float, now: datetime | None = None) -> int:
        """Remove this instance's day partitions older than `keep_days` (audit.retention_days.rows)."""
        cutoff = ((now or datetime.now(UTC)) - timedelta(days=keep_days)).date()
        removed = 0
        for day in (self.root / TABLE).glob("day=*"):
            try:
                when = datetime.strptime(day.name.removeprefix("day="), "%Y-%m-%d").date()
            except ValueError:
                continue
            mine = day / f"instance_id={instance}"
            if when < cutoff and mine.is_dir():
                shutil.rmtree(mine)
                removed += 1
        return removed

    def _queued(self) -> list[str]:
        if not self.outbox.is_dir():
            return []
        return sorted(p.name for p in self.outbox.glob("*.parquet"))

    def _journal(self, batch: dict[str, Any]) -> None:
        tmp = self.outbox / (JOURNAL + ".tmp")
        tmp.write_text(json.dumps(batch))
        os.replace(tmp, self.outbox / JOURNAL)

    def _place(self, name: str, segments: list[str]) -> int:
        """Write the batch's files in staging and rename them into place; the journal then says
        so, since a batch is only ever placed whole: replaying it after its outbox entries began
        to go would overwrite its files with fewer records."""
        files = [self.outbox / s for s in segments]
        staging = self.root / "_staging" / name
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        listing = "[" + ", ".join(_sql_str(str(f)) for f in files) + "]"
        con = duckdb.connect(config={"threads": 1})
        try:
            row = con.execute(f"SELECT count(*) FROM read_parquet({listing}, union_by_name = true)").fetchone()
            con.execute(
                f"COPY (SELECT * EXCLUDE ({', '.join(LEFT_OUT)}), strftime(timezone('UTC', ts), '%Y-%m-%d') AS day "
                f"FROM read_parquet({listing}, union_by_name = true)) TO {_sql_str(str(staging))} "
                f"(FORMAT parquet, COMPRESSION zstd, PARTITION_BY (day, instance_id), "
                f"FILENAME_PATTERN {_sql_str(name + '_{i}')})")
        finally:
            con.close()
        for part in sorted(staging.rglob("*.parquet")):
            dest = self.root / TABLE / part.relative_to(staging)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, dest)
        self._journal({"name": name, "segments": segments, "placed": True})
        return int(row[0]) if row else 0

    def _clear(self, name: str, segments: list[str]) -> None:
        shutil.rmtree(self.root / "_staging" / name, ignore_errors=True)
        for s in segments:
            (self.outbox / s).unlink(missing_ok=True)
        (self.outbox / JOURNAL).unlink(missing_ok=True)

