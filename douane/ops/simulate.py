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
