"""MCP over streamable HTTP through douane: a real MCP server (the `mcp` package's MCPServer) and its
real client, through HTTPS_PROXY. tools/list filtered, tools/call judged, results scanned, each
exchange a row, each tool call a tool_calls row; answers as JSON and as server-sent events."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from mcp import Client
from mcp.server.mcpserver import MCPServer

from tests.e2e.conftest import Douane, free_port, routed_policy
from tests.e2e.test_tools import INJECTION

STYLES = ("sse", "json")


def mcp_server() -> MCPServer:
    server = MCPServer("files")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @server.tool()
    def shell(command: str) -> str:
        """Run a shell command."""
        return "ran " + command

    @server.tool()
    def fetch_page(url: str) -> str:
        """Fetch a web page."""
        return INJECTION if "evil" in url else "<html>the docs</html>"

    return server


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, int]]:
    """One MCP server answering with server-sent events, one answering with JSON."""
    ports, running = {}, []
    for style in STYLES:
        app = mcp_server().streamable_http_app(json_response=style == "json")
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "the MCP server did not start"
            time.sleep(0.02)
        ports[style] = port
        running.append(server)
    yield ports
    for server in running:
        server.should_exit = True


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, mock: str, certs: Any, servers: dict[str, int]) -> Iterator[Douane]:
    policy = routed_policy(mock, tools={"deny": ["shell*"]}, injection={"tool_result_threshold": 0.3},
                           mcp={"servers": {style: {"hosts": [f"{style}.mcp.test"], "upstream": f"http://127.0.0.1:{port}"}
                                            for style, port in servers.items()}})
    d = Douane(tmp_path_factory.mktemp("mcp"), policy, certs).start()
    yield d
    d.stop()


def session(d: Douane, style: str, work: Any) -> Any:
    """Run `work(client)` with a real MCP client connected through douane, as a workload would."""
    saved = dict(os.environ)
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "SSL_CERT_DIR", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        os.environ.pop(var, None)
    os.environ.update(d.client_env())

    async def run() -> Any:
        async with Client(f"https://{style}.mcp.test/mcp") as client:
            return await work(client)

    try:
        return asyncio.run(run())
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize("style", STYLES)
def test_tools_are_listed_without_denied_ones_and_allowed_calls_run(proxy: Douane, style: str) -> None:
    async def work(client: Client) -> tuple[list[str], Any]:
        listed = await client.list_tools()
        return [t.name for t in listed.tools], await client.call_tool("add", {"a": 2, "b": 3})

    names, result = session(proxy, style, work)
    assert names == ["add", "fetch_page"]
    assert not result.is_error and result.structured_content == {"result": 5}
    rows = proxy.rows(f"SELECT * FROM tool_calls WHERE provider = 'mcp:{style}' ORDER BY ts, position", expect=5)
    seen = {(r["direction"], r["tool"], r["decision"]) for r in rows}
    assert {("definition", "shell", "stripped"), ("definition", "add", "allowed"), ("call", "add", "allowed"),
            ("result", "add", "allowed")} <= seen


@pytest.mark.parametrize("style", STYLES)
def test_a_denied_call_never_reaches_the_server(proxy: Douane, style: str) -> None:
    async def work(client: Client) -> str:
        with pytest.raises(Exception) as e:  # noqa: B017 - the client raises its JSON-RPC error type
            await client.call_tool("shell", {"command": "rm -rf /"})
        return str(e.value)

    message = session(proxy, style, work)
    assert "tools.deny" in message
    row = proxy.rows(f"SELECT * FROM requests WHERE provider = 'mcp:{style}' AND endpoint = 'tools/call' "
                     "AND decision = 'blocked'", expect=1)[0]
    assert row["reason"].startswith("tools.deny") and "rm -rf" not in (row["response_body"] or "")
    calls = proxy.rows(f"SELECT * FROM tool_calls WHERE request_id = '{row['id']}'", expect=1)
    assert [(c["direction"], c["tool"], c["decision"], c["rule"]) for c in calls] == [
        ("call", "shell", "blocked", "tools.deny")]


@pytest.mark.parametrize("style", STYLES)
def test_a_result_carrying_an_injection_is_replaced_by_an_error(proxy: Douane, style: str) -> None:
    async def work(client: Client) -> tuple[Any, str]:
        fine = await client.call_tool("fetch_page", {"url": "https://docs.example.com"})
        with pytest.raises(Exception) as e:  # noqa: B017 - the client raises its JSON-RPC error type
            await client.call_tool("fetch_page", {"url": "https://evil.example"})
        return fine, str(e.value)

    fine, message = session(proxy, style, work)
    assert not fine.is_error and "the docs" in str(fine.content)
    assert "injection.tool_result" in message and "fetch_page" in message and "evil.example now" not in message
    results = proxy.rows(f"SELECT * FROM tool_calls WHERE provider = 'mcp:{style}' AND direction = 'result' "
                         "AND tool = 'fetch_page' ORDER BY ts", expect=2)
    assert [(r["decision"], r["rule"]) for r in results][-2:] == [("allowed", None), ("blocked",
                                                                                     "injection.tool_result")]
