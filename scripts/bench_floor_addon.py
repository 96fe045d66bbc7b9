"""The floor for scripts/bench: plain mitmdump whose only work is sending provider hosts to the mock."""

import os

from mitmproxy import http

TARGET = int(os.environ["BENCH_MOCK_PORT"])
PROVIDERS = {"api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com"}


def request(flow: http.HTTPFlow) -> None:
    if flow.request.host in PROVIDERS:
        flow.request.scheme, flow.request.host, flow.request.port = "http", "127.0.0.1", TARGET
