"""douane.mcp without mitmproxy: JSON-RPC posted to an MCP server judged, its answers (JSON or
server-sent events) filtered and scanned."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from douane.call import Call, new_call_id
from douane.gateway import Gateway
from douane.mcp import McpExchange, McpServers
from douane.policy import Policy
from douane.providers.sse import SSEFramer
from tests.unit.test_tools_request import INJECTION, gateway

POLICY = {"tools": {"deny": ["shell*"]}, "injection": {"tool_result_threshold": 0.3},
          "mcp": {"servers": {"files": {"hosts": ["mcp.internal", "tools.internal:8443"]}}}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    return gateway(tmp_path_factory.mktemp("gw"), **POLICY)


def exchange(gw: Gateway) -> McpExchange:
    servers = McpServers(gw.policy)
    server = servers.match("MCP.internal.", 443)
    assert server is not None and servers.match("tools.internal", 443) is None
    call = Call(id=new_call_id(), started=time.time(), provider=server.spec, host="mcp.internal", method="POST",
                path="/mcp", endpoint="post")
    return McpExchange(gw, call, server)


def post(ex: McpExchange, *messages: dict) -> dict | list | None:
    body = json.dumps(messages[0] if len(messages) == 1 else list(messages)).encode()
    out = ex.request(body)
    return None if out is None else json.loads(out)


def tool_call(i: int, name: str, **args: object) -> dict:
    return {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": name, "arguments": args}}


def test_servers_are_intercepted_by_host_and_port() -> None:
    servers = McpServers(Policy.model_validate(POLICY))
    assert servers.allow_hosts() == [r"^mcp\.internal\.?:[0-9]+$", r"^tools\.internal\.?:8443$"]
    assert servers.match("tools.internal", 8443) is not None


def test_a_denied_call_is_answered_with_a_json_rpc_error(gw: Gateway) -> None:
    ex = exchange(gw)
    answer = post(ex, tool_call(7, "shell_exec", command="ls"))
    assert isinstance(answer, dict) and answer["id"] == 7 and answer["error"]["data"]["rule"] == "tools.deny"
    assert "MCP server files" in answer["error"]["message"]
    assert ex.call.decision == "blocked" and ex.call.reasons[0] == "tools.deny" and ex.call.endpoint == "tools/call"
    assert [(u.direction, u.tool, u.decision) for u in ex.call.tool_calls] == [("call", "shell_exec", "blocked")]


def test_a_batch_is_refused_whole_when_one_message_is(gw: Gateway) -> None:
    ex = exchange(gw)
    answer = post(ex, tool_call(1, "add", a=1), tool_call(2, "shell", command="ls"),
                  {"jsonrpc": "2.0", "method": "notifications/progress"})
    assert isinstance(answer, list) and [a["id"] for a in answer] == [1, 2]
    assert [a["error"]["data"]["rule"] for a in answer] == ["batch", "tools.deny"]


def test_allowed_calls_go_through_and_unreadable_bodies_do_not(gw: Gateway) -> None:
    assert post(exchange(gw), tool_call(1, "add", a=1, b=2)) is None
    refused = json.loads(exchange(gw).request(b"{not json"))
    assert refused["error"]["data"]["rule"] == "unreadable_body"


def sse(*messages: dict) -> bytes:
    return b"".join(b"event: message\ndata: " + json.dumps(m).encode() + b"\n\n" for m in messages)


def test_streamed_answers_are_filtered_and_scanned_event_by_event(gw: Gateway) -> None:
    ex = exchange(gw)
    post(ex, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    post(ex, tool_call(2, "fetch_page", url="https://x.example"))
    post(ex, tool_call(3, "fetch_page", url="https://y.example"))
    listed = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "add"}, {"name": "shell"}]}}
    clean = {"jsonrpc": "2.0", "id": 2, "result": {"content": [{"type": "text", "text": "the docs"}]}}
    poisoned = {"jsonrpc": "2.0", "id": 3, "result": {"content": [{"type": "text", "text": INJECTION}]}}
    progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
    events = SSEFramer().feed(sse(listed, progress, clean, poisoned))
    out = [ex.answer_event(e) for e in events]
    assert [e.raw for e in events[1:3]] == out[1:3]  # untouched messages go out byte for byte
    first = json.loads(out[0].decode().split("data: ", 1)[1])
    assert [t["name"] for t in first["result"]["tools"]] == ["add"] and out[0].startswith(b"event: message\n")
    last = json.loads(out[3].decode().split("data: ", 1)[1])
    assert last["id"] == 3 and last["error"]["data"]["rule"] == "injection.tool_result"
    assert INJECTION not in out[3].decode()
    uses = [(u.direction, u.tool, u.decision, u.rule) for u in ex.call.tool_calls]
    assert ("definition", "shell", "stripped", "tools.deny") in uses
    assert uses[-2:] == [("result", "fetch_page", "allowed", None),
                         ("result", "fetch_page", "blocked", "injection.tool_result")]


def test_json_answers_are_filtered_and_pii_is_kept_out_of_the_audit(gw: Gateway) -> None:
    ex = exchange(gw)
    post(ex, tool_call(5, "lookup", email="jane.roe@example.com"))
    body = json.dumps({"jsonrpc": "2.0", "id": 5, "result": {"content": [
        {"type": "text", "text": "jane.roe@example.com is a customer"}]}}).encode()
    assert ex.answer_json(body) is None  # nothing to change for the client
    assert "jane.roe@example.com" not in (ex.call.request_body or "") + (ex.call.response_body or "")
    assert all("jane.roe" not in (u.arguments or "") for u in ex.call.tool_calls)


def test_monitor_mode_lets_everything_through_and_records(tmp_path: Path) -> None:
    gw = gateway(tmp_path, mode="monitor", **POLICY)
    ex = exchange(gw)
    assert post(ex, tool_call(1, "shell", command="ls")) is None
    assert [(u.tool, u.decision) for u in ex.call.tool_calls] == [("shell", "monitored")]
