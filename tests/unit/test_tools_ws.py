"""Tool calls on the Responses API's WebSocket: the same holding and judging as a streamed HTTP answer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from douane.providers.openai_ws import REALTIME
from douane.websocket import Session
from tests.mock_provider import tool_events
from tests.unit.test_websocket import create, gateway, session


def server_events(name: str, args: dict) -> list[bytes]:
    """The mock's Responses stream for one call, as WebSocket frames (the SSE data of each event)."""
    return [e.split("data: ", 1)[1].strip().encode() for e in tool_events("openai", True, "m", [(name, args)])]


async def answer(s: Session, frames: list[bytes]) -> list[bytes]:
    sent = []
    for frame in frames:
        out = await s.server_frame(frame, True)
        sent += [frame] if out is None else out
    return sent


def test_a_denied_call_on_a_websocket_ends_the_response_with_an_error_frame(tmp_path: Path) -> None:
    gw, rows = gateway(tmp_path, tools={"deny": ["shell"]})
    s = session(gw)

    async def run() -> tuple[list[bytes], list[bytes]]:
        assert (await s.client_frame(create("go"), True)).forward
        allowed = await answer(s, server_events("search", {"q": "x"}))
        assert (await s.client_frame(create("again"), True)).forward
        return allowed, await answer(s, server_events("shell", {"command": "ls"}))

    allowed, denied = asyncio.run(run())
    assert allowed == server_events("search", {"q": "x"})  # frame for frame, byte for byte
    assert not any(b'"name": "shell"' in f for f in denied)
    errors = [json.loads(f) for f in denied if json.loads(f)["type"] == "error"]
    assert len(errors) == 1 and errors[0]["error"]["code"] == "tools.deny" and errors[0]["status"] == 403
    assert [(r.decision, [(t["tool"], t["decision"]) for t in r.tool_calls if t["direction"] == "call"])
            for r in rows] == [("allowed", [("search", "allowed")]), ("blocked", [("shell", "blocked")])]
    assert "tools.deny" in (rows[1].reason or "")


def realtime_call(name: str, arguments: str) -> list[bytes]:
    """A Realtime response that calls one function, its arguments in two deltas."""
    item = {"id": "item1", "type": "function_call", "name": name, "call_id": "c1", "arguments": ""}
    at = {"response_id": "r1", "item_id": "item1", "output_index": 0, "call_id": "c1"}
    half = len(arguments) // 2
    events = [{"type": "response.created", "response": {"id": "r1", "status": "in_progress", "output": []}},
              {"type": "response.output_item.added", "response_id": "r1", "output_index": 0, "item": item},
              {"type": "response.function_call_arguments.delta", **at, "delta": arguments[:half]},
              {"type": "response.function_call_arguments.delta", **at, "delta": arguments[half:]},
              {"type": "response.function_call_arguments.done", **at, "arguments": arguments},
              {"type": "response.output_item.done", "response_id": "r1", "output_index": 0,
               "item": {**item, "arguments": arguments}},
              {"type": "response.done", "response": {"id": "r1", "status": "completed", "output": [
                  {**item, "arguments": arguments}], "usage": {"input_tokens": 5, "output_tokens": 3}}}]
    return [json.dumps(e).encode() for e in events]


def test_realtime_function_calls_are_held_and_judged_too(tmp_path: Path) -> None:
    gw, rows = gateway(tmp_path, tools={"deny": ["shell"]})

    async def run(name: str) -> list[bytes]:
        s = session(gw, REALTIME)
        assert (await s.client_frame(json.dumps({"type": "response.create"}).encode(), True)).forward
        return await answer(s, realtime_call(name, '{"q": "x"}'))

    allowed = asyncio.run(run("search"))
    assert allowed == realtime_call("search", '{"q": "x"}')
    denied = asyncio.run(run("shell"))
    assert not any(b'"name": "shell"' in f for f in denied)
    assert [json.loads(f)["type"] for f in denied] == ["response.created", "error"]
    assert [(r.decision, [(t["tool"], t["decision"]) for t in r.tool_calls]) for r in rows] == [
        ("allowed", [("search", "allowed")]), ("blocked", [("shell", "blocked")])]


def test_a_denied_function_call_in_a_realtime_conversation_item_is_refused(tmp_path: Path) -> None:
    gw, rows = gateway(tmp_path, tools={"deny": ["shell"]})
    item = {"type": "conversation.item.create", "item": {"type": "function_call", "name": "shell", "call_id": "c1",
                                                         "arguments": '{"command": "ls"}'}}
    verdict = asyncio.run(session(gw, REALTIME).client_frame(json.dumps(item).encode(), True))
    assert not verdict.forward and b"tools.deny" in verdict.to_client[0]


def test_tool_results_sent_in_frames_before_a_response_are_on_its_row(tmp_path: Path) -> None:
    gw, rows = gateway(tmp_path, tools={"deny": ["shell"]})
    item = {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "c1",
                                                         "output": "42 files"}}

    async def run() -> None:
        s = session(gw, REALTIME)
        assert (await s.client_frame(json.dumps(item).encode(), True)).forward
        assert (await s.client_frame(json.dumps({"type": "response.create"}).encode(), True)).forward
        await answer(s, realtime_call("search", "{}"))

    asyncio.run(run())
    assert [(t["direction"], t["arguments"]) for t in rows[0].tool_calls] == [("result", "42 files"), ("call", "{}")]
