"""addons.Pipeline: douane's addons as one mitmproxy chain entry, with the chain's semantics."""

from __future__ import annotations

import asyncio
import logging

import pytest

from addons import Pipeline


class Recorder:
    def __init__(self, name: str, seen: list[str]):
        self.name, self.seen = name, seen

    def request(self, flow: object) -> None:
        self.seen.append(f"{self.name}.request")


class AsyncRecorder(Recorder):
    async def request(self, flow: object) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        self.seen.append(f"{self.name}.request")

    async def response(self, flow: object) -> None:
        self.seen.append(f"{self.name}.response")


class Broken(Recorder):
    def request(self, flow: object) -> None:
        raise RuntimeError("boom")


def test_hooks_run_in_order_and_the_rest_waits_for_an_async_one() -> None:
    seen: list[str] = []
    pipeline = Pipeline([Recorder("a", seen), AsyncRecorder("b", seen), Recorder("c", seen)])
    pending = pipeline.request(None)  # type: ignore[attr-defined]
    assert seen == ["a.request"], "c must not run before b has finished"
    asyncio.run(pending)
    assert seen == ["a.request", "b.request", "c.request"]


def test_an_all_sync_hook_needs_no_coroutine() -> None:
    seen: list[str] = []
    assert Pipeline([Recorder("a", seen), Recorder("b", seen)]).request(None) is None  # type: ignore[attr-defined]
    assert seen == ["a.request", "b.request"]


def test_only_hooks_someone_defines_are_exposed() -> None:
    pipeline = Pipeline([Recorder("a", [])])
    assert hasattr(pipeline, "request") and not hasattr(pipeline, "response")


def test_an_addon_error_is_logged_and_the_next_addon_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []
    with caplog.at_level(logging.ERROR):
        Pipeline([Broken("x", seen), Recorder("b", seen)]).request(None)  # type: ignore[attr-defined]
    assert seen == ["b.request"]
    assert "Broken.request" in caplog.text and "boom" in caplog.text


def test_a_hook_it_would_not_forward_is_refused() -> None:
    class Tls:
        def tls_start_client(self, data: object) -> None: ...

    with pytest.raises(TypeError, match="tls_start_client"):
        Pipeline([Tls()])

