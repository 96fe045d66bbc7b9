"""Which provider and endpoint a request is for, and its body read into the canonical shape.

The provider is the one the connection really goes to: the CONNECT target (or the absolute-form
URL's host), the TLS SNI and the Host header must all name the same provider, or none. A request
where they disagree is refused and recorded: it is either a mistake or an attempt to be intercepted
as one host and classified as another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable

from mitmproxy import http

from addons.flows import call_of, refuse
from addons.identity import IDENTITY_KEY
from douane import classify
from douane.call import METADATA_KEY, Call, new_call_id
from douane.decision import Block
from douane.gateway import Gateway
from douane.guard import scan, scan_failed
from douane.providers import ProviderSpec, openai_ws
from douane.uploads import binary_rpc_refusal, scan_upload
from douane.websocket import upgrade_refusal

log = logging.getLogger(__name__)


class ClassifyAddon:
    name = "classify"

    def __init__(self, gw: Gateway):
        self.gw = gw

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        spec, disagreement = self._provider(flow)
        if spec is None:
            return
        call = self.open(flow, spec)
        try:
            target = classify.canonical_path(flow.request.path)
        except classify.AmbiguousPath as e:
            refuse(self.gw, flow, call, Block(400, "ambiguous_path", f"{e}; send a plain path", always=True))
            return
        if target != flow.request.path:
            call.note("path canonicalised")
            flow.request.path = target
            call.path = target.split("?", 1)[0]
            call.endpoint = spec.adapter.endpoint(flow.request.method, target)
        if disagreement:
            refuse(self.gw, flow, call, Block(421, "misdirected_request", disagreement, always=True))
            return
        if flow.request.headers.get("upgrade", "").lower() == "websocket":
            block = upgrade_refusal(self.gw.policy, call, flow.request.path)
            if block is not None:
                refuse(self.gw, flow, call, block)
            else:  # a socket's frames are its calls (addons.websocket); a Realtime URL names the model
                call.model_requested = call.model = openai_ws.model_of(flow.request.path)
            return
        if call.endpoint is None and self.gw.policy.other_endpoints == "block":
            refuse(self.gw, flow, call, Block(403, "other_endpoints.block",
                                              f"{call.method} {call.path} is not an endpoint this policy allows "
                                              "(other_endpoints: block)"))
            return
        limit = self.gw.policy.limits.max_request_bytes
        length = flow.request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            refuse(self.gw, flow, call, Block(413, "limits.max_request_bytes",
                                              f"request body of {int(length)} bytes is over the limit of {limit} bytes",
                                              always=True))

    def _provider(self, flow: http.HTTPFlow) -> tuple[ProviderSpec | None, str | None]:
        """The provider the request goes to, and why it is refused when its names disagree."""
        match = self.gw.providers.match
        port = flow.request.port
        named = {"the connection's target": match(flow.request.host, port)}
        sni = flow.client_conn.sni
        if sni:
            named["the TLS server name"] = match(sni, port)
        host_header = flow.request.host_header
        if host_header:
            name, _, hport = host_header.rpartition(":") if host_header.rpartition(":")[2].isdigit() \
                else (host_header, "", "")
            named["the Host header"] = match(name.strip("[]"), int(hport) if hport else port)
        specs = {s for s in named.values()}
        spec = next((s for s in named.values() if s is not None), None)
        if spec is None or len(specs) == 1:
            return spec, None
        said = "; ".join(f"{what} names {s.name if s else 'no provider'}" for what, s in named.items())
        return spec, f"the request's destinations disagree ({said}); send it to the provider's own host"

    def open(self, flow: http.HTTPFlow, spec: ProviderSpec) -> Call:
        """The flow's Call, made once (the failure handler may need one before this stage ran)."""
        call = call_of(flow)
        if call is not None:
            return call
        who = flow.metadata.get(IDENTITY_KEY)
        call = classify.open_call(new_call_id(), flow.request.timestamp_start or time.time(), spec,
                                  flow.request.host, flow.request.method, flow.request.path,
                                  who.client if who else "anonymous", who.team if who else None)
        call.client_request_id = classify.client_request_id(flow.request.headers)
        flow.metadata[METADATA_KEY] = call
        self.gw.inflight.add(call.id)
        return call

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """Synchronous for the endpoints douane models; a coroutine for the others, whose body (an
        upload, maybe megabytes) is scanned in a worker thread."""
        call = call_of(flow)
        if call is None or flow.response or flow.error:
            return None
        raw = flow.request.raw_content or b""
        call.request_bytes = len(raw)
        limit = self.gw.policy.limits.max_request_bytes
        if len(raw) > limit:
            refuse(self.gw, flow, call, Block(413, "limits.max_request_bytes",
                                              f"request body of {len(raw)} bytes is over the limit of {limit} bytes",
                                              always=True))
            return None
        try:
            content = classify.decode(raw, flow.request.headers.get("content-encoding"), limit)
        except classify.BodyTooLarge as e:
            refuse(self.gw, flow, call, Block(413, "limits.max_request_bytes", f"{e}; it was not forwarded",
                                              always=True))
            return None
        except classify.NotReadable as e:
            if not refuse(self.gw, flow, call, Block(400, "unreadable_body", f"{e}; it was not forwarded")):
                call.note("unreadable body: forwarded uninspected")
            return None
        if call.endpoint is None:
            return self._other(flow, call, content) if content else None
        block = classify.read_request(self.gw, call, content)
        if block is not None and not refuse(self.gw, flow, call, block):
            call.note("unreadable body: forwarded uninspected")
        if content is not raw and flow.response is None:  # forwarded decoded: what was inspected is what leaves
            flow.request.headers.pop("content-encoding", None)
            flow.request.content = content
        return None

    async def _other(self, flow: http.HTTPFlow, call: Call, content: bytes) -> None:
        """An endpoint douane does not model: forwarded, with the text its body carries scanned for PII."""
        ctype = flow.request.headers.get("content-type", "")
        refusal = binary_rpc_refusal(ctype)
        if refusal is not None:
            if not refuse(self.gw, flow, call, refusal):
                call.note(f"{ctype} body: forwarded uninspected")
            return
        try:
            guards = self.gw.guards(call)
            result = await scan(self.gw, len(content), lambda: scan_upload(self.gw, guards, ctype, content))
        except Exception as e:
            block = scan_failed(self.gw, call, "upload scan", e)
            if block is not None:
                refuse(self.gw, flow, call, block)
            return
        for note in result.notes:
            call.note(note)
        call.pii_entities = result.entities
        if result.block is not None:
            refuse(self.gw, flow, call, result.block)
        elif result.body is not None:
            flow.request.headers.pop("content-encoding", None)
            flow.request.content = result.body
