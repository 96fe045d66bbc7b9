"""A scripted OpenAI chat upstream whose streams the test steers with events, not sleeps.

Each streamed answer sends `words` text deltas, a finish chunk, a usage chunk (always: douane asks
for it) and [DONE]. The script says where to stop and wait for the test:
  pause_after=k   after k deltas, wait until `resume` is set (the client leaves meanwhile)
  hold_open       after [DONE], keep the response open (no chunked terminator) until `resume` is set
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

INPUT_TOKENS = 17


@dataclass
class Script:
    words: int = 20
    pause_after: int | None = None
    hold_open: bool = False
    resume: threading.Event = field(default_factory=threading.Event)
    sent_deltas: int = 0
    paused: threading.Event = field(default_factory=threading.Event)  # set when the upstream waits
    finished: threading.Event = field(default_factory=threading.Event)  # set when the handler returns
    bodies: list[dict[str, Any]] = field(default_factory=list)


class Upstream:
    def __init__(self) -> None:
        self.script = Script()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
                script = upstream.script
                script.bodies.append(body)
                try:
                    self._stream(script, body)
                except OSError:
                    pass  # the proxy went away: what a real provider sees when a client leaves
                finally:
                    script.finished.set()

            def _stream(self, script: Script, body: dict[str, Any]) -> None:
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": body["model"]}

                def send(payload: Any) -> None:
                    data = f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()

                for i in range(script.words):
                    if script.pause_after is not None and i == script.pause_after:
                        script.paused.set()
                        script.resume.wait(10)
                    send({**base, "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}]})
                    script.sent_deltas += 1
                send({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                send({**base, "choices": [], "usage": {"prompt_tokens": INPUT_TOKENS, "completion_tokens": script.words,
                                                       "total_tokens": INPUT_TOKENS + script.words}})
                send("[DONE]")
                if script.hold_open:
                    script.paused.set()
                    script.resume.wait(10)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.script.resume.set()
        self.server.shutdown()
