"""douane.ops.tracing on an in-memory exporter: names, attributes, parents, sampling."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as semconv

from douane.call import Call
from douane.ops.tracing import Tracer, attributes, traces_url
from douane.policy.model import Telemetry
from douane.providers import ProviderSpec, Usage

GEMINI = ProviderSpec("gemini", "gemini", ("generativelanguage.googleapis.com",))
OPENAI = ProviderSpec("openai", "openai", ("api.openai.com",))
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def call(spec: ProviderSpec = OPENAI, **kw: Any) -> Call:
    c = Call(id="dou_1", started=1000.0, provider=spec, host=spec.hosts[0], method="POST", path="/x",
             endpoint="chat.completions")
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def tracer(ratio: float = 1.0) -> tuple[Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return Tracer(Telemetry(sample_ratio=ratio), exporter=exporter), exporter


def finished(t: Tracer, exporter: InMemorySpanExporter) -> list[Any]:
    t.provider.force_flush()
    return list(exporter.get_finished_spans())


def test_attribute_names_are_the_semantic_conventions() -> None:
    attrs = attributes(call(GEMINI, endpoint="generateContent", model_requested="gemini-2.0-flash",
                            usage=Usage(input_tokens=3, output_tokens=4), status=200,
                            upstream="https://generativelanguage.googleapis.com"))
    assert attrs[semconv.GEN_AI_OPERATION_NAME] == semconv.GenAiOperationNameValues.GENERATE_CONTENT.value
    assert attrs[semconv.GEN_AI_PROVIDER_NAME] == semconv.GenAiProviderNameValues.GCP_GEMINI.value
    assert attrs[semconv.GEN_AI_REQUEST_MODEL] == "gemini-2.0-flash"
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 3 and attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 4
    assert attrs["server.address"] == "generativelanguage.googleapis.com" and attrs["server.port"] == 443
    assert "douane.rule" not in attrs and "error.type" not in attrs


def test_the_provider_that_answered_names_the_span_provider() -> None:
    attrs = attributes(call(served_by="anthropic", endpoint="chat.completions"))
    assert attrs["gen_ai.provider.name"] == "anthropic"


def test_a_span_runs_from_the_request_to_the_record_and_joins_the_clients_trace() -> None:
    t, exporter = tracer()
    c = call(model_requested="gpt-4o-mini")
    upstream_parent = t.start(c, {"traceparent": PARENT})
    c.status, c.served_model = 200, "gpt-4o-mini-2024"
    t.finish(c, 1000.25)
    [span] = finished(t, exporter)
    assert span.name == "chat gpt-4o-mini"
    assert f"{span.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert upstream_parent == f"00-4bf92f3577b34da6a3ce929d0e0e4736-{span.context.span_id:016x}-01"
    assert span.start_time == 1000 * 10**9 and span.end_time == 1000.25 * 10**9
    assert span.attributes["gen_ai.response.model"] == "gpt-4o-mini-2024"
    assert t.open == {}


def test_a_blocked_call_is_an_error_naming_its_rule() -> None:
    t, exporter = tracer()
    c = call(status=403, decision="blocked", reasons=["teams.support.models"])
    t.start(c, {})
    t.finish(c, 1001.0)
    [span] = finished(t, exporter)
    assert span.status.status_code.name == "ERROR" and span.status.description == "teams.support.models"
    assert span.attributes["error.type"] == "teams.support.models"
    assert span.parent is None


def test_a_call_never_started_still_gets_its_span() -> None:
    t, exporter = tracer()
    t.finish(call(endpoint="responses", method="WEBSOCKET"), 1000.5)
    [span] = finished(t, exporter)
    assert span.name == "chat" and span.attributes["http.request.method"] == "WEBSOCKET"


def test_sampling_leaves_out_new_traces_but_follows_a_sampled_client() -> None:
    t, exporter = tracer(ratio=0.0)
    lone = call()
    assert t.start(lone, {}) is None, "unsampled: nothing to propagate"
    t.finish(lone, 1000.1)
    joined = call(id="dou_2")
    assert t.start(joined, {"traceparent": PARENT}) is not None
    t.finish(joined, 1000.1)
    assert [s.attributes["douane.request_id"] for s in finished(t, exporter)] == ["dou_2"]


def test_close_ends_spans_of_calls_never_recorded() -> None:
    t, exporter = tracer()
    t.start(call(), {})
    t.close()
    assert len(exporter.get_finished_spans()) == 1 and t.open == {}


def test_traces_url() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("https://otel.example/custom/traces") == "https://otel.example/custom/traces"


def test_the_endpoint_is_checked_when_the_policy_loads() -> None:
    import pytest
    from pydantic import ValidationError

    from douane.policy.model import Policy

    with pytest.raises(ValidationError, match="http:// or https://"):
        Policy.model_validate({"telemetry": {"otlp_endpoint": "collector:4318"}})
    with pytest.raises(ValidationError):
        Policy.model_validate({"telemetry": {"sample_ratio": 2}})
    assert Policy().telemetry.otlp_endpoint is None, "off by default"
