"""`douane audit export`: a slice of the audit for an auditor, as Parquet or JSON lines.

Rows leave as the `requests` view gives them, chain columns included (seq, hash, body_digest,
body_salt), ordered by instance and seq. A Parquet export carries, in its key-value metadata
(`douane.export`), where and when it was made, the columns each record's digest covers, and per
instance the first and last seq with the hash the first one links to: enough to check the slice's
links without the rest of the store.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from douane.audit.chain import ERASABLE
from douane.audit.record import COLUMNS
from douane.audit.store import AuditStore, _own_view, _sql_str, open_reader
from douane.audit.trail import now_iso


@dataclass
class Exported:
    path: str
    rows: int
    format: str
    instances: dict[str, dict[str, Any]]


def export(store: AuditStore, out: Path, fmt: str, where: str, params: list[Any]) -> Exported:
    """Write the rows of `requests` matching `where` to `out` (written under a temporary name,
    then renamed: a half-written export never looks finished)."""
    if fmt not in ("parquet", "jsonl"):
        raise ValueError(f"unknown format {fmt!r}: parquet or jsonl")
    con = open_reader(store.db_path)
    try:
        _own_view(con, store)
        rows = con.execute(f"SELECT count(*) FROM requests WHERE {where}", params).fetchone()[0]  # type: ignore[index]
        spans = con.execute(
            f"SELECT instance_id, min(seq), max(seq), count(*) FROM requests WHERE {where} AND seq IS NOT NULL "
            f"GROUP BY ALL", params).fetchall()
        instances = {}
        for inst, first, last, count in spans:
            before = con.execute("SELECT hash FROM requests WHERE instance_id = ? AND seq = ?",
                                 [inst, first - 1]).fetchall()
            instances[inst] = {"first": first, "last": last, "records": count,
                               "prev": before[0][0] if before else None}
        meta = {"store": str(store.db_path), "host": socket.gethostname(), "exported_at": now_iso(), "where": where,
                "rows": rows, "columns": [list(c) for c in COLUMNS], "erasable": list(ERASABLE),
                "instances": instances}
        tmp = out.with_name(f".{out.name}.tmp")
        options = ("FORMAT parquet, KV_METADATA {'douane.export': " + _sql_str(json.dumps(meta)) + "}"
                   if fmt == "parquet" else "FORMAT json")
        try:
            con.execute(f"COPY (SELECT * FROM requests WHERE {where} ORDER BY instance_id, seq, ts) "
                        f"TO {_sql_str(str(tmp))} ({options})", params)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        con.close()
    return Exported(str(out), int(rows), fmt, instances)
