"""The floor for scripts/bench: plain mitmdump that only sends provider hosts to the mock (and streams SSE)."""

import os

from mitmproxy import http

TARGET = int(os.environ["BENCH_MOCK_PORT"])
PROVIDERS = {"api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com"}


def request(flow: http.HTTPFlow) -> None:
    if flow.request.host in PROVIDERS:
        flow.request.scheme, flow.request.host, flow.request.port = "http", "127.0.0.1", TARGET


def responseheaders(flow: http.HTTPFlow) -> None:
    # Stream SSE like douane does; a buffering floor would make douane's streamed TTFB look better.
    if flow.response and flow.response.headers.get("content-type", "").startswith("text/event-stream"):
        flow.response.stream = True
