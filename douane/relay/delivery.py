"""The answer of the attempt that was served, on its way to the client: passed through as it comes
when the formats agree, else translated (plain JSON whole, SSE event by event)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from douane import jsonio, translate
from douane.providers import adapter_for
from douane.providers.sse import SSEEvent, SSEFramer
from douane.relay.plan import Attempt, Plan
from douane.relay.server import Responder

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "proxy-connection",
        "te", "trailer", "upgrade"}
_JSON = {"content-type": "application/json"}


async def deliver(plan: Plan, attempt: Attempt, response: httpx.Response, out: Responder) -> None:
    if attempt.translate_from is None:
        await _pass_through(response, out)
    elif response.status_code >= 400:
        await _translated_error(plan, attempt, response, out)
    elif response.headers.get("content-type", "").startswith("text/event-stream"):
        await _translated_stream(plan, attempt, response, out)
    else:
        await _translated_reply(plan, attempt, response, out)


async def refuse(plan: Plan, out: Responder, status: int, message: str, code: str) -> None:
    """An answer of douane's own, in the client's error shape."""
    body = adapter_for(plan.client_fmt).error_body(status, message, code)
    await out.respond(status, _JSON, json.dumps(body).encode())


async def _pass_through(response: httpx.Response, out: Responder) -> None:
    headers = {k: v for k, v in response.headers.items() if k.lower() not in _HOP}
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        # mitmproxy reads a plain answer whole before the client sees any of it: one write, not chunks
        await out.respond(response.status_code, headers, await response.aread())
        return
    await out.start(response.status_code, headers)
    async for data in response.aiter_bytes():
        await out.send(data)
    await out.end()


def _client_model(plan: Plan, attempt: Attempt) -> str:
    return plan.client_model or attempt.model or ""


async def _translated_error(plan: Plan, attempt: Attempt, response: httpx.Response, out: Responder) -> None:
    raw = await response.aread()
    await refuse(plan, out, response.status_code, f"{attempt.label} answered: {_error_text(raw)}", "upstream_error")


async def _translated_reply(plan: Plan, attempt: Attempt, response: httpx.Response, out: Responder) -> None:
    raw = await response.aread()
    try:
        body = translate.reply(attempt.fmt, jsonio.loads(raw), plan.client_fmt, _client_model(plan, attempt))
    except ValueError as e:  # not JSON, or not a shape douane can read: nothing of it goes out
        plan.tried.append(f"{attempt.label}: unreadable answer: {e}")
        await refuse(plan, out, 502, f"douane could not read the answer of {attempt.label}: {e}", "upstream_failed")
        return
    await out.respond(200, _JSON, jsonio.dumps(body))


async def _translated_stream(plan: Plan, attempt: Attempt, response: httpx.Response, out: Responder) -> None:
    await out.start(200, {"content-type": "text/event-stream", "cache-control": "no-cache"})
    reader = translate.StreamReader(attempt.fmt)
    writer = translate.StreamWriter(plan.client_fmt, _client_model(plan, attempt))
    framer = SSEFramer()
    async for data in response.aiter_bytes():
        for event in framer.feed(data):
            await out.send(_translated_event(reader, writer, event))
    rest = framer.flush()
    if rest is not None:
        await out.send(_translated_event(reader, writer, rest))
    await out.send(writer.close())
    await out.end()


def _translated_event(reader: translate.StreamReader, writer: translate.StreamWriter, event: SSEEvent) -> bytes:
    """Events without JSON data (comments, [DONE], garbage) have nothing to translate: none goes out."""
    if event.data is None or event.data.strip() == "[DONE]":
        return b""
    try:
        payload: Any = jsonio.loads(event.data)
    except ValueError:
        return b""
    return b"".join(writer.write(e) for e in reader.feed(payload, event.name))


def _error_text(raw: bytes) -> str:
    try:
        data = json.loads(raw)
        err = data.get("error")
        msg = err.get("message") if isinstance(err, dict) else err
    except (ValueError, AttributeError):
        msg = raw[:200].decode("utf-8", "replace")
    return str(msg)
