"""OpenTelemetry spans through the real proxy, received by a real OTLP/HTTP receiver run by the test."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.e2e.conftest import routed_policy
from tests.e2e.test_sdks import client_env

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class OtlpReceiver:
    """An OTLP/HTTP (protobuf) trace receiver: what a collector listening on :4318 does."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    raw = gzip.decompress(raw)
                if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest.FromString(raw)
                receiver.take(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def take(self, request: ExportTraceServiceRequest) -> None:
        with self.lock:
            for rs in request.resource_spans:
                self.resources.append({a.key: value(a.value) for a in rs.resource.attributes})
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        self.spans.append({
                            "name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(), "kind": span.kind, "status": span.status.code,
                            "status_message": span.status.message,
                            "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                            "attrs": {a.key: value(a.value) for a in span.attributes}})

    def wait(self, n: int, timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.spans) >= n:
                    return list(self.spans)
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {n} span(s) within {timeout} s, got {len(self.spans)}")
            time.sleep(0.05)


def value(v: AnyValue) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


@pytest.fixture()
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.server.shutdown()


def test_each_call_is_a_genai_span_joining_the_clients_trace(make_douane, mock: str, otlp: OtlpReceiver,
                                                            received: list) -> None:
    d = make_douane(routed_policy(mock, pii={"action": "block"},
                                  telemetry={"otlp_endpoint": otlp.url, "service_name": "douane-test"}))
    with client_env(d):
        oa = openai.OpenAI(api_key="sk-x", max_retries=0)
        answer = oa.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}],
            extra_headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
        an = anthropic.Anthropic(api_key="sk-x", max_retries=0)
        an.messages.create(model="claude-haiku-4-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.PermissionDeniedError):
            oa.chat.completions.create(model="gpt-4o-mini",
                                       messages=[{"role": "user", "content": "mail jane.roe@example.com"}])
    spans = {s["attrs"]["douane.request_id"]: s for s in otlp.wait(3)}
    assert len(spans) == 3
    rows = {r["id"]: r for r in d.rows(expect=3)}
    assert set(spans) == set(rows), "one span per audit row, with the row's id"

    joined = spans[answer.headers["x-douane-request-id"]]
    assert joined["trace_id"] == CLIENT_TRACE and joined["parent"] == CLIENT_SPAN, "the client's trace is joined"
    assert joined["name"] == "chat gpt-4o-mini"
    assert joined["kind"] == 3  # SPAN_KIND_CLIENT
    row = rows[joined["attrs"]["douane.request_id"]]
    expected = {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": row["model"], "gen_ai.usage.input_tokens": row["input_tokens"],
        "gen_ai.usage.output_tokens": row["output_tokens"], "douane.decision": "allowed",
        "http.response.status_code": 200, "server.address": "127.0.0.1"}
    assert {k: joined["attrs"].get(k) for k in expected} == expected
    upstream_parent = [r["headers"].get("traceparent") or r["headers"].get("Traceparent") for r in received]
    assert f"00-{CLIENT_TRACE}-{joined['span_id']}-01" in upstream_parent, \
        "the provider sees douane's span as its parent"

    started = [s for s in spans.values() if s["attrs"]["gen_ai.provider.name"] == "anthropic"][0]
    assert started["parent"] == "" and started["trace_id"] != CLIENT_TRACE, "no traceparent: a trace of its own"
    assert started["attrs"]["gen_ai.operation.name"] == "chat"
    assert started["attrs"]["gen_ai.usage.input_tokens"] > 0

    blocked = [s for s in spans.values() if s["attrs"]["douane.decision"] == "blocked"][0]
    assert blocked["attrs"]["douane.rule"] == "pii.block" and blocked["attrs"]["error.type"] == "pii.block"
    assert blocked["status"] == 2 and blocked["status_message"] == "pii.block"  # STATUS_CODE_ERROR
    assert all(s["end"] > s["start"] for s in spans.values())
    assert otlp.resources[0]["service.name"] == "douane-test"
    assert not any("jane.roe" in str(s["attrs"]) for s in spans.values()), "no prompt text on spans"


def test_without_an_endpoint_no_span_and_no_traceparent_is_added(make_douane, mock: str, received: list) -> None:
    d = make_douane(routed_policy(mock))
    with client_env(d):
        openai.OpenAI(api_key="sk-x", max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    assert not any(k.lower() == "traceparent" for r in received for k in r["headers"])
    d.rows(expect=1)


def test_spans_queued_at_stop_are_flushed(make_douane, mock: str, otlp: OtlpReceiver) -> None:
    d = make_douane(routed_policy(mock, telemetry={"otlp_endpoint": otlp.url + "/v1/traces"}))
    with client_env(d):
        for _ in range(3):
            openai.OpenAI(api_key="sk-x", max_retries=0).chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    assert d.stop() == 0
    assert len(otlp.wait(3, timeout=1)) == 3, "every span was exported by the time douane exited"
