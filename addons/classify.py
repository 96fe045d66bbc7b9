"""Which provider and endpoint a request is for, and its body read into the canonical shape."""

from __future__ import annotations

import logging
import time

from mitmproxy import http

from addons.flows import call_of, refuse
from addons.identity import IDENTITY_KEY
from douane import jsonio
from douane.call import METADATA_KEY, Call, new_call_id
from douane.gateway import Gateway

log = logging.getLogger(__name__)


class ClassifyAddon:
    def __init__(self, gw: Gateway):
        self.gw = gw

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        # flow.request.host is the CONNECT target (or the absolute-form URL's host), not the Host header.
        spec = self.gw.providers.match(flow.request.host, flow.request.port)
        if spec is None:
            return
        path = flow.request.path
        call = Call(
            id=new_call_id(),
            started=flow.request.timestamp_start or time.time(),
            provider=spec,
            host=flow.request.host,
            method=flow.request.method,
            path=path.split("?", 1)[0],
            endpoint=spec.adapter.endpoint(flow.request.method, path),
        )
        who = flow.metadata.get(IDENTITY_KEY)
        if who is not None:
            call.client, call.team = who.client, who.team
        flow.metadata[METADATA_KEY] = call
        self.gw.inflight.add(call.id)
        limit = self.gw.policy.limits.max_request_bytes
        length = flow.request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            refuse(self.gw, flow, call, 413, "limits.max_request_bytes",
                   f"request body of {int(length)} bytes is over the limit of {limit} bytes", always=True)

    def request(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or flow.response or flow.error:
            return
        raw = flow.request.raw_content or b""
        call.request_bytes = len(raw)
        limit = self.gw.policy.limits.max_request_bytes
        if len(raw) > limit:
            refuse(self.gw, flow, call, 413, "limits.max_request_bytes",
                   f"request body of {len(raw)} bytes is over the limit of {limit} bytes", always=True)
            return
        if call.endpoint is None:
            call.note("unknown endpoint: forwarded uninspected")
            return
        try:
            body = jsonio.loads(flow.request.get_content(strict=True) or b"")
            if not isinstance(body, dict):
                raise ValueError("the body is JSON but not an object")
        except UnicodeDecodeError as e:
            self._unreadable(flow, call, f"the body is not valid UTF-8 ({e.reason} at byte {e.start})")
            return
        except ValueError as e:  # malformed JSON, or a Content-Encoding that does not decode
            self._unreadable(flow, call, f"the body could not be read as JSON: {e}")
            return
        call.request = call.provider.adapter.parse_request(call.endpoint, flow.request.path, body)
        call.model_requested = call.model = call.request.model
        call.stream = call.request.stream

    def _unreadable(self, flow: http.HTTPFlow, call: Call, why: str) -> None:
        """What douane cannot parse it cannot inspect: refuse in enforce mode, forward in monitor."""
        if not refuse(self.gw, flow, call, 400, "unreadable_body",
                      f"{why}; it was not forwarded because douane cannot inspect it"):
            call.note("unreadable body: forwarded uninspected")
