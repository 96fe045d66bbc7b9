"""Synthetic traffic for measuring anomaly detection (scripts/anomaly_sim.py and its tests).

Calls arrive as a Poisson process whose rate per minute follows a shape (steady, a day's rise and
fall, a 10x spike); each call has lognormal tokens, a price per token, and small error and block
probabilities. The detector runs on simulated time: hours of traffic take seconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from douane.ops.anomaly import Detector, Finding

Rate = Callable[[float], float]  # calls per minute at a minute


def steady(per_minute: float) -> Rate:
    return lambda minute: per_minute


def diurnal(mean: float, swing: float = 0.8) -> Rate:
    """A day's rise and fall: mean * (1 +- swing), lowest at minute 0 (midnight), highest at noon."""
    return lambda minute: mean * (1 - swing * math.cos(2 * math.pi * minute / 1440))


def spiked(base: Rate, start: float, factor: float = 10.0) -> Rate:
    return lambda minute: base(minute) * (factor if minute >= start else 1.0)


@dataclass(frozen=True)
class Traffic:
    rate: Rate
    tokens_median: float = 1200.0
    usd_per_token: float = 2e-6
    error_rate: float = 0.01
    block_rate: float = 0.02


def calls(traffic: Traffic, minutes: int, rng: random.Random) -> Iterator[tuple[float, list[float]]]:
    """(time in seconds, the call's signal values) for every call, in time order."""
    for minute in range(minutes):
        n = poisson(traffic.rate(minute), rng)
        for t in sorted(rng.uniform(0, 60) for _ in range(n)):
            tokens = rng.lognormvariate(math.log(traffic.tokens_median), 0.6)
            blocked = rng.random() < traffic.block_rate
            failed = not blocked and rng.random() < traffic.error_rate
            yield minute * 60 + t, [1.0, tokens, tokens * traffic.usd_per_token, float(failed), float(blocked)]


def poisson(mean: float, rng: random.Random) -> int:
    """A Poisson draw, as a binomial of many trials (exact enough for the rates simulated here)."""
    if mean <= 0:
        return 0
    trials = max(1000, int(mean * 100))
    return rng.binomialvariate(trials, mean / trials)


def run(detector: Detector, subjects: dict[str, Traffic], minutes: int, seed: int) -> list[tuple[float, Finding]]:
    """Every finding, with its time, over `minutes` of every subject's traffic (merged in time order)."""
    rng = random.Random(seed)
    streams: list[tuple[float, str, list[float]]] = []
    for name, traffic in subjects.items():
        streams.extend((t, name, values) for t, values in calls(traffic, minutes, random.Random(rng.random())))
    streams.sort(key=lambda s: s[0])
    found = []
    for t, name, values in streams:
        for finding in detector.observe(("client", name), values, now=t):
            found.append((t, finding))
    return found


# -- a synthetic audit store, for the usage reports' tests and timings ---------------------------

TEMPLATES = {
    "support": ["Summarize ticket #{n} from <EMAIL_ADDRESS> about a {thing} that arrived {state}.",
                "Write a polite reply to the customer asking about order {n}: their {thing} is {state}.",
                "Classify the sentiment of this review of our {thing}: it was {state}, order {n}."],
    "research": ["Extract every chemical compound named in paper {n} and list them as JSON, about {thing}.",
                 "Translate abstract {n} to French; it discusses the {thing} being {state}."],
    "marketing": ["Draft three tweets announcing our new {thing}, launch number {n}, tone {state}.",
                  "Rewrite this product description of the {thing} (sku {n}) so it sounds {state}."],
}
THINGS = ["blender", "laptop", "sofa", "kettle", "bicycle", "camera", "router", "lamp"]
STATES = ["broken", "late", "damaged", "excellent", "cold", "fine", "noisy", "upbeat"]
RULES = ["pii.block", "injection.block", "teams.marketing.models", "teams.support.budget_usd_per_day"]
MODELS = [("openai", "gpt-4o", 0.5), ("openai", "gpt-4o-mini", 0.3), ("anthropic", "claude-sonnet-4-5", 0.2)]


def synthetic_audit(db: str, rows: int, seed: int = 1, duplicate_share: float = 0.05, block_share: float = 0.03,
                    error_share: float = 0.01) -> dict[str, Any]:
    """Write `rows` calls to a new audit store at `db`: a few prompt templates per team filled with
    varying words, `duplicate_share` of calls sent again exactly (never refused), `block_share` refused by
    a rule, `error_share` failed upstream, models priced by genai-prices.
    Returns what was planted (duplicates by team, templates by team) for tests to compare."""
    from datetime import UTC, datetime, timedelta

    import orjson

    from douane.audit import AuditRecord, AuditStore, AuditWriter
    from douane.meter.pricing import Pricer
    from douane.providers import Usage

    rng = random.Random(seed)
    pricer = Pricer()
    writer = AuditWriter(AuditStore(db))
    writer.start()
    start = datetime.now(UTC) - timedelta(hours=24)
    sent: list[tuple[str, str, str, str]] = []
    planted: dict[str, Any] = {"duplicates": {}, "templates": {t: len(v) for t, v in TEMPLATES.items()}, "blocked": 0}
    for i in range(rows):
        repeat = bool(sent) and rng.random() < duplicate_share
        if repeat:
            team, provider, model, body = rng.choice(sent)
            planted["duplicates"][team] = planted["duplicates"].get(team, 0) + 1
        else:
            team = rng.choice(list(TEMPLATES))
            text = rng.choice(TEMPLATES[team]).format(n=rng.randrange(10**6), thing=rng.choice(THINGS),
                                                      state=rng.choice(STATES))
            provider, model, _ = rng.choices(MODELS, weights=[m[2] for m in MODELS])[0]
            body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": text}]}).decode()
            sent.append((team, provider, model, body))
        usage = Usage(input_tokens=rng.randrange(20, 400), output_tokens=rng.randrange(10, 300))
        cost = pricer.cost(provider, model, usage)
        status, decision, rule = 200, "allowed", None
        fate = rng.random()
        if not repeat and fate < block_share:  # a repeat is never refused
            status, decision, rule, usage, cost = 403, "blocked", rng.choice(RULES), Usage(), None
            sent.pop()  # a refused call is not sent again
        elif fate < block_share + error_share:
            status = 502
        writer.submit(AuditRecord(
            id=f"syn_{i}", ts=start + timedelta(seconds=i * 86400 / rows), client=f"{team}-bot", team=team,
            provider=provider, endpoint="chat.completions", model=model, model_requested=model, status=status,
            decision=decision, reason=rule, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            cost_usd=cost.usd if cost else None, latency_ms=rng.lognormvariate(6.5, 0.5),
            ttfb_ms=rng.lognormvariate(5.5, 0.5), request_body=body, response_body="ok"))
        planted["blocked"] += decision == "blocked"
    health = writer.close()
    assert health.ok and health.written == rows, health
    return planted
