"""Each flow is judged under one policy, from its first hook to its last, whatever reloads meanwhile.

A flow is bound to the policy generation current when douane first sees it (douane.gateway), and
every stage reads `gw.policy` and its siblings through that binding:

- `BindGeneration` comes first in mitmproxy's chain. mitmproxy runs each hook of a flow in a task
  of its own, calling the addons one after the other in that task, so the context variable set
  here is what the stages after it read, to the end of the hook (its coroutines included).
- `KeepGenerationInStream` comes after the stages: a response `stream` callable (the stream tap)
  runs outside any hook, whenever the upstream sends a chunk, so it is wrapped to bind the flow's
  generation around each call.

Hooks without a flow (connections, start, stop) read the current generation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from mitmproxy import connection, http

from douane.gateway import Gateway, Generation

GENERATION_KEY = "douane.generation"

StreamFunc = Callable[[bytes], bytes | Iterable[bytes]]


def generation_of(gw: Gateway, flow: http.HTTPFlow) -> Generation:
    """The flow's generation, bound to the current one the first time it is asked."""
    generation: Generation | None = flow.metadata.get(GENERATION_KEY)
    if generation is None:
        generation = flow.metadata[GENERATION_KEY] = gw.current
    return generation


class BindGeneration:
    name = "douane.generation"

    def __init__(self, gw: Gateway):
        self.gw = gw

    def _flow(self, flow: http.HTTPFlow, *_: Any) -> None:
        # never unbound: the hook's task ends with the hook, and every entry point binds again
        self.gw.bind(generation_of(self.gw, flow))

    def _current(self, *_: Any) -> None:
        self.gw.bind(None)

    http_connect = requestheaders = request = responseheaders = response = error = _flow
    websocket_start = websocket_message = websocket_end = _flow
    running = done = _current

    def client_connected(self, client: connection.Client) -> None:
        self.gw.bind(None)

    def client_disconnected(self, client: connection.Client) -> None:
        self.gw.bind(None)


class KeepGenerationInStream:
    name = "douane.generation.stream"

    def __init__(self, gw: Gateway):
        self.gw = gw

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        if resp is not None and callable(resp.stream) and not isinstance(resp.stream, BoundStream):
            resp.stream = BoundStream(self.gw, generation_of(self.gw, flow), resp.stream)


class BoundStream:
    """A response stream callable, called with its flow's generation bound."""

    def __init__(self, gw: Gateway, generation: Generation, inner: StreamFunc):
        self.gw = gw
        self.generation = generation
        self.inner = inner

    def __call__(self, chunk: bytes) -> bytes | Iterable[bytes]:
        with self.gw.bound(self.generation):
            return self.inner(chunk)
