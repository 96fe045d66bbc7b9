"""manifest.json: which segments are live, and which files are on their way out.

The manifest is the one place that says a file may be deleted: merged-away sources (`doomed`),
merge outputs written but never committed (`pending`). A file it does not name is never deleted.
When the manifest is missing or unreadable it is rebuilt from the segments themselves: a merged
segment carries the names of its sources in its Parquet key-value metadata, so a rebuild can tell
a merge output from sources still on disk and never counts a row twice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from douane.audit.chain import KV_CHAIN, SegmentChain
from douane.audit.store import SCHEMA_SEGMENT, _sql_str

SEGMENT_NAME = re.compile(r"\d{20}-\d+-\d{6}\.parquet")
SPILL_NAME = re.compile(r"unwritten-\d+\.jsonl")

# Parquet key-value metadata a segment may carry
KV_SOURCES = "douane.sources"  # JSON list: the segments a merge read
KV_LEVEL = "douane.level"  # merge level (0: written from records)
KV_SPILL = "douane.spill"  # the spill file whose records it holds
KV_REWRITE = "douane.rewrite"  # "1": rewrites its one source (bodies erased, expired rows removed)
KV_PLACE = "douane.place"  # where it goes in the order of segments: the oldest name among what it holds


class ManifestError(ValueError):
    pass


@dataclass
class Manifest:
    live: list[str] = field(default_factory=list)  # without the schema segment
    level: dict[str, int] = field(default_factory=dict)
    doomed: list[str] = field(default_factory=list)  # merged away: delete once no reader is connected
    pending: list[str] = field(default_factory=list)  # merge outputs not yet committed
    folded: dict[str, str] = field(default_factory=dict)  # spill file -> segment holding its records
    heads: dict[str, list[Any]] = field(default_factory=dict)  # instance -> [seq, hash] of its last record
    seals: dict[str, dict[str, Any]] = field(default_factory=dict)  # live segment -> its seal (see seal.py)

    def to_json(self) -> str:
        return json.dumps({"live": [SCHEMA_SEGMENT, *self.live],
                           "level": [0, *(self.level.get(n, 0) for n in self.live)],
                           "doomed": self.doomed, "pending": self.pending, "folded": self.folded,
                           "heads": self.heads, "seals": {n: self.seals[n] for n in self.live if n in self.seals}})

    @classmethod
    def parse(cls, text: str) -> Manifest:
        """The manifest, or ManifestError saying what is wrong with it."""
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ManifestError(f"not JSON ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("live"), list):
            raise ManifestError("no list of live segments")
        live = [n for n in data["live"] if n != SCHEMA_SEGMENT]
        levels = data.get("level", [0] * len(data["live"]))
        if not isinstance(levels, list) or len(levels) != len(data["live"]) or \
                not all(isinstance(v, int) and not isinstance(v, bool) for v in levels):
            raise ManifestError("the level list does not match the live list")
        m = cls(live=live, level={n: lvl for n, lvl in zip(data["live"], levels, strict=True) if n != SCHEMA_SEGMENT},
                doomed=_names(data, "doomed"), pending=_names(data, "pending"), folded=_folded(data),
                heads=_heads(data), seals=_seals(data))
        for name in [*m.live, *m.doomed, *m.pending, *m.folded.values()]:
            if not SEGMENT_NAME.fullmatch(name):
                raise ManifestError(f"{name!r} is not a segment name")  # never a path to follow or delete
        if len(set(m.live)) != len(m.live):
            raise ManifestError("a segment is listed twice")
        return m


def _names(data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{key} is not a list of names")
    return value


def _folded(data: dict[str, Any]) -> dict[str, str]:
    value = data.get("folded", {})
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) and SPILL_NAME.fullmatch(k)
                                              for k, v in value.items()):
        raise ManifestError("folded is not a map of spill files to segments")
    return value


def _heads(data: dict[str, Any]) -> dict[str, list[Any]]:
    value = data.get("heads", {})
    if not isinstance(value, dict) or not all(
            isinstance(v, list) and len(v) == 2 and isinstance(v[0], int) and not isinstance(v[0], bool)
            and isinstance(v[1], str) for v in value.values()):
        raise ManifestError("heads is not a map of instance ids to [seq, hash]")
    return value


def _seals(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    value = data.get("seals", {})
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ManifestError("seals is not a map of segments to seals")
    return value


def read_manifest(path: Path) -> tuple[Manifest | None, str | None]:
    """The manifest, or None and why it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError) as e:
        return None, f"unreadable ({e})"
    try:
        return Manifest.parse(text), None
    except ManifestError as e:
        return None, str(e)


@dataclass
class SegmentInfo:
    name: str
    rows: int = 0
    sources: list[str] = field(default_factory=list)
    level: int = 0
    spill: str | None = None
    rewrite: bool = False  # rewrites its one source: a claim believed from the same level
    place: str = ""  # where it goes in the order of live segments (names grow with time)
    chain: SegmentChain | None = None  # what its rows commit to (None: written before the chain)
    chain_error: str | None = None  # its chain metadata is there but unreadable
    error: str | None = None  # set when the file cannot be read


def inspect_segment(con: duckdb.DuckDBPyConnection, path: Path, deep: bool = False) -> SegmentInfo:
    """A segment's row count and provenance from its footer; with `deep`, every value is read too."""
    info = SegmentInfo(path.name, place=path.name)
    try:
        info.rows = int(con.execute(f"SELECT sum(num_rows) FROM parquet_file_metadata({_sql_str(str(path))})")
                        .fetchone()[0] or 0)  # type: ignore[index]
        kv = dict(con.execute(f"SELECT decode(key), decode(value) FROM parquet_kv_metadata({_sql_str(str(path))})")
                  .fetchall())
        if deep:
            con.execute(f"SELECT bit_xor(hash(t)) FROM read_parquet({_sql_str(str(path))}) t").fetchall()
    except (duckdb.Error, UnicodeDecodeError) as e:
        info.error = str(e).splitlines()[0]
        return info
    try:
        sources = json.loads(kv.get(KV_SOURCES, "[]"))
        info.sources = [s for s in sources if isinstance(s, str) and SEGMENT_NAME.fullmatch(s)]
        info.level = int(kv.get(KV_LEVEL, "0"))
    except ValueError:
        info.sources, info.level = [], 0
    spill = kv.get(KV_SPILL)
    info.spill = spill if spill and SPILL_NAME.fullmatch(spill) else None
    info.rewrite = kv.get(KV_REWRITE) == "1" and len(info.sources) == 1
    place = kv.get(KV_PLACE, "")
    info.place = place if SEGMENT_NAME.fullmatch(place) else path.name
    if KV_CHAIN in kv:
        try:
            info.chain = SegmentChain.parse(kv[KV_CHAIN])
        except ValueError as e:
            info.chain_error = str(e)
    return info


def rebuild(infos: list[SegmentInfo]) -> Manifest:
    """A manifest from the readable segments: live is every segment no other one merged.

    A merge output holds exactly its sources' rows, so whichever of the two is kept, each row
    counts once. A claim is believed only from a higher merge level, or from a rewrite (erasure,
    expiry) of an older segment at its own level (no cycle can hide rows). Sources are named for
    deletion only when the output that claims them is itself kept or deleted for the same reason,
    and either all of them are here with row counts adding up to its own, or it is a rewrite (whose
    tombstone says which rows it left out). Heads come from the segments' chain metadata; seals
    are lost with the manifest (verify then checks those segments record by record).
    """
    good = {i.name: i for i in infos if i.error is None}
    merged = {s for i in good.values() for s in _sources(i, good)}
    live = sorted(n for n in good if n not in merged)
    doomed: set[str] = set()
    todo = list(live)
    while todo:
        output = good[todo.pop()]
        sources = _sources(output, good)
        whole = len(sources) == len(output.sources) and sum(good[s].rows for s in sources) == output.rows
        if sources and (whole or output.rewrite):  # a rewrite removes rows on purpose (a tombstone says which)
            todo.extend(s for s in sources if s not in doomed)
            doomed.update(sources)
    heads: dict[str, list[Any]] = {}
    for name in live:
        chain = good[name].chain
        for inst, span in (chain.spans.items() if chain else ()):
            if inst not in heads or span.last > heads[inst][0]:
                heads[inst] = [span.last, span.last_hash]
    return Manifest(live=_chain_order(live, good), level={n: good[n].level for n in live}, doomed=sorted(doomed),
                    folded={spill: n for n in live if (spill := good[n].spill)}, heads=heads)


def _sources(info: SegmentInfo, good: dict[str, SegmentInfo]) -> list[str]:
    """The sources a segment's claim removes from the live set: a merge's from lower levels; a
    rewrite's one source, older than itself (names grow with time: no cycle either way)."""
    return [s for s in info.sources if s in good and
            (good[s].level < info.level or (info.rewrite and good[s].level == info.level and s < info.name))]


def _chain_order(live: list[str], good: dict[str, SegmentInfo]) -> list[str]:
    """Live segments in the order of the records they hold: a segment written from records is placed
    by its name (names grow with time), a merge output by its oldest source's place, a rewrite by
    its source's (an output's own name is newer than segments written after its sources)."""
    return sorted(live, key=lambda n: (good[n].place, n))
