"""What a stage's error means for its flow: the policy's `fail`, enforced in one place.

mitmproxy logs an addon's error and goes on, which for a security control is a side door: the
prompt guard raising would let the prompt out unread. Here, for every stage:
- before the call is forwarded (CONNECT, request headers, request): `fail: closed` answers 503 in the
  provider's shape and does not forward; `open` forwards and records a guard_error (a CONNECT, which
  has no row of its own otherwise, gets one). An error in the identity or router stage always
  closes: forwarding an unidentified caller, or a call not routed (to the client's own host instead
  of the provider's upstream, with the client's key instead of the central one), is not a guard
  failing open.
- while the answer is inspected (response headers, response): closed replaces the answer with a
  503 in the provider's shape (a stream is ended with the provider's error event by the stream tap
  itself, douane.streaming); open delivers it and records the error.
- on a WebSocket (a frame being judged): closed drops the frame and tells the client with an error
  frame (an answer's frame: the response is stopped there); open forwards it as it came and records
  the error (addons.websocket.frame_failed, douane.websocket.Session).
- any other error (settling the meter, writing the record, an upstream error being handled) cannot
  change what the client already has: it is recorded on the call, whose row names the stage and the
  exception class (and the status the client got). When the stage that answers an unreachable
  upstream fails, the client still gets that 502 in the provider's shape, not mitmproxy's page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mitmproxy import connection, http

from addons.flows import block_response, call_of, error_response, record_now, refuse
from addons.websocket import frame_failed
from douane.call import Call
from douane.decision import Block, withhold
from douane.gateway import Gateway

if TYPE_CHECKING:
    from addons.classify import ClassifyAddon

log = logging.getLogger(__name__)

BEFORE_FORWARDING = ("http_connect", "requestheaders", "request")
ANSWER_STAGE = "answer"


class StageFailures:
    def __init__(self, gw: Gateway, classify: ClassifyAddon):
        self.gw = gw
        self.classify = classify

    @property
    def closed(self) -> bool:
        return self.gw.policy.fail == "closed"

    def __call__(self, stage: str, hook: str, args: tuple[Any, ...], error: Exception) -> None:
        what = f"{stage}.{hook} failed ({type(error).__name__}: {error})"
        log.error("stage error: %s", what, exc_info=error)
        flow = args[0] if args and isinstance(args[0], http.HTTPFlow) else None
        if flow is None:
            if hook == "running":  # a stage that cannot start: douane must not serve half-built
                raise SystemExit(f"douane: {what}; stopping") from error
            if hook == "client_connected" and self.closed and isinstance(args[0], connection.Client):
                args[0].error = f"douane could not admit the connection: {what}"
            return
        if hook.startswith("websocket_"):  # a frame: the socket's session applies `fail` to it
            frame_failed(self.gw, flow, hook, error)
            return
        call = self._call(flow)
        if call is not None:
            call.add_error(what)
        handle = self._HANDLERS.get(hook)
        if handle is not None:
            handle(self, flow, call, stage, error)
        if stage == "audit" and call is not None and not call.recorded:
            if call.status is None and flow.response is not None:
                call.status = flow.response.status_code
            self._record_anyway(call)

    def _call(self, flow: http.HTTPFlow) -> Call | None:
        """The flow's Call; one is opened when the flow goes to a provider and the failing stage ran
        before any was (identity, classify), so that the refusal is recorded too."""
        call = call_of(flow)
        if call is not None:
            return call
        spec = self.gw.providers.match(flow.request.host, flow.request.port)
        if spec is None and flow.client_conn.sni:
            spec = self.gw.providers.match(flow.client_conn.sni, flow.request.port)
        return self.classify.open(flow, spec) if spec is not None else None

    def _closes(self, stage: str, call: Call | None) -> bool:
        """Whether a failure before forwarding refuses the call: under `closed` always; under `open`
        when identity failed, or routing failed for a provider call (it has nowhere safe to go)."""
        return self.closed or stage == "identity" or (stage == "router" and call is not None)

    def _before_forwarding(self, flow: http.HTTPFlow, call: Call | None, stage: str, error: Exception) -> None:
        if not self._closes(stage, call):
            if call is not None:
                call.note(f"fail.open: guard_error in {stage} ({type(error).__name__}), forwarded")
                if flow.request.method == "CONNECT":  # the tunnel's own row: its calls have rows of theirs
                    call.status = 200
                    self._record_anyway(call)
            return
        message = (f"douane's {stage} stage failed ({type(error).__name__}), so the request was not forwarded; "
                   "try again, and tell douane's operator if it persists (fail: closed)")
        if call is None:
            flow.response = http.Response.make(503, f"{message}\n".encode(), {"content-type": "text/plain"})
            return
        refuse(self.gw, flow, call, Block(503, "fail.closed", message, always=True))
        if flow.request.method == "CONNECT":  # no `response` hook for a CONNECT: record it now
            call.status = 503
            self._record_anyway(call)

    def _answer(self, flow: http.HTTPFlow, call: Call | None, stage: str, error: Exception) -> None:
        if stage != ANSWER_STAGE or call is None or flow.response is None:
            return
        if flow.response.stream and flow.response.timestamp_end is not None:
            return  # a streamed answer already delivered: recorded on the call, nothing left to withhold
        if not self.closed:
            call.note(f"fail.open: guard_error in {stage} ({type(error).__name__}), answer delivered uninspected")
            return
        message = (f"douane could not inspect the answer ({type(error).__name__}), so it was withheld; "
                   "try again, and tell douane's operator if it persists (fail: closed)")
        block = Block(503, "fail.closed", message, always=True)
        refuse_answer(self.gw, flow, call, block)

    def _upstream_error(self, flow: http.HTTPFlow, call: Call | None, stage: str, error: Exception) -> None:
        if stage != "upstream_errors" or call is None or flow.response is not None:
            return
        flow.response = error_response(call, 502, "upstream_failed",
                                       f"douane could not get an answer from {call.provider.name}; try again")
        call.status = 502

    _HANDLERS: dict[str, Callable[[StageFailures, http.HTTPFlow, Call | None, str, Exception], None]] = {
        "http_connect": _before_forwarding,
        "requestheaders": _before_forwarding,
        "request": _before_forwarding,
        "responseheaders": _answer,
        "response": _answer,
        "error": _upstream_error,
    }

    def _record_anyway(self, call: Call) -> None:
        """The audit stage failed, or never runs for this flow (a CONNECT): submit the record directly."""
        record_now(self.gw, call)


class _Once:
    """A response `stream` that sends one body and drops whatever the upstream sends."""

    def __init__(self, body: bytes):
        self.body: bytes | None = body

    def __call__(self, chunk: bytes) -> bytes:
        out, self.body = self.body or b"", None
        return out


def refuse_answer(gw: Gateway, flow: http.HTTPFlow, call: Call, block: Block) -> None:
    """Replace an answer not yet sent to the client with the block, in the provider's shape. At
    `responseheaders` the body has not been read: the upstream's bytes are dropped as they come."""
    resp = flow.response
    assert resp is not None
    withhold(call, block)
    if resp.stream or resp.timestamp_end is None:  # at responseheaders: the body has not been read yet
        made = block_response(call, block)
        body = made.raw_content or b""
        resp.status_code = block.status
        resp.reason = made.reason
        for name in list(resp.headers):
            del resp.headers[name]
        for name, value in {**made.headers, "content-length": str(len(body))}.items():
            resp.headers[name] = value
        resp.stream = _Once(body)
        return
    flow.response = block_response(call, block)


