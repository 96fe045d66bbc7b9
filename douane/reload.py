"""Reload a running proxy's policy (on SIGHUP): read, validated, built, then swapped in at once.

The new policy is read and built in a worker thread (the detectors a new setting needs take a
moment) while the proxy goes on serving under the old one. It is refused, and the old one stays in
force, when it is invalid (the same `file:line: field: what is wrong` lines as `douane policy
check`) or when the environment cannot serve it (a missing central key, an unknown PII entity, a
change of the limits' state backend, which needs a restart). Otherwise it is swapped in whole
(douane.gateway.Generation): calls in flight finish under the policy they started with, new calls
start under the new one, and the counters of limits and budgets, the circuit breakers and the
audit writer carry on.

Signals arriving while a reload runs are folded into one more reload after it, so the last edit
always wins.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from douane.gateway import ConfigError, Gateway, Generation
from douane.policy import PolicyError, load_policy

log = logging.getLogger(__name__)

# keys a running proxy reads once, at start: a reload that changes them says so
AT_RESTART = ("limits.idle_timeout_s", "limits.request_body_timeout_s", "limits.max_connections_per_client",
              "audit.signing_key_file", "audit.checkpoint_every_s", "audit.checkpoint_copy", "audit.retention_days",
              "audit.db")


@dataclass
class Outcome:
    """What a reload did: `loaded` (a new generation in force), `unchanged`, or `refused` with `problems`."""

    status: str
    problems: list[str] = field(default_factory=list)
    generation: Generation | None = None


class Reloader:
    def __init__(self, gw: Gateway, path: str | Path, on_swap: Callable[[Generation], None] | None = None):
        """`on_swap` runs on the event loop right after a new generation is in force (the runner
        points mitmproxy's allow_hosts at its providers' hosts)."""
        self.gw = gw
        self.path = path
        self.on_swap = on_swap
        self.task: asyncio.Task[None] | None = None
        self.again = False
        self.outcomes: list[Outcome] = []

    def request(self, why: str = "SIGHUP") -> None:
        """Reload soon (a signal handler's entry point): now, or after the reload under way."""
        if self.task is not None and not self.task.done():
            self.again = True
            return
        self.task = asyncio.get_running_loop().create_task(self._run(why))

    async def _run(self, why: str) -> None:
        while True:
            self.again = False
            try:
                self.outcomes.append(await self.reload(why))
            except Exception:  # never let a reload take the proxy down: the old policy stays
                log.exception("policy reload (%s) failed; the policy in force stays", why)
            if not self.again:
                return

    async def reload(self, why: str = "reload") -> Outcome:
        current = self.gw.current
        try:
            policy = await asyncio.to_thread(load_policy, self.path)
        except PolicyError as e:
            return self._refused(why, [str(i) for i in e.issues])
        try:
            generation = await asyncio.to_thread(self.gw.prepare, policy)
        except ConfigError as e:
            return self._refused(why, [f"{self.path}: {e}"])
        if generation.hash == current.hash and generation.provider_keys == current.provider_keys:
            log.info("policy reload (%s): %s is unchanged (policy_hash %s)", why, self.path, current.hash)
            return Outcome("unchanged", generation=current)
        self.gw.put_in_force(generation)
        if self.on_swap is not None:
            self.on_swap(generation)
        log.warning("policy reloaded (%s): %s, policy_hash %s -> %s; %d call(s) in flight finish under the old one",
                    why, self.path, current.hash, generation.hash, len(self.gw.inflight))
        later = restart_only_changes(current, generation)
        if later:
            log.warning("policy reload: %s changed; these take effect when douane restarts", ", ".join(later))
        return Outcome("loaded", generation=generation)

    def _refused(self, why: str, problems: list[str]) -> Outcome:
        log.error("policy reload (%s) refused: %d problem(s) in %s; the policy in force stays (policy_hash %s). "
                  "Fix them, check with `douane policy check %s`, then send SIGHUP again",
                  why, len(problems), self.path, self.gw.current.hash, self.path)
        for problem in problems:
            log.error("  %s", problem)
        return Outcome("refused", problems)


def restart_only_changes(old: Generation, new: Generation) -> list[str]:
    """The keys of AT_RESTART whose values differ between two generations' policies."""
    changed = []
    for key in AT_RESTART:
        section, name = key.split(".")
        if getattr(getattr(old.policy, section), name) != getattr(getattr(new.policy, section), name):
            changed.append(key)
    return changed
