"""The admin port of `douane run --workers N`: served once, by the parent, for every worker.

Each worker counts its own metrics and serves them on a loopback port of its own (told to the
parent when it is ready); the parent's /metrics reads every worker's and merges them: counters and
histograms summed, gauges as their meaning says (calls in flight summed; breakers, budgets and
draining the largest), the audit writer's gauges the parent's own, since it writes. /readyz is
ready when every worker is ready and the audit writer is healthy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from douane.ops.admin import PROMETHEUS_TEXT, Handler, Reply, json_reply, only_get

if TYPE_CHECKING:
    from douane.audit.writer import AuditWriter
    from douane.workers import Pool, Slot

log = logging.getLogger(__name__)

SUMMED_GAUGES = frozenset({"douane_calls_in_flight"})
AUDIT_GAUGES = frozenset({"douane_audit_queue_depth", "douane_audit_lag_seconds", "douane_audit_writer_ok",
                          "douane_audit_records_written"})
FETCH_TIMEOUT_S = 5.0


async def fetch(port: int, path: str) -> tuple[int, bytes]:
    """GET a worker's admin path on loopback: (status, body)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), FETCH_TIMEOUT_S)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), FETCH_TIMEOUT_S)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def merge(texts: Iterable[str], own: Iterable[Metric] = ()) -> list[Metric]:
    """Several workers' Prometheus texts as one: see the module's docstring. `own` replaces families
    of the same name."""
    mine = {m.name: m for m in own}
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name in mine:
                continue
            merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            sums = values.setdefault(family.name, {})
            for sample in family.samples:
                if sample.name.endswith("_created"):  # a start time: neither sum nor maximum means anything
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if family.type == "gauge" and family.name not in SUMMED_GAUGES:
                    sums[key] = max(sums.get(key, sample.value), sample.value)
                else:
                    sums[key] = sums.get(key, 0.0) + sample.value
    out: list[Metric] = []
    for name, family in merged.items():
        if not values[name]:
            continue
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
        out.append(family)
    return out + list(mine.values())


class Merged(Collector):
    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def writer_gauges(writer: AuditWriter, pool: Pool) -> list[Metric]:
    health = writer.health()
    families: list[Metric] = []
    for name, doc, value in (
        ("douane_audit_queue_depth", "Audit records in memory, not yet written", float(health.pending)),
        ("douane_audit_lag_seconds", "Seconds since the audit writer last wrote, while it cannot write (0 when "
                                     "healthy)", health.degraded_for or 0.0),
        ("douane_audit_writer_ok", "1 when every audit record is, or will be, a row", float(health.ok)),
        ("douane_audit_records_written", "Audit records written as rows since start", float(health.written)),
        ("douane_workers_ready", "Workers ready to serve, of douane run --workers N",
         float(sum(1 for s in pool.slots if s.ready.is_set() and alive(s)))),
        ("douane_worker_restarts", "Workers started again after one exited", float(pool.restarts)),
    ):
        family = GaugeMetricFamily(name, doc)
        family.add_metric([], value)
        families.append(family)
    return families


def alive(slot: Slot) -> bool:
    return slot.proc is not None and slot.proc.returncode is None


def pool_routes(pool: Pool) -> dict[str, Handler]:
    """/healthz: the parent answers; /readyz: every worker ready and the audit healthy; /metrics: merged."""

    async def healthz() -> Reply:
        return json_reply(200, {"status": "alive", "workers": sum(1 for s in pool.slots if alive(s))})

    async def readyz() -> Reply:
        checks = {}
        for slot in pool.slots:
            ok, detail = False, "starting"
            if slot.ready.is_set() and alive(slot) and slot.admin_port is not None:
                try:
                    status, _ = await fetch(slot.admin_port, "/readyz")
                    ok, detail = status == 200, "ready" if status == 200 else f"not ready ({status})"
                except (OSError, TimeoutError, ValueError, IndexError) as e:
                    detail = f"no answer: {e}"
            checks[f"worker_{slot.index}"] = {"ok": ok, "detail": detail}
        health = pool.gw.writer.health()
        checks["audit_writer"] = {"ok": health.ok, "detail": health.reason or f"ok, {health.pending} pending"}
        checks["serving"] = {"ok": not pool.stopping, "detail": "stopping" if pool.stopping else "accepting calls"}
        ready = all(c["ok"] for c in checks.values())
        return json_reply(200 if ready else 503, {"ready": ready, "checks": checks})

    async def metrics_text() -> Reply:
        texts = []
        for slot in pool.slots:
            if slot.admin_port is None or not alive(slot):
                continue
            try:
                status, body = await fetch(slot.admin_port, "/metrics")
            except (OSError, TimeoutError, ValueError, IndexError) as e:
                log.warning("douane: worker %d's metrics unreadable: %s", slot.index, e)
                continue
            if status == 200:
                texts.append(body.decode())
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Merged(merge(texts, writer_gauges(pool.gw.writer, pool))))
        return Reply(200, PROMETHEUS_TEXT, generate_latest(registry))

    return {"/healthz": only_get(healthz), "/readyz": only_get(readyz), "/metrics": only_get(metrics_text)}
