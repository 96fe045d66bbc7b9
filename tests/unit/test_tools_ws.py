"""Tool calls on the Responses API's WebSocket: the same holding and judging as a streamed HTTP answer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

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
