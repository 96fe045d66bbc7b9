"""OpenTelemetry: one span per call, with the GenAI semantic conventions, exported over OTLP/HTTP.

Built only when the policy sets `telemetry.otlp_endpoint`: otherwise no tracer exists and nothing
here runs. A call's span starts when the call is classified, as a child of the client's own span
when its request carries a W3C `traceparent` (the upstream then gets douane's span as its parent),
and ends when the call is recorded (Gateway.record), with what the audit row says. Spans are
exported by a background thread in batches (BatchSpanProcessor): the call never waits for it.

Attribute names: OpenTelemetry semantic conventions for generative AI client spans (gen_ai.*),
HTTP and server attributes; douane's own under `douane.*`. No prompt or answer text is put on a
span: the audit store keeps those, redacted.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from douane.call import Call
from douane.ops.metrics import rule_of
from douane.policy.model import Telemetry

log = logging.getLogger(__name__)

# gen_ai.operation.name per douane endpoint (the conventions' well-known values)
OPERATIONS = {
    "chat.completions": "chat", "responses": "chat", "messages": "chat", "realtime": "chat",
    "completions": "text_completion",
    "generateContent": "generate_content", "streamGenerateContent": "generate_content",
    "embeddings": "embeddings", "embedContent": "embeddings", "batchEmbedContents": "embeddings",
}
# gen_ai.provider.name per wire format, for the built-in providers; a custom provider keeps its name
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}

_PROPAGATOR = TraceContextTextMapPropagator()


def traces_url(endpoint: str) -> str:
    """The collector's base URL gets OTLP/HTTP's traces path; a URL with a path is used as it is."""
    return endpoint.rstrip("/") + "/v1/traces" if urlsplit(endpoint).path in ("", "/") else endpoint


class Tracer:
    """Starts and ends the calls' spans; `close()` flushes what is queued."""

    def __init__(self, config: Telemetry, exporter: SpanExporter | None = None, schedule_delay_ms: int = 1000):
        assert config.otlp_endpoint is not None or exporter is not None
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=traces_url(config.otlp_endpoint or ""), timeout=5)
        self.provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}),
                                       sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)))
        self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=schedule_delay_ms))
        self.tracer = self.provider.get_tracer("douane")
        self.open: dict[str, Span] = {}  # call id -> its span, from classification to record

    def start(self, call: Call, headers: Mapping[str, str]) -> str | None:
        """Open the call's span, a child of the client's trace if it sent a traceparent; returns the
        traceparent to send upstream (douane's span as the parent), None when not sampled."""
        parent = _PROPAGATOR.extract(headers) if "traceparent" in headers else None
        span = self.tracer.start_span(span_name(call), context=parent, kind=SpanKind.CLIENT,
                                      start_time=int(call.started * 1e9))
        self.open[call.id] = span  # type: ignore[assignment]  # the SDK's tracer makes SDK spans
        ctx = span.get_span_context()
        if not ctx.trace_flags.sampled:
            return None
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"  # W3C traceparent

    def finish(self, call: Call, end: float) -> None:
        """End the call's span (or make one, for calls never started: a WebSocket turn, a CONNECT)."""
        span = self.open.pop(call.id, None)
        if span is None:
            span = self.tracer.start_span(span_name(call), kind=SpanKind.CLIENT,  # type: ignore[assignment]
                                          start_time=int(call.started * 1e9))
        assert span is not None
        if span.is_recording():
            span.update_name(span_name(call))  # the model may be known only now
            span.set_attributes(attributes(call))
            failed = call.error or (call.status or 0) >= 400 or call.decision == "blocked"
            if failed:
                span.set_status(Status(StatusCode.ERROR, rule_of(call) or call.error or f"HTTP {call.status}"))
        span.end(end_time=int(end * 1e9))

    def close(self) -> None:
        for span in self.open.values():  # calls never recorded: their spans still end
            span.end()
        self.open.clear()
        try:
            self.provider.shutdown()
        except Exception:
            log.warning("telemetry: flushing the last spans failed", exc_info=True)


def span_name(call: Call) -> str:
    """`{gen_ai.operation.name} {gen_ai.request.model}`, as the conventions ask."""
    model = call.model_requested or call.model
    operation = OPERATIONS.get(call.endpoint or "", call.endpoint or "other")
    return f"{operation} {model}" if model else operation


def attributes(call: Call) -> dict[str, Any]:
    """The span's attributes: the conventions' essentials and douane's own (each costs the SDK a check)."""
    served = call.served_by or call.provider.name  # a route or fallback may have sent it elsewhere
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": OPERATIONS.get(call.endpoint or "", call.endpoint or "other"),
        "gen_ai.provider.name": PROVIDER_NAMES.get(served, served),
        "douane.request_id": call.id,
        "douane.client": call.client,
        "douane.decision": call.decision,
    }
    optional = {
        "gen_ai.request.model": call.model_requested,
        "gen_ai.response.model": call.served_model or call.model,
        "gen_ai.usage.input_tokens": call.usage.input_tokens,
        "gen_ai.usage.output_tokens": call.usage.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": call.usage.cached_tokens,
        "http.response.status_code": call.status,
        "douane.team": call.team,
        "douane.rule": rule_of(call) or None,
        "douane.reason": "; ".join(call.reasons) or None,
        "douane.cost_usd": call.cost_usd,
        "error.type": _error_type(call),
    }
    attrs.update({k: v for k, v in optional.items() if v is not None})
    if call.method != "POST":
        attrs["http.request.method"] = call.method  # WebSocket turns
    if call.upstream:
        address = _server(call.upstream)
        if address is not None:
            attrs["server.address"], attrs["server.port"] = address
    return attrs


@functools.lru_cache(maxsize=256)
def _server(upstream: str) -> tuple[str, int] | None:
    parts = urlsplit(upstream)
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _error_type(call: Call) -> str | None:
    if call.decision == "blocked":
        return rule_of(call)
    if call.status is not None and call.status >= 400:
        return str(call.status)
    return "error" if call.error else None
