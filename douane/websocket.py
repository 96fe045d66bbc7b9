"""A WebSocket to a provider, frame by frame, judged by the same stages as an HTTP call.

Each client frame is read within the policy's limits into a canonical request (douane.providers.
openai_ws) and goes through access and the prompt guard (injection, PII redaction, pseudonyms kept
for the whole socket, as the provider keeps the conversation); a frame that asks for a response also
gets the meter's reservation and becomes a Call of its own. A blocked frame is not forwarded: the
client gets an error event in the protocol's shape, and the frame is a row. Each response streamed
back goes through the answer stages as it flows (douane.streaming.EventTap, the engine of SSE
answers) and is one row, settled by the meter from the provider's usage, or from an estimate of what
was seen when the socket closed first. Audio is counted, not inspected.

Transport-neutral: addons/websocket.py hands frames in and applies what comes back (forward as it
came, forward rewritten, drop, send these frames to the client or the server).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from douane import classify, faults, jsonio
from douane.access import check_access
from douane.bodies import BodyTooComplex, walk
from douane.call import Call, new_call_id
from douane.decision import Block, decide
from douane.detect.pii import Pseudonyms
from douane.guard import PromptGuard
from douane.meter.gate import Meter, estimate_usage
from douane.policy import Policy
from douane.providers import UnreadableBody, openai_ws
from douane.providers.openai_ws import AUDIO, CREATE, REALTIME
from douane.rewrite import Blocked
from douane.streaming import KEEP, Emit, EventTap, record_findings

if TYPE_CHECKING:
    from douane.gateway import Gateway

log = logging.getLogger(__name__)

METHOD = "WEBSOCKET"  # the rows' `method`: the call came as a frame of a WebSocket, not an HTTP request


def upgrade_refusal(policy: Policy, call: Call, path: str) -> Block | None:
    """Whether a WebSocket upgrade to a provider host may go on: the protocols douane inspects
    (Responses, Realtime) may; any other only when the policy says `other_websockets: forward`."""
    if openai_ws.protocol_of(path) is not None and call.provider.format == "openai":
        return None
    if policy.other_websockets == "forward":
        return None
    return Block(403, "other_websockets.block",
                 f"a WebSocket to {call.host}{call.path} is not a transport douane inspects (it inspects OpenAI's "
                 "/v1/responses and /v1/realtime); use HTTPS, or set other_websockets: forward in the policy",
                 always=True)


@dataclass(slots=True)
class FrameVerdict:
    """What becomes of a client frame: forwarded (as it came, or rewritten) or not, and what the
    client and the server are sent besides."""

    forward: bool = True
    content: bytes | None = None  # the frame rewritten; None: as it came
    to_client: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class Turn:
    """One response: its Call, the tap its events flow through, and how far it has come."""

    call: Call
    tap: EventTap[bytes]
    client_event_id: str | None = None
    response_id: str | None = None
    created: bool = False  # the provider said response.created
    stopped: bool = False  # the client no longer gets its events (blocked, or inspection failed closed)
    block: Block | None = None  # why, when the meter refused a response the provider started
    passthrough: bool = False  # inspection failed under fail: open: the rest goes as it comes
    bytes_out: int = 0
    audio: list[int] = field(default_factory=lambda: [0, 0])  # audio deltas and their bytes, not inspected


class Session:
    def __init__(self, gw: Gateway, guard: PromptGuard, meter: Meter, socket: Call, protocol: str,
                 armed: frozenset[str] = frozenset(), clock: Callable[[], float] = time.time):
        self.gw = gw
        self.guard = guard
        self.meter = meter
        self.socket = socket  # the upgrade's Call: who is calling, which provider, where it goes
        self.protocol = protocol
        self.faults = armed
        self.clock = clock
        self.model = socket.model  # a Realtime socket's model (its URL, then session.update)
        self.pseudonyms = Pseudonyms()  # one numbering for the socket: the provider keeps the conversation
        self.turns: list[Turn] = []
        self.carried: list[tuple[Call, str]] = []  # prompt frames since the last response began, and their text
        self.audio_in = [0, 0]  # input audio frames and bytes since the last response began
        self.current: tuple[Call, str] | None = None  # the client frame being judged, and its kind
        self.active: Turn | None = None  # the response of the server event being handled
        self.to_server: list[bytes] = []  # frames for the provider (a cancel), taken by the transport

    # -- client frames -------------------------------------------------------------------------------

    async def client_frame(self, content: bytes, is_text: bool) -> FrameVerdict:
        self.current = None
        call = self._call(len(content))
        limit = self.gw.policy.limits.max_request_bytes
        if not is_text:
            return self._refuse(call, Block(400, "unreadable_body", "a binary WebSocket frame cannot be inspected, so "
                                            "it was not forwarded; send JSON text frames", always=True))
        if len(content) > limit:
            return self._refuse(call, Block(413, "limits.max_request_bytes", f"a frame of {len(content)} bytes is "
                                            f"over the limit of {limit} bytes; it was not forwarded", always=True))
        try:
            frame = classify.parse_json(content)
            if not isinstance(frame, dict):
                raise classify.NotReadable("the frame is JSON but not an object")
            event = openai_ws.read_client_event(self.protocol, frame)
        except (classify.NotReadable, UnreadableBody) as e:
            return self._unreadable(call, content, e)
        if event.kind == AUDIO:
            self.audio_in[0] += 1
            self.audio_in[1] += event.audio_bytes
            return FrameVerdict()
        self.current = (call, event.kind)
        faults.check("websocket.client_frame", self.faults)
        block = self._read(call, event, frame)
        if block is None:
            block = await self.guard.inspect(call, self.pseudonyms)
        if block is None and event.kind == CREATE:
            block = await self.meter.reserve(call)
        if block is not None and self._enforce(call, block):
            return self._blocked(call, block, frame.get("event_id"))
        if self.protocol == REALTIME and event.type == "session.update" and event.request.model:
            self.model = event.request.model
        out = jsonio.dumps(frame) if call.body_changed else None
        self._accept(call, event.kind, (out or content).decode("utf-8", "replace"), frame.get("event_id"))
        self.current = None
        return FrameVerdict(content=out)

    def _unreadable(self, call: Call, content: bytes, error: ValueError) -> FrameVerdict:
        """Not JSON: refused, as douane forwards nothing it cannot inspect; in monitor mode forwarded."""
        block = Block(400, "unreadable_body", f"{error}; it was not forwarded because douane cannot inspect it")
        if self._enforce(call, block):
            return self._blocked(call, block)
        call.note("unreadable frame: forwarded uninspected")
        self._carry(call, content.decode("utf-8", "replace"))
        return FrameVerdict()

    def _read(self, call: Call, event: openai_ws.ClientEvent, frame: dict[str, Any]) -> Block | None:
        """The frame's canonical request on the call, held to the limits, the numbers and access."""
        limits = self.gw.policy.limits
        try:
            strings = walk(frame, limits.max_json_depth, limits.max_json_strings)
        except BodyTooComplex as e:
            return Block(400, e.rule, f"{e}; it was not forwarded because douane cannot inspect it", always=True)
        call.request = event.request
        call.model_requested = call.model = event.request.model or self.model
        call.other_parts = strings.others(event.request.text_parts())
        call.other_keys = list(dict.fromkeys(strings.keys))
        if strings.binary:
            call.note(f"attachments not scanned: {strings.binary} base64 image/audio/file value(s)")
        if event.kind == CREATE:
            block = classify.check_numbers(self.gw, call, event.numbers)
            if block is not None:
                return block
        return check_access(self.gw.policy, call)

    def _accept(self, call: Call, kind: str, text: str, event_id: Any) -> None:
        """A frame on its way: a response's request opens its turn; other frames' findings go to the next."""
        if kind != CREATE:
            self._carry(call, text)
            return
        self._carry_into(call, text)
        self.turns.append(Turn(call, self._tap(call), event_id if isinstance(event_id, str) else None))

    def _carry(self, call: Call, text: str) -> None:
        """Keep what the next response's row needs of a frame, not the frame (a socket may send many)."""
        call.request, call.other_parts, call.other_keys = None, [], []
        self.carried.append((call, text[:self.gw.policy.audit.max_body_chars]))

    def _carry_into(self, call: Call, text: str) -> None:
        """What the frames since the last response carried, on this response's row: they are its prompt."""
        frames = [*self.carried, (call, text)]
        for other, _ in self.carried:
            call.pii_entities = sorted({*call.pii_entities, *other.pii_entities})
            for reason in other.reasons:
                call.note(reason)
            if other.error:
                call.add_error(other.error)
            if other.injection_score is not None and (call.injection_score or 0) <= other.injection_score:
                call.injection_score, call.injection_rule = other.injection_score, other.injection_rule
        call.request_bytes = sum(c.request_bytes or 0 for c, _ in frames) + self.audio_in[1]
        if self.gw.policy.audit.bodies == "redacted":
            call.request_body = "\n".join(t for _, t in frames)
        if self.audio_in[0]:
            call.note(f"audio not inspected: {self.audio_in[0]} input frame(s), {self.audio_in[1]} bytes")
        call.stream = True
        self.carried = []
        self.audio_in = [0, 0]

    def _refuse(self, call: Call, block: Block) -> FrameVerdict:
        """A frame refused before it could be read (`always` blocks)."""
        decide(call, block, self.gw.enforcing)
        return self._blocked(call, block)

    def _enforce(self, call: Call, block: Block) -> bool:
        return decide(call, block, self.gw.enforcing)

    def _blocked(self, call: Call, block: Block, event_id: Any = None) -> FrameVerdict:
        """Not forwarded: the client gets an error event naming the rule, and the frame is a row."""
        call.status = block.status
        self.record(call)
        self.current = None
        return FrameVerdict(forward=False, to_client=[self._error(block.status, block.client_message, block.rule,
                                                                  event_id)])

    # -- server events -------------------------------------------------------------------------------

    async def server_frame(self, content: bytes, is_text: bool) -> list[bytes] | None:
        """The frames the client gets for one server frame; None: this one, as it came."""
        self.active = None
        try:
            data = jsonio.loads(content) if is_text else None
        except ValueError:
            data = None
        if not isinstance(data, dict):  # neither protocol sends anything else: what cannot be read is not sent
            (self.turns[0].call if self.turns else self.socket).add_error("a server frame that is not a JSON object "
                                                                         "was dropped")
            return []
        kind = data.get("type")
        turn = await self._turn_for(kind, data)
        self.active = turn
        if turn is not None and turn.block is not None and kind == openai_ws.RESPONSE_STARTED:  # the meter refused
            return [self._error(turn.block.status, turn.block.client_message, turn.block.rule)]
        if turn is None:  # outside any response (session, conversation items): whole texts, checked alone
            return self._emit(self._tap(None).feed(content, None, data), content)
        if turn.call.ttfb_ms is None:
            turn.call.ttfb_ms = (self.clock() - turn.call.started) * 1000
        out = self._through(turn, kind, content, data)
        turn.bytes_out += sum(len(b) for b in out) if out is not None else len(content)
        if self._ends(turn, kind, data):
            await self._finish(turn, data)
        return out

    def _through(self, turn: Turn, kind: Any, content: bytes, data: dict[str, Any]) -> list[bytes] | None:
        if kind in openai_ws.AUDIO_DELTAS:
            turn.audio[0] += 1
            delta = data.get("delta")
            turn.audio[1] += openai_ws.base64_size(delta) if isinstance(delta, str) else 0
            return [] if turn.stopped else None
        if turn.stopped:  # the client has its error event: only usage is still read, for the meter
            turn.tap.observe(None, data)
            return []
        if turn.passthrough:
            turn.tap.observe(None, data)
            return None
        faults.check("websocket.server_frame", self.faults)
        try:
            return self._emit(turn.tap.feed(content, None, data), content)
        except Blocked as b:
            block = Block(403, b.rule, str(b), always=True)
            self._stop(turn, block)
            return [self._error(403, f"douane blocked this answer: {b} [rule: {b.rule}]", b.rule)]

    async def _turn_for(self, kind: Any, data: dict[str, Any]) -> Turn | None:
        """The response an event belongs to; a response the provider starts on its own (Realtime voice
        activity, a steered successor) gets a turn of its own, metered like the others."""
        rid = openai_ws.response_id(self.protocol, data)
        if kind == openai_ws.RESPONSE_STARTED:
            turn = next((t for t in self.turns if not t.created), None) or await self._server_turn(rid)
            turn.created, turn.response_id = True, rid
            return turn
        if rid is not None:
            return next((t for t in self.turns if t.response_id == rid), None)
        if kind == "error":
            return self._errored(data)
        return next((t for t in self.turns if t.created), None) if self.protocol != REALTIME else None

    def _errored(self, data: dict[str, Any]) -> Turn | None:
        """The response an error ends: Realtime names the client event that caused it; a Responses
        socket runs one response at a time."""
        error = data.get("error")
        cause = error.get("event_id") if isinstance(error, dict) else None
        if self.protocol == REALTIME:
            return next((t for t in self.turns if cause and t.client_event_id == cause), None)
        return self.turns[0] if self.turns else None

    async def _server_turn(self, rid: str | None) -> Turn:
        call = self._call(0)
        call.endpoint, call.model_requested, call.model = self.protocol, self.model, self.model
        call.note("response started by the provider, not by a response.create")
        self._carry_into(call, "")
        turn = Turn(call, self._tap(call), response_id=rid)
        self.turns.append(turn)
        block = await self.meter.reserve(call)
        if block is not None and self._enforce(call, block):
            self._stop(turn, block)
            turn.block = block
        return turn

    def _ends(self, turn: Turn, kind: Any, data: dict[str, Any]) -> bool:
        return kind in openai_ws.RESPONSE_ENDED[self.protocol] or kind == "error"

    def _stop(self, turn: Turn, block: Block) -> None:
        """The client gets no more of this response; a Realtime provider is asked to cancel it."""
        turn.stopped = True
        turn.call.decision = "blocked"
        turn.call.status = block.status
        turn.call.note(block.rule)
        cancel = openai_ws.cancel_event(self.protocol, turn.response_id)
        if cancel is not None:
            self.to_server.append(jsonio.dumps(cancel))

    async def _finish(self, turn: Turn, data: dict[str, Any]) -> None:
        """A response is over: its row, with usage and cost, and the meter settled."""
        self.turns.remove(turn)
        call, tap = turn.call, turn.tap
        call.usage.update(tap.usage)
        call.model = tap.model or call.model
        call.response_body = tap.assembled
        call.response_bytes = turn.bytes_out
        if tap.error:
            call.add_error(f"upstream error: {tap.error}")
            status = data.get("status")
            if call.status is None:
                call.status = status if isinstance(status, int) and not isinstance(status, bool) else 502
        if call.status is None:
            call.status = 200
        if turn.audio[0]:
            call.note(f"audio not inspected: {turn.audio[0]} output delta(s), {turn.audio[1]} bytes")
        record_findings(call, tap.stages)
        if call.usage.input_tokens is None or call.usage.output_tokens is None:
            estimate_usage(call, tap.seen_chars)
            call.note("usage estimated: the response ended without the provider's usage")
        await self.settle(call)
        self.record(call)

    # -- the end -------------------------------------------------------------------------------------

    async def close(self, why: str | None = None) -> None:
        """The socket is gone: every response still open is settled from what was seen, and recorded."""
        for turn in list(self.turns):
            turn.call.add_error(why or "the socket closed before the response completed")
            await self._finish(turn, {})

    async def settle(self, call: Call) -> None:
        await self.meter.settle(call)

    def record(self, call: Call) -> None:
        self.gw.record(call, self.clock())

    # -- failures ------------------------------------------------------------------------------------

    def client_failed(self, error: Exception) -> FrameVerdict:
        """A stage failed on a client frame: `fail: closed` does not forward it and tells the client;
        `open` forwards it as it came, and its row (or its response's row) says so."""
        call, kind = self.current or (self._call(0), "")
        self.current = None
        call.add_error(f"websocket frame inspection failed ({type(error).__name__}: {error})")
        if self.gw.policy.fail == "closed":
            message = (f"douane could not inspect this frame ({type(error).__name__}), so it was not forwarded; "
                       "try again, and tell douane's operator if it persists")
            block = Block(503, "fail.closed", message, always=True)
            decide(call, block, self.gw.enforcing)
            return self._blocked(call, block)
        call.note(f"fail.open: guard_error in websocket ({type(error).__name__}), frame forwarded uninspected")
        self._accept(call, kind, "", None)
        return FrameVerdict()

    def server_failed(self, error: Exception) -> list[bytes] | None:
        """A stage failed on a server frame: closed stops the response for the client with an error
        event; open lets it and the rest of the response through as they come."""
        turn = self.active or next(iter(self.turns), None)
        what = f"websocket answer inspection failed ({type(error).__name__}: {error})"
        if turn is None:
            self.socket.add_error(what)
            return [] if self.gw.policy.fail == "closed" else None
        turn.call.add_error(what)
        if self.gw.policy.fail == "closed":
            self._stop(turn, Block(503, "fail.closed", what, always=True))
            return [self._error(503, "douane could not inspect this answer, so it was stopped "
                                     f"({type(error).__name__}); try again [rule: fail.closed]", "fail.closed")]
        turn.passthrough = True
        turn.call.note("fail.open: guard_error in websocket answer, rest of the response delivered uninspected")
        return None

    # -- helpers -------------------------------------------------------------------------------------

    def _call(self, size: int) -> Call:
        s = self.socket
        call = Call(id=new_call_id(), started=self.clock(), provider=s.provider, host=s.host, method=METHOD,
                    path=s.path, endpoint=self.protocol, client=s.client, team=s.team, upstream=s.upstream,
                    served_by=s.served_by, model_requested=self.model, model=self.model, request_bytes=size)
        return call

    def _tap(self, call: Call | None) -> EventTap[bytes]:
        """The answer stages of one response (or of events outside any), with the socket's pseudonyms."""
        pseudonyms = self.pseudonyms.mapping
        stages, audited = self.gw.answer_stages(pseudonyms)
        request = call.request if call is not None else None
        protocol = self.protocol
        return EventTap(lambda name, data: openai_ws.parse_server_event(protocol, data, request), jsonio.loads,
                        stages, audited, lambda: self.gw.answer_stages(pseudonyms))

    def _error(self, status: int, message: str, code: str, client_event_id: Any = None) -> bytes:
        event = openai_ws.error_event(self.protocol, status, message, code, f"event_douane_{new_call_id()[4:20]}",
                                      client_event_id if isinstance(client_event_id, str) else None)
        return jsonio.dumps(event)

    @staticmethod
    def _emit(emits: list[Emit[bytes]], content: bytes) -> list[bytes] | None:
        if len(emits) == 1 and emits[0].payload is KEEP and emits[0].frame is content:
            return None
        return [e.frame if e.payload is KEEP else jsonio.dumps(e.payload) for e in emits]
