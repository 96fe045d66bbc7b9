"""Write one audit record per intercepted call, through the batched background writer."""

from __future__ import annotations

import logging
import time

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
        if call.recorded:
            return
        call.recorded = True
        resp = flow.response
        if resp is not None and resp.timestamp_end and flow.request.timestamp_start:
            call.latency_ms = (resp.timestamp_end - flow.request.timestamp_start) * 1000
        if call.latency_ms is None and flow.request.timestamp_start:
            call.latency_ms = (time.time() - flow.request.timestamp_start) * 1000
        audit = self.gw.policy.audit
        if audit.bodies == "none":
            call.request_body = call.response_body = None
        else:
            cap = audit.max_body_chars
            for name in ("request_body", "response_body"):
                value = getattr(call, name)
                if value is not None and len(value) > cap:
                    setattr(call, name, value[:cap] + f"...[truncated {len(value) - cap} chars]")
        self.gw.writer.submit(call.to_record(self.gw.policy.mode))

    def done(self) -> None:
        self.gw.writer.close()
