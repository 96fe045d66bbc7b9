"""How fast an instance ships its audit records to the fleet folder (audit.fleet), off the request path.

    .venv/bin/python scripts/bench_fleet.py [--segments 20] [--per-segment 500]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from douane.audit import AuditStore, AuditWriter  # noqa: E402
from douane.audit.fleet import FleetShipper  # noqa: E402
from douane.audit.record import AuditRecord  # noqa: E402
from douane.audit.settings import AuditSettings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=20)
    ap.add_argument("--per-segment", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = AuditSettings(instance_id="bench", fleet=str(root / "fleet"), fleet_every=3600)
        w = AuditWriter(AuditStore(root / "a.duckdb"), min_interval=0, settings=settings)
        w.start()
        for s in range(args.segments):
            for i in range(args.per_segment):
                w.submit(AuditRecord(id=f"{s}-{i}", ts=datetime.now(UTC), provider="openai", request_body="x" * 2000,
                                     response_body="y" * 500, input_tokens=500, output_tokens=120, cost_usd=0.001))
            assert w.flush()
        shipper = FleetShipper(root / "fleet", Path(str(w.store.db_path) + ".fleet-outbox"))
        cpu, wall = time.process_time(), time.perf_counter()
        shipped = shipper.ship()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        w.close()
        fleet = sum(f.stat().st_size for f in (root / "fleet").rglob("*.parquet"))
        local = sum(f.stat().st_size for f in w.store.segments.glob("*.parquet"))
        print(f"{shipped} records from {args.segments} segments: {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU "
              f"({shipped / wall:,.0f} records/s); fleet copy {fleet:,} bytes, local store {local:,} bytes "
              f"(bodies stay local); load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
