"""Glue shared by the addons: the per-flow Call, and answers in the provider's own error shape."""

from __future__ import annotations

import logging

from mitmproxy import http
from mitmproxy.connection import ConnectionState

from douane import jsonio
from douane.call import METADATA_KEY, Call
from douane.decision import Block
from douane.decision import refuse as refuse_call
from douane.gateway import Gateway

REQUEST_ID_HEADER = "x-douane-request-id"

log = logging.getLogger(__name__)


def call_of(flow: http.HTTPFlow) -> Call | None:
    return flow.metadata.get(METADATA_KEY)


def error_response(call: Call, status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> http.Response:
    body = call.provider.adapter.error_body(status, message, code)
    return http.Response.make(status, jsonio.dumps(body), {
        "content-type": "application/json",
        REQUEST_ID_HEADER: call.id,
        **(headers or {}),
    })


def block_response(call: Call, block: Block) -> http.Response:
    return error_response(call, block.status, block.rule, block.client_message, block.headers)


def refuse(gw: Gateway, flow: http.HTTPFlow, call: Call, block: Block) -> bool:
    """Block the call with the block's status in the provider's shape, naming the rule; in monitor
    mode only record what would have happened (unless the block is `always`). True when blocked."""
    if not refuse_call(call, block, gw.enforcing):
        return False
    flow.response = block_response(call, block)
    return True


def record_now(gw: Gateway, call: Call) -> None:
    """Submit a call's record outside the audit stage: for flows it never sees (a CONNECT, a
    connection closed mid-request) or when it failed."""
    gw.record(call)


def client_gone(flow: http.HTTPFlow) -> bool:
    """The client closed its connection or reset its stream: no answer will reach it, so no
    `response` hook will come to record the call."""
    closed = not flow.client_conn.state & ConnectionState.CAN_WRITE
    return closed or bool(flow.error and "by client" in flow.error.msg)
