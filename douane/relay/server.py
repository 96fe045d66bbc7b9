"""The relay's HTTP/1.1 server on 127.0.0.1, which mitmproxy sends relayed calls to. h11 reads the
requests and frames the answers (whole, or chunked as they stream); the handler decides what to say."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import h11

log = logging.getLogger(__name__)

_READ = 65536


class Responder:
    """The answer to one request: `respond` whole, or `start`, `send` chunks, `end`."""

    def __init__(self, conn: h11.Connection, writer: asyncio.StreamWriter):
        self._conn = conn
        self._writer = writer
        self.started = False

    async def _write(self, event: h11.Event) -> None:
        self._writer.write(self._conn.send(event) or b"")
        await self._writer.drain()

    async def respond(self, status: int, headers: dict[str, str], body: bytes) -> None:
        """In one write: mitmproxy handles each segment it reads as an event of its own."""
        self.started = True
        head = h11.Response(status_code=status, headers=[*headers.items(), ("content-length", str(len(body)))])
        self._writer.write(b"".join(self._conn.send(e) or b"" for e in (head, h11.Data(data=body), h11.EndOfMessage())))
        await self._writer.drain()

    async def start(self, status: int, headers: dict[str, str]) -> None:
        """Without a content-length the answer goes out chunked, as it comes."""
        self.started = True
        await self._write(h11.Response(status_code=status, headers=list(headers.items())))

    async def send(self, data: bytes) -> None:
        if data:
            await self._write(h11.Data(data=data))

    async def end(self) -> None:
        await self._write(h11.EndOfMessage())


Handler = Callable[[str, Responder], Awaitable[None]]


class RelayServer:
    def __init__(self, handler: Handler):
        self._handler = handler
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen on a free port of 127.0.0.1; the port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Requests one after the other on a kept-alive connection; a handler that fails after its
        answer started closes the connection, so that the client sees the answer cut, not complete."""
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await _next_event(conn, reader)
                if not isinstance(event, h11.Request):
                    break  # the connection closed, or a protocol error h11 reported as such
                path = event.target.decode("latin-1")
                while not isinstance(await _next_event(conn, reader), h11.EndOfMessage):
                    pass  # the body: the plan holds what each attempt sends
                await self._handler(path, Responder(conn, writer))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, asyncio.IncompleteReadError) as e:
            log.debug("relay: connection ended: %s", e)
        except Exception:
            log.exception("relay: a relayed call failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(_READ))  # b"": the other side closed
