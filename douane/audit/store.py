"""The audit store: Parquet segments written by the proxy, a DuckDB file with a `requests` view.

DuckDB lets one process hold a database file read-write, and while it does no other process can
open it at all. So the proxy never keeps the .duckdb file open: its writer thread appends immutable
Parquet segments (written to a temporary name, then renamed into place), and the .duckdb file holds
only a view over them. Any number of auditors can open it read-only at any time, with
`douane audit query` or stock DuckDB, and see every row written so far. Which segments are live is
said by `manifest.json` beside them (see compaction.py): that is what lets segments be merged
without a reader ever counting a row twice or missing one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import time
from pathlib import Path
from typing import Any

import duckdb

from douane.audit.record import COLUMNS

log = logging.getLogger(__name__)

SCHEMA_SEGMENT = "00000000000000000000-schema.parquet"
MANIFEST = "manifest.json"
VIEW = "requests"
TOOL_CALLS_VIEW = "tool_calls"


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class AuditStore:
    def __init__(self, db_path: str | Path):
        self.db_path = Path(db_path).absolute()
        self.segments = Path(str(self.db_path) + ".segments")

    @property
    def glob(self) -> str:
        return str(self.segments / "*.parquet")

    def segment_files(self) -> list[Path]:
        return sorted(p for p in self.segments.glob("*.parquet") if p.name != SCHEMA_SEGMENT)

    def create_table_sql(self, name: str) -> str:
        return f"CREATE TABLE {name} ({', '.join(f'{c} {t}' for c, t in COLUMNS)})"

    def prepare(self) -> None:
        """Make the segment folder, its empty schema segment, and the view in the .duckdb file."""
        self.segments.mkdir(parents=True, exist_ok=True)
        schema = self.segments / SCHEMA_SEGMENT
        con = duckdb.connect()
        try:
            con.execute(self.create_table_sql("empty"))
            tmp = schema.with_suffix(".tmp")
            con.execute(f"COPY empty TO {_sql_str(str(tmp))} (FORMAT parquet)")
            os.replace(tmp, schema)
        finally:
            con.close()
        manifest = self.segments / MANIFEST
        if not manifest.exists():
            manifest.write_text(json.dumps({"live": [SCHEMA_SEGMENT]}))
        view = (f"CREATE OR REPLACE VIEW {VIEW} AS SELECT * EXCLUDE (filename) FROM "
                f"read_parquet({_sql_str(self.glob)}, union_by_name = true, filename = true) "
                f"WHERE parse_filename(filename) IN "
                f"(SELECT unnest(live) FROM read_json({_sql_str(str(manifest))}, columns = {{'live': 'VARCHAR[]'}}))")
        for attempt in range(50):
            try:
                db = duckdb.connect(str(self.db_path))
            except duckdb.IOException as e:
                if "lock" not in str(e).lower():
                    raise
                if attempt == 49:
                    log.warning("audit: %s is held open read-write by another process; the view was not "
                                "refreshed (segments are still written). Open it with read_only.", self.db_path)
                    return
                time.sleep(0.1)
                continue
            try:
                db.execute(view)
                db.execute(TOOL_CALLS_SQL)
            finally:
                db.close()
            return


# One row per tool call seen (requests.tool_calls unnested), with who made the call it was seen in.
TOOL_CALLS_SQL = (f"CREATE OR REPLACE VIEW {TOOL_CALLS_VIEW} AS SELECT id AS request_id, ts, client, team, provider, "
                  f"model, t.position, t.tool.direction AS direction, t.tool.tool AS tool, "
                  f"t.tool.arguments AS arguments, t.tool.decision AS decision, t.tool.rule AS rule "
                  f"FROM {VIEW}, unnest(tool_calls) WITH ORDINALITY AS t(tool, position)")


_FLOCK = "hh4xqqi4x"  # struct flock on 64-bit Linux: type, whence, start, len, pid


def reader_connected(db_path: Path) -> bool:
    """Whether any process holds DuckDB's lock on the .duckdb file, i.e. has a connection open.

    Asks the kernel (F_GETLK) without taking the lock: taking it, even for microseconds, would
    make a reader that connects at that instant fail with a lock error.
    """
    try:
        fd = os.open(db_path, os.O_RDONLY)
    except OSError:
        return True  # cannot tell: assume someone reads
    try:
        probe = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        result = fcntl.fcntl(fd, fcntl.F_GETLK, probe)
        return struct.unpack(_FLOCK, result)[0] != fcntl.F_UNLCK
    except OSError:
        return True
    finally:
        os.close(fd)


def open_reader(db_path: str | Path, attempts: int = 50) -> duckdb.DuckDBPyConnection:
    """A read-only connection; waits out another process's brief read-write hold."""
    path = Path(db_path)
    if not path.exists():
        raise FileNotFoundError(f"no audit store at {path}: start the proxy once (douane run) or pass --db PATH")
    for attempt in range(attempts):
        try:
            return duckdb.connect(str(path), read_only=True)
        except duckdb.IOException as e:
            if "lock" not in str(e).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def query(db_path: str | Path, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run SQL against the store; retried once if a compaction removed a segment mid-read."""
    for attempt in range(3):
        con = open_reader(db_path)
        try:
            cur = con.execute(sql, params)
            columns = [d[0] for d in cur.description or []]
            return columns, cur.fetchall()
        except duckdb.IOException as e:
            if attempt == 2 or "No such file" not in str(e) and "No files found" not in str(e):
                raise
        finally:
            con.close()
    raise AssertionError("unreachable")
