"""douane.ops.metrics and the Pipeline's stage timing, without a proxy."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from addons import Pipeline
from douane.call import METADATA_KEY, Call
from douane.ops.metrics import STAGE_TIMES_KEY, Capped, Metrics, rule_of
from douane.providers import ProviderSpec, Usage

OPENAI = ProviderSpec("openai", "openai", ("api.openai.com",))


def call(**kw: Any) -> Call:
    c = Call(id="dou_1", started=0.0, provider=OPENAI, host="api.openai.com", method="POST",
             path="/v1/chat/completions", endpoint="chat.completions")
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def samples(m: Metrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_a_call_is_counted_with_its_labels_tokens_cost_and_times() -> None:
    m = Metrics()
    m.on_call(call(team="support", model="gpt-4o-mini", status=200, usage=Usage(input_tokens=12, output_tokens=5),
                   cost_usd=0.25, latency_ms=120.0, ttfb_ms=40.0))
    m.on_call(call(team="support", model="gpt-4o-mini", status=403, decision="blocked",
                   reasons=["pii.block"], latency_ms=2.0))
    s = samples(m)
    calls = {(lb["team"], lb["status"], lb["decision"], lb["rule"]): v for lb, v in s["douane_calls_total"]}
    assert calls == {("support", "200", "allowed", ""): 1, ("support", "403", "blocked", "pii.block"): 1}
    tokens = {lb["direction"]: v for lb, v in s["douane_tokens_total"]}
    assert tokens == {"input": 12, "output": 5}
    assert s["douane_cost_usd_total"] == [({"provider": "openai", "model": "gpt-4o-mini", "team": "support"}, 0.25)]
    assert s["douane_latency_seconds_count"] == [({"provider": "openai"}, 2)]
    assert s["douane_latency_seconds_sum"][0][1] == 0.122
    buckets = {lb["le"]: v for lb, v in s["douane_latency_seconds_bucket"]}
    assert buckets["0.005"] == 1 and buckets["0.1"] == 1 and buckets["0.25"] == 2 and buckets["+Inf"] == 2
    assert s["douane_ttfb_seconds_count"] == [({"provider": "openai"}, 1)], "no TTFB: not observed"


def test_a_bucket_holds_the_values_equal_to_its_bound() -> None:
    m = Metrics()
    m.on_call(call(latency_ms=100.0))  # exactly 0.1 s: counted in le="0.1", as Prometheus defines `le`
    buckets = {lb["le"]: v for lb, v in samples(m)["douane_latency_seconds_bucket"]}
    assert buckets["0.05"] == 0 and buckets["0.1"] == 1


def test_the_rule_is_the_reason_shaped_like_a_rule_and_only_for_blocked_calls() -> None:
    assert rule_of(call(decision="blocked", reasons=["path canonicalised", "teams.support.models"])) \
        == "teams.support.models"
    assert rule_of(call(decision="blocked", reasons=["clients[3].budget_usd_per_day"])) == \
        "clients[3].budget_usd_per_day"
    assert rule_of(call(decision="blocked", reasons=["something odd happened"])) == "other"
    assert rule_of(call(decision="allowed", reasons=["pii.redact: EMAIL_ADDRESS x1"])) == ""


def test_client_chosen_label_values_are_capped() -> None:
    cap = Capped(2)
    assert [cap(v) for v in ("a", "b", "c", "a", "d")] == ["a", "b", "other", "a", "other"]
    m = Metrics(max_label_values=3)
    for i in range(10):
        m.on_call(call(model_requested=f"made-up-{i}", status=403, decision="blocked", reasons=["teams.x.models"]))
    models = {lb["model"] for lb, _ in samples(m)["douane_calls_total"]}
    assert models == {"made-up-0", "made-up-1", "made-up-2", "other"}


def test_stage_times_are_kept_on_the_flow_and_observed_once_when_it_ends() -> None:
    m = Metrics()
    metadata: dict[str, Any] = {METADATA_KEY: call(upstream="http://127.0.0.1:9", ttfb_ms=50.0)}
    m.stage_times(metadata, "request", [("classify", 0.001), ("prompt_guard", 0.003)])
    m.stage_times(metadata, "responseheaders", [("answer", 0.002)])
    m.stage_times(metadata, "requestheaders", [("classify", 0.0005)])
    assert "douane_stage_seconds_count" not in samples(m) or not samples(m)["douane_stage_seconds_count"]
    m.flow_done(metadata)
    m.flow_done(metadata)  # a second end (error after response) observes nothing more
    assert STAGE_TIMES_KEY not in metadata
    s = samples(m)
    stages = {lb["stage"]: v for lb, v in s["douane_stage_seconds_sum"]}
    assert stages == pytest.approx({"classify": 0.0015, "prompt_guard": 0.003, "answer": 0.002})
    assert {lb["stage"]: v for lb, v in s["douane_stage_seconds_count"]} == {"classify": 1, "prompt_guard": 1,
                                                                                "answer": 1}
    assert abs(s["douane_added_seconds_sum"][0][1] - 0.0065) < 1e-12
    # the upstream's share of the 50 ms TTFB: minus the 4.5 ms of request-side stages
    assert abs(s["douane_upstream_seconds_sum"][0][1] - 0.0455) < 1e-9


def test_a_connection_stage_is_observed_at_once() -> None:
    m = Metrics()
    m.stage_times(None, "http_connect", [("identity", 0.0002)])
    assert samples(m)["douane_stage_seconds_count"] == [({"stage": "identity"}, 1)]


def test_scrape_time_gauges_are_read_when_scraped() -> None:
    m = Metrics()
    depth = [3.0]
    m.add_gauge("douane_test_depth", "a gauge", ("kind",), lambda: [(("x",), depth[0])])
    assert samples(m)["douane_test_depth"] == [({"kind": "x"}, 3.0)]
    depth[0] = 7.0
    assert samples(m)["douane_test_depth"] == [({"kind": "x"}, 7.0)]


class Flow:
    """Enough of an HTTPFlow for the Pipeline's timing: it is matched by type."""


class Stage:
    def __init__(self, name: str):
        self.name = name

    def request(self, flow: Any) -> None:
        pass

    def response(self, flow: Any) -> None:
        pass


class AsyncStage(Stage):
    async def request(self, flow: Any) -> None:  # type: ignore[override]
        await asyncio.sleep(0)


def test_the_pipeline_times_each_stage_per_flow_and_ends_the_flow_on_response(monkeypatch) -> None:
    from mitmproxy.test import tflow

    m = Metrics()
    flow = tflow.tflow()
    flow.metadata[METADATA_KEY] = call()
    pipeline = Pipeline([Stage("classify"), AsyncStage("prompt_guard"), Stage("router")], metrics=m)
    asyncio.run(pipeline.request(flow))  # type: ignore[attr-defined]
    assert set(flow.metadata[STAGE_TIMES_KEY]) == {"", "classify", "prompt_guard", "router"}
    assert pipeline.response(flow) is None  # type: ignore[attr-defined]
    assert STAGE_TIMES_KEY not in flow.metadata
    counts = {lb["stage"]: v for lb, v in samples(m)["douane_stage_seconds_count"]}
    assert counts == {"classify": 1, "prompt_guard": 1, "router": 1}


def test_without_metrics_the_pipeline_times_nothing() -> None:
    from mitmproxy.test import tflow

    flow = tflow.tflow()
    Pipeline([Stage("classify")]).request(flow)  # type: ignore[attr-defined]
    assert STAGE_TIMES_KEY not in flow.metadata
