"""Paths inside the store are relative: a copy reads its own segments (issue 9, section 6.7)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from douane.audit import AuditStore, AuditWriter, query
from douane.cli import main
from tests.adversarial.audit_support import record

STOCK = "import duckdb, sys; print(duckdb.connect(sys.argv[1], read_only=True).execute(sys.argv[2]).fetchall())"


def write(db: Path, ids: list[str]) -> None:
    w = AuditWriter(AuditStore(db), min_interval=0)
    w.start()
    for i in ids:
        w.submit(record(i))
    w.close()


def copy_store(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    shutil.copytree(Path(str(src) + ".segments"), Path(str(dst) + ".segments"))


def stock(db: Path, sql: str, cwd: Path) -> str:
    """What stock DuckDB, in another process, answers."""
    done = subprocess.run([sys.executable, "-c", STOCK, str(db), sql], capture_output=True, text=True, cwd=cwd,
                          timeout=60)
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def cli_ids(db: Path) -> list[str]:
    result = CliRunner().invoke(main, ["audit", "query", "--db", str(db), "--format", "json",
                                       "SELECT id FROM requests ORDER BY id"])
    assert result.exit_code == 0, result.output
    return [r["id"] for r in json.loads(result.output)]


def test_a_copy_reads_its_own_segments(tmp_path: Path) -> None:
    original = tmp_path / "live" / "audit.duckdb"
    write(original, ["a", "b"])
    copy = tmp_path / "backup" / "audit.duckdb"
    copy_store(original, copy)
    write(original, ["c"])  # the original moves on
    assert cli_ids(copy) == ["ra", "rb"]
    assert cli_ids(original) == ["ra", "rb", "rc"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # stock DuckDB opening the file by its path, from any working directory
    assert stock(copy, "SELECT count(*) FROM requests", elsewhere) == "[(2,)]"
    assert stock(original, "SELECT count(*) FROM requests", elsewhere) == "[(3,)]"
    assert stock(Path("audit.duckdb"), "SELECT count(*) FROM requests", copy.parent) == "[(2,)]"
    shutil.rmtree(original.parent)
    assert cli_ids(copy) == ["ra", "rb"], "the copy does not need the original"


def test_a_copy_under_another_name(tmp_path: Path) -> None:
    original = tmp_path / "audit.duckdb"
    write(original, ["a"])
    renamed = tmp_path / "copy" / "renamed.duckdb"
    copy_store(original, renamed)
    write(original, ["b"])
    assert cli_ids(renamed) == ["ra"], "douane audit query reads the renamed copy's own segments"
    assert CliRunner().invoke(main, ["audit", "doctor", "--db", str(renamed)]).exit_code == 1, \
        "the stored view still names the old folder"
    assert CliRunner().invoke(main, ["audit", "doctor", "--db", str(renamed), "--repair"]).exit_code == 0
    assert stock(renamed, "SELECT count(*) FROM requests", tmp_path) == "[(1,)]"


def test_how_duckdb_resolves_a_relative_path_in_a_stored_view(tmp_path: Path) -> None:
    """What the design rests on (DuckDB 1.x-2.x): a relative path in a view is resolved when a
    query binds, against the reader's working directory or `file_search_path`, never against the
    database file's folder; and a reader's temp_directory defaults to `<database path>.tmp`."""
    store = tmp_path / "store"
    store.mkdir()
    con = duckdb.connect()
    con.execute(f"COPY (SELECT 42 AS x) TO '{store / 'data.parquet'}' (FORMAT parquet)")
    db = duckdb.connect(str(store / "v.duckdb"))
    db.execute(f"SET file_search_path = '{store}'")
    db.execute("CREATE VIEW v AS SELECT * FROM read_parquet('data.parquet')")
    db.close()
    probe = ("import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=True)\n"
             "print(c.execute(\"SELECT current_setting('temp_directory')\").fetchone()[0])\n"
             "try: print(c.execute('SELECT * FROM v').fetchall())\n"
             "except duckdb.Error as e: print('error', type(e).__name__)\n"
             "c.execute(f\"SET file_search_path = '{sys.argv[2]}'\"); print(c.execute('SELECT * FROM v').fetchall())")
    out = subprocess.run([sys.executable, "-c", probe, str(store / "v.duckdb"), str(store)], capture_output=True,
                         text=True, cwd=tmp_path, timeout=60).stdout.splitlines()
    assert out == [f"{store / 'v.duckdb'}.tmp", "error IOException", "[(42,)]"]
    here = subprocess.run([sys.executable, "-c", probe, "v.duckdb", str(store)], capture_output=True, text=True,
                          cwd=store, timeout=60).stdout.splitlines()
    assert here == [f"{store / 'v.duckdb'}.tmp", "[(42,)]", "[(42,)]"], "made absolute even when opened relatively"


def test_stock_duckdb_attaching_a_store_sets_file_search_path(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """What the README tells auditors who ATTACH stores (the view then cannot see its file's path)."""
    db = tmp_path / "proxy-a.duckdb"
    write(db, ["a"])
    con = duckdb.connect()
    con.execute(f"ATTACH '{db}' AS a (READ_ONLY)")
    con.execute(f"SET file_search_path = '{tmp_path}'")
    assert con.execute("SELECT id FROM a.requests").fetchall() == [("ra",)]
    monkeypatch.chdir(tmp_path)  # or from the store's folder
    con2 = duckdb.connect()
    con2.execute("ATTACH 'proxy-a.duckdb' AS a (READ_ONLY)")
    assert con2.execute("SELECT count(*) FROM a.requests").fetchall() == [(1,)]
    assert query(db, "SELECT count(*) FROM requests")[1] == [(1,)]
