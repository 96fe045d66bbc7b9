"""One audit row per intercepted LLM call: the `requests` table of CONTRACT.md."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime

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

    def row(self) -> tuple:
        return tuple(getattr(self, name) for name, _ in COLUMNS)


assert [f.name for f in fields(AuditRecord)] == [name for name, _ in COLUMNS], "record and columns disagree"
