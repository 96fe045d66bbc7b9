"""What an attacker with write access to an audit store does to it, as functions the tests call.

Each keeps the store readable (the view still answers): the point is that `douane audit verify`
notices what a query would not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import duckdb
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from douane.audit import AuditStore
from douane.audit.store import SCHEMA_SEGMENT


def make_key(folder: Path, name: str = "audit-key.pem") -> Path:
    """An Ed25519 private key in PEM, as `openssl genpkey -algorithm ed25519` writes it."""
    path = folder / name
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


def manifest(store: AuditStore) -> dict[str, Any]:
    return json.loads((store.segments / "manifest.json").read_text())


def write_manifest(store: AuditStore, data: dict[str, Any]) -> None:
    tmp = store.segments / "manifest.json.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, store.segments / "manifest.json")


def live(store: AuditStore) -> list[str]:
    return [n for n in manifest(store)["live"] if n != SCHEMA_SEGMENT]


def segment_of(store: AuditStore, seq: int) -> Path:
    """The live segment holding the record with this seq."""
    con = duckdb.connect()
    try:
        for name in live(store):
            path = store.segments / name
            if con.execute(f"SELECT count(*) FROM read_parquet('{path}') WHERE seq = {seq}").fetchone()[0]:
                return path
    finally:
        con.close()
    raise AssertionError(f"no live segment holds seq {seq}")


def rewrite(path: Path, select: str, keep_metadata: bool = True) -> None:
    """Replace a segment by `select` over it (`t` is the old file), keeping its Parquet metadata (a
    careful attacker) or not."""
    con = duckdb.connect()
    try:
        kv = dict(con.execute(f"SELECT decode(key), decode(value) FROM parquet_kv_metadata('{path}')").fetchall())
        options = "FORMAT parquet"
        if keep_metadata and kv:
            options += ", KV_METADATA {" + ", ".join(
                "'" + k.replace("'", "''") + "': '" + v.replace("'", "''") + "'" for k, v in kv.items()) + "}"
        tmp = path.with_name(path.name + ".evil")
        con.execute(f"COPY ({select.replace('FROM t', f'FROM read_parquet({chr(39)}{path}{chr(39)}) t')}) "
                    f"TO '{tmp}' ({options})")
        os.replace(tmp, path)
    finally:
        con.close()


def edit_field(store: AuditStore, seq: int, column: str, value_sql: str, keep_metadata: bool = True) -> Path:
    path = segment_of(store, seq)
    rewrite(path, f"SELECT * REPLACE (CASE WHEN seq = {seq} THEN {value_sql} ELSE {column} END AS {column}) "
                  f"FROM t ORDER BY seq", keep_metadata)
    return path


def delete_record(store: AuditStore, seq: int) -> Path:
    path = segment_of(store, seq)
    rewrite(path, f"SELECT * FROM t WHERE seq IS DISTINCT FROM {seq} ORDER BY seq")
    return path


def remove_segment(store: AuditStore, name: str, fix_head: bool = False) -> None:
    """Delete a segment and take it out of the manifest; with `fix_head`, also move the manifest's
    chain heads back to what the remaining segments hold (a careful attacker)."""
    data = manifest(store)
    index = data["live"].index(name)
    del data["live"][index]
    del data["level"][index]
    data.get("seals", {}).pop(name, None)
    (store.segments / name).unlink()
    if fix_head:
        con = duckdb.connect()
        files = [str(store.segments / n) for n in data["live"] if n != SCHEMA_SEGMENT]
        rows = con.execute(f"SELECT instance_id, max(seq), arg_max(hash, seq) FROM read_parquet({files}) "
                           f"GROUP BY ALL").fetchall()
        data["heads"] = {inst: [seq, h] for inst, seq, h in rows}
        con.close()
    write_manifest(store, data)


def swap_live(store: AuditStore, i: int, j: int) -> None:
    """Swap two live segments in the manifest's order (indexes among the live segments)."""
    data = manifest(store)
    for key in ("live", "level"):
        items = data[key]
        items[i + 1], items[j + 1] = items[j + 1], items[i + 1]
    write_manifest(store, data)
