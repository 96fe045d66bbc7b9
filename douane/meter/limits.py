"""Rate limits and budgets of teams and clients: what to reserve before a call, what to settle after."""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass, field
from datetime import datetime

from douane.clock import SYSTEM, Clock
from douane.meter.state import State, Take
from douane.policy.model import Policy, Quota

MICRO = 1_000_000  # budgets are counted in micro-dollars: integers add up exactly


@dataclass(frozen=True)
class Refusal:
    rule: str  # e.g. teams.support.budget_usd_per_day
    message: str
    retry_after: int  # seconds


@dataclass
class Reservation:
    tokens: list[str] = field(default_factory=list)  # counter keys that hold reserved tokens
    dollars: list[str] = field(default_factory=list)  # counter keys that hold reserved micro-dollars
    reserved_tokens: int = 0
    reserved_micro: int = 0


def _window(kind: str, now: datetime) -> tuple[str, int]:
    """(window id, seconds until it ends) for minute, day and month windows, in UTC."""
    if kind == "minute":
        return now.strftime("%Y%m%d%H%M"), 60 - now.second
    if kind == "day":
        return now.strftime("%Y%m%d"), 86400 - (now.hour * 3600 + now.minute * 60 + now.second)
    days = calendar.monthrange(now.year, now.month)[1]
    left = (days - now.day) * 86400 + 86400 - (now.hour * 3600 + now.minute * 60 + now.second)
    return now.strftime("%Y%m"), left


class Limits:
    def __init__(self, policy: Policy, state: State, clock: Clock = SYSTEM):
        self.policy = policy
        self.state = state
        self.clock = clock  # windows are cut from its time: tests pin it
        # Rules of limited teams and clients, by name, built once: a call looks its own up in O(1).
        # A client's rule is named by its place in the policy (clients[3]), as the loader names it.
        self._team_rules = {name: (f"teams.{name}", t) for name, t in policy.teams.items() if t.limited}
        self._client_rules = {c.name: (f"clients[{i}]", c) for i, c in enumerate(policy.clients or []) if c.limited}

    def quotas(self, team: str | None, client: str) -> list[tuple[str, Quota]]:
        out: list[tuple[str, Quota]] = []
        team_rule = self._team_rules.get(team) if team else None
        if team_rule is not None:
            out.append(team_rule)
        client_rule = self._client_rules.get(client)
        if client_rule is not None:
            out.append(client_rule)
        return out

    async def reserve(self, team: str | None, client: str, tokens: int, worst_usd: float | None,
                      now: datetime | None = None) -> tuple[Reservation | None, Refusal | None]:
        """Reserve one request, `tokens` and `worst_usd` against every quota that applies."""
        now = now or self.clock.now()
        quotas = self.quotas(team, client)
        if not quotas:
            return None, None
        takes: list[tuple[Take, str, int]] = []  # (take, rule, retry_after)
        res = Reservation(reserved_tokens=tokens)
        micro = math.ceil(worst_usd * MICRO) if worst_usd is not None else 0
        res.reserved_micro = micro
        for scope, q in quotas:
            minute, minute_left = _window("minute", now)
            if q.requests_per_minute is not None:
                takes.append((Take(f"{scope}:rpm@{minute}", 1, q.requests_per_minute, 120),
                              f"{scope}.requests_per_minute", minute_left))
            if q.tokens_per_minute is not None:
                key = f"{scope}:tpm@{minute}"
                takes.append((Take(key, tokens, q.tokens_per_minute, 120), f"{scope}.tokens_per_minute",
                              minute_left))
                res.tokens.append(key)
            for kind, limit in (("day", q.budget_usd_per_day), ("month", q.budget_usd_per_month)):
                if limit is None:
                    continue
                window, left = _window(kind, now)
                key = f"{scope}:usd_{kind}@{window}"
                takes.append((Take(key, micro, math.floor(limit * MICRO), left + 3600),
                              f"{scope}.budget_usd_per_{kind}", left))
                res.dollars.append(key)
        refused = await self.state.reserve([t for t, _, _ in takes])
        if refused is None:
            return res, None
        take, rule, retry = takes[refused]
        what = {"rpm": "requests per minute", "tpm": "tokens per minute"}.get(
            take.key.split(":")[-1].split("@")[0], "budget")
        if what == "budget":
            msg = (f"{rule} of ${take.limit / MICRO:.2f} would be exceeded by this call "
                   f"(up to ${take.amount / MICRO:.4f})")
        else:
            msg = f"{rule} ({take.limit} {what}) is used up"
        return None, Refusal(rule, msg, max(1, retry))

    def budget_counters(self, now: datetime | None = None) -> list[tuple[str, str, int]]:
        """(rule, counter key, limit in micro-dollars) of every budget in force in the current windows:
        what an operator's gauge of budget used reads."""
        now = now or self.clock.now()
        out = []
        for scope, q in [*self._team_rules.values(), *self._client_rules.values()]:
            for kind, limit in (("day", q.budget_usd_per_day), ("month", q.budget_usd_per_month)):
                if limit is not None:
                    out.append((f"{scope}.budget_usd_per_{kind}", f"{scope}:usd_{kind}@{_window(kind, now)[0]}",
                                math.floor(limit * MICRO)))
        return out

    async def settle(self, res: Reservation, tokens: int | None, usd: float | None) -> None:
        """Replace the reserved figures with the real ones (unknown figures keep the reservation)."""
        deltas: list[tuple[str, int]] = []
        if tokens is not None:
            deltas += [(k, tokens - res.reserved_tokens) for k in res.tokens]
        if usd is not None:
            deltas += [(k, math.ceil(usd * MICRO) - res.reserved_micro) for k in res.dollars]
        await self.state.adjust([d for d in deltas if d[1] != 0])
