"""`douane top`: a live view of a running proxy, read from its admin endpoint's /metrics.

Each refresh scrapes /metrics; rates and latency percentiles come from the difference between two
scrapes (the first frame uses everything since the proxy started). Pure functions turn snapshots
into a `View`, and `render` turns a view into rich renderables, so both are testable without a
terminal or a proxy.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

Labels = dict[str, str]
BREAKER_STATES = {1.0: "open", 0.5: "half-open"}  # douane_breaker_open's values; 0 is closed


@dataclass
class Snapshot:
    """One scrape: every sample by name, and when it was taken (monotonic seconds)."""

    at: float
    samples: dict[str, list[tuple[Labels, float]]]

    @classmethod
    def parse(cls, text: str, at: float) -> Snapshot:
        samples: dict[str, list[tuple[Labels, float]]] = defaultdict(list)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[s.name].append((dict(s.labels), s.value))
        return cls(at, dict(samples))

    def value(self, name: str, default: float = 0.0) -> float:
        values = self.samples.get(name)
        return values[0][1] if values else default

    def sums(self, name: str, by: tuple[str, ...], where: Callable[[Labels], bool] = lambda _: True
             ) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = defaultdict(float)
        for labels, value in self.samples.get(name, []):
            if where(labels):
                out[tuple(labels.get(k, "") for k in by)] += value
        return dict(out)

    def buckets(self, name: str) -> dict[float, float]:
        """A histogram's cumulative bucket counts, all its series added up, by upper bound."""
        out: dict[float, float] = defaultdict(float)
        for labels, value in self.samples.get(name + "_bucket", []):
            out[float(labels["le"])] += value
        return dict(out)


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of a histogram from cumulative bucket counts, interpolated within the bucket
    (as Prometheus' histogram_quantile does); None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bound: say the bound
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _delta(now: dict, before: dict | None) -> dict:
    """Counter increases between two scrapes (a counter that went down restarted: its new value)."""
    if before is None:
        return dict(now)
    out = {}
    for key, value in now.items():
        prev = before.get(key, 0.0)
        out[key] = value - prev if value >= prev else value
    return out


def _is_error(labels: Labels) -> bool:
    return labels.get("status") == "none" or labels.get("status", "0")[:1] == "5"


@dataclass
class TeamRow:
    team: str
    calls_per_min: float
    input_tokens_per_min: float
    output_tokens_per_min: float
    cost_per_min: float
    blocked_per_min: float


@dataclass
class View:
    window: float  # seconds the rates are over
    uptime: float
    calls_per_s: float
    errors_per_s: float
    blocked_per_s: float
    latency_p50: float | None
    latency_p99: float | None
    ttfb_p50: float | None
    added_p50: float | None
    added_p99: float | None
    in_flight: float
    audit_queue: float
    audit_ok: bool
    redis_up: bool | None
    teams: list[TeamRow] = field(default_factory=list)
    blocks: list[tuple[str, float, float]] = field(default_factory=list)  # rule, in window, since start
    # provider, calls/s, errors/s, upstream p50
    upstreams: list[tuple[str, float, float, float | None]] = field(default_factory=list)
    breakers: list[tuple[str, str, float]] = field(default_factory=list)  # upstream, state, failures in a row


def build_view(now: Snapshot, before: Snapshot | None) -> View:
    """What the screen shows, from the latest scrape and the one before (None: since start)."""
    window = max(now.at - before.at, 1e-9) if before is not None else max(now.value("douane_uptime_seconds"), 1e-9)

    def delta(name: str, by: tuple[str, ...], where: Callable[[Labels], bool] = lambda _: True) -> dict:
        return _delta(now.sums(name, by, where), before.sums(name, by, where) if before else None)

    def hist(name: str) -> dict[float, float]:
        return _delta(now.buckets(name), before.buckets(name) if before else None)

    calls = sum(delta("douane_calls_total", ()).values())
    errors = sum(delta("douane_calls_total", (), _is_error).values())
    blocked = sum(delta("douane_calls_total", (), lambda lb: lb.get("decision") == "blocked").values())
    per_min = 60 / window
    team_calls = delta("douane_calls_total", ("team",))
    team_blocked = delta("douane_calls_total", ("team",), lambda lb: lb.get("decision") == "blocked")
    tokens = delta("douane_tokens_total", ("team", "direction"))
    cost = delta("douane_cost_usd_total", ("team",))
    teams = sorted({k[0] for k in team_calls} | {k[0] for k in tokens} | {k[0] for k in cost})
    team_rows = [TeamRow(t or "(none)", team_calls.get((t,), 0) * per_min, tokens.get((t, "input"), 0) * per_min,
                         tokens.get((t, "output"), 0) * per_min, cost.get((t,), 0) * per_min,
                         team_blocked.get((t,), 0) * per_min) for t in teams]
    team_rows.sort(key=lambda r: (-r.cost_per_min, -r.calls_per_min, r.team))
    rule_window = delta("douane_calls_total", ("rule",), lambda lb: lb.get("decision") == "blocked")
    rule_total = now.sums("douane_calls_total", ("rule",), lambda lb: lb.get("decision") == "blocked")
    blocks = sorted(((r[0], rule_window.get(r, 0.0), total) for r, total in rule_total.items()),
                    key=lambda b: (-b[1], -b[2], b[0]))
    provider_calls = delta("douane_calls_total", ("provider",))
    provider_errors = delta("douane_calls_total", ("provider",), _is_error)
    upstreams = []
    for (provider,), n in sorted(provider_calls.items()):
        series = _delta(_provider_buckets(now, "douane_upstream_seconds", provider),
                        _provider_buckets(before, "douane_upstream_seconds", provider) if before else None)
        upstreams.append((provider, n / window, provider_errors.get((provider,), 0) / window,
                          quantile(0.5, series)))
    failures = {lb.get("upstream", ""): v for lb, v in now.samples.get("douane_breaker_failures", [])}
    breakers = [(lb.get("upstream", ""), BREAKER_STATES.get(v, "closed"), failures.get(lb.get("upstream", ""), 0.0))
                for lb, v in now.samples.get("douane_breaker_open", [])]
    latency, added = hist("douane_latency_seconds"), hist("douane_added_seconds")
    redis = now.samples.get("douane_redis_up")
    return View(window=window, uptime=now.value("douane_uptime_seconds"), calls_per_s=calls / window,
                errors_per_s=errors / window, blocked_per_s=blocked / window,
                latency_p50=quantile(0.5, latency), latency_p99=quantile(0.99, latency),
                ttfb_p50=quantile(0.5, hist("douane_ttfb_seconds")),
                added_p50=quantile(0.5, added), added_p99=quantile(0.99, added),
                in_flight=now.value("douane_calls_in_flight"), audit_queue=now.value("douane_audit_queue_depth"),
                audit_ok=now.value("douane_audit_writer_ok", 1.0) == 1.0,
                redis_up=None if not redis else redis[0][1] == 1.0,
                teams=team_rows, blocks=blocks, upstreams=upstreams, breakers=breakers)


def _provider_buckets(snap: Snapshot, name: str, provider: str) -> dict[float, float]:
    out: dict[float, float] = defaultdict(float)
    for labels, value in snap.samples.get(name + "_bucket", []):
        if labels.get("provider") == provider:
            out[float(labels["le"])] += value
    return dict(out)


# -- rendering ----------------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def render(view: View | None, source: str, problem: str | None = None) -> RenderableType:
    """The whole screen: a header, the traffic panel, then teams, blocks and upstreams."""
    stamp = time.strftime("%H:%M:%S")
    if view is None:
        return Panel(Text(f"{problem or 'waiting for the first scrape'}\nretrying...", style="bold red"),
                     title=f"douane top - {source} - {stamp}")
    traffic = Table.grid(padding=(0, 3))
    for _ in range(4):
        traffic.add_column(justify="left")
    redis = "-" if view.redis_up is None else ("up" if view.redis_up else "DOWN")
    traffic.add_row(f"calls/s [bold]{view.calls_per_s:.2f}[/]", f"errors/s [bold]{view.errors_per_s:.2f}[/]",
                    f"blocked/s [bold]{view.blocked_per_s:.2f}[/]", f"in flight [bold]{view.in_flight:.0f}[/]")
    traffic.add_row(f"latency p50 [bold]{ms(view.latency_p50)}[/]", f"p99 [bold]{ms(view.latency_p99)}[/]",
                    f"TTFB p50 [bold]{ms(view.ttfb_p50)}[/]", f"redis [bold]{redis}[/]")
    traffic.add_row(f"douane added p50 [bold]{ms(view.added_p50)}[/]", f"p99 [bold]{ms(view.added_p99)}[/]",
                    f"audit queue [bold]{view.audit_queue:.0f}[/]",
                    "audit [bold]ok[/]" if view.audit_ok else "audit [bold red]DEGRADED[/]")
    teams = Table("team", "calls/min", "tokens in/min", "tokens out/min", "cost/min", "blocked/min",
                  title="by team", expand=True)
    for row in view.teams:
        teams.add_row(Text(row.team), f"{row.calls_per_min:.1f}", f"{row.input_tokens_per_min:,.0f}",
                      f"{row.output_tokens_per_min:,.0f}", f"${row.cost_per_min:.4f}", f"{row.blocked_per_min:.1f}")
    blocks = Table("rule", "now", "since start", title="blocks by rule", expand=True)
    for rule, now, total in view.blocks[:10]:
        blocks.add_row(Text(rule), f"{now:.0f}", f"{total:.0f}")
    upstreams = Table("provider", "calls/s", "errors/s", "upstream p50", title="upstreams", expand=True)
    for provider, calls, errors, p50 in view.upstreams:
        upstreams.add_row(Text(provider), f"{calls:.2f}", f"{errors:.2f}", ms(p50))
    for upstream, state, failures in view.breakers:
        upstreams.add_row(Text(upstream), Text(f"breaker {state}", style="bold red" if state != "closed" else ""),
                          f"{failures:.0f} failed", "")
    header = (f"douane top - {source} - up {duration(view.uptime)} - rates over the last {view.window:.1f} s - "
              f"{stamp}")
    parts: list[RenderableType] = [Panel(traffic, title=header), teams, blocks, upstreams]
    if problem:
        parts.insert(0, Text(problem, style="bold red"))
    return Group(*parts)
