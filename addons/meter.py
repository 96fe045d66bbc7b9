"""Meter each call (douane.meter.gate): reserve before it leaves, settle once it is over."""

from __future__ import annotations

from mitmproxy import http

from addons.flows import call_of, client_gone, refuse
from douane.gateway import Gateway
from douane.meter.gate import Meter


class MeterAddon:
    name = "meter"

    def __init__(self, gw: Gateway):
        self.gw = gw
        self.meter = Meter(gw)

    async def request(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or flow.response or flow.error:
            return
        block = await self.meter.reserve(call)
        if block is not None:
            refuse(self.gw, flow, call, block)

    async def response(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is not None:
            await self.meter.settle(call)

    async def error(self, flow: http.HTTPFlow) -> None:
        """A call that will get no `response` hook (cut off, or its client gone) settles here."""
        call = call_of(flow)
        if call is not None and (flow.response is None or flow.response.stream or client_gone(flow)):
            await self.meter.settle(call)

    async def done(self) -> None:
        await self.gw.limits.state.close()
