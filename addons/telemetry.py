"""Open each call's span once it is classified, joining the client's trace (W3C traceparent)."""

from __future__ import annotations

from mitmproxy import http

from addons.flows import call_of
from douane.ops.tracing import Tracer


class TelemetryAddon:
    name = "telemetry"

    def __init__(self, tracer: Tracer):
        self.tracer = tracer

    def request(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or call.id in self.tracer.open:
            return
        upstream_parent = self.tracer.start(call, flow.request.headers)
        if upstream_parent is not None:  # the provider sees douane's span as the caller
            flow.request.headers["traceparent"] = upstream_parent
