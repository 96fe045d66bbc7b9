"""Meter each call: reserve rate limits and worst-case budget before it leaves, settle from usage after."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from mitmproxy import http

from addons.flows import call_of, refuse
from douane.call import Call
from douane.gateway import Gateway
from douane.meter.state import StateUnavailable
from douane.meter.tokens import estimate_input_tokens

log = logging.getLogger(__name__)


class MeterAddon:
    def __init__(self, gw: Gateway):
        self.gw = gw

    async def request(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or flow.response or flow.error:
            return
        req = call.request
        quotas = self.gw.limits.quotas(call.team, call.client)
        if not quotas:
            return
        if call.estimated_tokens is None:
            call.estimated_tokens = estimate_input_tokens(req, call.request_bytes or 0)
        max_out = req.max_tokens if req is not None else None
        budgets = any(q.budget_usd_per_day is not None or q.budget_usd_per_month is not None for _, q in quotas)
        worst = self.gw.pricer.worst_case(call.served_by or call.provider.name, call.model, call.estimated_tokens,
                                          max_out,
                                          self.gw.policy.metering.default_max_output_tokens)
        if budgets and worst is None:
            why = (f"model {call.model or '(none)'} has no known price, so the budget cannot be held; "
                   f"price it under `prices:` in the policy")
            if self.gw.policy.fail == "closed":
                refuse(self.gw, flow, call, 403, "budget.unpriced_model", why)
                return
            call.note(f"fail.open: {why}")
        tokens = call.estimated_tokens + (max_out or 0)
        try:
            reservation, refusal = await self.gw.limits.reserve(call.team, call.client, tokens,
                                                                worst.usd if worst else None)
        except StateUnavailable as e:
            log.error("meter: %s; fail is %s", e, self.gw.policy.fail)
            call.error = str(e)
            if self.gw.policy.fail == "closed":
                refuse(self.gw, flow, call, 503, "fail.closed", "limits and budgets cannot be checked right now")
            else:
                call.note("fail.open: limits and budgets not checked (state unavailable)")
            return
        if refusal is not None:
            refuse(self.gw, flow, call, 429, refusal.rule, refusal.message,
                   headers={"retry-after": str(refusal.retry_after)})
            return
        call.reservation = reservation

    async def response(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is not None:
            await self._settle(call)

    async def error(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is not None and (flow.response is None or flow.response.stream):
            await self._settle(call)

    async def _settle(self, call: Call) -> None:
        if call.cost_usd is None and call.usage.input_tokens is not None:
            cost = self.gw.pricer.cost(call.served_by or call.provider.name, call.served_model or call.model,
                                       call.usage, datetime.fromtimestamp(call.started, UTC))
            if cost is not None:
                call.cost_usd, call.price_source = cost.usd, cost.source
        if call.reservation is None:
            return
        reservation, call.reservation = call.reservation, None
        used = None
        if call.usage.input_tokens is not None or call.usage.output_tokens is not None:
            used = (call.usage.input_tokens or 0) + (call.usage.output_tokens or 0)
        elif call.decision == "blocked" or call.status is not None and call.status >= 400:
            used = 0  # nothing was generated
        usd = call.cost_usd if call.cost_usd is not None else (0.0 if used == 0 else None)
        try:
            await self.gw.limits.settle(reservation, used, usd)
        except StateUnavailable as e:
            log.error("meter: settling %s failed: %s; its reservation stands", call.id, e)

    async def done(self) -> None:
        await self.gw.limits.state.close()
