"""The relay: an in-process HTTP server that makes a call's upstream attempts itself, for calls that
may need a fallback or a translation. mitmproxy sends such a call here instead of upstream; the
relay tries each target in turn (retries, backoff, first-byte timeout, circuit breaker), translates
the winner's answer into the client's format when the formats differ, and streams it back.

Calls without a fallback rule or a format change never come here: they keep mitmproxy's direct path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from douane import translate
from douane.providers import ADAPTERS
from douane.providers.sse import SSEFramer

log = logging.getLogger(__name__)

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "proxy-connection",
        "te", "trailer", "upgrade"}


@dataclass
class Attempt:
    provider: str
    fmt: str
    model: str | None
    url: str  # scheme://host:port/path?query
    headers: dict[str, str]
    body: bytes
    translate_from: str | None = None  # the client's format when it differs from this target's

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model or '?'}"

    @property
    def base(self) -> str:
        """scheme://host:port, the unit the circuit breaker counts failures of."""
        return "/".join(self.url.split("/", 3)[:3])


@dataclass
class Plan:
    call_id: str
    client_fmt: str
    client_model: str | None
    stream: bool
    attempts: list[Attempt]
    retry_on: list[str]
    retries: int = 0
    backoff: float = 0.2
    first_byte_timeout: float = 30.0
    tried: list[str] = field(default_factory=list)
    served: Attempt | None = None

    def should_retry(self, status: int | None, kind: str) -> bool:
        """kind: status | timeout | error"""
        if kind != "status":
            return kind in self.retry_on or (kind == "error" and "5xx" in self.retry_on)
        assert status is not None
        return str(status) in self.retry_on or f"{status // 100}xx" in self.retry_on


class Breakers:
    """Per-upstream circuit breakers: `failures` in a row open one for `cooldown` seconds; then one
    probe is let through per cooldown until a success closes it. `clock` is injectable for tests."""

    def __init__(self, failures: int = 3, cooldown: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.failures = failures
        self.cooldown = cooldown
        self.clock = clock
        self._count: dict[str, int] = {}
        self._open_until: dict[str, float] = {}

    def allow(self, key: str) -> bool:
        until = self._open_until.get(key)
        if until is None:
            return True
        now = self.clock()
        if now >= until:  # half-open: let one probe through
            self._open_until[key] = now + self.cooldown
            return True
        return False

    def success(self, key: str) -> None:
        self._count.pop(key, None)
        self._open_until.pop(key, None)

    def failure(self, key: str) -> None:
        self._count[key] = self._count.get(key, 0) + 1
        if self._count[key] >= self.failures:
            self._open_until[key] = self.clock() + self.cooldown
            log.warning("relay: %s failed %d times in a row; skipped for %.0f s", key, self._count[key],
                        self.cooldown)


class Relay:
    def __init__(self, breakers: Breakers | None = None):
        self.plans: dict[str, Plan] = {}
        self.breakers = breakers or Breakers()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> int:
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0), trust_env=False,
                                         limits=httpx.Limits(max_keepalive_connections=64))
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._client is not None:
            await self._client.aclose()

    def register(self, plan: Plan) -> str:
        self.plans[plan.call_id] = plan
        return f"/relay/{plan.call_id}"

    # -- the tiny HTTP/1.1 server mitmproxy talks to ----------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _, path, _ = lines[0].split(" ", 2)
                headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
                length = int({k.lower(): v for k, v in headers.items()}.get("content-length", "0").strip() or 0)
                if length:
                    await reader.readexactly(length)
                plan = self.plans.pop(path.rsplit("/", 1)[-1], None)
                if plan is None:
                    await self._respond(writer, 404, {"content-type": "text/plain"}, b"no such relayed call")
                    continue
                await self._run(plan, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, writer: asyncio.StreamWriter, status: int, headers: dict[str, str], body: bytes) -> None:
        head = [f"HTTP/1.1 {status} {httpx.codes.get_reason_phrase(status) or 'Status'}"]
        head += [f"{k}: {v}" for k, v in headers.items()] + [f"content-length: {len(body)}", "", ""]
        writer.write("\r\n".join(head).encode("latin-1") + body)
        await writer.drain()

    async def _start_chunked(self, writer: asyncio.StreamWriter, status: int, headers: dict[str, str]) -> None:
        head = [f"HTTP/1.1 {status} {httpx.codes.get_reason_phrase(status) or 'Status'}"]
        head += [f"{k}: {v}" for k, v in headers.items()] + ["transfer-encoding: chunked", "", ""]
        writer.write("\r\n".join(head).encode("latin-1"))
        await writer.drain()

    @staticmethod
    async def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
        if data:
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()

    # -- attempts -----------------------------------------------------------------------------
    async def _run(self, plan: Plan, writer: asyncio.StreamWriter) -> None:
        assert self._client is not None
        for attempt in plan.attempts:
            key = attempt.base
            if not self.breakers.allow(key):
                plan.tried.append(f"{attempt.label}: skipped (circuit open)")
                continue
            for n in range(plan.retries + 1):
                if n:
                    await asyncio.sleep(plan.backoff * (2 ** (n - 1)))
                request = self._client.build_request("POST", attempt.url, headers=attempt.headers,
                                                     content=attempt.body)
                try:
                    response = await asyncio.wait_for(self._client.send(request, stream=True),
                                                      plan.first_byte_timeout)
                except (TimeoutError, httpx.HTTPError) as e:
                    self.breakers.failure(key)
                    timeout = isinstance(e, TimeoutError)
                    plan.tried.append(f"{attempt.label}: no answer within {plan.first_byte_timeout:g} s" if timeout
                                      else f"{attempt.label}: {type(e).__name__}: {e}")
                    if plan.should_retry(None, "timeout" if timeout else "error"):
                        continue
                    await self._fail(plan, writer, 504 if timeout else 502)
                    return
                if plan.should_retry(response.status_code, "status"):
                    await response.aclose()
                    if response.status_code >= 500:
                        self.breakers.failure(key)
                    plan.tried.append(f"{attempt.label}: {response.status_code}")
                    continue
                self.breakers.success(key)
                plan.served = attempt
                plan.tried.append(f"{attempt.label}: {response.status_code}")
                try:
                    await self._deliver(plan, attempt, response, writer)
                finally:
                    await response.aclose()
                return
        await self._fail(plan, writer, 502)

    async def _fail(self, plan: Plan, writer: asyncio.StreamWriter, status: int) -> None:
        message = "douane: every upstream failed; tried " + "; ".join(plan.tried)
        body = ADAPTERS[plan.client_fmt].error_body(status, message, "upstream_failed")
        await self._respond(writer, status, {"content-type": "application/json"}, json.dumps(body).encode())

    async def _deliver(self, plan: Plan, attempt: Attempt, response: httpx.Response,
                       writer: asyncio.StreamWriter) -> None:
        source = attempt.fmt
        ctype = response.headers.get("content-type", "")
        if attempt.translate_from is None:  # same format: pass the answer through as it comes
            headers = {k: v for k, v in response.headers.items() if k.lower() not in _HOP}
            await self._start_chunked(writer, response.status_code, headers)
            async for data in response.aiter_bytes():
                await self._chunk(writer, data)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return
        model = plan.client_model or attempt.model or ""
        if response.status_code >= 400:
            raw = await response.aread()
            await self._respond(writer, response.status_code, {"content-type": "application/json"},
                                json.dumps(ADAPTERS[plan.client_fmt].error_body(
                                    response.status_code, _error_message(raw, attempt), "upstream_error")).encode())
            return
        if not ctype.startswith("text/event-stream"):
            reply = translate.read_reply(source, json.loads(await response.aread()))
            body = translate.write_reply(plan.client_fmt, reply, model)
            await self._respond(writer, 200, {"content-type": "application/json"}, json.dumps(body).encode())
            return
        await self._start_chunked(writer, 200, {"content-type": "text/event-stream", "cache-control": "no-cache"})
        reader = translate.StreamReader(source)
        out = translate.StreamWriter(plan.client_fmt, model)
        framer = SSEFramer()
        async for data in response.aiter_bytes():
            for event in framer.feed(data):
                if event.data is None or event.data.strip() == "[DONE]":
                    continue
                try:
                    payload: Any = json.loads(event.data)
                except ValueError:
                    continue
                await self._chunk(writer, b"".join(out.write(ev) for ev in reader.feed(payload)))
        await self._chunk(writer, out.close())
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def _error_message(raw: bytes, attempt: Attempt) -> str:
    try:
        data = json.loads(raw)
        err = data.get("error")
        msg = err.get("message") if isinstance(err, dict) else err
    except (ValueError, AttributeError):
        msg = raw[:200].decode("utf-8", "replace")
    return f"{attempt.label} answered: {msg}"
