"""Concurrent clients through a douane proxy, counting the calls they saw completed, by request id."""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field

import httpx

CHAT = "https://api.openai.com/v1/chat/completions"


@dataclass
class Load:
    """`clients` threads sending chat calls until stopped or the proxy goes away.

    A call counts as completed when its client got the whole answer and its request id; every
    model name containing `slow` takes the mock provider half a second.
    """

    proxy: str
    bundle: str
    clients: int = 6
    slow_every: int = 0  # every n-th call of a client is slow (0: none)
    completed: dict[str, float] = field(default_factory=dict)  # request id -> when the answer was complete
    statuses: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for n in range(self.clients):
            t = threading.Thread(target=self._client, args=(n,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def _client(self, n: int) -> None:
        verify = ssl.create_default_context(cafile=self.bundle)
        i = 0
        while not self.stop.is_set():
            i += 1
            slow = self.slow_every and i % self.slow_every == 0
            model = "gpt-4o-mini-slow" if slow else "gpt-4o-mini"
            try:
                with httpx.Client(proxy=self.proxy, verify=verify, timeout=30, trust_env=False) as http:
                    while not self.stop.is_set():
                        r = http.post(CHAT, json={"model": model, "messages": [
                            {"role": "user", "content": f"client {n} call {i}"}]})
                        rid = r.headers.get("x-douane-request-id")
                        with self.lock:
                            if rid:
                                self.completed[rid] = time.monotonic()
                                self.statuses[rid] = r.status_code
                        i += 1
                        slow = self.slow_every and i % self.slow_every == 0
                        model = "gpt-4o-mini-slow" if slow else "gpt-4o-mini"
            except httpx.HTTPError as e:
                with self.lock:
                    self.failures.append(f"{type(e).__name__}: {e}")
                if self.stop.wait(0.05):  # the proxy is gone or going: try again shortly, or stop
                    return

    def count(self) -> int:
        with self.lock:
            return len(self.completed)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(40)
