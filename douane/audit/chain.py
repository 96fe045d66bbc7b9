"""The hash chain over audit records: what is hashed, how, and what each segment commits to.

Every record of an instance carries `seq` (1, 2, 3, ... in the order the instance wrote them) and
`hash` = sha256(hash of the record before || digest of this record's content), the first linking to
a genesis value derived from the instance id. The content digest is sha256 over a canonical text of
the record: every non-NULL column but `hash`, `body_salt` and the bodies, sorted by name, each as
`name=<byte length>:<text>;`. The bodies are hashed apart, into `body_digest` (with a random salt
kept beside them), so that erasing them for a data-subject request or a retention rule leaves
the chain intact: the row still commits to what the bodies were, and the salt, erased with them,
keeps that digest from confirming a guess of the text.

Why SQL: the same DuckDB expressions compute the digests when a segment is written and when
`douane audit verify` checks it, vectorised over whole files (verify reads >= 200k rows/s); only
the link (a 64-byte hash per record) is computed in Python, at write time.

Why NULL columns are skipped and columns sorted by name: a column added later (by any engineer,
anywhere in COLUMNS) is NULL in older rows, so their digests do not change. Each segment still
records the columns (and types) its rows were hashed with, in its Parquet key-value metadata, and
verify hashes each segment with its own list: a column a newer writer added is hashed by an older
verifier too.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

CHAIN_FORMAT = 1
KV_CHAIN = "douane.chain"  # Parquet key-value metadata: the segment's chain commitment (JSON)
ERASABLE = ("request_body", "response_body", "tool_calls")  # erased by retention or a data-subject request:
# the bodies, and the tool calls whose arguments are prompt text too
LIST_COLUMNS = frozenset({"tool_calls"})  # erasable lists: present only when not empty
UNHASHED = frozenset({"hash", "body_salt", *ERASABLE})  # not in the content digest (the bodies via body_digest)
INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def genesis(instance: str) -> str:
    """What the first record of an instance links to."""
    return hashlib.sha256(f"douane-chain-{CHAIN_FORMAT}:{instance}".encode()).hexdigest()


def link(prev: str, digest: str) -> str:
    """A record's hash: the hash before it and its content digest (both hex), hashed together.
    Verify computes the same in SQL: sha256(prev || digest)."""
    return hashlib.sha256((prev + digest).encode("ascii")).hexdigest()


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text_sql(expr: str, sql_type: str) -> str:
    """SQL for a value's canonical text (NULL for NULL): exact, and the same in every DuckDB release
    we know of; a unit test pins each form, so an upgrade that changes one fails loudly."""
    t = sql_type.upper()
    if t in ("VARCHAR", "TEXT"):
        return expr
    if t == "BOOLEAN":
        return f"CASE WHEN {expr} THEN 'true' WHEN NOT {expr} THEN 'false' END"
    if t in ("INTEGER", "BIGINT", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER"):
        return f"CAST({expr} AS VARCHAR)"
    if t in ("DOUBLE", "FLOAT", "REAL"):
        return f"CAST(CAST({expr} AS DOUBLE) AS VARCHAR)"  # shortest text that reads back the same double
    if t in ("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP"):
        return f"CAST(epoch_us({expr}) AS VARCHAR)"
    if t in ("VARCHAR[]", "TEXT[]"):
        items = f"list_transform({expr}, lambda v: coalesce(CAST(strlen(v) AS VARCHAR) || ':' || v, '~'))"
        return f"CAST(len({expr}) AS VARCHAR) || '[' || array_to_string({items}, '')"
    return f"CAST(to_json({expr}) AS VARCHAR)"  # structs, lists of structs: DuckDB's JSON text


def _field_sql(name: str, sql_type: str) -> str:
    text = _text_sql(quote(name), sql_type)
    return f"({_sql_literal(name + '=')} || CAST(strlen({text}) AS VARCHAR) || ':' || {text} || ';')"


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def content_digest_sql(columns: list[tuple[str, str]]) -> str:
    """SQL for a row's content digest (hex), over the given (name, type) columns but UNHASHED."""
    fields = [_field_sql(n, t) for n, t in sorted(columns) if n not in UNHASHED]
    return f"sha256(concat({', '.join(fields)}))"


def body_digest_sql(erasable: tuple[str, ...] | list[str] = ERASABLE) -> str:
    """SQL for the digest of a row's bodies with its salt (NULL when it has none)."""
    present = bodies_present_sql(erasable)
    text = [f"CAST({quote(n)} AS VARCHAR)" for n in erasable]  # tool_calls is a list: its text form
    parts = ", ".join(f"coalesce(CAST(strlen({t}) AS VARCHAR) || ':' || {t}, '~')" for t in text)
    return f"CASE WHEN {present} THEN sha256(concat(coalesce(body_salt, ''), '|', {parts})) END"


def bodies_present_sql(erasable: tuple[str, ...] | list[str] = ERASABLE) -> str:
    """SQL true when a row holds any body; an empty list of tool calls holds none."""
    return "(" + " OR ".join(_present_sql(n) for n in erasable) + ")"


def _present_sql(name: str) -> str:
    if name in LIST_COLUMNS:
        return f"coalesce(len({quote(name)}), 0) > 0"
    return f"{quote(name)} IS NOT NULL"


def new_salt() -> str:
    return secrets.token_hex(16)


# -- instances ----------------------------------------------------------------------------------------

def valid_instance_id(value: str) -> str:
    """An instance id as given by an operator (DOUANE_INSTANCE_ID); ValueError says what to write."""
    if not INSTANCE_ID.fullmatch(value):
        raise ValueError(f"instance id {value!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
                         f"letter or digit (e.g. proxy-eu-1)")
    return value


def make_instance_id() -> str:
    """A new instance id: the host's name (made safe) and 32 random bits, e.g. `web-3-9f2c41d0`."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:40].strip(".-_") or "douane"
    return f"{host}-{secrets.token_hex(4)}"


# -- segment commitments ----------------------------------------------------------------------------

@dataclass
class Span:
    """One instance's records in a segment: the first and last (seq, hash), how many, and the hash
    its first record links to (the last hash of the records before it)."""

    first: int
    first_hash: str
    last: int
    last_hash: str
    rows: int
    prev: str

    def as_list(self) -> list[Any]:
        return [self.first, self.first_hash, self.last, self.last_hash, self.rows, self.prev]

    @classmethod
    def parse(cls, value: Any) -> Span:
        if not (isinstance(value, list) and len(value) == 6 and all(isinstance(value[i], int) and
                                                                     not isinstance(value[i], bool) for i in (0, 2, 4))
                and all(isinstance(value[i], str) for i in (1, 3, 5))):
            raise ValueError("a span is [first seq, its hash, last seq, its hash, rows, previous hash]")
        return cls(*value)


@dataclass
class SegmentChain:
    """What a segment commits to (its `douane.chain` metadata): the columns and erasable columns its
    rows were hashed with, and per instance the first and last hash it holds."""

    columns: list[tuple[str, str]]
    erasable: list[str] = field(default_factory=lambda: list(ERASABLE))
    spans: dict[str, Span] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"format": CHAIN_FORMAT, "columns": [list(c) for c in self.columns],
                           "erasable": self.erasable,
                           "spans": {i: s.as_list() for i, s in sorted(self.spans.items())}},
                          separators=(",", ":"))

    @classmethod
    def parse(cls, text: str) -> SegmentChain:
        """The commitment, or ValueError saying what is wrong with it."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != CHAIN_FORMAT:
            raise ValueError(f"not a format-{CHAIN_FORMAT} chain commitment")
        columns = data.get("columns")
        erasable = data.get("erasable")
        spans = data.get("spans")
        if not (isinstance(columns, list) and all(isinstance(c, list) and len(c) == 2 and
                                                  all(isinstance(x, str) for x in c) for c in columns)):
            raise ValueError("columns is not a list of [name, type]")
        if not (isinstance(erasable, list) and all(isinstance(x, str) for x in erasable)):
            raise ValueError("erasable is not a list of names")
        if not isinstance(spans, dict):
            raise ValueError("spans is not a map")
        return cls([(c[0], c[1]) for c in columns], erasable, parse_spans(spans))

    def merged_with(self, other: SegmentChain) -> SegmentChain:
        """The commitment of a segment holding both (a merge): columns united, spans widened."""
        columns = list(self.columns) + [c for c in other.columns if c[0] not in {n for n, _ in self.columns}]
        erasable = list(self.erasable) + [n for n in other.erasable if n not in self.erasable]
        spans = dict(self.spans)
        for inst, s in other.spans.items():
            mine = spans.get(inst)
            if mine is None:
                spans[inst] = s
                continue
            lo, hi = (mine, s) if mine.first <= s.first else (s, mine)
            spans[inst] = Span(lo.first, lo.first_hash, hi.last, hi.last_hash, mine.rows + s.rows, lo.prev)
        return SegmentChain(columns, erasable, spans)


def parse_spans(value: Any) -> dict[str, Span]:
    if not isinstance(value, dict):
        raise ValueError("spans is not a map of instance ids")
    return {str(inst): Span.parse(s) for inst, s in value.items()}


def spans_sql(relation: str) -> str:
    """SQL giving each instance's records in a relation: instance_id, first seq and hash, last seq and
    hash, count."""
    return (f"SELECT instance_id, min(seq), arg_min(hash, seq), max(seq), arg_max(hash, seq), count(*) "
            f"FROM {relation} WHERE seq IS NOT NULL AND instance_id IS NOT NULL GROUP BY instance_id")


def spans_from_rows(rows: list[tuple[Any, ...]], prev: dict[str, str]) -> dict[str, Span]:
    """Spans from spans_sql's rows; `prev` gives the hash each instance's first record links to."""
    return {r[0]: Span(int(r[1]), r[2], int(r[3]), r[4], int(r[5]), prev.get(r[0], "")) for r in rows}


# -- the writer's side --------------------------------------------------------------------------------

@dataclass
class Head:
    """The last record of an instance's chain: the next one gets seq + 1 and links to hash."""

    instance: str
    seq: int
    hash: str

    @classmethod
    def start(cls, instance: str) -> Head:
        return cls(instance, 0, genesis(instance))


def chain_links(head: Head, digests: list[str]) -> tuple[list[str], Head]:
    """The hashes of records following `head` with these content digests, and the new head."""
    hashes = []
    prev = head.hash
    for digest in digests:
        prev = link(prev, digest)
        hashes.append(prev)
    return hashes, Head(head.instance, head.seq + len(digests), prev)
