"""Fault injection, for tests of the fail-closed rule: make a named stage raise on demand.

Off unless the process starts with DOUANE_FAULT_INJECTION=1 (douane run logs a warning when it is
on). Then a request may name the points to fail in its `x-douane-fault` header (a comma-separated
list such as `prompt_guard.request,answer.stream`); the header is removed before the request goes
anywhere. Points are `<stage>.<hook>` for every addon hook, plus `answer.stream` (the stream tap),
`websocket.client_frame` (judging a client's frame) and `websocket.server_frame` (an answer's
frame), armed for a whole socket by the header on its upgrade request.
"""

from __future__ import annotations

import contextvars
import os

HEADER = "x-douane-fault"
METADATA_KEY = "douane.faults"  # a flow's armed points, in flow.metadata
ENABLED = os.environ.get("DOUANE_FAULT_INJECTION") == "1"

# the points armed for the flow being handled right now (set by the pipeline around each stage)
armed: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("douane_faults", default=frozenset())


class InjectedFault(RuntimeError):
    """Raised where a test asked for a failure."""


def parse(header: str | None) -> frozenset[str]:
    return frozenset(p.strip() for p in (header or "").split(",") if p.strip()) if ENABLED else frozenset()


def check(point: str, points: frozenset[str] | None = None) -> None:
    """Raise InjectedFault when `point` is armed (for the current flow, or in `points`)."""
    if ENABLED and point in (points if points is not None else armed.get()):
        raise InjectedFault(f"fault injected at {point}")
