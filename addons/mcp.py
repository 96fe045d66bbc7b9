"""MCP servers over streamable HTTP (douane.mcp): their JSON-RPC judged, filtered, scanned, recorded.

These flows are not provider calls: the other stages do not see them (their Call is kept under its
own key), and this addon records each one itself. A failure while inspecting follows `fail`: closed
answers a JSON-RPC error (nothing uninspected reaches the client), open delivers and records it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from mitmproxy import http

from addons.flows import REQUEST_ID_HEADER
from addons.identity import IDENTITY_KEY
from douane import classify, jsonio
from douane.call import Call, new_call_id
from douane.gateway import Gateway
from douane.mcp import McpExchange, jsonrpc_error
from douane.providers.sse import SSEFramer
from douane.streaming import make_decoder

log = logging.getLogger(__name__)

MCP_KEY = "douane.mcp"
_JSON = {"content-type": "application/json"}


class McpAddon:
    name = "mcp"

    def __init__(self, gw: Gateway):
        self.gw = gw

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        servers = self.gw.mcp_servers  # the flow's policy's
        if flow.response or flow.error or not servers.servers:
            return
        server = servers.match(flow.request.host, flow.request.port)
        if server is None:
            return
        who = flow.metadata.get(IDENTITY_KEY)
        call = Call(id=new_call_id(), started=flow.request.timestamp_start or time.time(), provider=server.spec,
                    host=flow.request.host, method=flow.request.method, path=flow.request.path.split("?", 1)[0],
                    endpoint=flow.request.method.lower(), client=who.client if who else "anonymous",
                    team=who.team if who else None)
        flow.metadata[MCP_KEY] = McpExchange(self.gw, call, server)
        req = flow.request
        req.headers["accept-encoding"] = "identity"
        if server.upstream:
            parts = urlsplit(server.upstream)
            req.scheme, req.host = parts.scheme, parts.hostname or req.host
            req.port = parts.port or (443 if parts.scheme == "https" else 80)
            if parts.path.rstrip("/"):
                req.path = parts.path.rstrip("/") + req.path
        call.upstream = f"{req.scheme}://{req.host}:{req.port}"

    def request(self, flow: http.HTTPFlow) -> None:
        ex: McpExchange | None = flow.metadata.get(MCP_KEY)
        if ex is None or flow.response or flow.request.method != "POST":
            return
        raw = flow.request.raw_content or b""
        ex.call.request_bytes = len(raw)
        try:
            body = classify.decode(raw, flow.request.headers.get("content-encoding"),
                                   self.gw.policy.limits.max_request_bytes)
        except (classify.BodyTooLarge, classify.NotReadable) as e:
            refusal: bytes | None = jsonio.dumps(jsonrpc_error(None, f"{e}; it was not forwarded", "unreadable_body"))
            ex.call.decision = "blocked"
            ex.call.note("unreadable_body")
        else:
            refusal = ex.request(body)
        if refusal is not None:
            if not self.gw.enforcing and ex.call.decision == "blocked":
                ex.call.decision = "allowed"
                ex.call.note("monitor: would block")
                return
            flow.response = http.Response.make(200, refusal, {**_JSON, REQUEST_ID_HEADER: ex.call.id})

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ex: McpExchange | None = flow.metadata.get(MCP_KEY)
        if ex is None or flow.response is None:
            return
        resp = flow.response
        resp.headers[REQUEST_ID_HEADER] = ex.call.id
        if resp.headers.get("content-type", "").lower().startswith("text/event-stream"):
            ex.call.stream = True
            resp.headers.pop("content-length", None)
            try:
                decoder = make_decoder(resp.headers.get("content-encoding"))
            except ValueError:
                decoder = None
                resp.stream = _Refused(ex, "the MCP server answered in an encoding douane cannot read")
                return
            if decoder is not None:
                del resp.headers["content-encoding"]
            resp.stream = _EventTap(self.gw, ex, decoder)

    def response(self, flow: http.HTTPFlow) -> None:
        ex: McpExchange | None = flow.metadata.get(MCP_KEY)
        if ex is None or flow.response is None:
            return
        resp = flow.response
        ex.call.status = resp.status_code
        ex.call.response_bytes = len(resp.raw_content or b"") if not resp.stream else None
        if not resp.stream and resp.content and resp.status_code < 400 and ex.call.decision != "blocked":
            try:
                new = ex.answer_json(resp.content)
            except Exception as e:  # inspection failed: `fail` decides
                new = self._failed(ex, e)
            if new is not None:
                resp.content = new
        self.gw.record(ex.call)

    def error(self, flow: http.HTTPFlow) -> None:
        ex: McpExchange | None = flow.metadata.get(MCP_KEY)
        if ex is None or ex.call.recorded:
            return
        ex.call.add_error(str(flow.error) if flow.error else "the connection failed")
        self.gw.record(ex.call)

    def _failed(self, ex: McpExchange, error: Exception) -> bytes | None:
        log.exception("mcp: inspecting an answer of %s failed", ex.server.name)
        ex.call.add_error(f"mcp answer inspection failed ({type(error).__name__}: {error})")
        if self.gw.policy.fail == "closed":
            ex.call.decision = "blocked"
            ex.call.note("fail.closed")
            return jsonio.dumps(jsonrpc_error(None, f"douane could not inspect the MCP server's answer "
                                             f"({type(error).__name__}); try again", "fail.closed"))
        ex.call.note("fail.open: guard_error in mcp, answer delivered uninspected")
        return None


class _EventTap:
    """A streamed MCP answer, event by event: each JSON-RPC message filtered and scanned as it comes."""

    def __init__(self, gw: Gateway, ex: McpExchange, decoder: Callable[[bytes], bytes] | None):
        self.gw, self.ex, self.decoder = gw, ex, decoder
        self.framer = SSEFramer()
        self.passthrough = False
        self.stopped = False
        self.bytes_out = 0

    def __call__(self, chunk: bytes) -> list[bytes]:
        if self.stopped:
            return []
        data = self.decoder(chunk) if self.decoder is not None else chunk
        if self.passthrough:
            return [data] if data else []
        try:
            events = self.framer.feed(data) if data else []
            if chunk == b"" and (rest := self.framer.flush()) is not None:
                events.append(rest)
            out = [self.ex.answer_event(e) for e in events]
        except Exception as e:
            log.exception("mcp: inspecting a streamed answer of %s failed", self.ex.server.name)
            self.ex.call.add_error(f"mcp answer inspection failed ({type(e).__name__}: {e})")
            if self.gw.policy.fail == "closed":
                self.ex.call.decision = "blocked"
                self.ex.call.note("fail.closed")
                self.stopped = True
                return [b"data: " + jsonio.dumps(jsonrpc_error(None, "douane could not inspect the MCP server's answer",
                                                        "fail.closed")) + b"\n\n"]
            self.passthrough = True
            self.ex.call.note("fail.open: guard_error in mcp, answer delivered uninspected")
            return [data, self.framer.drain()]
        self.bytes_out += sum(len(b) for b in out)
        self.ex.call.response_bytes = self.bytes_out
        return out


class _Refused:
    """A streamed answer douane cannot read: one JSON-RPC error event instead, the rest dropped."""

    def __init__(self, ex: McpExchange, why: str):
        self.body: bytes | None = b"data: " + jsonio.dumps(jsonrpc_error(None, why, "unreadable_answer")) + b"\n\n"
        ex.call.decision = "blocked"
        ex.call.note("unreadable_answer")

    def __call__(self, chunk: bytes) -> bytes:
        out, self.body = self.body or b"", None
        return out
