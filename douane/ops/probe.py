"""What the admin endpoint reads from the running gateway: readiness checks and scrape-time gauges.

Everything here runs on the proxy's event loop when /metrics or /readyz is read, never per call.
Values that need I/O (Redis) are read by `refresh()` first, with a short timeout, then served.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from douane.meter.state import MemoryState, RedisState
from douane.urls import without_password

if TYPE_CHECKING:
    from douane.gateway import Gateway
    from douane.ops.metrics import Metrics

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 1.0

Samples = Iterable[tuple[tuple[str, ...], float]]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


class GatewayProbe:
    """Reads the gateway's health for /readyz and its gauges for /metrics."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        self.redis_up: bool | None = None  # None: no Redis configured
        self.budgets: list[tuple[str, float]] = []  # (rule, fraction used)

    async def refresh(self) -> None:
        """Read what needs I/O: Redis reachable, budget counters."""
        state = self.gw.limits.state
        counters = self.gw.limits.budget_counters()
        values: list[Any]
        if isinstance(state, RedisState):
            try:
                await asyncio.wait_for(state.client.ping(), REDIS_TIMEOUT_S)
                values = await asyncio.wait_for(state.client.mget([state.prefix + k for _, k, _ in counters]),
                                                REDIS_TIMEOUT_S) if counters else []
                self.redis_up = True
            except Exception as e:  # any failure to reach it is "not reachable": say why, once per scrape
                log.debug("redis probe failed: %s", e)
                self.redis_up = False
                values = [None] * len(counters)
        else:
            self.redis_up = None
            memory = state.counters if isinstance(state, MemoryState) else {}
            values = [memory.get(k) for _, k, _ in counters]
        self.budgets = [(rule, int(v or 0) / limit if limit else 0.0)
                        for (rule, _, limit), v in zip(counters, values, strict=True)]

    async def readiness(self) -> list[Check]:
        """Every check a load balancer needs; ready when all pass."""
        await self.refresh()
        health = self.gw.writer.health()
        checks = [
            Check("policy", True, "loaded"),
            Check("audit_writer", health.ok, health.reason or f"ok, {health.pending} record(s) pending"),
            Check("serving", not self.gw.draining, "stopping: finishing the calls in flight"
                  if self.gw.draining else "accepting calls"),
        ]
        if self.redis_up is not None:
            checks.append(Check("redis", self.redis_up, "reachable" if self.redis_up else
                                f"unreachable at {without_password(self.gw.policy.state.url)} (calls follow fail: "
                                f"{self.gw.policy.fail})"))
        return checks

    # -- gauges ----------------------------------------------------------------------------------

    def install(self, metrics: Metrics) -> None:
        metrics.add_gauge("douane_audit_queue_depth", "Audit records in memory, not yet written",
                          (), lambda: [((), float(self.gw.writer.health().pending))])
        metrics.add_gauge("douane_audit_lag_seconds", "Seconds since the audit writer last wrote, while it "
                          "cannot write (0 when healthy)", (), self._audit_lag)
        metrics.add_gauge("douane_audit_writer_ok", "1 when every audit record is, or will be, a row",
                          (), lambda: [((), float(self.gw.writer.health().ok))])
        metrics.add_gauge("douane_audit_records_written", "Audit records written as rows since start",
                          (), lambda: [((), float(self.gw.writer.health().written))])
        metrics.add_gauge("douane_breaker_open", "Circuit breaker of an upstream: 1 open, 0.5 half-open "
                          "(probing), 0 closed", ("upstream",), self._breakers)
        metrics.add_gauge("douane_breaker_failures", "Failures in a row of an upstream",
                          ("upstream",), self._breaker_failures)
        metrics.add_gauge("douane_budget_used_ratio", "Fraction of a budget used in its current window "
                          "(refreshed at each scrape)", ("rule",), lambda: [((r,), f) for r, f in self.budgets])
        metrics.add_gauge("douane_redis_up", "1 when the shared state's Redis answers (absent without Redis)",
                          (), lambda: [] if self.redis_up is None else [((), float(self.redis_up))])
        metrics.add_gauge("douane_calls_in_flight", "Calls classified and not yet recorded",
                          (), lambda: [((), float(len(self.gw.inflight)))])
        metrics.add_gauge("douane_draining", "1 while douane is stopping", (),
                          lambda: [((), float(self.gw.draining))])

    def _audit_lag(self) -> Samples:
        lag = self.gw.writer.health().degraded_for
        return [((), lag or 0.0)]

    def _breakers(self) -> Samples:
        weight = {"open": 1.0, "half_open": 0.5, "closed": 0.0}
        return [((key,), weight[state]) for key, (state, _) in self.gw.relay.breakers.states().items()]

    def _breaker_failures(self) -> Samples:
        return [((key,), float(n)) for key, (_, n) in self.gw.relay.breakers.states().items()]
