"""Thin mitmproxy addons, one per stage of a call's way through; the logic lives in douane/."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import mitmproxy.proxy.layers  # noqa: F401  (registers the proxy's hooks in hooks.all_hooks)
from mitmproxy import exceptions, hooks, http

from addons.access import AccessAddon
from addons.answer import AnswerAddon
from addons.audit import AuditAddon
from addons.classify import ClassifyAddon
from addons.connections import ConnectionsAddon
from addons.failures import StageFailures
from addons.identity import IdentityAddon
from addons.mcp import McpAddon
from addons.meter import MeterAddon
from addons.prompt_guard import PromptGuardAddon
from addons.router import RouterAddon
from addons.shadow import ShadowAIAddon
from addons.upstream_errors import UpstreamErrorsAddon, install
from addons.websocket import WebSocketAddon
from douane import faults
from douane.gateway import Gateway
from douane.ops.metrics import FINAL_HOOKS, Metrics

log = logging.getLogger(__name__)

HOOKS = ("client_connected", "client_disconnected", "http_connect", "requestheaders", "request", "responseheaders",
         "response", "error", "running", "done", "websocket_start", "websocket_message", "websocket_end")


def build(gw: Gateway) -> list[object]:
    """The addons in the order their hooks must run for each flow."""
    install()
    classify = ClassifyAddon(gw)
    stages = [
        ConnectionsAddon(gw),
        IdentityAddon(gw),
        ShadowAIAddon(gw),
        classify,
        McpAddon(gw),  # MCP servers' flows: judged and recorded on their own, never seen by the stages below
        AccessAddon(gw),
        PromptGuardAddon(gw),
        RouterAddon(gw),
        WebSocketAddon(gw),  # after Router (the upgrade goes where the router sends it), before Meter and Audit
        UpstreamErrorsAddon(),
        AnswerAddon(gw),
        MeterAddon(gw),  # after Answer: settles from the usage it read; before Audit: the row has the cost
        AuditAddon(gw),
    ]
    if gw.anomaly is not None:  # only with the policy's `anomaly:`; after access, before any scan
        from addons.anomaly import AnomalyAddon

        stages.insert(stages.index(classify) + 2, AnomalyAddon(gw, gw.anomaly))
    if gw.tracer is not None:  # only when telemetry is on: no stage otherwise
        from addons.telemetry import TelemetryAddon

        stages.insert(stages.index(classify) + 1, TelemetryAddon(gw.tracer))
    if faults.ENABLED:
        log.warning("fault injection is ON (DOUANE_FAULT_INJECTION=1): requests may make douane's stages fail; "
                    "never run a production proxy like this")
    return [Pipeline(stages, StageFailures(gw, classify), metrics=gw.metrics)]


Hook = Callable[..., Awaitable[None] | None]
# (stage name, hook, the hook's arguments, the error): decides what the error means for the flow
ErrorHandler = Callable[[str, str, tuple[Any, ...], Exception], None]


def _log_error(stage: str, hook: str, args: tuple[Any, ...], error: Exception) -> None:
    log.error("addon error in %s.%s", stage, hook, exc_info=error)


class Pipeline:
    """douane's addons as one entry of mitmproxy's chain, their hooks called in order as the chain would.

    mitmproxy calls every event on every entry of its chain, each time through a context manager
    and a coroutine (~1.5 us), whether the entry has the hook or not, and a call sees about eight
    events: ten entries cost ~0.1 ms per call. Here each hook is one entry whose stages are the
    addons that define it.

    A stage that raises does not just get logged, as mitmproxy would do: `on_error` decides what it
    means for the flow (douane's StageFailures applies the policy's `fail`), then the next stage runs.

    With `metrics`, each stage's hook is timed (a perf_counter pair) and the times go to the flow's
    metadata, observed once the flow is done; without, nothing is timed.
    """

    name = "douane"

    def __init__(self, stages: Sequence[object], on_error: ErrorHandler = _log_error, metrics: Metrics | None = None):
        self.stages = list(stages)
        self.on_error = on_error
        self.metrics = metrics
        for hook in HOOKS:
            funcs = [(stage_name(stage), getattr(stage, hook)) for stage in self.stages
                     if callable(getattr(stage, hook, None))]
            if funcs:
                setattr(self, hook, self._chain(hook, funcs))
        unknown = {n for stage in self.stages for n in dir(stage) if n in hooks.all_hooks and n not in HOOKS}
        if unknown:
            raise TypeError(f"Pipeline does not forward these hooks: {', '.join(sorted(unknown))}")

    def _chain(self, hook: str, funcs: list[tuple[str, Hook]]) -> Hook:
        if self.metrics is not None and hook not in ("running", "done"):  # start and stop are no call's time
            return self._timed_chain(hook, funcs, self.metrics)

        def run(*args: Any) -> Awaitable[None] | None:
            for i, (stage, func) in enumerate(funcs):
                result = self._call(stage, hook, func, args)
                if result is not None:  # an async hook: the rest runs after it, in a coroutine
                    return self._finish(hook, stage, result, funcs[i + 1:], args)
            return None

        return run

    def _timed_chain(self, hook: str, funcs: list[tuple[str, Hook]], metrics: Metrics) -> Hook:
        """`_chain` with each stage's time given to `metrics` (per flow; per connection for CONNECTs)."""
        final = hook in FINAL_HOOKS
        per_flow = hook != "http_connect"  # a CONNECT's flow never ends in `response`: observe at once

        def run(*args: Any) -> Awaitable[None] | None:
            flow = args[0] if args and isinstance(args[0], http.HTTPFlow) else None
            metadata = flow.metadata if flow is not None and per_flow else None
            timed: list[tuple[str, float]] = []
            for i, (stage, func) in enumerate(funcs):
                start = time.perf_counter()
                result = self._call(stage, hook, func, args)
                if result is not None:
                    return self._finish_timed(hook, stage, start, result, funcs[i + 1:], args, metrics, metadata,
                                              final, timed)
                timed.append((stage, time.perf_counter() - start))
            metrics.stage_times(metadata, hook, timed)
            if final and metadata is not None:
                metrics.flow_done(metadata)
            return None

        return run

    async def _finish_timed(self, hook: str, stage: str, start: float, pending: Awaitable[None],
                            rest: list[tuple[str, Hook]], args: tuple[Any, ...], metrics: Metrics,
                            metadata: dict[str, Any] | None, final: bool, timed: list[tuple[str, float]]) -> None:
        await self._guarded(stage, hook, pending, args)
        timed.append((stage, time.perf_counter() - start))
        for name, func in rest:
            start = time.perf_counter()
            result = self._call(name, hook, func, args)
            if result is not None:
                await self._guarded(name, hook, result, args)
            timed.append((name, time.perf_counter() - start))
        metrics.stage_times(metadata, hook, timed)
        if final and metadata is not None:
            metrics.flow_done(metadata)

    def _call(self, stage: str, hook: str, func: Hook, args: tuple[Any, ...]) -> Awaitable[None] | None:
        try:
            if faults.ENABLED:
                faults.check(f"{stage}.{hook}", _armed(args))
            result = func(*args)
        except (exceptions.AddonHalt, exceptions.OptionsError):
            raise
        except Exception as e:
            self._failed(stage, hook, args, e)
            return None
        return result if result is not None and inspect.isawaitable(result) else None

    async def _finish(self, hook: str, stage: str, pending: Awaitable[None], rest: list[tuple[str, Hook]],
                      args: tuple[Any, ...]) -> None:
        await self._guarded(stage, hook, pending, args)
        for name, func in rest:
            result = self._call(name, hook, func, args)
            if result is not None:
                await self._guarded(name, hook, result, args)

    async def _guarded(self, stage: str, hook: str, pending: Awaitable[None], args: tuple[Any, ...]) -> None:
        try:
            await pending
        except (exceptions.AddonHalt, exceptions.OptionsError):
            raise
        except Exception as e:
            self._failed(stage, hook, args, e)

    def _failed(self, stage: str, hook: str, args: tuple[Any, ...], error: Exception) -> None:
        try:
            self.on_error(stage, hook, args, error)
        except Exception:  # the handler itself failed: the flow must not go on as if nothing happened
            log.critical("handling an error of %s.%s failed", stage, hook, exc_info=True)
            flow = args[0] if args and isinstance(args[0], http.HTTPFlow) else None
            if flow is not None and flow.killable:
                flow.kill()


def stage_name(stage: object) -> str:
    return getattr(stage, "name", type(stage).__name__)


def _armed(args: tuple[Any, ...]) -> frozenset[str]:
    """The fault points a flow's request asked for (tests only; see douane.faults)."""
    flow = args[0] if args and isinstance(args[0], http.HTTPFlow) else None
    if flow is None:
        return frozenset()
    points = flow.metadata.get(faults.METADATA_KEY)
    if points is None:
        points = faults.parse(flow.request.headers.get(faults.HEADER))
        flow.metadata[faults.METADATA_KEY] = points
        flow.request.headers.pop(faults.HEADER, None)
    return points
