"""The answer stage's prescan of what it delivered."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from douane.answer import prescan
from douane.detect.pii import PiiDetector


def test_a_delivered_answer_is_scanned_after_it_leaves_so_the_next_call_finds_it_cached() -> None:
    pii = PiiDetector(["EMAIL_ADDRESS"])
    guards = SimpleNamespace(pii_detector=pii)  # the call's guard settings: their PII detector's cache is warmed
    delivered = "echo: write to jane@example.com"

    async def deliver() -> bool:
        prescan(guards, [delivered, "x" * 10_000])  # type: ignore[arg-type]
        cached_at_once = pii.lookup(delivered) is not None
        await asyncio.sleep(0)
        return cached_at_once

    assert asyncio.run(deliver()) is False, "not on the answer's own path"
    assert [f.entity for f in pii.lookup(delivered) or ()] == ["EMAIL_ADDRESS"]
    assert pii.lookup("x" * 10_000) is None, "long answers are left to the next call's worker thread"
