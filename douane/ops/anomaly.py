"""Anomaly detection: spikes of a client's or team's usage against its own rolling baseline.

Each subject (a client, a team) has per-minute sums of five signals: calls, tokens, cost (USD),
errors (5xx or failed) and blocks (refused by a policy rule; douane's own anomaly refusals are not
counted, or a throttle would feed itself). When a minute ends it joins the subject's history of the
last `window_minutes` minutes; its baseline is that history's median, its spread the median
absolute deviation (MAD, x1.4826 to read as a standard deviation; for counts at least the Poisson
sqrt(median)). A spike is a current minute whose running sum passes

    max(median + sensitivity * spread, median * min_ratio, floor)

so it is seen while it happens, not when its minute ends: a 10x spike passes it within seconds.
Median and MAD ignore the spikes they judge (a few outliers move neither), and a window of an
hour follows a day's slow rise and fall. A subject is judged only after `warmup_minutes`.

With `state.backend: redis`, minute sums and history live in Redis (one hash per subject and
minute), so every instance sees the fleet's totals, and quarantines and throttles are Redis keys
that every instance reads (refreshed every few seconds).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from douane.call import Call
from douane.decision import Block
from douane.ops.metrics import rule_of
from douane.policy.model import AnomalyPolicy

log = logging.getLogger(__name__)

SIGNALS = ("calls", "tokens", "cost", "errors", "blocks")
COUNTS = frozenset({"calls", "errors", "blocks"})  # Poisson-like: their spread is at least sqrt(median)
UNITS = {"calls": "calls/min", "tokens": "tokens/min", "cost": "USD/min", "errors": "errors/min",
         "blocks": "blocks/min"}

Subject = tuple[str, str]  # (scope, name): ("client", "support-bot"), ("team", "support")


def usage_of(call: Call) -> list[float]:
    """What one recorded call adds to its subjects' current minute, in SIGNALS order."""
    blocked = call.decision == "blocked" and not rule_of(call).startswith("anomaly.")
    failed = call.error is not None or call.status is None or call.status >= 500
    tokens = (call.usage.input_tokens or 0) + (call.usage.output_tokens or 0)
    return [1.0, float(tokens), call.cost_usd or 0.0, float(failed and not blocked), float(blocked)]


def threshold(history: Sequence[float], signal: str, cfg: AnomalyPolicy) -> tuple[float, float] | None:
    """(threshold, median) of one signal from its minute history; None while warming up."""
    if len(history) < cfg.warmup_minutes:
        return None
    median = statistics.median(history)
    mad = statistics.median(abs(v - median) for v in history)
    spread = max(1.4826 * mad, math.sqrt(median) if signal in COUNTS else 0.0)
    floor = getattr(cfg.floors, signal)
    return max(median + cfg.sensitivity * spread, median * cfg.min_ratio, floor), median


@dataclass
class Finding:
    subject: Subject
    signal: str
    value: float  # this minute so far
    threshold: float
    median: float

    def describe(self) -> str:
        unit = UNITS[self.signal]
        return (f"{self.subject[0]} {self.subject[1]}: {self.signal} {self.value:g} {unit} this minute, "
                f"baseline median {self.median:g} (spike threshold {self.threshold:.4g})")


@dataclass
class Window:
    """One subject's current minute and the minutes before it."""

    minute: int
    current: list[float]
    history: deque[list[float]]
    limits: list[tuple[float, float] | None] = field(default_factory=list)  # per signal, for this minute
    flagged: set[str] = field(default_factory=set)  # signals already found this minute


class Detector:
    """The per-subject windows of one process (memory backend), judged on each recorded call."""

    def __init__(self, cfg: AnomalyPolicy, clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.clock = clock
        self.windows: dict[Subject, Window] = {}
        self.signals = [i for i, s in enumerate(SIGNALS) if s in cfg.signals]

    def window(self, subject: Subject, minute: int) -> Window:
        w = self.windows.get(subject)
        if w is None:
            w = self.windows[subject] = Window(minute, [0.0] * len(SIGNALS), deque(maxlen=self.cfg.window_minutes))
            w.limits = self._limits(w)
        elif minute > w.minute:
            w.history.append(w.current)
            for _ in range(min(minute - w.minute - 1, self.cfg.window_minutes)):  # quiet minutes count as zeros
                w.history.append([0.0] * len(SIGNALS))
            w.minute, w.current, w.flagged = minute, [0.0] * len(SIGNALS), set()
            w.limits = self._limits(w)
        return w

    def _limits(self, w: Window) -> list[tuple[float, float] | None]:
        return [threshold([m[i] for m in w.history], s, self.cfg) if i in self.signals else None
                for i, s in enumerate(SIGNALS)]

    def observe(self, subject: Subject, values: Sequence[float], now: float | None = None) -> list[Finding]:
        minute = int((self.clock() if now is None else now) // 60)
        w = self.window(subject, minute)
        for i, v in enumerate(values):
            w.current[i] += v
        return judge(subject, w, w.current)


def judge(subject: Subject, w: Window, totals: Sequence[float]) -> list[Finding]:
    """The signals of this minute's `totals` past their threshold, each once per minute."""
    found = []
    for i, limit in enumerate(w.limits):
        if limit is None or totals[i] <= limit[0] or SIGNALS[i] in w.flagged:
            continue
        w.flagged.add(SIGNALS[i])
        found.append(Finding(subject, SIGNALS[i], totals[i], limit[0], limit[1]))
    return found


@dataclass
class Restriction:
    """A subject held by an anomaly: quarantined until cleared, or throttled until `until`."""

    kind: str  # "block" | "throttle"
    reason: str
    since: float
    until: float | None = None  # throttle only
    calls_per_minute: int | None = None  # throttle only

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


class AnomalyGuard:
    """Runs the detector on recorded calls and applies the policy's action to what it finds:
    `alert` (log, a note on the call's audit row, a metric, the webhook), `throttle` (the subject
    is held to its calls threshold for `cooldown_minutes`) or `block` (quarantined until cleared)."""

    def __init__(self, cfg: AnomalyPolicy, clock: Callable[[], float] = time.time,
                 on_finding: Callable[[Finding, str], None] | None = None):
        self.cfg = cfg
        self.clock = clock
        self.detector = Detector(cfg, clock)
        self.restrictions: dict[Subject, Restriction] = {}
        self.alerted: dict[tuple[Subject, str], float] = {}  # last alert per subject and signal
        self.on_finding = on_finding  # metrics
        self.shared: Any = None  # a SharedAnomalies with state.backend: redis
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the request path -----------------------------------------------------------------------

    def verdict(self, client: str, team: str | None) -> Block | None:
        """A call's subjects under restriction: 403 quarantined, 429 over a throttle."""
        if not self.restrictions:
            return None
        now = self.clock()
        for subject in self._subjects(client, team):
            r = self.restrictions.get(subject)
            if r is None:
                continue
            if r.kind == "block":
                return Block(403, "anomaly.block", f"{subject[0]} {subject[1]} is quarantined after {r.reason}; an "
                             f"operator lifts it with: douane anomaly clear {_clear_args(subject)}")
            if r.until is not None and now >= r.until:
                self.restrictions.pop(subject, None)
                continue
            w = self.detector.windows.get(subject)
            used = w.current[0] if w is not None and w.minute == int(now // 60) else 0.0
            if self.shared is not None:
                used = self.shared.calls_this_minute(subject, int(now // 60), used)
            if r.calls_per_minute is not None and used >= r.calls_per_minute:
                retry = max(1, 60 - int(now % 60))
                return Block(429, "anomaly.throttle", f"{subject[0]} {subject[1]} is throttled to "
                             f"{r.calls_per_minute} calls/min until {time.strftime('%H:%M:%S', time.gmtime(r.until))} "
                             f"UTC after {r.reason}", headers={"retry-after": str(retry)})
        return None

    def _subjects(self, client: str, team: str | None) -> list[Subject]:
        out = []
        if "client" in self.cfg.scopes:
            out.append(("client", client))
        if "team" in self.cfg.scopes and team:
            out.append(("team", team))
        return out

    # -- the record path ------------------------------------------------------------------------

    def observe(self, call: Call) -> None:
        """Count a recorded call (before its row is written: an alert is noted on it)."""
        values = usage_of(call)
        for subject in self._subjects(call.client, call.team):
            if self.shared is not None:  # judged now on the fleet's totals as last seen, then in Redis
                for finding in self.shared.judge_local(self, subject, values):
                    self.act(finding, call)
                self._spawn(self.shared.observe(self, subject, values))
                continue
            for finding in self.detector.observe(subject, values):
                self.act(finding, call)

    def act(self, finding: Finding, call: Call | None = None) -> None:
        now = self.clock()
        key = (finding.subject, finding.signal)
        last = self.alerted.get(key)
        if last is not None and now - last < self.cfg.cooldown_minutes * 60:
            return
        self.alerted[key] = now
        action = self.cfg.action
        what = finding.describe()
        log.warning("anomaly: %s; action: %s", what, action)
        if call is not None:
            call.note(f"anomaly.{finding.signal}: {what}")
        if self.on_finding is not None:
            self.on_finding(finding, action)
        restriction = None
        if action == "block":
            restriction = Restriction("block", f"a spike of {finding.signal}", now)
        elif action == "throttle":
            calls = self.detector.windows.get(finding.subject)
            limit = calls.limits[0] if calls is not None else None
            per_minute = max(1, int(limit[0] if limit is not None else self.cfg.floors.calls))
            restriction = Restriction("throttle", f"a spike of {finding.signal}", now,
                                      now + self.cfg.cooldown_minutes * 60, per_minute)
        if restriction is not None:
            self.restrictions[finding.subject] = restriction
            if self.shared is not None:
                self._spawn(self.shared.restrict(finding.subject, restriction))
        if self.cfg.webhook:
            self._spawn(self._post(finding, action))

    def clear(self, subject: Subject) -> bool:
        """Lift a quarantine or throttle; True when there was one."""
        found = self.restrictions.pop(subject, None) is not None
        for key in [k for k in self.alerted if k[0] == subject]:
            del self.alerted[key]
        return found

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (a test, a CLI): nothing shared to do
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, finding: Finding, action: str) -> None:
        import httpx

        body = {"event": "douane.anomaly", "scope": finding.subject[0], "subject": finding.subject[1],
                "signal": finding.signal, "value": finding.value, "threshold": finding.threshold,
                "baseline_median": finding.median, "action": action, "message": finding.describe(),
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))}
        try:
            async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
                r = await client.post(self.cfg.webhook or "", content=json.dumps(body),
                                      headers={"content-type": "application/json"})
            if r.status_code >= 400:
                log.warning("anomaly: the webhook answered %d", r.status_code)
        except Exception as e:
            log.warning("anomaly: the webhook could not be reached: %s", e)


def _clear_args(subject: Subject) -> str:
    return subject[1] if subject[0] == "client" else f"--team {subject[1]}"


class SharedAnomalies:
    """The detector's minute sums, history and restrictions in Redis, for a fleet of instances."""

    def __init__(self, client: Any, prefix: str = "douane:", refresh_s: float = 2.0):
        self.client = client  # redis.asyncio.Redis
        self.prefix = prefix + "anomaly:"
        self.refresh_s = refresh_s
        self.totals: dict[Subject, tuple[int, list[float]]] = {}  # the fleet's sums this minute, as last seen

    def _minute_key(self, subject: Subject, minute: int) -> str:
        return f"{self.prefix}m:{subject[0]}:{subject[1]}:{minute}"

    def _restriction_key(self, subject: Subject) -> str:
        return f"{self.prefix}r:{subject[0]}:{subject[1]}"

    async def observe(self, guard: AnomalyGuard, subject: Subject, values: Sequence[float]) -> None:
        minute = int(guard.clock() // 60)
        key = self._minute_key(subject, minute)
        try:
            pipe = self.client.pipeline(transaction=False)
            for name, value in zip(SIGNALS, values, strict=True):
                pipe.hincrbyfloat(key, name, value)
            pipe.expire(key, (guard.cfg.window_minutes + 5) * 60)
            totals = [float(v) for v in (await pipe.execute())[:len(SIGNALS)]]
            w = guard.detector.windows.get(subject)
            if w is None or w.minute != minute:
                w = await self._window(guard, subject, minute)
        except Exception as e:  # Redis away: the limits' own fail policy covers the calls; say it here
            log.warning("anomaly: redis unreachable, %s not judged: %s", subject, e)
            return
        seen = self.totals.get(subject)
        if seen is not None and seen[0] == minute:  # calls counted here since the Redis answer left
            totals = [max(a, b) for a, b in zip(totals, seen[1], strict=True)]
        self.totals[subject] = (minute, totals)
        for finding in judge(subject, w, totals):
            guard.act(finding)

    def judge_local(self, guard: AnomalyGuard, subject: Subject, values: Sequence[float]) -> list[Finding]:
        """Add a call to the fleet's sums as last seen and judge them at once (so the call that trips a
        spike carries the note); the Redis answer corrects the sums a moment later."""
        minute = int(guard.clock() // 60)
        w = guard.detector.windows.get(subject)
        seen = self.totals.get(subject)
        totals = [a + b for a, b in zip(seen[1], values, strict=True)] if seen is not None and seen[0] == minute \
            else list(values)
        self.totals[subject] = (minute, totals)
        return judge(subject, w, totals) if w is not None and w.minute == minute else []

    async def _window(self, guard: AnomalyGuard, subject: Subject, minute: int) -> Window:
        window = guard.cfg.window_minutes
        pipe = self.client.pipeline(transaction=False)
        for m in range(minute - window, minute):
            pipe.hmget(self._minute_key(subject, m), list(SIGNALS))
        rows = await pipe.execute()
        # minutes before the subject's first are not history: count from its first minute seen
        first = next((i for i, row in enumerate(rows) if any(v is not None for v in row)), len(rows))
        history = deque(([float(v or 0) for v in row] for row in rows[first:]), maxlen=window)
        w = Window(minute, [0.0] * len(SIGNALS), history)
        w.limits = guard.detector._limits(w)
        guard.detector.windows[subject] = w
        return w

    def calls_this_minute(self, subject: Subject, minute: int, local: float) -> float:
        seen = self.totals.get(subject)
        return max(local, seen[1][0]) if seen is not None and seen[0] == minute else local

    async def restrict(self, subject: Subject, r: Restriction) -> None:
        ttl = None if r.until is None else max(1, int(r.until - r.since))
        try:
            await self.client.set(self._restriction_key(subject), json.dumps(r.as_dict()), ex=ttl)
        except Exception as e:
            log.warning("anomaly: redis unreachable, the %s of %s is held by this instance only: %s",
                        r.kind, subject, e)

    async def clear(self, subject: Subject) -> bool:
        return bool(await self.client.delete(self._restriction_key(subject)))

    async def load(self) -> dict[Subject, Restriction]:
        """Every restriction in force in the fleet."""
        out = {}
        async for key in self.client.scan_iter(match=f"{self.prefix}r:*", count=500):
            raw = await self.client.get(key)
            if raw is None:
                continue
            scope, _, name = (key.decode() if isinstance(key, bytes) else key)[len(self.prefix) + 2:].partition(":")
            out[(scope, name)] = Restriction(**json.loads(raw))
        return out

    async def run(self, guard: AnomalyGuard) -> None:
        """Keep this instance's restrictions those of the fleet (every `refresh_s` seconds)."""
        while True:
            try:
                guard.restrictions = await self.load()
            except Exception as e:
                log.debug("anomaly: refreshing restrictions from redis failed: %s", e)
            await asyncio.sleep(self.refresh_s)
