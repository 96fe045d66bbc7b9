"""douane top's arithmetic: rates and percentiles between two scrapes, and the screen it renders."""

from __future__ import annotations

import pytest
from rich.console import Console

from douane.call import Call
from douane.ops.metrics import Metrics
from douane.ops.top import Snapshot, build_view, quantile, render
from douane.providers import ProviderSpec, Usage

OPENAI = ProviderSpec("openai", "openai", ("api.openai.com",))


def call(**kw: object) -> Call:
    c = Call(id="dou_1", started=0.0, provider=OPENAI, host="api.openai.com", method="POST", path="/x",
             endpoint="chat.completions", model="gpt-4o-mini", status=200, latency_ms=100.0, ttfb_ms=50.0,
             upstream="http://127.0.0.1:9")
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_quantile_interpolates_within_the_bucket_as_prometheus_does() -> None:
    buckets = {0.1: 0.0, 0.2: 10.0, 0.4: 20.0, float("inf"): 20.0}
    assert quantile(0.5, buckets) == pytest.approx(0.2)
    assert quantile(0.25, buckets) == pytest.approx(0.15)
    assert quantile(0.75, buckets) == pytest.approx(0.3)
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    assert quantile(0.99, {0.1: 0.0, float("inf"): 5.0}) == 0.1, "past the last bound: the bound"


def test_rates_come_from_the_difference_between_two_scrapes() -> None:
    m = Metrics(clock=lambda: 0.0)
    for _ in range(4):
        m.on_call(call(team="support", usage=Usage(input_tokens=100, output_tokens=10), cost_usd=0.01))
    before = Snapshot.parse(m.render().decode(), at=10.0)
    for _ in range(6):
        m.on_call(call(team="support", usage=Usage(input_tokens=100, output_tokens=10), cost_usd=0.01))
    m.on_call(call(team="research", status=403, decision="blocked", reasons=["teams.research.models"]))
    m.on_call(call(team="research", status=502))
    now = Snapshot.parse(m.render().decode(), at=12.0)
    view = build_view(now, before)
    assert view.window == 2.0
    assert view.calls_per_s == pytest.approx(4.0)  # 8 new calls in 2 s
    assert view.errors_per_s == pytest.approx(0.5) and view.blocked_per_s == pytest.approx(0.5)
    support = next(t for t in view.teams if t.team == "support")
    assert support.calls_per_min == pytest.approx(180) and support.input_tokens_per_min == pytest.approx(18000)
    assert support.cost_per_min == pytest.approx(1.8)
    assert view.blocks == [("teams.research.models", 1.0, 1.0)]
    assert view.latency_p50 is not None and 0.05 < view.latency_p50 <= 0.1


def test_the_first_frame_is_since_the_proxy_started_and_a_restart_is_not_negative() -> None:
    clock = [0.0]
    m = Metrics(clock=lambda: clock[0])
    for _ in range(10):
        m.on_call(call())
    clock[0] = 5.0
    busy = Snapshot.parse(m.render().decode(), at=100.0)
    assert build_view(busy, None).calls_per_s == pytest.approx(2.0)
    restarted = Metrics(clock=lambda: 0.0)
    restarted.on_call(call())
    view = build_view(Snapshot.parse(restarted.render().decode(), at=101.0), busy)
    assert view.calls_per_s == pytest.approx(1.0), "a counter that went down restarted: its value is new"


def test_the_screen_renders_every_part() -> None:
    m = Metrics()
    m.on_call(call(team="support", status=403, decision="blocked", reasons=["pii.block"]))
    console = Console(width=140, record=True)
    console.print(render(build_view(Snapshot.parse(m.render().decode(), at=1.0), None), "http://127.0.0.1:9"))
    text = console.export_text()
    for part in ("calls/s", "by team", "support", "blocks by rule", "pii.block", "upstreams", "openai"):
        assert part in text
    console = Console(width=100, record=True)
    console.print(render(None, "http://127.0.0.1:9", "cannot read http://127.0.0.1:9/metrics: refused"))
    assert "refused" in console.export_text()
