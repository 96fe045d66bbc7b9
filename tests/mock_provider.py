"""A mock LLM provider speaking OpenAI, Anthropic and Gemini wire formats, plain and SSE.

It answers "echo: <last user text>" so that tests see what reached the upstream, and keeps every
request it received (GET /_mock/requests, POST /_mock/reset). Behaviour switches, by model name:
  fail-500 / fail-429   answer that status in the provider's error shape
  drop-mid-stream       send two events, then cut the connection
  gzip-reply            gzip the reply body (plain and SSE)
  *slow*                wait half a second before answering
  *chars3*              stream three characters per event instead of a word
  *tool-call*           when the last user text says `CALL name {json arguments}` (once or more), answer
                        "Let me check." and those tool calls, plain or streamed, in the request's format
                        (arguments streamed in fragments); otherwise echo as usual
  *x300*                answer the echo three hundred times over (a long answer for a short prompt)
  *harmful*             answer HARMFUL_REPLY (an instruction to stab someone between two harmless
                        sentences) instead of the echo: output moderation's tests
  *surrogate*           end the answer with a lone surrogate (U+D800), which JSON escapes
  *hold*                stream two events, then wait for HOLD to be set (bounded: HOLD_TIMEOUT)
                        before the rest: a test sets it once its client has the first events, which
                        proves the stream flows through the proxy instead of being buffered whole
HEAD (any path) answers 404 with no body and is kept in WARMUPS, not RECEIVED: douane's pool warms
its connections with it. `serve_tls` serves the same behind TLS and counts its TLS connections.
Run: python tests/mock_provider.py --port 9000 [--tls-cert CERT --tls-key KEY]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RECEIVED: list[dict[str, Any]] = []
WARMUPS: list[dict[str, Any]] = []  # HEAD requests: the path and headers of each
LOCK = threading.Lock()
HOLD = threading.Event()  # a *hold* stream waits on it midway
HOLDING = threading.Event()  # set while a *hold* stream is waiting
HOLD_TIMEOUT = 20.0
HELD_TOO_LONG: list[str] = []  # models whose hold ended by timeout: nobody released it
HARMFUL_REPLY = "Sure, here is what to do. Grab the knife and stab him in the throat until he stops moving. " \
    "Anything else?"
LLM_PATH = re.compile(r"/(chat/completions|responses|embeddings|completions|messages)$|"
                      r":(generateContent|streamGenerateContent)$")


def last_user_text(fmt: str, body: dict, path: str) -> str:
    """The text to echo; "" for a body of a shape the mock does not read (bad-input tests send those)."""
    try:
        return _last_user_text(fmt, body)
    except (LookupError, AttributeError, TypeError):
        return ""


def _last_user_text(fmt: str, body: dict) -> str:
    if fmt == "openai":
        if "messages" in body:
            content = body["messages"][-1].get("content")
        else:
            content = body.get("input")
            if isinstance(content, list):
                content = content[-1].get("content") if isinstance(content[-1], dict) else content[-1]
    elif fmt == "anthropic":  # the last user turn (an agent may put other roles after it)
        turns = body["messages"]
        content = next((m for m in reversed(turns) if m.get("role") == "user"), turns[-1])["content"]
    else:
        content = body["contents"][-1]["parts"]
    if isinstance(content, list):
        return " ".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def words(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text) or [text]


# -- tool calls: what the *tool-call* models answer ---------------------------------------------------

TOOL_PREAMBLE = "Let me check."
CREATED = 1_700_000_000  # fixed, so that the same call answers the same bytes (tests compare them)
_CALL = re.compile(r"CALL\s+([\w.-]+)\s+(?=\{)")


def requested_calls(text: str) -> list[tuple[str, dict]]:
    """`CALL name {json}` instructions in a prompt: the tool calls to answer with."""
    calls = []
    for m in _CALL.finditer(text):
        try:
            args, _ = json.JSONDecoder().raw_decode(text, m.end())
        except ValueError:
            continue
        calls.append((m.group(1), args))
    return calls


def _fragments(text: str, n: int = 3) -> list[str]:
    size = max(1, -(-len(text) // n))
    return [text[i:i + size] for i in range(0, len(text), size)]


def tool_answer(fmt: str, responses: bool, model: str, calls: list[tuple[str, dict]]) -> dict:
    """A plain answer: the preamble text, then the calls."""
    usage_in, usage_out = 11, 7
    if fmt == "anthropic":
        return {"id": "msg_tool", "type": "message", "role": "assistant", "model": model, "content": [
            {"type": "text", "text": TOOL_PREAMBLE},
            *[{"type": "tool_use", "id": f"toolu_{i}", "name": n, "input": a} for i, (n, a) in enumerate(calls)]],
            "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": usage_in, "output_tokens": usage_out}}
    if fmt == "gemini":
        return {"candidates": [{"content": {"role": "model", "parts": [
            {"text": TOOL_PREAMBLE}, *[{"functionCall": {"name": n, "args": a}} for n, a in calls]]},
            "finishReason": "STOP", "index": 0}], "modelVersion": model,
            "usageMetadata": {"promptTokenCount": usage_in, "candidatesTokenCount": usage_out,
                              "totalTokenCount": usage_in + usage_out}}
    if responses:
        return {"id": "resp_tool", "object": "response", "created_at": CREATED, "model": model, "status": "completed",
                "output": _response_items(calls),
                "usage": {"input_tokens": usage_in, "output_tokens": usage_out, "total_tokens": usage_in + usage_out}}
    return {"id": "chatcmpl-tool", "object": "chat.completion", "created": CREATED, "model": model, "choices": [
        {"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": TOOL_PREAMBLE,
                                                                  "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
            for i, (n, a) in enumerate(calls)]}}],
        "usage": {"prompt_tokens": usage_in, "completion_tokens": usage_out, "total_tokens": usage_in + usage_out}}


def _response_items(calls: list[tuple[str, dict]]) -> list[dict]:
    return [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": TOOL_PREAMBLE, "annotations": []}]},
            *[{"type": "function_call", "id": f"fc_{i}", "call_id": f"call_{i}", "name": n,
               "arguments": json.dumps(a), "status": "completed"} for i, (n, a) in enumerate(calls)]]


def tool_events(fmt: str, responses: bool, model: str, calls: list[tuple[str, dict]],
                include_usage: bool = False) -> list[str]:
    """A streamed answer: the preamble as text deltas, then each call, its arguments in fragments."""
    text = words(TOOL_PREAMBLE)
    if fmt == "anthropic":
        ev: list[dict] = [{"type": "message_start", "message": {
            "id": "msg_tool", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 11, "output_tokens": 1}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            *[{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}} for t in text],
            {"type": "content_block_stop", "index": 0}]
        for i, (n, a) in enumerate(calls, 1):
            ev.append({"type": "content_block_start", "index": i,
                       "content_block": {"type": "tool_use", "id": f"toolu_{i}", "name": n, "input": {}}})
            ev += [{"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": f}}
                   for f in _fragments(json.dumps(a))]
            ev.append({"type": "content_block_stop", "index": i})
        ev += [{"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 7}}, {"type": "message_stop"}]
        return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in ev]
    if fmt == "gemini":
        chunks = [{"candidates": [{"content": {"role": "model", "parts": [{"text": t}]}, "index": 0}],
                   "modelVersion": model} for t in text]
        chunks.append({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": n, "args": a}} for n, a in calls]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18},
            "modelVersion": model})
        return [f"data: {json.dumps(c)}\r\n\r\n" for c in chunks]
    if responses:
        items = _response_items(calls)
        ev = [{"type": "response.created", "response": {"id": "resp_tool", "model": model, "status": "in_progress",
                                                        "output": []}},
              {"type": "response.output_item.added", "output_index": 0, "item": {**items[0], "content": []}},
              {"type": "response.content_part.added", "item_id": "msg_1", "output_index": 0, "content_index": 0,
               "part": {"type": "output_text", "text": "", "annotations": []}},
              *[{"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0,
                 "delta": t} for t in text],
              {"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0, "content_index": 0,
               "text": TOOL_PREAMBLE},
              {"type": "response.content_part.done", "item_id": "msg_1", "output_index": 0, "content_index": 0,
               "part": items[0]["content"][0]},
              {"type": "response.output_item.done", "output_index": 0, "item": items[0]}]
        for i, item in enumerate(items[1:], 1):
            ev.append({"type": "response.output_item.added", "output_index": i, "item": {**item, "arguments": ""}})
            ev += [{"type": "response.function_call_arguments.delta", "item_id": item["id"], "output_index": i,
                    "delta": f} for f in _fragments(item["arguments"])]
            ev += [{"type": "response.function_call_arguments.done", "item_id": item["id"], "output_index": i,
                    "arguments": item["arguments"]},
                   {"type": "response.output_item.done", "output_index": i, "item": item}]
        ev.append({"type": "response.completed", "response": {**tool_answer(fmt, True, model, calls)}})
        for n, e in enumerate(ev):
            e["sequence_number"] = n
        return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in ev]
    base = {"id": "chatcmpl-tool", "object": "chat.completion.chunk", "created": CREATED, "model": model}
    deltas: list[dict] = [{"role": "assistant", "content": ""}, *[{"content": t} for t in text]]
    for i, (n, a) in enumerate(calls):
        deltas.append({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                       "function": {"name": n, "arguments": ""}}]})
        deltas += [{"tool_calls": [{"index": i, "function": {"arguments": f}}]} for f in _fragments(json.dumps(a))]
    out = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    if include_usage:
        out.append({**base, "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})
    return [f"data: {json.dumps(o)}\n\n" for o in out] + ["data: [DONE]\n\n"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without this, Nagle + delayed ACK add 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/_mock/requests"):
            with LOCK:
                self._json(200, RECEIVED)
            return
        with LOCK:
            RECEIVED.append({"path": self.path, "headers": dict(self.headers.items()), "body": None, "raw": ""})
        self._json(404, {"error": {"message": "not found"}})

    def do_HEAD(self) -> None:
        with LOCK:
            WARMUPS.append({"path": self.path, "headers": dict(self.headers.items())})
        self.send_response(404)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        if self.path.startswith("/_mock/reset"):
            with LOCK:
                RECEIVED.clear()
            self._json(200, {"ok": True})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with LOCK:
            RECEIVED.append({"path": self.path, "headers": dict(self.headers.items()),
                             "body": body, "raw": raw.decode("utf-8", "replace")})
        if "/files" in self.path:
            self._json(200, {"id": "file-mock", "object": "file", "bytes": length})
            return
        if not LLM_PATH.search(self.path.split("?", 1)[0]):  # another endpoint (batches, uploads, ...): acknowledged
            self._json(200, {"object": "mock.ack", "path": self.path, "bytes": length})
            return
        if "/v1/messages" in self.path:
            fmt = "anthropic"
        elif ":generateContent" in self.path or ":streamGenerateContent" in self.path:
            fmt = "gemini"
        else:
            fmt = "openai"
        if not isinstance(body, dict):
            self._json(400, {"error": {"message": "mock: body is not a JSON object"}})
            return
        in_path = re.search(r"models/([^:]+):", self.path)
        model = str(body.get("model") or (in_path.group(1) if in_path else "unknown"))
        if "slow" in model:
            time.sleep(0.5)
        if model.startswith("fail-"):
            status = int(model.split("-")[1])
            self._json(status, self._error(fmt, status))
            return
        if self.path.endswith("/embeddings"):
            self._json(200, {"object": "list", "model": model, "data": [
                {"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                "usage": {"prompt_tokens": 5, "total_tokens": 5}})
            return
        calls = requested_calls(last_user_text(fmt, body, self.path)) if "tool-call" in model else []
        if calls:
            responses = self.path.endswith("/responses")
            if body.get("stream") is True or "alt=sse" in self.path:
                self._send_events(tool_events(fmt, responses, model, calls,
                                              bool((body.get("stream_options") or {}).get("include_usage"))))
            else:
                self._json(200, tool_answer(fmt, responses, model, calls))
            return
        reply = HARMFUL_REPLY if "harmful" in model else "echo: " + last_user_text(fmt, body, self.path)
        if "x300" in model:
            reply = " ".join([reply] * 300)
        if "surrogate" in model:  # JSON can escape a lone surrogate; it is not text (audit tests)
            reply += " \ud800"
        cap = body.get("max_tokens") or body.get("max_completion_tokens") or \
            (body.get("generationConfig") or {}).get("maxOutputTokens")
        if isinstance(cap, int):  # like a real provider: never more output tokens (words here) than asked
            reply = "".join(words(reply)[:cap])
        stream = body.get("stream") is True or "alt=sse" in self.path
        gz = model == "gzip-reply"
        if stream:
            self._sse(fmt, model, reply, body, drop=model == "drop-mid-stream", gz=gz)
        else:
            self._json(200, self._plain(fmt, model, reply, body), gz=gz)

    def _error(self, fmt: str, status: int) -> dict:
        msg = f"mock upstream error {status}"
        if fmt == "anthropic":
            return {"type": "error", "error": {"type": "api_error", "message": msg}}
        if fmt == "gemini":
            return {"error": {"code": status, "message": msg, "status": "UNAVAILABLE"}}
        return {"error": {"message": msg, "type": "server_error", "code": None}}

    def _plain(self, fmt: str, model: str, reply: str, body: dict) -> dict:
        n_in, n_out = 11, len(words(reply))
        if fmt == "anthropic":
            return {"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
                    "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn",
                    "stop_sequence": None, "usage": {"input_tokens": n_in, "output_tokens": n_out}}
        if fmt == "gemini":
            return {"candidates": [{"content": {"role": "model", "parts": [{"text": reply}]},
                                    "finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": n_in, "candidatesTokenCount": n_out,
                                      "totalTokenCount": n_in + n_out}, "modelVersion": model}
        if self.path.endswith("/responses"):
            return {"id": "resp_mock", "object": "response", "created_at": int(time.time()), "model": model,
                    "status": "completed", "output": [{"type": "message", "id": "msg_1", "role": "assistant",
                                                       "status": "completed", "content": [
                                                           {"type": "output_text", "text": reply, "annotations": []}]}],
                    "usage": {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}}
        return {"id": "chatcmpl-mock", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}}

    def _events(self, fmt: str, model: str, reply: str, body: dict) -> list[str]:
        pieces = [reply[i:i + 3] for i in range(0, len(reply), 3)] if "chars3" in model else words(reply)
        n_in, n_out = 11, len(pieces)
        if fmt == "anthropic":
            ev = [("message_start", {"type": "message_start", "message": {
                "id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": n_in, "output_tokens": 1}}}),
                  ("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})]
            ev += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": p}}) for p in pieces]
            ev += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                                          "stop_sequence": None},
                                      "usage": {"output_tokens": n_out}}),
                   ("message_stop", {"type": "message_stop"})]
            return [f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in ev]
        if fmt == "gemini":
            out = []
            for i, p in enumerate(pieces):
                chunk: dict[str, Any] = {"candidates": [{"content": {"role": "model", "parts": [{"text": p}]},
                                                         "index": 0}], "modelVersion": model}
                if i == len(pieces) - 1:
                    chunk["candidates"][0]["finishReason"] = "STOP"
                    chunk["usageMetadata"] = {"promptTokenCount": n_in, "candidatesTokenCount": n_out,
                                              "totalTokenCount": n_in + n_out}
                out.append(f"data: {json.dumps(chunk)}\r\n\r\n")
            return out
        if self.path.endswith("/responses"):
            ev = [{"type": "response.created", "response": {"id": "resp_mock", "model": model,
                                                            "status": "in_progress", "output": []}}]
            ev += [{"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
                    "content_index": 0, "delta": p} for p in pieces]
            ev += [{"type": "response.completed", "response": {
                "id": "resp_mock", "object": "response", "created_at": int(time.time()), "model": model,
                "status": "completed", "output": [{"type": "message", "id": "msg_1", "role": "assistant",
                                                   "status": "completed", "content": [
                                                       {"type": "output_text", "text": reply,
                                                        "annotations": []}]}],
                "usage": {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}}}]
            return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in ev]
        base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model}
        out = [json.dumps({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                "finish_reason": None}]})]
        out += [json.dumps({**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]})
                for p in pieces]
        out.append(json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        if (body.get("stream_options") or {}).get("include_usage"):
            out.append(json.dumps({**base, "choices": [], "usage": {
                "prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}}))
        return [f"data: {o}\n\n" for o in out] + ["data: [DONE]\n\n"]

    def _sse(self, fmt: str, model: str, reply: str, body: dict, drop: bool, gz: bool) -> None:
        self._send_events(self._events(fmt, model, reply, body), drop, gz, hold="hold" in model, model=model)

    def _send_events(self, events: list[str], drop: bool = False, gz: bool = False, hold: bool = False,
                     model: str = "") -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        if gz:
            self.send_header("content-encoding", "gzip")
        self.end_headers()
        compressor = gzip.zlib.compressobj(wbits=31) if gz else None  # type: ignore[attr-defined]

        def send(data: bytes) -> None:
            if compressor is not None:
                data = compressor.compress(data) + compressor.flush(gzip.zlib.Z_SYNC_FLUSH)  # type: ignore
            if data:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        for i, event in enumerate(events):
            if hold and i == 2:
                HOLDING.set()
                if not HOLD.wait(HOLD_TIMEOUT):
                    HELD_TOO_LONG.append(model)
                HOLDING.clear()
            if drop and i == 2:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            raw = event.encode()
            # split each event at an awkward place so the proxy must re-frame
            cut = max(1, len(raw) // 3)
            send(raw[:cut])
            send(raw[cut:])
        if compressor is not None:
            tail = compressor.flush()
            if tail:
                self.wfile.write(f"{len(tail):x}\r\n".encode() + tail + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _json(self, status: int, payload: Any, gz: bool = False) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        if gz:
            data = gzip.compress(data)
            self.send_header("content-encoding", "gzip")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class TLSServer(ThreadingHTTPServer):
    """The mock behind TLS (HTTP/1.1 by ALPN), counting the TLS connections it accepted."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], cert: str, key: str):
        super().__init__(address, Handler)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.context.set_alpn_protocols(["http/1.1"])
        self.tls_connections = 0

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:  # the handshake, in this connection's thread
            conn = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):  # e.g. a probe that only checks the port listens
            return
        with LOCK:
            self.tls_connections += 1
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            conn.close()


def make_cert(folder: str) -> tuple[str, str]:
    """A self-signed certificate for localhost and 127.0.0.1 in `folder`: (cert path, key path)."""
    import datetime
    import ipaddress
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mock provider")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = Path(folder) / "mock-cert.pem", Path(folder) / "mock-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def serve_tls(port: int, cert: str, key: str, host: str = "127.0.0.1") -> TLSServer:
    server = TLSServer((host, port), cert, key)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = ap.parse_args()
    if args.tls_cert:
        srv: ThreadingHTTPServer = TLSServer(("127.0.0.1", args.port), args.tls_cert, args.tls_key)
    else:
        srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    scheme = "https" if args.tls_cert else "http"
    print(f"mock provider on {scheme}://127.0.0.1:{args.port}", flush=True)
    srv.serve_forever()
