"""Segment seals: the SHA-256 of a segment file's bytes as douane wrote it, with the chain spans it
holds, signed with the operator's key when there is one; kept in the manifest beside its name.

A signed seal whose bytes still match lets `douane audit verify` trust a whole file without
recomputing each record's digest (hashing bytes runs at hundreds of MB/s, recomputing digests in
SQL at tens of thousands of rows/s); a file whose seal is missing, unsigned, signed by a key the
auditor does not trust, or no longer matching, is checked record by record, which also says
exactly which record differs. The writer checks a segment's seal before merging or rewriting it,
so a file changed on disk is never laundered into a freshly sealed one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from douane.audit.chain import SegmentChain, parse_spans
from douane.audit.signing import Signer

CHUNK = 1 << 20


def file_digest(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file's bytes."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def make_seal(path: Path, chain: SegmentChain | None, signer: Signer | None) -> dict[str, Any]:
    digest, size = file_digest(path)
    seal: dict[str, Any] = {"file": path.name, "sha256": digest, "size": size,
                            "spans": {i: s.as_list() for i, s in sorted(chain.spans.items())} if chain else {}}
    return signer.sign(seal) if signer else seal


def seal_matches(path: Path, seal: dict[str, Any]) -> str | None:
    """None when the file's bytes are the ones sealed, else what differs."""
    if seal.get("file") != path.name:
        return f"the seal names {seal.get('file')!r}, not this file"
    try:
        digest, size = file_digest(path)
    except OSError as e:
        return f"cannot read it ({e.strerror or e})"
    if size != seal.get("size") or digest != seal.get("sha256"):
        return f"its bytes changed since douane wrote them ({size} bytes, sealed at {seal.get('size')})"
    return None


def seal_spans(seal: dict[str, Any]) -> dict[str, Any]:
    """The spans a seal states; ValueError when they are malformed."""
    return parse_spans(seal.get("spans", {}))
