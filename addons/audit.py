"""Write one audit record per intercepted call, through the batched background writer."""

from __future__ import annotations

import logging
import time

from mitmproxy import http
from mitmproxy.connection import ConnectionState

from addons.flows import call_of
from douane.call import Call
from douane.gateway import Gateway

log = logging.getLogger(__name__)


class AuditAddon:
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
            call.error = f"upstream stream ended early: {flow.error.msg if flow.error else 'unknown'}"
        else:
            call.error = flow.error.msg if flow.error else "unknown error"
        if self.gw.draining:
            call.error = f"{call.error} (cut off: douane was stopping and the grace period ran out)"
        self._record(flow, call)

    def _record(self, flow: http.HTTPFlow, call: Call) -> None:
        if call.recorded:
            return
        call.recorded = True
        self.gw.inflight.discard(call.id)
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


def client_gone(flow: http.HTTPFlow) -> bool:
    """The client closed its connection or reset its stream: no answer will reach it, so no
    `response` hook will come to record the call."""
    closed = not flow.client_conn.state & ConnectionState.CAN_WRITE
    return closed or bool(flow.error and "by client" in flow.error.msg)
