"""One audit row per intercepted LLM call: the `requests` table of CONTRACT.md."""

from __future__ import annotations

import contextlib
import json
import math
import re
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import orjson

# (column, DuckDB type) in table order; the record's fields carry the same names.
COLUMNS: list[tuple[str, str]] = [
    ("id", "VARCHAR"),
    ("ts", "TIMESTAMPTZ"),
    ("client", "VARCHAR"),
    ("team", "VARCHAR"),
    ("provider", "VARCHAR"),
    ("endpoint", "VARCHAR"),
    ("method", "VARCHAR"),
    ("path", "VARCHAR"),
    ("host", "VARCHAR"),
    ("upstream", "VARCHAR"),
    ("model_requested", "VARCHAR"),
    ("model", "VARCHAR"),
    ("served_by", "VARCHAR"),
    ("stream", "BOOLEAN"),
    ("status", "INTEGER"),
    ("decision", "VARCHAR"),
    ("reason", "VARCHAR"),
    ("mode", "VARCHAR"),
    ("pii_entities", "VARCHAR[]"),
    ("output_findings", "VARCHAR[]"),
    ("injection_score", "DOUBLE"),
    ("injection_rule", "VARCHAR"),
    ("guards", "VARCHAR"),  # whose guard settings applied: "policy", "teams.<t>.guards", "clients.<c>.guards"
    ("input_tokens", "BIGINT"),
    ("output_tokens", "BIGINT"),
    ("cached_tokens", "BIGINT"),
    ("reasoning_tokens", "BIGINT"),
    ("cost_usd", "DOUBLE"),
    ("price_source", "VARCHAR"),
    ("latency_ms", "DOUBLE"),
    ("ttfb_ms", "DOUBLE"),
    ("request_bytes", "BIGINT"),
    ("response_bytes", "BIGINT"),
    ("error", "VARCHAR"),
    ("request_body", "VARCHAR"),
    ("response_body", "VARCHAR"),
    # every tool call seen: asked by the model (call), resent in the history (history), its result sent
    # back (result), a tool offered to the model (definition); the `tool_calls` view has one row each
    ("tool_calls", "STRUCT(direction VARCHAR, tool VARCHAR, arguments VARCHAR, decision VARCHAR, rule VARCHAR)[]"),
    # traceability: the client's own request id (x-request-id, idempotency-key), the policy that judged
    # the call, the douane release and instance that recorded it
    ("client_request_id", "VARCHAR"),
    ("policy_hash", "VARCHAR"),
    ("douane_version", "VARCHAR"),
    # tamper evidence (chain.py): the record's place in its instance's chain and its hash; the digest
    # of its bodies (kept when they are erased) and the salt erased with them
    ("instance_id", "VARCHAR"),
    ("seq", "BIGINT"),
    ("hash", "VARCHAR"),
    ("body_digest", "VARCHAR"),
    ("body_salt", "VARCHAR"),
]


@dataclass
class AuditRecord:
    id: str
    ts: datetime
    client: str = "anonymous"
    team: str | None = None
    provider: str | None = None
    endpoint: str | None = None
    method: str | None = None
    path: str | None = None  # without the query string: it may carry `key=`
    host: str | None = None
    upstream: str | None = None
    model_requested: str | None = None
    model: str | None = None
    served_by: str | None = None
    stream: bool = False
    status: int | None = None
    decision: str = "allowed"
    reason: str | None = None
    mode: str | None = None
    pii_entities: list[str] = field(default_factory=list)
    output_findings: list[str] = field(default_factory=list)
    injection_score: float | None = None
    injection_rule: str | None = None
    guards: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    price_source: str | None = None
    latency_ms: float | None = None
    ttfb_ms: float | None = None
    request_bytes: int | None = None
    response_bytes: int | None = None
    error: str | None = None
    request_body: str | None = None
    response_body: str | None = None
    tool_calls: list[dict[str, str | None]] = field(default_factory=list)
    client_request_id: str | None = None
    policy_hash: str | None = None
    douane_version: str | None = None
    instance_id: str | None = None  # the chain's fields are set by the writer, in the order it writes
    seq: int | None = None
    hash: str | None = None
    body_digest: str | None = None
    body_salt: str | None = None

    def row(self) -> tuple:
        return tuple(getattr(self, name) for name, _ in COLUMNS)


assert [f.name for f in fields(AuditRecord)] == [name for name, _ in COLUMNS], "record and columns disagree"


_NAMES = [name for name, _ in COLUMNS]
_TYPES = dict(COLUMNS)
_INT_BITS = {"INTEGER": 32, "BIGINT": 64}
_SURROGATES = re.compile("[\ud800-\udfff]")


def json_line(rec: AuditRecord) -> bytes:
    """The record as one JSON line for DuckDB's reader; raises TypeError for what JSON cannot hold
    as UTF-8 (lone surrogates, integers past 64 bits): `sanitized` makes any record writable."""
    return orjson.dumps(dict(zip(_NAMES, rec.row(), strict=True))) + b"\n"


def sanitized(rec: AuditRecord) -> AuditRecord:
    """A copy that fits the table's types, its `error` saying what was changed and why.

    Text with lone UTF-16 surrogates (a prompt can carry them: JSON escapes allow it, UTF-8 does
    not) gets U+FFFD in their place; numbers out of their column's range, or of the wrong type,
    become NULL. The call keeps its row: nothing is dropped for its content.
    """
    values: dict[str, Any] = {}
    notes: list[str] = []
    for name in _NAMES:
        value, note = _fit(_TYPES[name], getattr(rec, name))
        values[name] = value
        if note:
            notes.append(f"{name} {note}")
    if notes:
        what = "audit: " + "; ".join(notes)
        values["error"] = f"{values['error']}; {what}" if values["error"] else what
    return AuditRecord(**values)


def _fit(sql_type: str, value: Any) -> tuple[Any, str | None]:
    if value is None:
        return None, None
    if sql_type == "VARCHAR":
        return _text(value if isinstance(value, str) else str(value))
    if sql_type == "VARCHAR[]":
        items = [_text(v if isinstance(v, str) else str(v)) for v in value] if isinstance(value, list | tuple) \
            else [_text(str(value))]
        notes = sorted({n for _, n in items if n})
        return [v for v, _ in items], "; ".join(notes) or None
    if sql_type in _INT_BITS:
        bits = _INT_BITS[sql_type]
        if isinstance(value, int) and not isinstance(value, bool) and -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
            return value, None
        return None, f"value {str(value)[:40]!r} does not fit {sql_type}: stored as NULL"
    if sql_type == "DOUBLE":
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value), None
        return None, f"value {str(value)[:40]!r} is not a finite number: stored as NULL"
    if sql_type == "BOOLEAN":
        return bool(value), None if isinstance(value, bool) else f"value {str(value)[:40]!r} read as a boolean"
    if sql_type == "TIMESTAMPTZ":
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=UTC)), None
        return datetime.now(UTC), f"value {str(value)[:40]!r} is not a time: the time of writing stored instead"
    return value, None


def _text(value: str) -> tuple[str, str | None]:
    fixed, count = _SURROGATES.subn("\ufffd", value)
    return fixed, (f"had {count} lone UTF-16 surrogate(s), replaced by U+FFFD" if count else None)


def from_json(data: Any) -> AuditRecord:
    """A record read back from a JSON-lines spill file (keys the table no longer has are dropped)."""
    if not isinstance(data, dict):
        raise ValueError("a spilled record is a JSON object")
    values = {k: v for k, v in data.items() if k in _TYPES}
    ts = values.get("ts")
    if isinstance(ts, str):
        with contextlib.suppress(ValueError):  # else sanitized() replaces it and says so
            values["ts"] = datetime.fromisoformat(ts)
    values.setdefault("id", "")
    values.setdefault("ts", None)
    return AuditRecord(**values)


def spill_line(rec: AuditRecord) -> str:
    """The record as an ASCII JSON line: lossless for any text, lone surrogates included."""
    return json.dumps({name: getattr(rec, name) for name in _NAMES}, default=_iso, ensure_ascii=True) + "\n"


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)
