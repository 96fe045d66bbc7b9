"""The relay: an in-process HTTP server that makes a call's upstream attempts itself, for calls that
may need a fallback or a translation. mitmproxy sends such a call here instead of upstream; the
relay tries each target in turn (retries, backoff, first-byte timeout, circuit breaker), translates
the winner's answer into the client's format when the formats differ, and streams it back.

Calls without a fallback rule or a format change come here only with `upstream.pool`: then every
LLM call goes out through the relay's one connection pool, warm (opened at start and kept open) and
shared by all clients, HTTP/2 where the provider offers it (pool.py).

    plan.py      what to try and what each outcome means (pure)
    server.py    the HTTP/1.1 server mitmproxy talks to
    delivery.py  the served answer to the client, passed through or translated
    pool.py      the upstream connections: TLS trust, warming, keeping warm
    here         the attempts themselves: sending, waiting, timing out
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

import httpx

from douane.relay.delivery import deliver, refuse
from douane.relay.plan import Attempt, Breakers, Dispatch, Plan, Try
from douane.relay.pool import Warmer, pooled_transport, send, upstream_tls
from douane.relay.server import RelayServer, Responder

__all__ = ["Attempt", "Breakers", "Dispatch", "Plan", "Relay", "Try"]

log = logging.getLogger(__name__)


class Relay:
    def __init__(self, breakers: Breakers | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 transport: httpx.AsyncBaseTransport | None = None):
        """`sleep` (the backoff) and `transport` (to the upstreams) are for tests to replace."""
        self.plans: dict[str, Plan] = {}
        self.breakers = breakers or Breakers()
        self.port = 0
        self._sleep = sleep
        self._given_transport = transport
        self._server = RelayServer(self._handle)
        self._transport: httpx.AsyncBaseTransport | None = None
        self.warmer: Warmer | None = None

    async def start(self, tls: ssl.SSLContext | None = None) -> int:
        """`tls`: how upstreams are verified (mitmproxy's own settings, see pool.upstream_tls)."""
        self._transport = self._given_transport or pooled_transport(tls or upstream_tls(False, None, None))
        self.warmer = Warmer(self._transport)
        self.port = await self._server.start()
        return self.port

    async def stop(self) -> None:
        if self.warmer is not None:
            await self.warmer.stop()
        await self._server.stop()
        if self._transport is not None:
            await self._transport.aclose()

    def register(self, plan: Plan) -> str:
        """The path mitmproxy sends the call to."""
        self.plans[plan.call_id] = plan
        return f"/relay/{plan.call_id}"

    async def _handle(self, path: str, out: Responder) -> None:
        plan = self.plans.pop(path.rsplit("/", 1)[-1], None)
        if plan is None:
            await out.respond(404, {"content-type": "text/plain"}, b"no such relayed call")
            return
        await self.run(plan, out)

    async def run(self, plan: Plan, out: Responder) -> None:
        """Each try in turn until one is served; the client gets its answer, or a 502/504 naming every try."""
        dispatch = Dispatch(plan, self.breakers)
        while (t := dispatch.next()) is not None:
            if t.delay:
                await self._sleep(t.delay)
            try:
                response = await asyncio.wait_for(self._send(t), plan.first_byte_timeout)
            except (TimeoutError, httpx.HTTPError) as e:
                status = dispatch.no_answer(t, isinstance(e, TimeoutError), f"{type(e).__name__}: {e}")
                if status is not None:
                    await refuse(plan, out, status, dispatch.failure_message(), "upstream_failed")
                    return
                continue
            if not dispatch.answered(t, response.status_code):
                await response.aclose()
                continue
            try:
                await deliver(plan, t.attempt, response, out)
            except httpx.HTTPError as e:  # the answer has started: the client's is cut, not ended
                log.warning("relay: %s failed mid-answer for %s: %s: %s", t.attempt.label, plan.call_id,
                            type(e).__name__, e)
                raise ConnectionAbortedError(str(e)) from e
            finally:
                await response.aclose()
            return
        await refuse(plan, out, 502, dispatch.failure_message(), "upstream_failed")

    async def _send(self, t: Try) -> httpx.Response:
        assert self._transport is not None, "Relay.start() first"
        return await send(self._transport, "POST", t.attempt.url, t.attempt.headers, t.attempt.body)
