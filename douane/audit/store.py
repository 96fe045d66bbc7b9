"""The audit store: Parquet segments written by the proxy, a DuckDB file with a `requests` view.

DuckDB lets one process hold a database file read-write, and while it does no other process can
open it at all. So the proxy never keeps the .duckdb file open: its writer thread appends immutable
Parquet segments (written to a temporary name, then renamed into place), and the .duckdb file holds
only a view over them. Any number of auditors can open it read-only at any time, with
`douane audit query` or stock DuckDB, and see every row written so far. Which segments are live is
said by `manifest.json` beside them (see compaction.py): that is what lets segments be merged
without a reader ever counting a row twice or missing one.

No absolute path is stored: the view finds the segments folder beside whichever .duckdb file
holds it (see AuditStore._beside), so a copy of the store (the .duckdb file and its segments
folder, side by side) reads its own segments. DuckDB resolves a relative path against the reader's
working directory, or the `file_search_path` setting: `douane audit query` sets it to the store's
folder; the README says what stock DuckDB users do when they ATTACH a store.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from douane.audit.chain import INSTANCE_ID, make_instance_id
from douane.audit.record import COLUMNS

log = logging.getLogger(__name__)

SCHEMA_SEGMENT = "00000000000000000000-schema.parquet"
MANIFEST = "manifest.json"
VIEW = "requests"
QUARANTINE = "quarantine"
WRITER_LOCK = "writer.lock"
TOOL_CALLS_VIEW = "tool_calls"
INSTANCE_FILE = "instance"


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class StoreBusy(OSError):
    """Another process writes to this store: two writers would overwrite each other's manifest."""


class AuditStore:
    def __init__(self, db_path: str | Path):
        self.db_path = Path(db_path).absolute()
        self.segments = Path(str(self.db_path) + ".segments")

    @property
    def folder(self) -> Path:
        """Where the view's relative paths start."""
        return self.db_path.parent

    @property
    def relative_segments(self) -> str:
        return self.segments.name

    @property
    def quarantine(self) -> Path:
        return self.segments / QUARANTINE

    @property
    def spill_fallback(self) -> Path:
        """Where records go at exit when the segments folder takes no more (a full disk): the
        system temp folder, in a folder named after this store, looked into by the next start."""
        key = hashlib.sha256(str(self.db_path).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"douane-spill-{key}"

    def segment_files(self) -> list[Path]:
        return sorted(p for p in self.segments.glob("*.parquet") if p.name != SCHEMA_SEGMENT)

    def create_table_sql(self, name: str) -> str:
        return f"CREATE TABLE {name} ({', '.join(f'{c} {t}' for c, t in COLUMNS)})"

    def view_sql(self) -> str:
        return (f"CREATE OR REPLACE VIEW {VIEW} AS SELECT * EXCLUDE (filename) FROM "
                f"read_parquet({self._beside('*.parquet')}, union_by_name = true, filename = true) "
                f"WHERE parse_filename(filename) IN "
                f"(SELECT unnest(live) FROM read_json({self._beside(MANIFEST)}, columns = {{'live': 'VARCHAR[]'}}))")

    def _beside(self, tail: str) -> str:
        """SQL for a path in the segments folder next to whichever .duckdb file holds the view.

        No absolute path is stored, so a copy reads its own segments. DuckDB resolves a relative
        path against the reader's working directory (or `file_search_path`), not the database's
        folder; but a reader that opened the file as its database has `temp_directory` set to
        `<that path>.tmp` by default, which locates the file wherever the reader runs from. When
        it does not (the store ATTACHed to another database, a custom temp_directory) the path is
        the plain relative one.
        """
        name = self.db_path.name
        tmp = "current_setting('temp_directory')"
        return (f"CASE WHEN {tmp} = {_sql_str(name + '.tmp')} OR suffix({tmp}, {_sql_str('/' + name + '.tmp')}) "
                f"THEN left({tmp}, -4) || {_sql_str('.segments/' + tail)} "
                f"ELSE {_sql_str(self.relative_segments + '/' + tail)} END")

    def instance_id(self) -> str:
        """The id this store's writer chains its records under, unless DOUANE_INSTANCE_ID names
        one: made once (the host's name and random bits) and kept beside the segments."""
        path = self.segments / INSTANCE_FILE
        try:
            value = path.read_text(encoding="utf-8").strip()
            if INSTANCE_ID.fullmatch(value):
                return value
            log.error("audit: %s does not hold an instance id (%r); making a new one", path, value[:80])
        except FileNotFoundError:
            pass
        value = make_instance_id()
        tmp = path.with_name(INSTANCE_FILE + ".tmp")
        tmp.write_text(value + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return value

    def lock_writer(self) -> int:
        """Take the store's writer lock (held until the returned descriptor is closed)."""
        self.segments.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.segments / WRITER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreBusy(errno.EBUSY, f"another process (pid {holder}) is writing to the audit store "
                                         f"{self.db_path}: one proxy per store; give this one its own --db, "
                                         f"or stop the other first") from None
        with contextlib.suppress(OSError):  # a full disk may refuse even these few bytes
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def writer_running(self) -> bool:
        """Whether a process holds the writer lock (a running `douane run`)."""
        try:
            fd = os.open(self.segments / WRITER_LOCK, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def prepare(self, con: duckdb.DuckDBPyConnection | None = None, view: bool = True) -> None:
        """Make the segment folder, its schema segment, a manifest for a new store, and the view
        (which needs a manifest: the writer asks for it once it has adopted or rebuilt one).

        Only what is missing or out of date is written, so a restart on a full disk does not
        fail on files it already has.
        """
        self.segments.mkdir(parents=True, exist_ok=True)
        own = con is None
        con = con or duckdb.connect()
        try:
            self._write_schema_segment(con)
        finally:
            if own:
                con.close()
        manifest = self.segments / MANIFEST
        if not manifest.exists() and not self.segment_files():
            tmp = manifest.with_name(MANIFEST + ".tmp")
            tmp.write_text('{"live": ["' + SCHEMA_SEGMENT + '"]}')
            os.replace(tmp, manifest)
        if view:
            self.ensure_view()

    def ensure_view(self) -> None:
        if not self.view_is_current():
            self._write_view()

    def prepared(self) -> bool:
        """Whether what prepare() makes is all there (to skip it when reopening)."""
        return self.db_path.exists() and (self.segments / SCHEMA_SEGMENT).exists()

    def _write_schema_segment(self, con: duckdb.DuckDBPyConnection) -> None:
        schema = self.segments / SCHEMA_SEGMENT
        if schema.exists():
            try:
                have = [r[0] for r in con.execute(
                    f"DESCRIBE SELECT * FROM read_parquet({_sql_str(str(schema))})").fetchall()]
                if have == [c for c, _ in COLUMNS]:
                    return
            except duckdb.Error:
                pass  # unreadable: write it again
        empty = "douane_empty_requests"
        con.execute(self.create_table_sql(empty).replace("CREATE TABLE", "CREATE OR REPLACE TEMP TABLE"))
        tmp = schema.with_name(schema.name + ".tmp")
        try:
            con.execute(f"COPY temp.{empty} TO {_sql_str(str(tmp))} (FORMAT parquet)")
            os.replace(tmp, schema)
        finally:
            tmp.unlink(missing_ok=True)
            con.execute(f"DROP TABLE IF EXISTS temp.{empty}")

    def view_is_current(self) -> bool:
        if not self.db_path.exists():
            return False
        try:
            con = duckdb.connect(str(self.db_path), read_only=True)
        except duckdb.Error:
            return False  # held read-write elsewhere, or not a database: _write_view says which
        try:
            rows = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = ? AND NOT internal",
                               [VIEW]).fetchall()
            if not rows or _sql_str(f"{self.relative_segments}/*.parquet") not in rows[0][0] \
                    or "temp_directory" not in rows[0][0]:
                return False
            views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
            if TOOL_CALLS_VIEW not in views:
                return False
            con.execute(f"SET file_search_path = {_sql_str(str(self.folder))}")
            names = [r[0] for r in con.execute(f"DESCRIBE {VIEW}").fetchall()]
            return names == [c for c, _ in COLUMNS]
        except duckdb.Error:
            return False
        finally:
            con.close()

    def _write_view(self) -> None:
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
                db.execute(f"SET file_search_path = {_sql_str(str(self.folder))}")
                db.execute(self.view_sql())
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
    """A read-only connection whose relative paths start at the store's folder; waits out another
    process's brief read-write hold."""
    path = Path(db_path).absolute()
    if not path.exists():
        raise FileNotFoundError(f"no audit store at {path}: start the proxy once (douane run) or pass --db PATH")
    for attempt in range(attempts):
        try:
            con = duckdb.connect(str(path), read_only=True)
        except duckdb.IOException as e:
            if "lock" not in str(e).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.1)
            continue
        con.execute(f"SET file_search_path = {_sql_str(str(path.parent))}")
        return con
    raise AssertionError("unreachable")


def query(db_path: str | Path, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run SQL against the store; retried once if a compaction removed a segment mid-read."""
    store = AuditStore(db_path)
    for attempt in range(3):
        con = open_reader(db_path)
        try:
            _own_view(con, store)
            cur = con.execute(sql, params)
            columns = [d[0] for d in cur.description or []]
            return columns, cur.fetchall()
        except duckdb.IOException as e:
            if attempt == 2 or "No such file" not in str(e) and "No files found" not in str(e):
                raise
        finally:
            con.close()
    raise AssertionError("unreachable")


def _own_view(con: duckdb.DuckDBPyConnection, store: AuditStore) -> None:
    """A store copied under another file name still has the view written for the old name: this
    connection gets a temporary one over its own segments (`douane audit doctor --repair` rewrites
    the stored one for everyone)."""
    rows = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = ? AND NOT internal", [VIEW]).fetchall()
    if rows and _sql_str(f"{store.relative_segments}/*.parquet") not in rows[0][0]:
        con.execute(store.view_sql().replace("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP VIEW", 1))
