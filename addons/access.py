"""What the caller may use: per-team provider and model allow-lists (douane.access)."""

from __future__ import annotations

from mitmproxy import http

from addons.flows import call_of, refuse
from douane.access import check_access
from douane.gateway import Gateway


class AccessAddon:
    name = "access"

    def __init__(self, gw: Gateway):
        self.gw = gw

    def request(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or flow.response or flow.error:
            return
        block = check_access(self.gw.policy, call)
        if block is not None:
            refuse(self.gw, flow, call, block)
