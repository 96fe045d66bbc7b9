"""The admin listener: /metrics, /healthz, /readyz, served on the proxy's own event loop.

HTTP/1.1 is parsed by h11 (already a dependency). Running on the loop keeps every read of the
gateway single-threaded: no locks on the hot path's counters. A request is small and bounded:
a head over 16 KiB, a body, or a client idle for `idle_timeout` seconds closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

import h11

from douane.ops.anomaly import AnomalyGuard
from douane.ops.metrics import Metrics
from douane.ops.probe import GatewayProbe

log = logging.getLogger(__name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
MAX_HEAD = 16 * 1024


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Request:
    method: str
    query: dict[str, str]


Handler = Callable[[Request], Awaitable[Reply]]


class AdminPortError(OSError):
    """The admin listener cannot bind: the port is taken or the address is not ours."""


def json_reply(status: int, value: object) -> Reply:
    return Reply(status, "application/json", json.dumps(value).encode() + b"\n")


class AdminServer:
    """Serves a fixed set of paths (a handler answers 405 to a method it does not take); others are 404."""

    def __init__(self, routes: dict[str, Handler], host: str = "127.0.0.1", port: int = 0,
                 idle_timeout: float = 30.0):
        self.routes = routes
        self.host = host
        self.port = port
        self.idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; returns the port (useful with port 0). AdminPortError when it cannot bind."""
        try:
            self._server = await asyncio.start_server(self._connection, self.host, self.port)
        except OSError as e:
            raise AdminPortError(e.errno, f"cannot listen on {self.host}:{self.port}: {e.strerror or e}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            while True:
                request = await self._next_request(conn, reader)
                if request is None:
                    return
                reply = await self._answer(request)
                head_only = request.method == b"HEAD"
                headers = [("content-type", reply.content_type), ("content-length", str(len(reply.body))),
                           ("cache-control", "no-store")]
                writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)) or b"")
                writer.write(conn.send(h11.Data(data=b"" if head_only else reply.body)) or b"")
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, TimeoutError):
            return
        except Exception:
            log.exception("admin: answering a request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _next_request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
        """The next request, its body read and dropped; None when the client is done (or sends too much)."""
        request: h11.Request | None = None
        body = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(reader.read(65536), self.idle_timeout)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += len(event.data)  # no endpoint here reads a body
                if body > MAX_HEAD:
                    return None
            elif isinstance(event, h11.EndOfMessage):
                return request
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    async def _answer(self, request: h11.Request) -> Reply:
        target = request.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        handler = self.routes.get(path)
        if handler is None:
            return json_reply(404, {"error": f"no such path: {path}", "paths": sorted(self.routes)})
        method = "GET" if request.method == b"HEAD" else request.method.decode("ascii", "replace")
        return await handler(Request(method, dict(parse_qsl(query))))


def only_get(handler: Callable[[], Awaitable[Reply]]) -> Handler:
    async def answer(request: Request) -> Reply:
        if request.method != "GET":
            return json_reply(405, {"error": "only GET and HEAD are served here"})
        return await handler()

    return answer


def admin_routes(metrics: Metrics | None, probe: GatewayProbe,
                 anomaly: AnomalyGuard | None = None) -> dict[str, Handler]:
    """/healthz: the process answers; /readyz: ready to serve calls; /metrics: Prometheus text."""

    async def healthz() -> Reply:
        return json_reply(200, {"status": "alive"})

    async def readyz() -> Reply:
        checks = await probe.readiness()
        ready = all(c.ok for c in checks)
        return json_reply(200 if ready else 503, {"ready": ready, "checks": {
            c.name: {"ok": c.ok, "detail": c.detail} for c in checks}})

    routes: dict[str, Handler] = {"/healthz": only_get(healthz), "/readyz": only_get(readyz)}
    if metrics is not None:
        async def metrics_text() -> Reply:
            await probe.refresh()
            return Reply(200, PROMETHEUS_TEXT, metrics.render())

        routes["/metrics"] = only_get(metrics_text)
    if anomaly is not None:
        routes.update(anomaly_routes(anomaly))
    return routes


def anomaly_routes(guard: AnomalyGuard) -> dict[str, Handler]:
    """GET /anomaly: the restrictions in force; POST /anomaly/clear?client=NAME (or team=NAME) lifts one."""

    async def listing() -> Reply:
        if guard.shared is not None:
            guard.restrictions = await guard.shared.load()
        return json_reply(200, {"restrictions": [{"scope": s[0], "name": s[1], **r.as_dict()}
                                                 for s, r in sorted(guard.restrictions.items())]})

    async def clear(request: Request) -> Reply:
        if request.method != "POST":
            return json_reply(405, {"error": "POST /anomaly/clear?client=NAME (or ?team=NAME)"})
        scope = "client" if "client" in request.query else "team" if "team" in request.query else None
        if scope is None or not request.query[scope]:
            return json_reply(400, {"error": "say whom: ?client=NAME or ?team=NAME"})
        subject = (scope, request.query[scope])
        found = guard.clear(subject)
        if guard.shared is not None:
            found = await guard.shared.clear(subject) or found
        if not found:
            return json_reply(404, {"cleared": False, "error": f"{scope} {subject[1]} is neither quarantined "
                                    "nor throttled"})
        return json_reply(200, {"cleared": True, "scope": scope, "name": subject[1]})

    return {"/anomaly": only_get(listing), "/anomaly/clear": clear}
