"""A mock OpenAI WebSocket provider: the Responses API over WebSocket and the Realtime API.

Responses (`/v1/responses`): each `response.create` frame gets the typed events of a Responses
stream (response.created, output_text deltas, output_item.done, response.completed with usage),
answering "echo: <last user text>". Realtime (`/v1/realtime`): session.created on connect, items
kept per socket, and each `response.create` answers "echo: <last user text>" as text deltas (GA
names, or the beta ones when the client sent `OpenAI-Beta: realtime=v1`) or as an audio transcript
with audio deltas when the response asks for audio. Any other path echoes frames back.

It keeps what it received (upgrades, frames, plain HTTP requests) in RECEIVED. Behaviour switches,
by model name: `*drop-mid-stream*` cuts the connection after two deltas; `*chars3*` sends three
characters per delta. `generate: false` (Codex's warm-up) answers an empty completed response.
Plain HTTP requests (no upgrade) get a 404 in OpenAI's shape: a client that falls back from the
WebSocket to HTTPS fails here, so a test that passes proves the WebSocket path was taken.

Run: python tests/mock_ws.py --port 9100
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import re
import threading
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

RECEIVED: list[dict[str, Any]] = []
LOCK = threading.Lock()
_IDS = itertools.count(1)


def _keep(entry: dict[str, Any]) -> None:
    with LOCK:
        RECEIVED.append(entry)


def received(kind: str | None = None) -> list[dict[str, Any]]:
    with LOCK:
        return [e for e in RECEIVED if kind is None or e["kind"] == kind]


def reset() -> None:
    with LOCK:
        RECEIVED.clear()


def pieces(text: str, model: str) -> list[str]:
    if "chars3" in model:
        return [text[i:i + 3] for i in range(0, len(text), 3)]
    return re.findall(r"\S+\s*", text) or [text]


def item_text(item: Any) -> str:
    """The text of a Responses or Realtime input item (message content parts, tool output)."""
    if not isinstance(item, dict):
        return str(item)
    if isinstance(item.get("output"), str):
        return item["output"]
    content = item.get("content")
    if isinstance(content, str):
        return content
    return " ".join(str(p.get("text") or p.get("transcript") or "") for p in content or [] if isinstance(p, dict))


def last_user_text(items: Any) -> str:
    if isinstance(items, str):
        return items
    users = [i for i in items or [] if isinstance(i, dict) and i.get("role", "user") == "user"]
    return item_text(users[-1]) if users else ""


class Responses:
    """One socket of the Responses API over WebSocket."""

    def __init__(self, ws: ServerConnection):
        self.ws = ws

    async def on_frame(self, frame: dict[str, Any]) -> None:
        if frame.get("type") != "response.create":
            await self.send({"type": "error", "status": 400, "error": {
                "type": "invalid_request_error", "code": "unknown_event",
                "message": f"mock: unsupported event {frame.get('type')!r}"}})
            return
        model = str(frame.get("model") or "gpt-5")
        rid = f"resp_mock_{next(_IDS)}"
        base = {"id": rid, "object": "response", "model": model, "output": []}
        await self.send({"type": "response.created", "response": {**base, "status": "in_progress"}})
        if frame.get("generate") is False:
            await self.send({"type": "response.completed", "response": {**base, "status": "completed", "usage": {
                "input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}})
            return
        reply = "echo: " + last_user_text(frame.get("input"))
        chunks = pieces(reply, model)
        item = {"type": "message", "id": "msg_1", "role": "assistant", "status": "in_progress", "content": []}
        await self.send({"type": "response.output_item.added", "output_index": 0, "item": item})
        for i, chunk in enumerate(chunks):
            if "drop-mid-stream" in model and i == 2:
                self.ws.transport.abort()
                return
            await self.send({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
                             "content_index": 0, "delta": chunk})
        part = {"type": "output_text", "text": reply, "annotations": []}
        await self.send({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0,
                         "content_index": 0, "text": reply})
        await self.send({"type": "response.content_part.done", "item_id": "msg_1", "output_index": 0,
                         "content_index": 0, "part": part})
        done = {**item, "status": "completed", "content": [part]}
        await self.send({"type": "response.output_item.done", "output_index": 0, "item": done})
        await self.send({"type": "response.completed", "response": {
            **base, "status": "completed", "output": [done],
            "usage": {"input_tokens": 11, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": len(chunks), "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": 11 + len(chunks)}}})

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))


class Realtime:
    """One socket of the Realtime API: a conversation kept per socket."""

    def __init__(self, ws: ServerConnection, beta: bool, model: str):
        self.ws = ws
        self.beta = beta
        self.model = model
        self.items: list[dict[str, Any]] = []
        self.instructions = ""
        self.audio_chunks = 0

    def name(self, ga: str, beta: str) -> str:
        return beta if self.beta else ga

    async def start(self) -> None:
        await self.send({"type": "session.created", "session": {"id": "sess_mock", "model": self.model}})

    async def on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "session.update":
            session = frame.get("session") or {}
            self.instructions = session.get("instructions") or self.instructions
            await self.send({"type": "session.updated", "session": session})
        elif kind == "conversation.item.create":
            item = {**(frame.get("item") or {}), "id": f"item_{next(_IDS)}"}
            self.items.append(item)
            await self.send({"type": self.name("conversation.item.added", "conversation.item.created"),
                             "item": item})
        elif kind == "input_audio_buffer.append":
            self.audio_chunks += 1
        elif kind == "response.create":
            await self.respond(frame.get("response") or {})
        else:
            await self.send({"type": "error", "error": {"type": "invalid_request_error", "code": "unknown_event",
                                                        "message": f"mock: unsupported event {kind!r}"}})

    async def respond(self, params: dict[str, Any]) -> None:
        rid = f"resp_{next(_IDS)}"
        items = params.get("input") if isinstance(params.get("input"), list) else self.items
        reply = "echo: " + last_user_text(items)
        audio = "audio" in (params.get("output_modalities") or params.get("modalities") or [])
        await self.send({"type": "response.created", "response": {"id": rid, "status": "in_progress", "output": []}})
        item_id = f"item_{next(_IDS)}"
        chunks = pieces(reply, self.model)
        for i, chunk in enumerate(chunks):
            if "drop-mid-stream" in self.model and i == 2:
                self.ws.transport.abort()
                return
            ids = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
            if audio:
                await self.send({"type": self.name("response.output_audio.delta", "response.audio.delta"), **ids,
                                 "delta": base64.b64encode(b"\x00\x01" * 40).decode()})
                await self.send({"type": self.name("response.output_audio_transcript.delta",
                                                   "response.audio_transcript.delta"), **ids, "delta": chunk})
            else:
                await self.send({"type": self.name("response.output_text.delta", "response.text.delta"), **ids,
                                 "delta": chunk})
        ids = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
        if audio:
            await self.send({"type": self.name("response.output_audio_transcript.done",
                                               "response.audio_transcript.done"), **ids, "transcript": reply})
            content = {"type": self.name("output_audio", "audio"), "transcript": reply}
        else:
            await self.send({"type": self.name("response.output_text.done", "response.text.done"), **ids,
                             "text": reply})
            content = {"type": self.name("output_text", "text"), "text": reply}
        item = {"id": item_id, "type": "message", "role": "assistant", "status": "completed", "content": [content]}
        self.items.append(item)
        await self.send({"type": "response.output_item.done", "response_id": rid, "output_index": 0, "item": item})
        await self.send({"type": "response.done", "response": {
            "id": rid, "status": "completed", "output": [item],
            "usage": {"total_tokens": 20 + len(chunks), "input_tokens": 20, "output_tokens": len(chunks),
                      "input_token_details": {"cached_tokens": 0, "text_tokens": 20, "audio_tokens": 0},
                      "output_token_details": {"text_tokens": len(chunks), "audio_tokens": 0}}}})

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps({"event_id": f"event_{next(_IDS)}", **event}))


def _process_request(connection: ServerConnection, request: Request) -> Response | None:
    headers = {k.lower(): v for k, v in request.headers.raw_items()}
    upgrade = headers.get("upgrade", "").lower() == "websocket"
    _keep({"kind": "upgrade" if upgrade else "http", "path": request.path, "headers": headers})
    if upgrade:
        return None
    body = json.dumps({"error": {"message": f"mock_ws: no HTTP here ({request.path})", "type": "invalid_request_error",
                                 "code": "websocket_only"}}).encode()
    return Response(404, "Not Found", Headers({"content-type": "application/json",
                                                "content-length": str(len(body))}), body)


async def _handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request else "/"
    bare = path.split("?", 1)[0].rstrip("/")
    model = (re.search(r"[?&]model=([^&]+)", path) or [None, "gpt-realtime"])[1]
    beta = "realtime=v1" in (ws.request.headers.get("openai-beta", "") if ws.request else "")
    protocol: Responses | Realtime | None = None
    if bare.endswith("/responses"):
        protocol = Responses(ws)
    elif bare.endswith("/realtime"):
        protocol = Realtime(ws, beta, model)
        await protocol.start()
    try:
        async for message in ws:
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            try:
                frame = json.loads(text)
            except ValueError:
                frame = None
            _keep({"kind": "frame", "path": path, "frame": frame, "raw": text,
                   "size": len(message), "text": isinstance(message, str)})
            if protocol is None:
                await ws.send(message)
            elif isinstance(frame, dict):
                await protocol.on_frame(frame)
    except ConnectionClosed:
        pass


class MockWS:
    """The mock, serving on its own event loop in a daemon thread."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port, self.host = port, host
        self._stop: asyncio.Future[None] | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("mock_ws did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = self.loop.create_future()
        async with serve(_handler, self.host, self.port, process_request=_process_request, max_size=None):
            self.ready.set()
            await self._stop

    def shutdown(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set_result, None)
        self.thread.join(10)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=9100)
    args = ap.parse_args()
    mock = MockWS(args.port)
    print(f"mock WebSocket provider on ws://127.0.0.1:{args.port}", flush=True)
    try:
        mock.thread.join()
    except KeyboardInterrupt:
        mock.shutdown()
