"""Write one audit record per intercepted call, through the batched background writer."""

from __future__ import annotations

import logging

from mitmproxy import http

from addons.flows import call_of
from douane.call import Call
from douane.gateway import Gateway

log = logging.getLogger(__name__)


class AuditAddon:
    name = "audit"

    def __init__(self, gw: Gateway):
        self.gw = gw

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
        if flow.response is not None and not flow.response.stream:
            return  # an answer for the failure is about to be sent; `response` records it
        if flow.response is not None:  # streamed, then cut off
            call.status = flow.response.status_code
            call.add_error(f"stream ended early: {flow.error.msg if flow.error else 'unknown'}")
        else:
            call.add_error(flow.error.msg if flow.error else "unknown error")
        self._record(flow, call)

    def _record(self, flow: http.HTTPFlow, call: Call) -> None:
        resp = flow.response
        if not call.recorded and resp is not None and resp.timestamp_end and flow.request.timestamp_start:
            call.latency_ms = (resp.timestamp_end - flow.request.timestamp_start) * 1000
        self.gw.record(call)

    def done(self) -> None:
        self.gw.writer.close()
