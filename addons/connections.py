"""Close connections that hold douane without sending a request (douane.connections)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref

from mitmproxy import connection, ctx, http

from addons.flows import call_of, record_now
from addons.generation import generation_of
from douane.connections import ConnectionBounds
from douane.gateway import Gateway

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 1.0


class ConnectionsAddon:
    name = "connections"

    def __init__(self, gw: Gateway):
        self.gw = gw
        limits = gw.policy.limits
        self.bounds = ConnectionBounds(limits.max_connections_per_client, limits.idle_timeout_s,
                                       limits.request_body_timeout_s)
        self.reading: weakref.WeakValueDictionary[str, http.HTTPFlow] = weakref.WeakValueDictionary()
        self._sweeper: asyncio.Task[None] | None = None

    def client_connected(self, client: connection.Client) -> None:
        address = client.peername[0] if client.peername else "?"
        if not self.bounds.opened(client.id, address):
            client.error = f"too many connections from {address} (limits.max_connections_per_client)"
            log.warning("connections: refused one from %s: it holds %d already", address,
                        self.bounds.max_per_address)

    def client_disconnected(self, client: connection.Client) -> None:
        self.bounds.closed(client.id)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if self.gw.providers.match(flow.request.host, flow.request.port) is None:
            self.bounds.tunnel(flow.client_conn.id)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.bounds.head(flow.client_conn.id, flow.id)
        self.reading[flow.id] = flow

    def request(self, flow: http.HTTPFlow) -> None:
        self.bounds.body(flow.client_conn.id, flow.id)
        self.reading.pop(flow.id, None)

    def response(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is None:  # an upgraded connection stays busy until the WebSocket ends
            self.bounds.done(flow.client_conn.id, flow.id)

    def error(self, flow: http.HTTPFlow) -> None:
        self.bounds.done(flow.client_conn.id, flow.id)
        self.reading.pop(flow.id, None)

    async def running(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep())

    async def done(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            for gone in self.bounds.expired():
                try:
                    self._close(gone.connection, gone.why, gone.flows)
                except Exception:
                    log.exception("connections: closing %s failed", gone.connection)

    def _close(self, connection_id: str, why: str, flows: tuple[str, ...]) -> None:
        for flow_id in flows:  # requests never read whole: never forwarded, but recorded
            flow = self.reading.pop(flow_id, None)
            call = call_of(flow) if flow is not None else None
            if call is not None and flow is not None:
                call.status, call.decision = 408, "blocked"
                call.note("limits.request_body_timeout_s")
                call.add_error(why)
                with self.gw.bound(generation_of(self.gw, flow)):  # outside any hook: the row names its policy
                    record_now(self.gw, call)
        server = ctx.master.addons.get("proxyserver")
        handler = server.connections.get(connection_id) if server is not None else None
        if handler is None:
            return
        log.info("connections: closing %s: %s", handler.client.peername, why)
        task = handler.transports[handler.client].handler if handler.client in handler.transports else None
        if task is not None:
            task.cancel(why)
