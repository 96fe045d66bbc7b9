"""Glue shared by the addons: the per-flow Call, and answers in the provider's own error shape."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from mitmproxy import http

from douane.call import METADATA_KEY, Call
from douane.detect import budget
from douane.gateway import Gateway

REQUEST_ID_HEADER = "x-douane-request-id"

log = logging.getLogger(__name__)

# Below this many characters a scan takes about a millisecond or less: cheaper on the loop than a
# hop to a worker thread, whose GIL hand-offs (5 ms switch interval) stall every other flow.
INLINE_SCAN_CHARS = 4096


def call_of(flow: http.HTTPFlow) -> Call | None:
    return flow.metadata.get(METADATA_KEY)


def error_response(call: Call, status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> http.Response:
    body = call.provider.adapter.error_body(status, message, code)
    return http.Response.make(status, json.dumps(body).encode(), {
        "content-type": "application/json",
        REQUEST_ID_HEADER: call.id,
        **(headers or {}),
    })


def refuse(gw: Gateway, flow: http.HTTPFlow, call: Call, status: int, code: str, message: str,
           always: bool = False, headers: dict[str, str] | None = None) -> bool:
    """Block the call with `status` in the provider's shape, naming the rule; in monitor mode only
    record what would have happened (unless `always`). True when the call was blocked."""
    if not gw.enforcing and not always:
        call.note(f"monitor: would block ({code}): {message}")
        return False
    call.decision = "blocked"
    call.note(code)
    flow.response = error_response(call, status, code, f"douane blocked this request: {message} [rule: {code}]",
                                   headers)
    return True


async def scan[T](gw: Gateway, chars: int, work: Callable[[], T]) -> T:
    """Run a guard's scan of `chars` fresh characters: on the loop when small, else in a worker
    thread under the policy's guard timeout (TimeoutError past it). The thread's detectors stop
    themselves at the same deadline (douane.detect.budget): a thread cannot be killed, and a scan
    left running would go on burning a core."""
    if chars <= INLINE_SCAN_CHARS:
        return work()
    timeout = gw.policy.limits.guard_timeout_s
    deadline = time.monotonic() + timeout
    return await asyncio.wait_for(asyncio.to_thread(budget.run_until, deadline, work), timeout)


def scan_failed(gw: Gateway, flow: http.HTTPFlow, call: Call, what: str, error: Exception) -> None:
    """A guard that failed or timed out follows the policy's `fail`: closed answers 503, open forwards."""
    why = f"took longer than {gw.policy.limits.guard_timeout_s:g} s" if isinstance(error, TimeoutError) \
        else f"failed: {error}"
    log.error("guard: %s for %s %s", what, call.id, why)
    call.error = f"{call.error}; {what} {why}" if call.error else f"{what} {why}"
    if gw.policy.fail == "closed":
        refuse(gw, flow, call, 503, "fail.closed", f"the {what} {why}; try again later", always=True)
    else:
        call.note(f"fail.open: {what} {why}, forwarded unscanned")
