"""trail.jsonl: the store's own log of checkpoints and tombstones, chained and signed.

One JSON object per line, appended by whoever holds the writer lock (the proxy, or a `douane
audit` command when no proxy runs). Each entry has `n` (1, 2, ...), `prev` (the SHA-256 of the
previous line's bytes), `type`, `at`, and is signed with the operator's key when there is one.

- checkpoint: an instance's chain head (`instance`, `seq`, `hash`) at a moment; written every
  `audit.checkpoint_every_s` while the chain moves, and at close. It is what catches a truncated
  tail, and a chain rewritten from some record on: the rewritten records no longer hash to it.
- erase, purge: tombstones: which records' bodies were erased, which records were removed (and
  the hash of the last one, which the next record links to), when, why and on whose request.

With `audit.checkpoint_copy`, every line is also appended to another file (another disk, a
mounted write-once store) or POSTed to a URL: an attacker who can rewrite the store, the trail
included, cannot reach that copy, and `douane audit verify --copy FILE` compares the two.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from douane.audit.signing import Signer

log = logging.getLogger(__name__)

TRAIL = "trail.jsonl"
GENESIS = hashlib.sha256(b"douane-trail-1").hexdigest()


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass
class TrailRead:
    """The trail as read: its entries (parsed, with their raw lines), and what is wrong with it."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (where, what)
    partial_tail: bytes | None = None  # an unterminated last line (a crash while appending)

    @property
    def head(self) -> tuple[int, str]:
        return (self.entries[-1]["n"], line_hash(self.lines[-1])) if self.entries else (0, GENESIS)


def read_trail(path: Path) -> TrailRead:
    """Every entry of a trail file, checked for order and links (not signatures: see verify)."""
    out = TrailRead()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return out
    lines = data.split(b"\n")
    if lines and lines[-1]:
        out.partial_tail = lines[-1]
    prev = GENESIS
    for number, line in enumerate(lines[:-1], 1):
        where = f"{path.name} line {number}"
        try:
            entry = json.loads(line)
        except ValueError:
            out.problems.append((where, "not a JSON object: the trail was edited or damaged"))
            prev = line_hash(line)
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("n"), int):
            out.problems.append((where, "not a trail entry"))
            prev = line_hash(line)
            continue
        expected = len(out.entries) + 1
        if entry["n"] != expected:
            out.problems.append((where, f"entry n={entry['n']} where n={expected} was due: an entry was removed, "
                                        f"added or moved"))
        if entry.get("prev") != prev:
            out.problems.append((where, "does not link to the line before it: that line was altered or removed"))
        out.entries.append(entry)
        out.lines.append(line)
        prev = line_hash(line)
    return out


class Trail:
    """The appending side, owned by the writer thread."""

    def __init__(self, path: Path, signer: Signer | None = None, copy_to: str | None = None,
                 copy_timeout: float = 5.0):
        self.path = path
        self.signer = signer
        self.copy_to = copy_to
        self.copy_timeout = copy_timeout
        self.n = 0
        self.prev = GENESIS
        self.checkpoints: dict[str, dict[str, Any]] = {}  # instance -> its last checkpoint
        self.jobs: dict[str, dict[str, Any]] = {}  # job name -> its tombstone
        self._copies: list[threading.Thread] = []

    def open(self) -> None:
        """Read what is there; an unterminated last line (a crash mid-append) is set aside first."""
        read = read_trail(self.path)
        if read.partial_tail is not None:
            aside = self.path.with_name(f"{TRAIL}.partial-{time.time_ns()}")
            aside.write_bytes(read.partial_tail)
            data = self.path.read_bytes()
            with open(self.path, "r+b") as fh:
                fh.truncate(len(data) - len(read.partial_tail))
            log.error("audit: the last line of %s was incomplete (a crash while writing it?); it was moved to %s",
                      self.path, aside)
        for where, what in read.problems:
            log.error("audit: %s: %s; douane audit verify reports it", where, what)
        for entry in read.entries:
            self._remember(entry)
        self.n, self.prev = read.head

    def _remember(self, entry: dict[str, Any]) -> None:
        if entry.get("type") == "checkpoint" and isinstance(entry.get("instance"), str):
            self.checkpoints[entry["instance"]] = entry
        elif isinstance(entry.get("job"), str):
            self.jobs[entry["job"]] = entry

    def append(self, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Append one entry (signed when there is a key), durably, and copy it out."""
        entry: dict[str, Any] = {"n": self.n + 1, "prev": self.prev, "type": kind, "at": now_iso(), **fields}
        if self.signer is not None:
            entry = self.signer.sign(entry)
        line = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        self.n, self.prev = entry["n"], line_hash(line)
        self._remember(entry)
        if self.copy_to:
            self._copy(line)
        return entry

    def _copy(self, line: bytes) -> None:
        target = self.copy_to
        assert target is not None
        if target.startswith(("http://", "https://")):
            t = threading.Thread(target=self._post, args=(target, line), name="douane-trail-copy", daemon=True)
            t.start()
            self._copies = [c for c in self._copies if c.is_alive()] + [t]
            return
        try:
            with open(target, "ab") as fh:
                fh.write(line + b"\n")
        except OSError as e:
            log.error("audit: could not copy a trail entry to %s (%s); it is kept in %s", target, e, self.path)

    def _post(self, url: str, line: bytes) -> None:
        req = urllib.request.Request(url, data=line, method="POST", headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.copy_timeout) as resp:  # noqa: S310 - the operator's URL
                resp.read()
        except (OSError, ValueError) as e:
            log.error("audit: could not POST a trail entry to %s (%s); it is kept in %s", url, e, self.path)

    def wait_copies(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for t in self._copies:
            with contextlib.suppress(RuntimeError):
                t.join(max(0.0, deadline - time.monotonic()))
