"""Thin mitmproxy addons, one per stage of a call's way through; the logic lives in douane/."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import mitmproxy.proxy.layers  # noqa: F401  (registers the proxy's hooks in hooks.all_hooks)
from mitmproxy import exceptions, hooks

from addons.access import AccessAddon
from addons.answer import AnswerAddon
from addons.audit import AuditAddon
from addons.classify import ClassifyAddon
from addons.identity import IdentityAddon
from addons.meter import MeterAddon
from addons.prompt_guard import PromptGuardAddon
from addons.router import RouterAddon
from addons.shadow import ShadowAIAddon
from addons.upstream_errors import UpstreamErrorsAddon, install
from douane.gateway import Gateway

log = logging.getLogger(__name__)

HOOKS = ("http_connect", "requestheaders", "request", "responseheaders", "response", "error", "running", "done")


def build(gw: Gateway) -> list[object]:
    """The addons in the order their hooks must run for each flow."""
    install()
    return [Pipeline([
        IdentityAddon(gw),
        ShadowAIAddon(gw),
        ClassifyAddon(gw),
        AccessAddon(gw),
        PromptGuardAddon(gw),
        RouterAddon(gw),
        UpstreamErrorsAddon(),
        AnswerAddon(gw),
        MeterAddon(gw),  # after Answer: settles from the usage it read; before Audit: the row has the cost
        AuditAddon(gw),
    ])]


Hook = Callable[..., Awaitable[None] | None]


class Pipeline:
    """douane's addons as one entry of mitmproxy's chain, their hooks called in order as the chain would.

    mitmproxy calls every event on every entry of its chain, each time through a context manager
    and a coroutine (~1.5 us), whether the entry has the hook or not, and a call sees about eight
    events: ten entries cost ~0.1 ms per call. Here each hook is one entry whose stages are the
    addons that define it. An addon's error is logged and the next one still runs, as mitmproxy does.
    """

    name = "douane"

    def __init__(self, stages: Sequence[object]):
        self.stages = list(stages)
        for hook in HOOKS:
            funcs = [getattr(stage, hook) for stage in self.stages if callable(getattr(stage, hook, None))]
            if funcs:
                setattr(self, hook, _chain(hook, funcs))
        unknown = {n for stage in self.stages for n in dir(stage) if n in hooks.all_hooks and n not in HOOKS}
        if unknown:
            raise TypeError(f"Pipeline does not forward these hooks: {', '.join(sorted(unknown))}")


def _chain(hook: str, funcs: list[Hook]) -> Hook:
    def run(*args: Any) -> Awaitable[None] | None:
        for i, func in enumerate(funcs):
            result = _call(hook, func, args)
            if result is not None:  # an async hook: the rest runs after it, in a coroutine
                return _finish(hook, result, funcs[i + 1:], args)
        return None

    return run


def _call(hook: str, func: Hook, args: tuple[Any, ...]) -> Awaitable[None] | None:
    try:
        result = func(*args)
    except (exceptions.AddonHalt, exceptions.OptionsError):
        raise
    except Exception:
        log.exception("addon error in %s.%s", type(getattr(func, "__self__", func)).__name__, hook)
        return None
    return result if result is not None and inspect.isawaitable(result) else None


async def _finish(hook: str, pending: Awaitable[None], rest: list[Hook], args: tuple[Any, ...]) -> None:
    await _guarded(hook, pending)
    for func in rest:
        result = _call(hook, func, args)
        if result is not None:
            await _guarded(hook, result)


async def _guarded(hook: str, pending: Awaitable[None]) -> None:
    try:
        await pending
    except (exceptions.AddonHalt, exceptions.OptionsError):
        raise
    except Exception:
        log.exception("addon error in %s", hook)
