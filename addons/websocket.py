"""WebSockets to a provider (douane.websocket): every frame through the stages of an HTTP call.

The upgrade request goes through the HTTP stages (identity, classify, access, router: who, where,
with which key). After the router its Call leaves the flow's HTTP metadata, so that the meter and
the audit do not take the upgrade for a call: the socket's frames are the calls. Once upgraded, each
message goes to the flow's Session and what it decides is applied here: a client frame forwarded
(maybe rewritten) or dropped; a server frame forwarded, rewritten, dropped or replaced by several.

Order: mitmproxy sends a message changed in the hook when the hook returns, and an injected one
later, through the connection's event queue, first in first out with the frames still arriving.
So once a frame was injected for the client, every later one is injected too until the injected
ones have gone through, or a later frame would overtake them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from mitmproxy import ctx, http
from mitmproxy.websocket import WebSocketMessage

from addons.flows import call_of
from douane import faults
from douane.call import METADATA_KEY, Call
from douane.gateway import Gateway
from douane.guard import PromptGuard
from douane.meter.gate import Meter
from douane.providers import openai_ws
from douane.websocket import FrameVerdict, Session

log = logging.getLogger(__name__)

SOCKET_KEY = "douane.websocket.upgrade"  # the upgrade's Call, out of the HTTP stages' sight
SESSION_KEY = "douane.websocket"


@dataclass
class _Wire:
    session: Session
    pending: int = 0  # frames injected for the client that have not gone through yet


def is_upgrade(flow: http.HTTPFlow) -> bool:
    return flow.request.headers.get("upgrade", "").lower() == "websocket"


class WebSocketAddon:
    name = "websocket"

    def __init__(self, gw: Gateway):
        self.gw = gw
        self.guard = PromptGuard(gw)
        self.meter = Meter(gw)
        self.live: dict[str, Session] = {}  # by flow id: sockets open now

    def request(self, flow: http.HTTPFlow) -> None:
        """After the router: an upgrade douane inspects leaves the HTTP stages (its frames are the calls)."""
        call = call_of(flow)
        if call is None or flow.response or flow.error or not is_upgrade(flow):
            return
        if openai_ws.protocol_of(flow.request.path) is None:  # allowed by other_websockets: forward
            call.note("other_websockets.forward: frames forwarded uninspected")
            return
        flow.metadata[SOCKET_KEY] = flow.metadata.pop(METADATA_KEY)

    def response(self, flow: http.HTTPFlow) -> None:
        """The provider answered the upgrade without upgrading: an HTTP call after all, recorded as one."""
        if flow.response is not None and flow.response.status_code != 101:
            self._back_to_http(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is None:
            self._back_to_http(flow)

    @staticmethod
    def _back_to_http(flow: http.HTTPFlow) -> None:
        call = flow.metadata.pop(SOCKET_KEY, None)
        if call is not None:
            call.add_error("the WebSocket upgrade did not happen")
            flow.metadata[METADATA_KEY] = call

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        call: Call | None = flow.metadata.get(SOCKET_KEY)
        protocol = openai_ws.protocol_of(call.path) if call is not None else None
        if call is None or protocol is None:
            return
        session = Session(self.gw, self.guard, self.meter, call, protocol,
                          flow.metadata.get(faults.METADATA_KEY, frozenset()))
        flow.metadata[SESSION_KEY] = _Wire(session)
        del flow.metadata[SOCKET_KEY]
        self.live[flow.id] = session

    async def websocket_message(self, flow: http.HTTPFlow) -> None:
        wire: _Wire | None = flow.metadata.get(SESSION_KEY)
        if wire is None or flow.websocket is None:
            return
        message = flow.websocket.messages[-1]
        del flow.websocket.messages[:-1]  # a socket may live for hours: keep no history of its frames
        if message.injected:
            if not message.from_client:
                wire.pending -= 1
            return
        if message.from_client:
            apply_client(flow, wire, message, await wire.session.client_frame(message.content, message.is_text))
        else:
            to_client(flow, wire, message, await wire.session.server_frame(message.content, message.is_text))
        _to_server(flow, wire)

    async def websocket_end(self, flow: http.HTTPFlow) -> None:
        wire: _Wire | None = flow.metadata.pop(SESSION_KEY, None)
        self.live.pop(flow.id, None)
        if wire is not None:
            ws = flow.websocket
            why = f"the socket closed ({ws.close_code} {ws.close_reason}) before the response completed" \
                if ws is not None else None
            await wire.session.close(why)
            self.gw.inflight.discard(wire.session.socket.id)  # the socket's responses are each recorded

    async def done(self) -> None:
        """Sockets still open when douane stops: their responses are settled and recorded."""
        for session in list(self.live.values()):
            await session.close("douane stopped before the response completed")
        self.live.clear()


def apply_client(flow: http.HTTPFlow, wire: _Wire, message: WebSocketMessage, verdict: FrameVerdict) -> None:
    if not verdict.forward:
        message.drop()
    elif verdict.content is not None:
        message.content = verdict.content
    for frame in verdict.to_client:
        _inject(flow, wire, frame)


def to_client(flow: http.HTTPFlow, wire: _Wire, message: WebSocketMessage, out: list[bytes] | None) -> None:
    """Send the frames for one server frame (None: that frame as it came), in order."""
    if out is None:
        if not wire.pending:
            return
        out = [message.content]
    if wire.pending or not out:
        message.drop()
    else:
        message.content, out = out[0], out[1:]
    for frame in out:
        _inject(flow, wire, frame)


def _inject(flow: http.HTTPFlow, wire: _Wire, frame: bytes) -> None:
    wire.pending += 1
    ctx.master.commands.call("inject.websocket", flow, True, frame, True)


def _to_server(flow: http.HTTPFlow, wire: _Wire) -> None:
    """Frames douane sends the provider itself (a Realtime response.cancel once it stopped one)."""
    while wire.session.to_server:
        ctx.master.commands.call("inject.websocket", flow, False, wire.session.to_server.pop(0), True)


def frame_failed(gw: Gateway, flow: http.HTTPFlow, hook: str, error: Exception) -> None:
    """A stage failed in a WebSocket hook: the session applies the policy's `fail` to the frame."""
    wire: _Wire | None = flow.metadata.get(SESSION_KEY)
    if hook == "websocket_message" and wire is not None and flow.websocket is not None:
        message = flow.websocket.messages[-1]
        if message.injected:
            return
        if message.from_client:
            apply_client(flow, wire, message, wire.session.client_failed(error))
        else:
            to_client(flow, wire, message, wire.session.server_failed(error))
        _to_server(flow, wire)
    elif hook == "websocket_start" and wire is None:
        _start_failed(gw, flow, error)


def _start_failed(gw: Gateway, flow: http.HTTPFlow, error: Exception) -> None:
    """No session: its frames could not be inspected. Closed ends the socket; open lets it run blind."""
    call: Call | None = flow.metadata.pop(SOCKET_KEY, None)
    if call is None:
        return
    call.add_error(f"websocket.websocket_start failed ({type(error).__name__}: {error})")
    call.status = 101
    if gw.policy.fail == "closed":
        call.decision = "blocked"
        call.note("fail.closed")
        if flow.killable:
            flow.kill()
    else:
        call.note("fail.open: guard_error in websocket, frames forwarded uninspected")
    gw.record(call, time.time())
