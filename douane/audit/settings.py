"""What the audit writer is told by the policy (`audit.*`) and the environment, in one value."""

from __future__ import annotations

from dataclasses import dataclass

from douane import __version__
from douane.audit.signing import Signer


@dataclass(frozen=True)
class Retention:
    """How long bodies and rows are kept (None: for ever)."""

    bodies_days: float | None = None
    rows_days: float | None = None

    @property
    def any(self) -> bool:
        return self.bodies_days is not None or self.rows_days is not None


@dataclass(frozen=True)
class AuditSettings:
    instance_id: str | None = None  # None: the store's own, made once and kept beside its segments
    signer: Signer | None = None  # seals, checkpoints and tombstones are signed with it
    checkpoint_every: float = 60.0  # seconds between checkpoints (when the chain moved), and one at close
    checkpoint_copy: str | None = None  # a file, or an http(s) URL, that gets every checkpoint and tombstone too
    retention: Retention = Retention()
    retention_every: float = 3600.0  # seconds between expiry runs in the proxy (and one at start)
    fleet: str | None = None  # a shared folder every instance ships its records to (fleet.py)
    fleet_every: float = 5.0  # seconds between shipments (and one at close)
    job_poll: float = 1.0  # seconds between looks for erase/purge requests from `douane audit`
    version: str = __version__
