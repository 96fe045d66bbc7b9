"""Prometheus metrics: the hot path adds to plain dicts, a collector turns them into metrics at scrape.

prometheus-client's own Counter and Histogram take a lock and resolve labels on every update
(~2-7 us each here); a call updates about ten series, plus one per stage. Instead, every update
here is a dict lookup and an add on the event loop (bisect for a histogram bucket), and
prometheus-client's metric families and text format are used only when /metrics is read.

Label values that come from clients (a model name) are capped: past `max_label_values` distinct
values a label reads "other", so no client can grow the series without bound.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from douane.call import METADATA_KEY, Call

# Seconds. Calls: from a blocked call's microseconds to a long stream's minutes.
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Seconds. douane's own work per stage: tens of microseconds to a slow guard's seconds.
STAGE_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                 5.0)

STAGE_TIMES_KEY = "douane.stage_times"  # flow.metadata: seconds per stage, summed over the flow's hooks
# Hooks that run before the request goes upstream: their time is taken out of the time to first byte.
REQUEST_HOOKS = frozenset({"requestheaders", "request"})
# Hooks after which a flow is done: its stage times are observed then, once.
FINAL_HOOKS = frozenset({"response", "error", "websocket_end"})

# A rule as policies and stages name it: `pii.block`, `teams.support.models`, `clients[3].budget_usd_per_day`.
_RULE = re.compile(r"[a-z_]+(?:\[\d+\])?(?:\.[A-Za-z0-9_*?\[\]-]+)*")


def rule_of(call: Call) -> str:
    """The rule that blocked the call ('' when allowed): the first of its reasons shaped like a rule."""
    if call.decision != "blocked":
        return ""
    for reason in call.reasons:
        if _RULE.fullmatch(reason):
            return reason
    return "other"


class Capped:
    """A label's values, at most `limit` distinct ones; later newcomers read "other"."""

    def __init__(self, limit: int):
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return "other"
        self.seen.add(value)
        return value


@dataclass
class Tally:
    """A counter family: label values -> running total."""

    name: str
    doc: str
    labels: tuple[str, ...]
    values: dict[tuple[str, ...], float] = field(default_factory=dict)

    def add(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        self.values[key] = self.values.get(key, 0.0) + amount

    def family(self) -> Metric:
        fam = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in self.values.items():
            fam.add_metric(key, value)
        return fam


@dataclass
class Spread:
    """A histogram family: label values -> counts per bucket (the last is +Inf) and the sum."""

    name: str
    doc: str
    labels: tuple[str, ...]
    bounds: tuple[float, ...]
    series: dict[tuple[str, ...], list[float]] = field(default_factory=dict)  # [*counts, sum]

    def observe(self, key: tuple[str, ...], value: float) -> None:
        counts = self.series.get(key)
        if counts is None:
            counts = self.series[key] = [0.0] * (len(self.bounds) + 2)
        counts[bisect_left(self.bounds, value)] += 1
        counts[-1] += value

    def family(self) -> Metric:
        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        edges = [repr(b) for b in self.bounds] + ["+Inf"]
        for key, counts in self.series.items():
            running, buckets = 0.0, []
            for edge, n in zip(edges, counts[:-1], strict=True):
                running += n
                buckets.append((edge, running))
            fam.add_metric(list(key), buckets, counts[-1])
        return fam


@dataclass(frozen=True)
class Gauge:
    """A value read when /metrics is scraped: (labels, value) pairs from `read`."""

    name: str
    doc: str
    labels: tuple[str, ...]
    read: Callable[[], Iterable[tuple[tuple[str, ...], float]]]

    def family(self) -> Metric:
        fam = GaugeMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in self.read():
            fam.add_metric(list(key), value)
        return fam


class Metrics(Collector):
    """douane's metrics, all prefixed `douane_`; `registry` serves them."""

    def __init__(self, max_label_values: int = 200, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.model = Capped(max_label_values)
        self.rule = Capped(max_label_values)
        call_labels = ("provider", "model", "team", "status", "decision", "rule")
        self.calls = Tally("douane_calls", "Intercepted LLM calls, one per audit row", call_labels)
        self.tokens = Tally("douane_tokens", "Tokens from the providers' usage",
                            ("provider", "model", "team", "direction"))
        self.cost = Tally("douane_cost_usd", "Cost of the calls in US dollars (priced calls only)",
                          ("provider", "model", "team"))
        self.latency = Spread("douane_latency_seconds", "A call's total time, from its request to the end of "
                              "its answer", ("provider",), CALL_BUCKETS)
        self.ttfb = Spread("douane_ttfb_seconds", "From a call's request to the answer's first byte",
                           ("provider",), CALL_BUCKETS)
        self.upstream = Spread("douane_upstream_seconds", "The upstream's part of the time to first byte "
                               "(douane's request stages taken out)", ("provider",), CALL_BUCKETS)
        self.stage = Spread("douane_stage_seconds", "douane's own time in each stage of a call (or of a "
                            "connection, for connection stages)", ("stage",), STAGE_BUCKETS)
        self.added = Spread("douane_added_seconds", "douane's own time per call, all stages together",
                            (), STAGE_BUCKETS)
        self.anomalies = Tally("douane_anomalies", "Spikes found by anomaly detection, by the action taken",
                               ("scope", "signal", "action"))
        self.gauges: list[Gauge] = []
        self.started = clock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- the hot path ---------------------------------------------------------------------------

    def on_call(self, call: Call) -> None:
        """Count one recorded call (from Gateway.record)."""
        provider = call.provider.name
        model = self.model(call.served_model or call.model or call.model_requested or "")
        team = call.team or ""
        status = str(call.status) if call.status is not None else "none"
        self.calls.add((provider, model, team, status, call.decision, self.rule(rule_of(call))))
        usage = call.usage
        if usage.input_tokens:
            self.tokens.add((provider, model, team, "input"), usage.input_tokens)
        if usage.output_tokens:
            self.tokens.add((provider, model, team, "output"), usage.output_tokens)
        if call.cost_usd:
            self.cost.add((provider, model, team), call.cost_usd)
        key = (provider,)
        if call.latency_ms is not None:
            self.latency.observe(key, call.latency_ms / 1000)
        if call.ttfb_ms is not None:
            self.ttfb.observe(key, call.ttfb_ms / 1000)

    def stage_times(self, metadata: dict[str, Any] | None, hook: str, timed: list[tuple[str, float]]) -> None:
        """One hook's stages took these seconds: kept on the flow (its `metadata`) until the flow ends,
        or observed at once for hooks of no flow (connections)."""
        if metadata is None:
            for stage, seconds in timed:
                self.stage.observe((stage,), seconds)
            return
        times = metadata.get(STAGE_TIMES_KEY)
        if times is None:
            times = metadata[STAGE_TIMES_KEY] = {"": 0.0}  # "": the request side's total
        for stage, seconds in timed:
            times[stage] = times.get(stage, 0.0) + seconds
        if hook in REQUEST_HOOKS:
            times[""] += sum(seconds for _, seconds in timed)

    def flow_done(self, metadata: dict[str, Any]) -> None:
        """A flow's last hook ran: observe its stage times once, and the upstream's share of its TTFB."""
        times = metadata.pop(STAGE_TIMES_KEY, None)
        if times is None:
            return
        request_side = times.pop("")
        total = 0.0
        for stage, seconds in times.items():
            self.stage.observe((stage,), seconds)
            total += seconds
        call = metadata.get(METADATA_KEY)
        if not isinstance(call, Call):
            return
        self.added.observe((), total)
        if call.ttfb_ms is not None and call.upstream is not None:
            self.upstream.observe((call.provider.name,), max(0.0, call.ttfb_ms / 1000 - request_side))

    # -- the scrape ----------------------------------------------------------------------------

    def add_gauge(self, name: str, doc: str, labels: tuple[str, ...],
                  read: Callable[[], Iterable[tuple[tuple[str, ...], float]]]) -> None:
        self.gauges.append(Gauge(name, doc, labels, read))

    def collect(self) -> Iterator[Metric]:
        for family in (self.calls, self.tokens, self.cost, self.latency, self.ttfb, self.upstream, self.stage,
                       self.added, self.anomalies):
            yield family.family()
        uptime = GaugeMetricFamily("douane_uptime_seconds", "Seconds since douane started")
        uptime.add_metric([], self.clock() - self.started)
        yield uptime
        for gauge in self.gauges:
            yield gauge.family()

    def render(self) -> bytes:
        """The Prometheus text format of every metric."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
