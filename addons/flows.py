"""Glue shared by the addons: the per-flow Call, and answers in the provider's own error shape."""

from __future__ import annotations

import json

from mitmproxy import http

from douane.call import METADATA_KEY, Call
from douane.gateway import Gateway

REQUEST_ID_HEADER = "x-douane-request-id"


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
