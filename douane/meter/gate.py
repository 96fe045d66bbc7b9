"""Metering of one call, whatever its transport: reserve before it leaves, settle once it is over.

Before: the call's requests and tokens per minute, and its worst-case cost (input estimate plus
every output token it may ask for, times the answers it asks for), are reserved against every quota
that applies, atomically. After: the reservation is replaced by what the call really used. A call
always settles: from the provider's usage when it came, else from what was seen of the answer
(a client that left mid-stream), never the worst case forever and never zero.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from douane.call import Call
from douane.decision import Block
from douane.meter.state import StateUnavailable
from douane.meter.tokens import CHARS_PER_TOKEN, estimate_input_tokens

if TYPE_CHECKING:
    from douane.gateway import Gateway

log = logging.getLogger(__name__)


class Meter:
    def __init__(self, gw: Gateway):
        self.gw = gw

    def output_cap(self, call: Call) -> int:
        """The most output tokens the call can produce, for its budget: its own cap (else the policy's
        price entry's max_output_tokens, else metering.default_max_output_tokens) times its choices."""
        default = self.gw.policy.metering.default_max_output_tokens
        return (call.max_output_tokens or self.gw.pricer.default_output(call.model, default)) * max(1, call.choices)

    async def reserve(self, call: Call) -> Block | None:
        quotas = self.gw.limits.quotas(call.team, call.client)
        if not quotas:
            return None
        if call.estimated_tokens is None:
            call.estimated_tokens = estimate_input_tokens(call.request, call.request_bytes or 0)
        budgets = any(q.budget_usd_per_day is not None or q.budget_usd_per_month is not None for _, q in quotas)
        default = self.gw.policy.metering.default_max_output_tokens
        worst = self.gw.pricer.worst_case(call.served_by or call.provider.name, call.model, call.estimated_tokens,
                                          self.output_cap(call), default)
        if budgets and worst is None:
            why = (f"model {call.model or '(none)'} has no known price, so the budget cannot be held; "
                   f"price it under `prices:` in the policy")
            if self.gw.policy.fail == "closed":
                return Block(403, "budget.unpriced_model", why)
            call.note(f"fail.open: {why}")
        try:
            # tokens per minute count what the call asked for: its input and its explicit output cap
            tokens = call.estimated_tokens + (call.max_output_tokens or 0) * max(1, call.choices)
            reservation, refusal = await self.gw.limits.reserve(call.team, call.client, tokens,
                                                                worst.usd if worst else None)
        except StateUnavailable as e:
            log.error("meter: %s; fail is %s", e, self.gw.policy.fail)
            call.add_error(str(e))
            if self.gw.policy.fail == "closed":
                return Block(503, "fail.closed", "limits and budgets cannot be checked right now; try again later",
                             always=True)
            call.note("fail.open: limits and budgets not checked (state unavailable)")
            return None
        if refusal is not None:
            return Block(429, refusal.rule, refusal.message, always=True,
                         headers={"retry-after": str(refusal.retry_after)})
        call.reservation = reservation
        return None

    def price(self, call: Call) -> None:
        """The call's cost from its usage (reported, or estimated from what was seen of the answer)."""
        _no_negative_usage(call)
        if call.cost_usd is None and call.usage.input_tokens is not None:
            cost = self.gw.pricer.cost(call.served_by or call.provider.name, call.served_model or call.model,
                                       call.usage, datetime.fromtimestamp(call.started, UTC))
            if cost is not None:
                call.cost_usd = cost.usd
                call.price_source = f"{cost.source}, estimated usage" if call.usage_estimated else cost.source

    async def settle(self, call: Call) -> None:
        self.price(call)
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
            call.add_error(f"settling the budget failed: {e}")


def estimate_usage(call: Call, answer_chars: int) -> None:
    """A call that ended without the provider's usage (the client left mid-stream, the stream
    broke): the input estimate and the output seen, so the budget and the audit agree."""
    if call.usage.input_tokens is not None and call.usage.output_tokens is not None:
        return
    if call.usage.input_tokens is None:
        call.usage.input_tokens = call.estimated_tokens if call.estimated_tokens is not None \
            else estimate_input_tokens(call.request, call.request_bytes or 0)
    if call.usage.output_tokens is None:
        call.usage.output_tokens = -(-answer_chars // CHARS_PER_TOKEN)
    call.usage_estimated = True


def _no_negative_usage(call: Call) -> None:
    """A usage figure below zero (a broken or hostile upstream) would credit the budget: count it as 0."""
    usage = call.usage
    for name in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"):
        value = getattr(usage, name)
        if value is not None and value < 0:
            setattr(usage, name, 0)
            call.add_error(f"the provider reported {name} = {value}; counted as 0")
