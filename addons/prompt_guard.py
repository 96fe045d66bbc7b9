"""Inspect the prompt on its way out (douane.guard): prompt injection, and PII in every string."""

from __future__ import annotations

from mitmproxy import http

from addons.flows import call_of, refuse
from douane.gateway import Gateway
from douane.guard import PromptGuard


class PromptGuardAddon:
    name = "prompt_guard"

    def __init__(self, gw: Gateway):
        self.gw = gw
        self.guard = PromptGuard(gw)

    async def request(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or call.request is None or flow.response or flow.error:
            return
        block = await self.guard.inspect(call)
        if block is not None:
            refuse(self.gw, flow, call, block)
