"""Values that pass a naive schema and then break the proxy at run time."""

import asyncio
from pathlib import Path

import pytest

from douane.meter.limits import Limits
from douane.meter.state import MemoryState
from douane.policy import PolicyError, load_policy


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_budgets_and_timeouts_are_finite(tmp_path: Path, value: str) -> None:
    """`.inf` passed `ge=0` and then made every reservation raise OverflowError (floor of infinity)."""
    p = tmp_path / "p.yaml"
    p.write_text(f"version: 1\nteams:\n  t:\n    budget_usd_per_day: {value}\nlimits:\n  guard_timeout_s: {value}\n")
    with pytest.raises(PolicyError) as e:
        load_policy(p)
    assert [(i.line, i.field) for i in e.value.issues] == [(4, "teams.t.budget_usd_per_day"),
                                                           (6, "limits.guard_timeout_s")]
    assert all("finite" in i.message for i in e.value.issues), e.value.issues


def test_a_large_finite_budget_still_reserves(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("version: 1\nteams:\n  t:\n    budget_usd_per_day: 1e12\n")
    limits = Limits(load_policy(p), MemoryState())
    reservation, refusal = asyncio.run(limits.reserve("t", "anonymous", 10, 0.5))
    assert refusal is None and reservation is not None and reservation.reserved_micro == 500_000


def test_integers_past_what_counters_hold_are_refused(tmp_path: Path) -> None:
    """10**400 output tokens price to an infinite cost, which no reservation can hold (OverflowError)."""
    p = tmp_path / "p.yaml"
    p.write_text(f"version: 1\nmetering:\n  default_max_output_tokens: {10**400}\nteams:\n  t:\n"
                 f"    tokens_per_minute: {2**53}\n")
    with pytest.raises(PolicyError) as e:
        load_policy(p)
    assert [(i.line, i.field) for i in e.value.issues] == [(3, "metering.default_max_output_tokens")]
    assert "2**53" in e.value.issues[0].message
