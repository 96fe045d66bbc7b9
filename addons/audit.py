"""Write one audit record per intercepted call, through the batched background writer."""

from __future__ import annotations

import logging

from mitmproxy import http

from addons.flows import call_of, client_gone
from douane.call import Call
from douane.gateway import Gateway

log = logging.getLogger(__name__)


class AuditAddon:
    name = "audit"

    def __init__(self, gw: Gateway):
        self.gw = gw

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if self.gw.draining and flow.response is not None and flow.response.http_version == "HTTP/1.1":
            flow.response.headers["connection"] = "close"  # the proxy is stopping: next call elsewhere

    def response(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or flow.response is None:
            return
        call.status = flow.response.status_code
        self._record(flow, call)

    def error(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or call.recorded:
            return
        streamed = flow.response is not None and flow.response.stream
        if flow.response is not None and not streamed and not client_gone(flow):
            return  # an answer for the failure is about to be sent; `response` records it
        if streamed:  # then cut off
            assert flow.response is not None
            call.status = flow.response.status_code
            call.add_error(f"stream ended early: {flow.error.msg if flow.error else 'unknown'}")
        else:
            call.add_error(flow.error.msg if flow.error else "unknown error")
        if self.gw.draining:
            call.add_error("cut off: douane was stopping and the grace period ran out")
        self._record(flow, call)

    def _record(self, flow: http.HTTPFlow, call: Call) -> None:
        resp = flow.response
        if not call.recorded and resp is not None and resp.timestamp_end and flow.request.timestamp_start:
            call.latency_ms = (resp.timestamp_end - flow.request.timestamp_start) * 1000
        self.gw.record(call)

