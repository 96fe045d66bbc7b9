"""Inspect the answer: tap SSE streams event by event as they flow, read usage and text of plain ones."""

from __future__ import annotations

import json
import logging

from mitmproxy import http

from addons.flows import REQUEST_ID_HEADER, call_of
from douane.gateway import Gateway
from douane.streaming import StreamTap, make_decoder

log = logging.getLogger(__name__)

TAP_KEY = "douane.tap"


class AnswerAddon:
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
        if not resp.headers.get("content-type", "").lower().startswith("text/event-stream"):
            return
        adapter = call.provider.adapter
        try:
            decoder = make_decoder(resp.headers.get("content-encoding"))
        except ValueError as e:
            call.note(f"stream not inspected: {e}")
            resp.stream = True
            return
        if decoder is not None:
            del resp.headers["content-encoding"]  # the client gets identity; inspection sees text
        resp.headers.pop("content-length", None)
        tap = StreamTap(adapter, call.endpoint or "", call.request, strip_internal=call.strip_usage_chunk,
                        decoder=decoder)
        flow.metadata[TAP_KEY] = tap
        resp.stream = tap

    def response(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or flow.response is None:
            return
        resp = flow.response
        resp.headers[REQUEST_ID_HEADER] = call.id
        call.status = resp.status_code
        tap: StreamTap | None = flow.metadata.get(TAP_KEY)
        if tap is not None:
            call.usage.update(tap.usage)
            call.model = tap.model or call.model
            call.response_bytes = tap.bytes_out
            call.response_body = tap.assembled
            if tap.error:
                call.error = f"upstream stream error: {tap.error}"
            return
        if resp.stream:  # streamed without a tap (unknown encoding)
            return
        try:
            text = resp.get_text(strict=False) or ""
        except ValueError as e:
            call.note(f"response not inspected: {e}")
            return
        call.response_bytes = len(resp.raw_content or b"")
        call.response_body = text
        if call.endpoint is None:
            return
        try:
            body = json.loads(text)
        except ValueError:
            return
        parsed = call.provider.adapter.parse_response(call.endpoint, body)
        call.usage.update(parsed.usage)
        call.model = parsed.model or call.model
        if resp.status_code >= 400 and call.error is None:
            call.error = f"upstream answered {resp.status_code}"
