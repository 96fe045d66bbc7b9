"""addons.failures: what a stage's error means for its flow, under fail: closed and fail: open."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from mitmproxy import http
from mitmproxy.test import tflow, tutils

from addons import Pipeline
from addons.classify import ClassifyAddon
from addons.failures import StageFailures
from addons.flows import call_of
from douane.gateway import Gateway
from douane.policy.loader import load_policy
from douane.providers import ADAPTERS
from douane.streaming import StreamTap


class Writer:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def submit(self, record: Any) -> None:
        self.records.append(record)


def gateway(tmp: Path, fail: str) -> Gateway:
    (tmp / "p.yaml").write_text(yaml.safe_dump({"version": 1, "fail": fail}))
    gw = Gateway(load_policy(tmp / "p.yaml"), tmp / "a.duckdb")
    gw.writer = Writer()  # type: ignore[assignment]
    return gw


@pytest.fixture(scope="module", params=["closed", "open"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    return gateway(tmp_path_factory.mktemp(request.param), request.param)


def provider_flow(host: str = "api.openai.com") -> http.HTTPFlow:
    flow = tflow.tflow()
    req = flow.request
    req.scheme, req.method, req.host, req.port, req.path = "https", "POST", host, 443, "/v1/chat/completions"
    req.headers["host"] = host
    flow.client_conn.sni = host
    req.content = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
    return flow


class Boom:
    def __init__(self, name: str, hook: str):
        self.name = name
        setattr(self, hook, self._raise)

    def _raise(self, flow: http.HTTPFlow) -> None:
        raise RuntimeError(f"{self.name} broke")


def run(gw: Gateway, flow: http.HTTPFlow, stage: str, hook: str, classified: bool = True) -> ClassifyAddon:
    classify = ClassifyAddon(gw)
    if classified:
        classify.requestheaders(flow)
        classify.request(flow)
    pipeline = Pipeline([Boom(stage, hook)], StageFailures(gw, classify))
    getattr(pipeline, hook)(flow)
    return classify


@pytest.mark.parametrize("stage", ["prompt_guard", "router", "meter", "access"])
def test_a_stage_failing_before_forwarding_follows_fail(gw: Gateway, stage: str) -> None:
    flow = provider_flow()
    run(gw, flow, stage, "request")
    call = call_of(flow)
    assert call is not None and f"{stage}.request failed (RuntimeError: {stage} broke)" in (call.error or "")
    if gw.policy.fail == "closed" or stage == "router":  # an unrouted call has nowhere safe to go
        assert flow.response is not None and flow.response.status_code == 503
        assert json.loads(flow.response.content or b"")["error"]["code"] == "fail.closed"
        assert call.decision == "blocked" and f"douane's {stage} stage failed" in flow.response.text
    else:
        assert flow.response is None, "open: the call is forwarded"
        assert any(r.startswith(f"fail.open: guard_error in {stage}") for r in call.reasons)


def test_an_identity_failure_never_fails_open(gw: Gateway) -> None:
    flow = provider_flow()
    run(gw, flow, "identity", "requestheaders", classified=False)
    assert flow.response is not None and flow.response.status_code == 503
    call = call_of(flow)
    assert call is not None and call.provider.name == "openai", "a call is opened so that the refusal is recorded"


def test_a_classifier_failure_before_any_call_exists_still_makes_a_recorded_call(gw: Gateway) -> None:
    flow = provider_flow()
    run(gw, flow, "classify", "requestheaders", classified=False)
    call = call_of(flow)
    assert call is not None and "classify.requestheaders failed" in (call.error or "")
    assert (flow.response is not None) == (gw.policy.fail == "closed")


def test_a_failure_on_a_flow_to_no_provider_answers_plainly_when_closed(gw: Gateway) -> None:
    flow = provider_flow("example.com")
    run(gw, flow, "router", "request", classified=False)
    assert call_of(flow) is None
    if gw.policy.fail == "closed":
        assert flow.response is not None and flow.response.status_code == 503
        assert flow.response.headers["content-type"] == "text/plain"
    else:
        assert flow.response is None


def test_an_answer_inspection_failure_withholds_the_answer_when_closed(gw: Gateway) -> None:
    flow = provider_flow()
    classify = ClassifyAddon(gw)
    classify.requestheaders(flow)
    classify.request(flow)
    flow.response = tutils.tresp(content=b'{"choices": [{"message": {"content": "secret"}}]}')
    Pipeline([Boom("answer", "response")], StageFailures(gw, classify)).response(flow)  # type: ignore[attr-defined]
    call = call_of(flow)
    assert call is not None
    if gw.policy.fail == "closed":
        assert flow.response.status_code == 503 and b"secret" not in (flow.response.content or b"")
        assert call.decision == "blocked" and call.response_body is None
    else:
        assert flow.response.status_code == 200 and any("guard_error in answer" in r for r in call.reasons)


def test_an_answer_failure_at_response_headers_drops_the_upstream_body_when_closed(gw: Gateway) -> None:
    flow = provider_flow()
    classify = ClassifyAddon(gw)
    classify.requestheaders(flow)
    classify.request(flow)
    flow.response = tutils.tresp(content=None)
    flow.response.timestamp_end = None  # headers only: the body is still to come
    Pipeline([Boom("answer", "responseheaders")], StageFailures(gw, classify)).responseheaders(flow)  # type: ignore
    if gw.policy.fail == "closed":
        resp = flow.response
        assert resp.status_code == 503 and callable(resp.stream)
        sent = resp.stream(b"data: the upstream's words\n\n") + resp.stream(b"")
        assert b"fail.closed" in sent and b"upstream" not in sent
        assert int(resp.headers["content-length"]) == len(sent)
    else:
        assert flow.response.status_code == 200


def test_a_metering_failure_after_the_answer_is_recorded_not_turned_into_an_error(gw: Gateway) -> None:
    flow = provider_flow()
    classify = ClassifyAddon(gw)
    classify.requestheaders(flow)
    classify.request(flow)
    flow.response = tutils.tresp(content=b"{}")
    Pipeline([Boom("meter", "response")], StageFailures(gw, classify)).response(flow)  # type: ignore[attr-defined]
    call = call_of(flow)
    assert flow.response.status_code == 200 and call is not None and "meter.response failed" in (call.error or "")


def test_an_audit_failure_still_submits_the_record(gw: Gateway) -> None:
    flow = provider_flow()
    classify = ClassifyAddon(gw)
    classify.requestheaders(flow)
    classify.request(flow)
    flow.response = tutils.tresp(content=b"{}")
    writer = gw.writer
    before = len(writer.records)  # type: ignore[attr-defined]
    Pipeline([Boom("audit", "response")], StageFailures(gw, classify)).response(flow)  # type: ignore[attr-defined]
    records = writer.records[before:]  # type: ignore[attr-defined]
    assert len(records) == 1 and "audit.response failed" in records[0].error


class BrokenAdapter(type(ADAPTERS["openai"])):  # type: ignore[misc]
    def parse_stream_event(self, *args: Any) -> Any:
        raise KeyError("an event shape nobody foresaw")


@pytest.mark.parametrize("closed", [True, False])
def test_a_stream_tap_that_fails_follows_fail(closed: bool) -> None:
    tap = StreamTap(BrokenAdapter(), "chat.completions", None, fail_closed=closed)
    first = tap(b'data: {"choices": [{"delta": {"content": "a secret"}}]}\n\ndata: {"x"')
    rest = tap(b': 1}\n\n') + tap(b"")
    sent = b"".join(first + rest)
    assert tap.failure is not None and "KeyError" in tap.failure
    if closed:
        assert b"fail.closed" in sent and b"a secret" not in sent and tap.failed_closed
    else:
        assert sent == b'data: {"choices": [{"delta": {"content": "a secret"}}]}\n\ndata: {"x": 1}\n\n', \
            "open: the stream goes through as it came, from the event that failed on"
