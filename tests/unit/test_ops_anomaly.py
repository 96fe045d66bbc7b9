"""Anomaly detection: baselines, spikes on synthetic traffic, and the guard's actions (simulated time)."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from douane.call import Call
from douane.ops.anomaly import SIGNALS, AnomalyGuard, Detector, threshold, usage_of
from douane.ops.simulate import Traffic, diurnal, run, spiked, steady
from douane.policy.model import AnomalyPolicy
from douane.providers import ProviderSpec, Usage

OPENAI = ProviderSpec("openai", "openai", ("api.openai.com",))


def policy(**kw: Any) -> AnomalyPolicy:
    return AnomalyPolicy.model_validate(kw)


class Clock:
    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def call(client: str = "bot", team: str | None = "support", **kw: Any) -> Call:
    c = Call(id="dou_1", started=0.0, provider=OPENAI, host="api.openai.com", method="POST", path="/x",
             endpoint="chat.completions", client=client, team=team, status=200,
             usage=Usage(input_tokens=100, output_tokens=20), cost_usd=0.001)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_the_threshold_is_robust_and_waits_for_the_warm_up() -> None:
    cfg = policy(warmup_minutes=5, floors={"calls": 0})
    assert threshold([10, 10, 10, 10], "calls", cfg) is None, "warming up"
    limit, median = threshold([10, 12, 9, 11, 10, 500], "calls", cfg) or (0, 0)
    assert median == 10.5, "one past spike does not move the median"
    assert limit == pytest.approx(max(10.5 + 6 * max(1.4826 * 1.0, 10.5 ** 0.5), 3 * 10.5))
    cfg = policy(warmup_minutes=1)
    assert threshold([0, 0, 0], "calls", cfg) == (20, 0), "a quiet subject still needs the floor"


def test_a_10x_spike_on_steady_traffic_is_found_within_a_minute() -> None:
    for seed in range(5):
        found = run(Detector(policy()), {"bot": Traffic(spiked(steady(20), start=90))}, 92, seed=seed)
        assert found, f"seed {seed}: the spike went unseen"
        first = min(t for t, _ in found)
        assert 90 * 60 <= first <= 90 * 60 + 60, f"seed {seed}: found {first - 90 * 60:.0f} s after the spike began"


def test_steady_traffic_raises_no_alarm_in_hours() -> None:
    found = run(Detector(policy()), {f"c{i}": Traffic(steady(20)) for i in range(4)}, 6 * 60, seed=7)
    assert found == []


def test_a_days_rise_and_fall_raises_no_alarm_on_calls() -> None:
    found = run(Detector(policy(signals=["calls", "errors", "blocks"])), {"bot": Traffic(diurnal(20))}, 24 * 60,
                seed=3)
    assert found == []


def test_a_finding_is_reported_once_per_minute_and_signal() -> None:
    d = Detector(policy(warmup_minutes=3, signals=["calls"], floors={"calls": 5}))
    for minute in range(5):
        d.observe(("client", "bot"), [2, 0, 0, 0, 0], now=minute * 60)
    found = [f for i in range(30) for f in d.observe(("client", "bot"), [1, 0, 0, 0, 0], now=300 + i)]
    assert [f.signal for f in found] == ["calls"]
    assert found[0].median == 2 and found[0].value > found[0].threshold


def test_quiet_minutes_count_as_zeros() -> None:
    d = Detector(policy(warmup_minutes=3))
    d.observe(("client", "bot"), [5, 0, 0, 0, 0], now=0)
    d.observe(("client", "bot"), [5, 0, 0, 0, 0], now=10 * 60)
    assert [m[0] for m in d.windows[("client", "bot")].history] == [5, 0, 0, 0, 0, 0, 0, 0, 0, 0]


def test_what_a_call_adds_and_anomaly_refusals_are_not_blocks() -> None:
    assert usage_of(call()) == [1.0, 120.0, 0.001, 0.0, 0.0]
    assert usage_of(call(status=502))[3] == 1.0
    assert usage_of(call(status=403, decision="blocked", reasons=["pii.block"]))[4] == 1.0
    assert usage_of(call(status=429, decision="blocked", reasons=["anomaly.throttle"]))[3:] == [0.0, 0.0]


def warm(guard: AnomalyGuard, clock: Clock, minutes: int = 5, per_minute: int = 2) -> None:
    for minute in range(minutes):
        for i in range(per_minute):
            clock.now = minute * 60 + i
            guard.observe(call())
    clock.now = minutes * 60


def test_alert_notes_the_row_counts_and_does_not_repeat_within_the_cooldown() -> None:
    clock = Clock()
    seen: list[tuple[str, str]] = []
    guard = AnomalyGuard(policy(warmup_minutes=5, signals=["calls"], floors={"calls": 5}, scopes=["client"]),
                         clock, on_finding=lambda f, action: seen.append((f.signal, action)))
    warm(guard, clock)
    calls = [call() for _ in range(30)]
    for c in calls:
        guard.observe(c)
    noted = [c for c in calls if any(r.startswith("anomaly.calls: client bot") for r in c.reasons)]
    assert len(noted) == 1 and seen == [("calls", "alert")]
    clock.now += 120  # a new minute, the spike goes on: within the cooldown, no second alert
    for _ in range(30):
        guard.observe(call())
    assert seen == [("calls", "alert")]
    assert guard.verdict("bot", "support") is None, "alert only: nothing refused"


def test_throttle_holds_the_subject_to_its_threshold_until_the_cooldown_ends() -> None:
    clock = Clock()
    guard = AnomalyGuard(policy(action="throttle", warmup_minutes=5, signals=["calls"], floors={"calls": 5},
                                scopes=["client"], cooldown_minutes=2), clock)
    warm(guard, clock)
    for _ in range(12):
        guard.observe(call())
    block = guard.verdict("bot", "support")
    assert block is not None and block.status == 429 and block.rule == "anomaly.throttle"
    assert block.headers and int(block.headers["retry-after"]) >= 1
    assert guard.verdict("other-bot", "support") is None, "only the subject that spiked"
    clock.now += 60  # a new minute: under the limit again
    assert guard.verdict("bot", "support") is None
    assert ("client", "bot") in guard.restrictions
    clock.now += 120  # past the cooldown: lifted
    assert guard.verdict("bot", "support") is None
    assert ("client", "bot") not in guard.restrictions


def test_block_quarantines_until_cleared() -> None:
    clock = Clock()
    guard = AnomalyGuard(policy(action="block", warmup_minutes=5, signals=["calls"], floors={"calls": 5}), clock)
    warm(guard, clock)
    for _ in range(12):
        guard.observe(call())
    clock.now += 86400
    block = guard.verdict("bot", "support")
    assert block is not None and block.status == 403 and block.rule == "anomaly.block"
    assert "douane anomaly clear bot" in block.message
    assert guard.clear(("client", "bot")) is True
    team_block = guard.verdict("bot", "support")  # the team spiked too (its only client did)
    assert team_block is not None and "douane anomaly clear --team support" in team_block.message
    assert guard.clear(("team", "support")) is True
    assert guard.verdict("bot", "support") is None
    assert guard.clear(("client", "bot")) is False


def test_the_webhook_gets_a_json_body() -> None:
    bodies: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    async def main() -> None:
        clock = Clock()
        guard = AnomalyGuard(policy(warmup_minutes=5, signals=["calls"], floors={"calls": 5}, scopes=["client"],
                                    webhook=f"http://127.0.0.1:{server.server_address[1]}/hook"), clock)
        warm(guard, clock)
        for _ in range(12):
            guard.observe(call())
        await asyncio.gather(*guard._tasks)

    try:
        asyncio.run(main())
    finally:
        server.shutdown()
    assert len(bodies) == 1
    body = bodies[0]
    assert body["event"] == "douane.anomaly" and body["subject"] == "bot" and body["signal"] == "calls"
    assert body["action"] == "alert" and body["value"] > body["threshold"] and body["baseline_median"] == 2
    assert set(SIGNALS) >= {body["signal"]}
