"""douane.meter.gate: what a call reserves and settles, whatever its transport."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import yaml

from douane.call import new_call_id
from douane.classify import open_call
from douane.gateway import Gateway
from douane.meter.gate import Meter
from douane.meter.limits import Reservation
from douane.policy.loader import load_policy
from douane.providers import Usage


def test_negative_usage_from_an_upstream_never_credits_a_budget(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"version": 1}))
    gw = Gateway(load_policy(tmp_path / "p.yaml"), tmp_path / "a.duckdb")
    call = open_call(new_call_id(), time.time(), gw.providers.by_name("openai"), "h", "POST", "/v1/chat/completions")
    call.model = "gpt-4o-mini"
    call.usage = Usage(input_tokens=-1000, output_tokens=-5000)
    settled: list[tuple[int | None, float | None]] = []

    async def settle(reservation: Reservation, tokens: int | None, usd: float | None) -> None:
        settled.append((tokens, usd))

    gw.limits.settle = settle  # type: ignore[method-assign]
    call.reservation = Reservation(reserved_tokens=10, reserved_micro=10)
    asyncio.run(Meter(gw).settle(call))
    assert settled == [(0, 0.0)] and call.cost_usd == 0.0
    assert "input_tokens = -1000" in (call.error or "")
