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


def test_an_addon_error_goes_to_the_error_handler_and_the_next_addon_still_runs() -> None:
    seen: list[str] = []
    errors: list[tuple[str, str, tuple, str]] = []
    pipeline = Pipeline([Broken("x", seen), Recorder("b", seen)],
                        on_error=lambda stage, hook, args, e: errors.append((stage, hook, args, str(e))))
    pipeline.request("flow")  # type: ignore[attr-defined]
    assert errors == [("x", "request", ("flow",), "boom")], "the handler decides what the error means"
    assert seen == ["b.request"], "later stages run: they see what the handler did to the flow"


def test_an_async_addon_error_goes_to_the_error_handler_too() -> None:
    class AsyncBroken(Recorder):
        async def request(self, flow: object) -> None:  # type: ignore[override]
            await asyncio.sleep(0)
            raise ValueError("late")

    seen: list[str] = []
    errors: list[str] = []
    pipeline = Pipeline([AsyncBroken("a", seen), Recorder("b", seen)],
                        on_error=lambda stage, hook, args, e: errors.append(f"{stage}.{hook}: {e}"))
    asyncio.run(pipeline.request(None))  # type: ignore[attr-defined]
    assert errors == ["a.request: late"] and seen == ["b.request"]


def test_without_a_handler_the_error_is_logged_with_its_stage(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        Pipeline([Broken("x", [])]).request(None)  # type: ignore[attr-defined]
    assert "x.request" in caplog.text and "boom" in caplog.text


def test_a_failing_error_handler_kills_the_flow() -> None:
    from mitmproxy.test import tflow

    def handler(stage: str, hook: str, args: tuple, error: Exception) -> None:
        raise RuntimeError("the handler broke too")

    flow = tflow.tflow()
    Pipeline([Broken("x", [])], on_error=handler).request(flow)  # type: ignore[attr-defined]
    assert flow.error is not None and not flow.live, "a flow whose error nobody could handle must not go on"


def test_a_hook_it_would_not_forward_is_refused() -> None:
    class Tls:
        def tls_start_client(self, data: object) -> None: ...

    with pytest.raises(TypeError, match="tls_start_client"):
        Pipeline([Tls()])

