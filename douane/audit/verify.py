"""`douane audit verify`: is the store what douane wrote, and if not, exactly where does it differ.

What is checked (chain.py says what is hashed; seal.py and trail.py what is signed):
- each live segment against its seal: a segment whose seal is signed by a key the auditor trusts
  and whose bytes match is taken as written (no record is read: this is what makes verify fast);
  any other segment (no trusted key, unsigned, a changed file, `--deep`) is checked record by
  record: each record's content digest and link to the record before it, its bodies against
  their digest, and its segment's metadata against its records;
- the records of each instance, across segments: no seq missing, none twice, the segments in
  the manifest's order following the chain, the first one linking to the genesis or to the last
  record a tombstone says was removed, the last one matching the manifest's head;
- the trail: entries in order and linked, signed (by the trusted key when one is given); each
  checkpoint's record still has the hash it had (a chain rewritten from some record on, or a
  truncated tail, fails here); erased bodies and removed records all named by a tombstone.

What it cannot prove is in the README ("Audit for compliance").
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from douane.audit.chain import (
    ERASABLE,
    SegmentChain,
    Span,
    bodies_present_sql,
    body_digest_sql,
    content_digest_sql,
    genesis,
    link,
)
from douane.audit.manifest import SEGMENT_NAME, Manifest, inspect_segment, read_manifest, rebuild
from douane.audit.record import COLUMNS
from douane.audit.seal import seal_matches, seal_spans
from douane.audit.signing import check, key_id
from douane.audit.store import MANIFEST, AuditStore, _sql_str, open_reader
from douane.audit.trail import TRAIL, TrailRead, read_trail

FAIL, WARN = "fail", "warn"
MAX_PER_KIND = 20


@dataclass
class Finding:
    severity: str  # fail: the store is not what douane wrote; warn: worth knowing, not a break
    kind: str
    where: str
    detail: str


@dataclass
class VerifyReport:
    db: str
    trusted_key: str | None = None  # the key id seals and the trail were checked against
    rows: int = 0
    chained_rows: int = 0
    segments: int = 0
    sealed_segments: int = 0  # taken as written: a trusted seal, bytes unchanged
    checked_segments: int = 0  # checked record by record
    checked_rows: int = 0
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkpoints: int = 0
    tombstones: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(f.severity == FAIL for f in self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class _Segment:
    name: str
    index: int  # its place in the manifest's live list
    rows: int = 0
    chain: SegmentChain | None = None
    spans: dict[str, Span] = field(default_factory=dict)  # what it holds: trusted seal's, or computed
    sealed: bool = False  # trusted as written
    checked: bool = False  # its records were read and checked


@dataclass
class _Anchor:
    """Where an instance's remaining records start: after the genesis, or after purged records."""

    seq: int
    hash: str
    tombstone: str | None = None


def verify_store(store: AuditStore, trusted_keys: Iterable[str] | None = None, deep: bool = False,
                 copies: Iterable[Path] = ()) -> VerifyReport:
    """Check the store at `store`; `trusted_keys` are base64 Ed25519 public keys."""
    return _Verifier(store, set(trusted_keys or ()), deep, list(copies)).run()


class _Verifier:
    def __init__(self, store: AuditStore, trusted: set[str], deep: bool, copies: list[Path]):
        self.store = store
        self.trusted = trusted
        self.deep = deep
        self.copies = copies
        self.report = VerifyReport(str(store.db_path), trusted_key=", ".join(sorted(key_id(k) for k in trusted))
                                   or None)
        self._counts: dict[str, int] = {}
        self.segments: dict[str, _Segment] = {}
        self.anchors: dict[str, _Anchor] = {}
        self.erased: list[tuple[str, int, int, str]] = []  # instance, first, last, tombstone
        self.erased_ids: set[str] = set()
        self.checkpoints: list[dict[str, Any]] = []
        self.manifest = Manifest()
        self._boundaries: dict[tuple[str, str, int], tuple[str, str, str]] = {}  # first records of checked runs
        self._unsealed: list[str] = []
        self._legacy: dict[str, int] = {}  # segment -> records written before the chain

    # -- findings ---------------------------------------------------------------------------------

    def fail(self, kind: str, where: str, detail: str) -> None:
        self._add(Finding(FAIL, kind, where, detail))

    def warn(self, kind: str, where: str, detail: str) -> None:
        self._add(Finding(WARN, kind, where, detail))

    def _add(self, finding: Finding) -> None:
        n = self._counts.get(finding.kind, 0) + 1
        self._counts[finding.kind] = n
        if n <= MAX_PER_KIND:
            self.report.findings.append(finding)
        elif n == MAX_PER_KIND + 1:
            self.report.findings.append(Finding(finding.severity, finding.kind, "...",
                                                f"more {finding.kind} findings are not listed"))

    # -- the run ----------------------------------------------------------------------------------

    def run(self) -> VerifyReport:
        started = time.perf_counter()
        con = open_reader(self.store.db_path)  # held: merged-away files are not deleted while it is open
        try:
            trail = read_trail(self.store.segments / TRAIL)  # before the manifest: no entry newer than it
            self._check_trail(trail, TRAIL)
            for copy in self.copies:
                self._compare_copy(trail, copy)
            self._read_manifest(con)
            self._inspect_segments(con)
            self._check_records(con)
            self._check_chains()
            self._check_checkpoints(con)
            self._check_bodies(con)
            self._check_files()
        finally:
            con.close()
        self.report.seconds = time.perf_counter() - started
        return self.report

    # -- the trail --------------------------------------------------------------------------------

    def _check_trail(self, trail: TrailRead, name: str) -> None:
        for where, what in trail.problems:
            self.fail("trail", where, what)
        if trail.partial_tail is not None:
            self.warn("trail", f"{name} last line", "incomplete (a crash while writing it); the proxy sets it "
                                                    "aside at its next start")
        keys: set[str] = set()
        for entry in trail.entries:
            where = f"{name} entry {entry.get('n')}"
            problem = check(entry) if "sig" in entry else None
            if problem:
                self.fail("signature", where, f"{entry.get('type')}: {problem}")
            elif "sig" in entry:
                keys.add(entry["key"])
                if self.trusted and entry["key"] not in self.trusted:
                    self.fail("signature", where, f"signed by key {key_id(entry['key'])}, not by the trusted key")
            elif self.trusted:
                self.fail("signature", where, f"{entry.get('type')} entry not signed")
            self._take_entry(entry, where)
        if len(keys) > 1:
            self.fail("signature", name, f"entries signed by {len(keys)} different keys: "
                                         f"{', '.join(sorted(key_id(k) for k in keys))}")
        elif keys and not self.trusted:
            self.warn("signature", name, f"signed by key {key_id(next(iter(keys)))}; pass --key PUBLIC.pem to check "
                                         f"it is the operator's")

    def _take_entry(self, entry: dict[str, Any], where: str) -> None:
        kind = entry.get("type")
        if kind == "checkpoint":
            if isinstance(entry.get("instance"), str) and isinstance(entry.get("seq"), int) and \
                    isinstance(entry.get("hash"), str):
                self.checkpoints.append({**entry, "where": where})
                self.report.checkpoints += 1
            else:
                self.fail("trail", where, "a checkpoint without instance, seq and hash")
        elif kind in ("erase", "purge"):
            self.report.tombstones.append({k: entry.get(k) for k in
                                           ("n", "type", "at", "job", "reason", "selector", "by", "records",
                                            "bodies")})
            for inst, ranges in (entry.get("bodies") or {}).items():
                for lo, hi in ranges:
                    self.erased.append((inst, lo, hi, where))
            self.erased_ids.update(entry.get("legacy_ids") or [])
            for inst, anchor in (entry.get("removed") or {}).items():
                if inst not in self.anchors or anchor["through"] > self.anchors[inst].seq:
                    self.anchors[inst] = _Anchor(anchor["through"], anchor["hash"], where)

    def _compare_copy(self, trail: TrailRead, path: Path) -> None:
        """Every line of an outside copy must be in the store's trail, byte for byte."""
        if not path.exists():
            self.fail("copy", str(path), "the copy of the trail is missing")
            return
        copy = read_trail(path)
        for where, what in copy.problems:
            self.fail("copy", where, what)
        for number, line in enumerate(copy.lines, 1):
            if number > len(trail.lines):
                self.fail("trail", f"{TRAIL} entry {number}", f"in the copy {path} but not in the store's trail: the "
                                                              f"trail was truncated")
                self._take_entry(copy.entries[number - 1], f"{path.name} entry {number}")
            elif trail.lines[number - 1] != line:
                self.fail("trail", f"{TRAIL} entry {number}", f"differs from the copy in {path}")

    # -- segments ---------------------------------------------------------------------------------

    def _read_manifest(self, con: duckdb.DuckDBPyConnection) -> None:
        manifest, why = read_manifest(self.store.segments / MANIFEST)
        if manifest is None:
            self.fail("manifest", str(self.store.segments / MANIFEST), f"the manifest is {why}; checking every "
                                                                         f"segment on disk instead")
            infos = [inspect_segment(con, p) for p in self.store.segment_files() if SEGMENT_NAME.fullmatch(p.name)]
            manifest = rebuild(infos)
        self.manifest = manifest
        self.report.segments = len(manifest.live)
        if not manifest.heads and manifest.live:
            self.warn("manifest", MANIFEST, "names no chain heads (written before the chain): a truncated tail "
                                            "is caught by checkpoints only")

    def _inspect_segments(self, con: duckdb.DuckDBPyConnection) -> None:
        for index, name in enumerate(self.manifest.live):
            path = self.store.segments / name
            seg = _Segment(name, index)
            if not path.exists():
                self.fail("missing_segment", name, "named as live by the manifest but gone: its records were removed")
                continue
            info = inspect_segment(con, path)
            if info.error:
                self.fail("unreadable_segment", name, f"cannot be read ({info.error}): altered or truncated")
                continue
            seg.rows, seg.chain = info.rows, info.chain
            self.report.rows += info.rows
            if info.chain_error:
                self.fail("segment_metadata", name, f"its chain metadata is unreadable ({info.chain_error})")
            seal = self.manifest.seals.get(name)
            seg.sealed = self._sealed(path, seal)
            if seg.sealed:
                assert seal is not None
                seg.spans = seal_spans(seal)
                self.report.sealed_segments += 1
            self.segments[name] = seg

    def _sealed(self, path: Path, seal: dict[str, Any] | None) -> bool:
        """Whether the segment can be taken as written without reading its records."""
        if seal is None:
            self._unsealed.append(path.name)
            return False
        problem = seal_matches(path, seal)
        if problem:
            self.fail("altered_segment", path.name, f"{problem}: checked record by record below")
            return False
        if self.deep or not self.trusted:
            return False
        if "sig" not in seal:
            self._unsealed.append(path.name)
            return False
        if check(seal) or seal.get("key") not in self.trusted:
            self.fail("signature", path.name, "its seal is not signed by the trusted key: checked record by record")
            return False
        try:
            seal_spans(seal)
        except ValueError as e:
            self.fail("segment_metadata", path.name, f"its seal is malformed ({e})")
            return False
        return True

    # -- records ----------------------------------------------------------------------------------

    def _check_records(self, con: duckdb.DuckDBPyConnection) -> None:
        """Read and check the records of every segment not taken as written."""
        con.execute("CREATE OR REPLACE TEMP TABLE vrows (file VARCHAR, instance_id VARCHAR, seq BIGINT, "
                    "hash VARCHAR, id VARCHAR, digest VARCHAR, body VARCHAR)")
        groups: dict[str, list[_Segment]] = {}
        for seg in self.segments.values():
            if seg.sealed:
                continue
            chain = seg.chain or self._presumed_chain(con, seg)
            if chain is None:
                continue
            key = SegmentChain(chain.columns, chain.erasable).to_json()
            groups.setdefault(key, []).append(seg)
        for key, segs in groups.items():
            chain = SegmentChain.parse(key)
            try:
                self._load(con, segs, chain)
            except duckdb.Error:
                for seg in segs:  # find the one that does not read as its metadata says
                    try:
                        self._load(con, [seg], chain)
                    except duckdb.Error as e:
                        self.fail("unreadable_segment", seg.name, f"its records cannot be read as its chain metadata "
                                                                  f"says ({str(e).splitlines()[0]})")
        self._link_records(con)
        self._computed_spans(con)

    def _presumed_chain(self, con: duckdb.DuckDBPyConnection, seg: _Segment) -> SegmentChain | None:
        """A segment without chain metadata: fine when its records predate the chain (None: nothing
        to check); when they do not, the metadata was stripped, and its records are checked with
        the columns this release hashes."""
        path = _sql_str(str(self.store.segments / seg.name))
        try:
            names = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({path})").fetchall()}
            chained = con.execute(f"SELECT count(*) FILTER (WHERE seq IS NOT NULL) FROM read_parquet({path})"
                                  ).fetchone()[0] if "seq" in names else 0  # type: ignore[index]
        except duckdb.Error as e:
            self.fail("unreadable_segment", seg.name, f"cannot be read ({str(e).splitlines()[0]})")
            return None
        if not chained:
            if seg.rows:
                self._legacy[seg.name] = seg.rows
            return None
        self.fail("segment_metadata", seg.name, f"holds {chained} chained record(s) but no chain metadata: the file "
                                                f"was rewritten outside douane; its records are checked below")
        return SegmentChain([(n, t) for n, t in COLUMNS if n in names], list(ERASABLE))

    def _load(self, con: duckdb.DuckDBPyConnection, segs: list[_Segment], chain: SegmentChain) -> None:
        files = "[" + ", ".join(_sql_str(str(self.store.segments / s.name)) for s in segs) + "]"
        present = bodies_present_sql(chain.erasable)
        body = (f"CASE WHEN {present} THEN (CASE WHEN body_digest IS NOT DISTINCT FROM "
                f"{body_digest_sql(chain.erasable)} THEN 'ok' ELSE 'altered' END) "
                f"WHEN body_digest IS NOT NULL THEN 'erased' ELSE 'none' END")
        con.execute(f"INSERT INTO vrows SELECT parse_filename(filename), instance_id, seq, hash, id, "
                    f"{content_digest_sql(chain.columns)}, {body} "
                    f"FROM read_parquet({files}, filename = true, union_by_name = true)")
        for seg in segs:
            seg.checked = True
        self.report.checked_segments += len(segs)

    def _link_records(self, con: duckdb.DuckDBPyConnection) -> None:
        """Each checked record against the one before it (when that one was checked too)."""
        con.execute("CREATE OR REPLACE TEMP TABLE vlinks AS SELECT *, lag(seq) OVER w AS pseq, lag(hash) OVER w "
                    "AS phash, lag(file) OVER w AS pfile FROM vrows WHERE seq IS NOT NULL "
                    "WINDOW w AS (PARTITION BY instance_id ORDER BY seq, file)")
        self.report.checked_rows = con.execute("SELECT count(*) FROM vrows").fetchone()[0]  # type: ignore[index]
        for file, count in con.execute("SELECT file, count(*) FROM vrows WHERE seq IS NULL GROUP BY file").fetchall():
            self._legacy[file] = self._legacy.get(file, 0) + count
        for file, inst, seq, rid in con.execute(
                "SELECT file, instance_id, seq, id FROM vlinks WHERE pseq = seq ORDER BY instance_id, seq").fetchall():
            self.fail("duplicate_record", _at(file, inst, seq, rid), "a second record with this seq")
        for file, inst, seq, rid in con.execute(
                "SELECT file, instance_id, seq, id FROM vlinks WHERE hash IS NULL OR instance_id IS NULL "
                "ORDER BY instance_id, seq").fetchall():
            self.fail("altered_record", _at(file, inst, seq, rid), "its hash or instance was removed")
        for file, inst, seq, rid in con.execute(
                "SELECT file, instance_id, seq, id FROM vlinks WHERE pseq = seq - 1 "
                "AND hash <> sha256(phash || digest) ORDER BY instance_id, seq").fetchall():
            self.fail("altered_record", _at(file, inst, seq, rid),
                      "does not hash to its stored hash: this record was altered (or the one before it was altered and "
                      "its hash recomputed)")
        for file, inst, seq, rid, pseq in con.execute(
                "SELECT file, instance_id, seq, id, pseq FROM vlinks WHERE pseq < seq - 1 AND file = pfile "
                "ORDER BY instance_id, seq").fetchall():
            self.fail("missing_records", f"segment {file}, instance {inst}",
                      f"records seq {pseq + 1}..{seq - 1} are missing from inside the segment (before {rid})")
        self._boundaries = {(r[0], r[1], r[2]): r[3:] for r in con.execute(
            "SELECT file, instance_id, seq, hash, digest, id FROM vlinks "
            "WHERE (pseq IS NULL OR pseq < seq - 1) AND hash IS NOT NULL").fetchall()}

    def _computed_spans(self, con: duckdb.DuckDBPyConnection) -> None:
        """Spans of checked segments from their records, compared with what their metadata says."""
        rows = con.execute("SELECT file, instance_id, min(seq), arg_min(hash, seq), max(seq), arg_max(hash, seq), "
                           "count(*) FROM vrows WHERE seq IS NOT NULL AND instance_id IS NOT NULL "
                           "GROUP BY ALL").fetchall()
        for file, inst, first, first_hash, last, last_hash, count in rows:
            seg = self.segments[file]
            seg.spans[inst] = Span(first, first_hash, last, last_hash, count, "")
            if seg.chain is None:
                continue  # its metadata was stripped: said already
            said = seg.chain.spans.get(inst)
            if said is None:
                self.fail("segment_metadata", file, f"holds records of instance {inst} its metadata does not name")
            elif (said.first, said.last, said.rows) != (first, last, count) or \
                    (said.first_hash, said.last_hash) != (first_hash, last_hash):
                self.fail("segment_metadata", file, f"its metadata says instance {inst} seq {said.first}..{said.last} "
                                                    f"({said.rows} records), its records are seq {first}..{last} "
                                                    f"({count})")
        for seg in self.segments.values():
            if seg.checked and seg.chain:
                for inst, said in seg.chain.spans.items():
                    if inst not in seg.spans:
                        self.fail("missing_records", seg.name, f"its metadata says it holds instance {inst} seq "
                                                               f"{said.first}..{said.last}; none of them is there")

    # -- chains across segments ---------------------------------------------------------------------

    def _check_chains(self) -> None:
        by_instance: dict[str, list[tuple[_Segment, Span]]] = {}
        for seg in self.segments.values():
            for inst, span in seg.spans.items():
                by_instance.setdefault(inst, []).append((seg, span))
        for inst in sorted(set(by_instance) | set(self.manifest.heads)):
            parts = by_instance.get(inst, [])
            self._check_order(inst, parts)
            last = self._walk(inst, sorted(parts, key=lambda p: (p[1].first, p[0].index)))
            self._check_head(inst, last)

    def _check_order(self, inst: str, parts: list[tuple[_Segment, Span]]) -> None:
        """In the manifest's order, each segment's records follow the previous segment's."""
        ordered = sorted(parts, key=lambda p: p[0].index)
        for (a, sa), (b, sb) in zip(ordered, ordered[1:], strict=False):
            if sb.first <= sa.last and not (sb.first == sa.first and sb.last == sa.last):
                self.fail("out_of_order", b.name, f"holds instance {inst} seq {sb.first}..{sb.last} but comes after "
                                                  f"{a.name} (seq {sa.first}..{sa.last}) in the manifest: segments "
                                                  f"were reordered")

    def _walk(self, inst: str, parts: list[tuple[_Segment, Span]]) -> tuple[int, str]:
        """Follow the chain from its start through every segment: gaps, overlaps, broken links."""
        anchor = self.anchors.get(inst, _Anchor(0, genesis(inst)))
        seq, prev = anchor.seq, anchor.hash
        prev_name = "the genesis" if anchor.seq == 0 else f"the last record removed ({anchor.tombstone})"
        for seg, span in parts:
            if span.last <= seq:
                if span.first <= anchor.seq:
                    self.warn("tombstone", seg.name, f"still holds instance {inst} seq {span.first}..{span.last}, "
                                                     f"removed by {anchor.tombstone}: the purge has not finished")
                else:
                    self.fail("duplicate_record", seg.name, f"instance {inst} seq {span.first}..{span.last} are also "
                                                            f"in another segment")
                continue
            if span.first > seq + 1:
                self.fail("missing_records", f"instance {inst}", f"records seq {seq + 1}..{span.first - 1} are missing "
                                                                 f"(between {prev_name} and {seg.name}), and no "
                                                                 f"tombstone says they were removed")
            elif span.first <= seq:
                self.fail("duplicate_record", seg.name, f"instance {inst} seq {span.first}..{seq} are also in another "
                                                        f"segment")
            else:
                self._check_link(inst, seg, span, prev, prev_name)
            seq, prev = span.last, span.last_hash
            prev_name = seg.name
        self.report.instances[inst] = {"first": anchor.seq + 1, "last": seq,
                                       "records": sum(s.rows for _, s in parts), "removed_through": anchor.seq}
        return seq, prev

    def _check_link(self, inst: str, seg: _Segment, span: Span, prev: str, prev_name: str) -> None:
        if seg.sealed:
            if span.prev != prev:
                self.fail("broken_link", seg.name, f"its first record (instance {inst} seq {span.first}) does not "
                                                   f"link to the record before it, in {prev_name}")
            return
        boundary = self._boundaries.get((seg.name, inst, span.first))
        if boundary is None:
            return  # linked to a checked record before it: checked in SQL
        stored, digest, rid = boundary
        if link(prev, digest) != stored:
            self.fail("altered_record", _at(seg.name, inst, span.first, rid),
                      f"does not hash to its stored hash given the record before it (in {prev_name}): this record "
                      f"was altered, or the one before it")

    def _check_head(self, inst: str, last: tuple[int, str]) -> None:
        head = self.manifest.heads.get(inst)
        if head is None:
            return
        seq, hash_ = last
        if head[0] > seq:
            self.fail("truncated_tail", f"instance {inst}", f"the manifest's head is seq {head[0]} but the records "
                                                            f"end at seq {seq}: the last records were removed")
        elif head[0] < seq:
            self.fail("manifest", f"instance {inst}", f"records go on to seq {seq} past the manifest's head "
                                                      f"(seq {head[0]}): the manifest was replaced by an older one")
        elif head[1] != hash_:
            self.fail("altered_record", f"instance {inst} seq {seq}", "the last record's hash differs from the "
                                                                      "manifest's head")

    # -- checkpoints ----------------------------------------------------------------------------------

    def _check_checkpoints(self, con: duckdb.DuckDBPyConnection) -> None:
        lookups: list[tuple[dict[str, Any], _Segment]] = []
        covered = {cp["instance"] for cp in self.checkpoints}
        for inst, chain in self.report.instances.items():
            if inst not in covered and chain["last"] > chain["removed_through"]:
                self.warn("unanchored", f"instance {inst}", f"no checkpoint covers records seq {chain['first']}.."
                                                            f"{chain['last']}: records removed from the end would go "
                                                            f"unseen (a proxy killed before its first checkpoint, or "
                                                            f"a trail cut short: compare a copy with --copy)")
        for cp in self.checkpoints:
            inst, seq = cp["instance"], cp["seq"]
            anchor = self.anchors.get(inst, _Anchor(0, ""))
            last = self.report.instances.get(inst, {}).get("last", anchor.seq)
            if seq > last:
                self.fail("truncated_tail", cp["where"], f"checkpoint of {cp.get('at')} covers instance {inst} up to "
                                                         f"seq {seq}, but the records end at seq {last}: the last "
                                                         f"records were removed")
                continue
            if seq <= anchor.seq:
                if seq == anchor.seq and cp["hash"] != anchor.hash:
                    self.fail("tombstone", cp["where"], f"the tombstone {anchor.tombstone} gives another hash for "
                                                        f"seq {seq} than this checkpoint")
                continue
            seg = next((s for s in self.segments.values()
                        if inst in s.spans and s.spans[inst].first <= seq <= s.spans[inst].last), None)
            if seg is None:
                continue  # inside a gap: reported already
            span = seg.spans[inst]
            if seq == span.last:
                self._compare_checkpoint(cp, span.last_hash, seg.name)
            elif seq == span.first:
                self._compare_checkpoint(cp, span.first_hash, seg.name)
            else:
                lookups.append((cp, seg))
        if lookups:
            self._lookup_checkpoints(con, lookups)

    def _lookup_checkpoints(self, con: duckdb.DuckDBPyConnection,
                            lookups: list[tuple[dict[str, Any], _Segment]]) -> None:
        files = sorted({seg.name for _, seg in lookups})
        listing = "[" + ", ".join(_sql_str(str(self.store.segments / f)) for f in files) + "]"
        wanted = sorted({(cp["instance"], cp["seq"]) for cp, _ in lookups})
        found = {(r[0], r[1]): r[2] for r in con.execute(
            f"SELECT instance_id, seq, hash FROM read_parquet({listing}, union_by_name = true) "
            f"WHERE (instance_id, seq) IN (SELECT unnest(?::VARCHAR[]), unnest(?::BIGINT[]))",
            [[w[0] for w in wanted], [w[1] for w in wanted]]).fetchall()}
        for cp, seg in lookups:
            self._compare_checkpoint(cp, found.get((cp["instance"], cp["seq"])), seg.name)

    def _compare_checkpoint(self, cp: dict[str, Any], stored: str | None, file: str) -> None:
        if stored is None:
            self.fail("missing_records", cp["where"], f"the record checkpointed (instance {cp['instance']} seq "
                                                      f"{cp['seq']}) is not in {file}")
        elif stored != cp["hash"]:
            self.fail("rewritten_chain", cp["where"], f"instance {cp['instance']} seq {cp['seq']} in {file} has "
                                                      f"another hash than checkpointed at {cp.get('at')}: the chain "
                                                      f"was rewritten from that record or before")

    # -- bodies -----------------------------------------------------------------------------------------

    def _check_bodies(self, con: duckdb.DuckDBPyConnection) -> None:
        for file, inst, seq, rid in con.execute(
                "SELECT file, instance_id, seq, id FROM vrows WHERE body = 'altered' "
                "ORDER BY instance_id, seq").fetchall():
            self.fail("altered_bodies", _at(file, inst, seq, rid), "its bodies do not match their digest: altered")
        con.execute("CREATE OR REPLACE TEMP TABLE verased (instance_id VARCHAR, lo BIGINT, hi BIGINT, tomb VARCHAR)")
        if self.erased:
            con.executemany("INSERT INTO verased VALUES (?, ?, ?, ?)", self.erased)
        uncovered = con.execute(
            "SELECT file, instance_id, seq, id FROM vrows v WHERE body = 'erased' AND NOT EXISTS "
            "(SELECT 1 FROM verased e WHERE e.instance_id = v.instance_id AND v.seq BETWEEN e.lo AND e.hi) "
            "ORDER BY instance_id, seq").fetchall()
        for file, inst, seq, rid in uncovered:
            if seq is None and rid in self.erased_ids:
                continue
            self.fail("erased_without_tombstone", _at(file, inst, seq, rid),
                      "its bodies were removed and no tombstone says so")
        for tomb, count in con.execute(
                "SELECT e.tomb, count(*) FROM vrows v JOIN verased e ON e.instance_id = v.instance_id AND "
                "v.seq BETWEEN e.lo AND e.hi WHERE v.body = 'ok' GROUP BY e.tomb").fetchall():
            self.warn("tombstone", tomb, f"{count} record(s) it erased still hold bodies: the job has not finished "
                                         f"(it resumes when the writer runs)")

    # -- files --------------------------------------------------------------------------------------------

    def _check_files(self) -> None:
        if self._unsealed:
            self.warn("unsealed", _names(self._unsealed), f"{len(self._unsealed)} segment(s) without a signed seal "
                                                          f"(no audit.signing_key_file when written): checked record "
                                                          f"by record")
        if self._legacy:
            self.warn("legacy_records", _names(list(self._legacy)), f"{sum(self._legacy.values())} record(s) written "
                                                                    f"before the chain (or with their seq removed): "
                                                                    f"not covered")
        named = set(self.manifest.live) | set(self.manifest.doomed) | set(self.manifest.pending)
        for path in self.store.segment_files():
            if SEGMENT_NAME.fullmatch(path.name) and path.name not in named:
                self.warn("stray_segment", path.name, "a segment the manifest does not name (not queried)")
        if self.store.quarantine.exists():
            held = sorted(p.name for p in self.store.quarantine.iterdir())
            if held:
                self.warn("quarantine", str(self.store.quarantine), f"{len(held)} file(s) set aside: "
                                                                    f"{', '.join(held[:5])}")
        self.report.chained_rows = sum(s.rows for seg in self.segments.values() for s in seg.spans.values())


def _names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _at(file: str | None, inst: str | None, seq: int | None, rid: str | None) -> str:
    return f"segment {file}, instance {inst} seq {seq} (id {rid})"
