"""The relay's upstream connections: one httpx pool shared by every client's calls, HTTP/2 where the
provider offers it (ALPN), kept alive between calls, opened before the first call and kept open.

Warming opens a connection without a billable call: `HEAD /` with no credentials. It names no
account, so nothing can be billed; providers answer it at once (a 404 or a redirect), and the TLS
connection (with its HTTP/2 session) stays in the pool for the next real call. httpcore offers no
public way to open a pooled connection without a request, and reaching into its pool would break
with its next release.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable

import certifi
import httpx

log = logging.getLogger(__name__)

# an idle pooled connection is kept this long (httpx's default, 5 s, would close it between calls)
KEEPALIVE_S = 120.0
# warm-ups are repeated this often: below the idle timeouts of providers' front ends (60 s and more),
# so that the connection a cold client's call needs is still open
WARM_EVERY_S = 30.0
WARM_TIMEOUT_S = 10.0
WARM_HEADERS = {"user-agent": "douane (connection warm-up; no credentials)", "accept-encoding": "identity"}


def pooled_transport(tls: ssl.SSLContext) -> httpx.AsyncHTTPTransport:
    """The pool itself. The relay sends through it without httpx's client layer (no default headers,
    cookies, redirects or auth hooks): the request goes out as douane made it, ~0.2 ms sooner."""
    return httpx.AsyncHTTPTransport(
        http2=True, verify=tls, trust_env=False,
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64, keepalive_expiry=KEEPALIVE_S))


def send(transport: httpx.AsyncBaseTransport, method: str, url: str, headers: dict[str, str], body: bytes = b"",
         connect_timeout: float = 10.0, read_timeout: float | None = None) -> Awaitable[httpx.Response]:
    """One request through the pool; the answer's body streams (read it, then `aclose`). No read
    timeout by default: a call waits for its answer as long as on the direct path (a bound, when one
    applies, is the fallback rule's first-byte timeout)."""
    timeout = {"connect": connect_timeout, "read": read_timeout, "write": None, "pool": None}
    return transport.handle_async_request(httpx.Request(method, url, headers=headers, content=body or None,
                                                        extensions={"timeout": timeout}))


class _H2First(ssl.SSLContext):
    """httpcore offers ALPN ["http/1.1", "h2"] in that order; a server that takes the client's order
    (mitmproxy does, some load balancers too) then picks HTTP/1.1. The pool offers h2 first."""

    def set_alpn_protocols(self, alpn_protocols: Iterable[str]) -> None:
        super().set_alpn_protocols(sorted(alpn_protocols, key=lambda p: p != "h2"))


def upstream_tls(insecure: bool, ca_file: str | None, ca_dir: str | None) -> ssl.SSLContext:
    """The relay trusts what mitmproxy's direct path trusts: its `ssl_insecure`,
    `ssl_verify_upstream_trusted_ca` and `_confdir` options, which replace the default store
    (certifi, as mitmproxy's)."""
    context = _H2First(ssl.PROTOCOL_TLS_CLIENT)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif ca_file or ca_dir:
        context.load_verify_locations(cafile=ca_file or None, capath=ca_dir or None)
    else:
        context.load_verify_locations(cafile=certifi.where())
    return context


class Warmer:
    """Opens a pooled connection to each origin and keeps it open, without a billable call."""

    def __init__(self, transport: httpx.AsyncBaseTransport,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self._transport = transport
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self.warmed: dict[str, int | None] = {}  # origin -> status of its last warm-up; None: it failed

    async def warm(self, origins: Iterable[str]) -> None:
        await asyncio.gather(*(self._warm(o) for o in dict.fromkeys(origins)))

    async def _warm(self, origin: str) -> None:
        try:
            response = await send(self._transport, "HEAD", origin + "/", WARM_HEADERS,
                                  connect_timeout=WARM_TIMEOUT_S, read_timeout=WARM_TIMEOUT_S)
            await response.aclose()
        except httpx.HTTPError as e:
            if self.warmed.get(origin, 0) is not None:  # said once, not every round
                log.warning("upstream pool: could not open a connection to %s (%s: %s); calls there open "
                            "their own until it answers", origin, type(e).__name__, e)
            self.warmed[origin] = None
            return
        if self.warmed.get(origin) is None:
            log.info("upstream pool: %s warm (%s)", origin, response.http_version)
        self.warmed[origin] = response.status_code

    def keep_warm(self, origins: Callable[[], Iterable[str]], every: float = WARM_EVERY_S) -> None:
        """Warm `origins()` now and every `every` seconds (read each round: a reloaded policy's count)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._rounds(origins, every))

    async def _rounds(self, origins: Callable[[], Iterable[str]], every: float) -> None:
        while True:
            try:
                await self.warm(origins())
            except Exception:  # a bug here must not end the rounds for good, nor reach the loop
                log.exception("upstream pool: a warm-up round failed")
            await self._sleep(every)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
