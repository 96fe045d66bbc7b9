"""Refuse calls of a client or team that anomaly detection quarantined (403) or throttled (429)."""

from __future__ import annotations

from mitmproxy import http

from addons.flows import call_of, refuse
from douane.gateway import Gateway
from douane.ops.anomaly import AnomalyGuard


class AnomalyAddon:
    name = "anomaly"

    def __init__(self, gw: Gateway, guard: AnomalyGuard):
        self.gw = gw
        self.guard = guard

    def request(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or flow.response is not None:
            return
        block = self.guard.verdict(call.client, call.team)
        if block is not None:
            refuse(self.gw, flow, call, block)
