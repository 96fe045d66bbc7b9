"""Inspect the answer (douane.answer): tap SSE streams event by event as they flow, judge plain ones whole."""

from __future__ import annotations

import logging

from mitmproxy import http

from addons.failures import refuse_answer
from addons.flows import REQUEST_ID_HEADER, call_of
from douane import answer, faults
from douane.call import Call
from douane.decision import Block
from douane.gateway import Gateway
from douane.streaming import StreamTap, make_decoder
from douane.toolguard import lead_with

log = logging.getLogger(__name__)

TAP_KEY = "douane.tap"


class AnswerAddon:
    name = "answer"

    def __init__(self, gw: Gateway):
        self.gw = gw

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or flow.response is None:
            return
        resp = flow.response
        resp.headers[REQUEST_ID_HEADER] = call.id
        if resp.timestamp_start and flow.request.timestamp_start:
            call.ttfb_ms = (resp.timestamp_start - flow.request.timestamp_start) * 1000
        if resp.headers.get("content-type", "").lower().startswith("text/event-stream"):
            self._tap(flow, call, resp)

    def _tap(self, flow: http.HTTPFlow, call: Call, resp: http.Response) -> None:
        """Read the stream event by event as it flows, rewriting its text through the answer stages."""
        try:
            decoder = make_decoder(resp.headers.get("content-encoding"))
        except ValueError as e:  # an encoding douane cannot read: the text cannot be inspected
            refuse_answer(self.gw, flow, call, Block(502, "unreadable_answer", f"the provider answered in {e}, "
                                                     "which douane cannot inspect", always=True))
            return
        if decoder is not None:
            del resp.headers["content-encoding"]  # the client gets identity; inspection sees text
        resp.headers.pop("content-length", None)
        tap = answer.open_tap(self.gw, call, decoder)
        tap.faults = flow.metadata.get(faults.METADATA_KEY, frozenset())
        flow.metadata[TAP_KEY] = tap
        resp.stream = tap

    async def response(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or flow.response is None:
            return
        resp = flow.response
        resp.headers[REQUEST_ID_HEADER] = call.id
        call.status = resp.status_code
        if call.decision == "blocked":  # douane's own refusal, made before anything was forwarded
            return
        tap: StreamTap | None = flow.metadata.get(TAP_KEY)
        if tap is not None:
            answer.from_tap(call, tap)
        elif not resp.stream:
            await self._plain(flow, call, resp)

    def error(self, flow: http.HTTPFlow) -> None:
        """A stream cut short (the client left, the upstream broke): what the tap saw still counts."""
        call = call_of(flow)
        tap: StreamTap | None = flow.metadata.get(TAP_KEY)
        if call is None or tap is None or call.recorded:
            return
        answer.from_cut_tap(call, tap)

    async def _plain(self, flow: http.HTTPFlow, call: Call, resp: http.Response) -> None:
        """A plain answer: its usage for the meter, its text through the output stages."""
        call.response_bytes = len(resp.raw_content or b"")
        if call.endpoint is None:  # an endpoint douane does not model (files, audio): kept as it came
            try:
                call.response_body = resp.get_text(strict=False)
            except ValueError as e:
                call.note(f"response not readable as text: {e}")
            return
        try:
            text = resp.get_text(strict=True) or ""
        except ValueError as e:
            if resp.status_code < 400:
                refuse_answer(self.gw, flow, call, Block(502, "unreadable_answer",
                                                         f"the provider's answer could not be read ({e})", always=True))
            else:
                call.add_error(f"upstream answered {resp.status_code}, unreadable: {e}")
            return
        verdict = await answer.judge_plain(self.gw, call, resp.status_code, text)
        if verdict.block is not None:
            refuse_answer(self.gw, flow, call, verdict.block)
            if verdict.lead:
                lead_with(call, verdict.block.rule)
        elif verdict.body is not None:
            resp.content = verdict.body
