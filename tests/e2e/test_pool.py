"""`upstream.pool`: cold clients (a new process per call, the official SDKs) share douane's warm
upstream connections. The mock sits behind TLS and counts its TLS connections; every call is still
guarded (PII redacted at the mock), carries its own client's key or the central one, and is audited."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from douane.relay.pool import pooled_transport, send, upstream_tls
from douane.routing import outgoing_headers
from tests import mock_provider
from tests.e2e.conftest import CA_VARS, Douane, free_port, routed_policy
from tests.e2e.test_transparent import PYTHON_SDK, Namespace
from tests.e2e.test_transparent import workload_env as transparent_env

EMAIL = "jane.roe@example.com"

# one call per process, as a CLI or a job makes it; prints what the SDK returned
OPENAI_CALL = """
import sys, openai
stream = sys.argv[1] == "stream"
c = openai.OpenAI()
msgs = [{"role": "user", "content": "write to EMAIL please"}]
if stream:
    print("".join(ch.choices[0].delta.content or "" for ch in
                  c.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True) if ch.choices))
else:
    print(c.chat.completions.create(model="gpt-4o-mini", messages=msgs).choices[0].message.content)
""".replace("EMAIL", EMAIL)

ANTHROPIC_CALL = """
import sys, anthropic
c = anthropic.Anthropic()
msgs = [{"role": "user", "content": "write to EMAIL please"}]
if sys.argv[1] == "stream":
    with c.messages.stream(model="claude-sonnet-4-5", max_tokens=50, messages=msgs) as s:
        print("".join(s.text_stream))
else:
    print(c.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=msgs).content[0].text)
""".replace("EMAIL", EMAIL)


@pytest.fixture()
def tls_mock(tmp_path: Path) -> Iterator[tuple[str, mock_provider.TLSServer, str]]:
    """The mock provider behind TLS: (its URL, the server with its connection count, its certificate)."""
    cert, key = mock_provider.make_cert(str(tmp_path))
    port = free_port()
    server = mock_provider.serve_tls(port, cert, key)
    with mock_provider.LOCK:
        mock_provider.RECEIVED.clear()
        mock_provider.WARMUPS.clear()
    yield f"https://localhost:{port}", server, cert
    server.shutdown()
    server.server_close()


def cold_call(d: Douane, script: str, mode: str, env: dict[str, str]) -> str:
    """One client process, started, making its call, ending; what it printed."""
    base = {k: v for k, v in os.environ.items() if k not in CA_VARS and "PROXY" not in k.upper()}
    result = subprocess.run([sys.executable, "-c", script, mode], env={**base, **d.client_env(), **env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def start(make_douane: Any, url: str, cert: str, pool: bool, **providers: Any) -> Douane:
    policy = routed_policy(url, upstream={"pool": pool})
    for name, extra in providers.items():
        policy["providers"][name].update(extra)
    return make_douane(policy, args=("--set", f"ssl_verify_upstream_trusted_ca={cert}"),
                       env={"CENTRAL_ANTHROPIC_KEY": "sk-ant-central"})


def wait_warm(server: mock_provider.TLSServer, timeout: float = 30) -> None:
    """Until douane's warm-up has reached the mock (bounded; fails loudly)."""
    deadline = time.monotonic() + timeout
    while not mock_provider.WARMUPS:
        assert time.monotonic() < deadline, "douane never warmed its connection to the upstream"
        time.sleep(0.05)


def header(request: dict[str, Any], name: str) -> str | None:
    return next((v for k, v in request["headers"].items() if k.lower() == name), None)


def llm_requests() -> list[dict[str, Any]]:
    with mock_provider.LOCK:
        return [r for r in mock_provider.RECEIVED if r["body"] is not None]


def test_cold_clients_share_warm_connections_and_every_call_is_guarded_and_audited(
        make_douane: Any, tls_mock: tuple[str, mock_provider.TLSServer, str]) -> None:
    url, server, cert = tls_mock
    d = start(make_douane, url, cert, pool=True, anthropic={"api_key_env": "CENTRAL_ANTHROPIC_KEY"})
    wait_warm(server)
    calls = [(OPENAI_CALL, "plain"), (OPENAI_CALL, "stream"), (ANTHROPIC_CALL, "plain"), (ANTHROPIC_CALL, "stream"),
             (OPENAI_CALL, "plain")]
    outputs = []
    for i, (script, mode) in enumerate(calls):
        keys = {"OPENAI_API_KEY": f"sk-client-{i}", "ANTHROPIC_API_KEY": f"sk-ant-client-{i}"}
        outputs.append(cold_call(d, script, mode, keys))

    for out in outputs:  # every answer came back whole, the prompt's email redacted on the way out
        assert out.startswith("echo:") and EMAIL not in out and "please" in out
    sent = llm_requests()
    assert len(sent) == len(calls)
    assert all(EMAIL not in r["raw"] for r in sent), "a prompt reached the upstream unredacted"
    # each call carried its own client's key (OpenAI) or the central key (Anthropic), never another's
    assert [header(r, "authorization") for r in sent if "chat/completions" in r["path"]] == \
        ["Bearer sk-client-0", "Bearer sk-client-1", "Bearer sk-client-4"]
    assert [header(r, "x-api-key") for r in sent if r["path"].endswith("/messages")] == ["sk-ant-central"] * 2
    # the warm-up named no account: nothing in it could be billed
    for warm in mock_provider.WARMUPS:
        assert not {"authorization", "x-api-key", "x-goog-api-key", "api-key"} & {h.lower() for h in warm["headers"]}
    assert server.tls_connections < len(calls), \
        f"{server.tls_connections} TLS connections to the upstream for {len(calls)} cold clients: nothing was shared"

    rows = d.rows("SELECT * FROM requests ORDER BY ts", expect=len(calls))
    assert [(r["status"], r["decision"], r["stream"]) for r in rows] == \
        [(200, "allowed", False), (200, "allowed", True), (200, "allowed", False), (200, "allowed", True),
         (200, "allowed", False)]
    assert {r["upstream"] for r in rows} == {url}, "the row names where the call went, as on the direct path"
    assert all("EMAIL_ADDRESS" in r["pii_entities"] and EMAIL not in r["request_body"] for r in rows)
    assert all(r["output_tokens"] for r in rows), "every call metered from the provider's usage"


def test_without_the_pool_each_cold_client_opens_its_own_connection(
        make_douane: Any, tls_mock: tuple[str, mock_provider.TLSServer, str]) -> None:
    """The same clients with `upstream.pool` off: one upstream TLS connection each (what the pool saves)."""
    url, server, cert = tls_mock
    d = start(make_douane, url, cert, pool=False)
    for i in range(3):
        assert cold_call(d, OPENAI_CALL, "plain", {"OPENAI_API_KEY": f"sk-client-{i}"}).startswith("echo:")
    assert len(llm_requests()) == 3 and mock_provider.WARMUPS == [], "no warm-up without the pool"
    assert server.tls_connections == 3
    assert {r["upstream"] for r in d.rows(expect=3)} == {url}


def test_pooled_upstream_failures_keep_their_shapes(make_douane: Any,
                                                    tls_mock: tuple[str, mock_provider.TLSServer, str]) -> None:
    """The upstream's own error passes as it came; an unreachable one is douane's 502 in the provider's
    shape, as on the direct path; neither opens a circuit that would refuse the next call."""
    url, server, cert = tls_mock
    dead = f"https://localhost:{free_port()}"
    d = start(make_douane, url, cert, pool=True, gemini={"upstream": dead})
    with d.http() as http:
        for _ in range(4):  # more than the breaker's failures in a row: the pool has no breaker
            r = http.post("https://api.openai.com/v1/chat/completions", headers={"authorization": "Bearer sk-x"},
                          json={"model": "fail-500", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 500 and r.json()["error"]["message"] == "mock upstream error 500"
        r = http.post("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent",
                      headers={"x-goog-api-key": "k"}, json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert r.status_code == 502
    error = r.json()["error"]
    assert set(error) == {"code", "message", "status"} and error["code"] == 502
    assert "douane could not get an answer from gemini" in error["message"]
    rows = d.rows(expect=5)
    assert [row["status"] for row in rows] == [500, 500, 500, 500, 502]
    assert "upstream_failed" in rows[-1]["reason"] and rows[-1]["upstream"] == dead


def test_a_pooled_stream_flows_while_the_upstream_is_still_sending(
        make_douane: Any, tls_mock: tuple[str, mock_provider.TLSServer, str]) -> None:
    url, server, cert = tls_mock
    d = start(make_douane, url, cert, pool=True)
    mock_provider.HOLD.clear()
    mock_provider.HOLDING.clear()
    mock_provider.HELD_TOO_LONG.clear()
    try:
        with d.http() as http, http.stream(
                "POST", "https://api.openai.com/v1/chat/completions", headers={"authorization": "Bearer sk-x"},
                json={"model": "hold-model", "stream": True,
                      "messages": [{"role": "user", "content": "one two"}]}) as r:
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data:"))
            assert mock_provider.HOLDING.is_set() and not mock_provider.HELD_TOO_LONG, \
                "the first event reached the client only after the upstream had sent the whole stream"
            mock_provider.HOLD.set()
            rest = [line for line in lines if line.startswith("data:")]
    finally:
        mock_provider.HOLD.set()
    assert json.loads(first[5:])["choices"] and rest[-1] == "data: [DONE]"
    assert d.rows(expect=1)[0]["stream"] is True


def test_base_url_mode_shares_the_pool_and_forwards_with_the_central_key(
        make_douane: Any, tls_mock: tuple[str, mock_provider.TLSServer, str]) -> None:
    """`--mode reverse`: cold SDK processes set only a base URL and their douane key."""
    url, server, cert = tls_mock
    key = hashlib.sha256(b"s3cret").hexdigest()
    policy = routed_policy(url, upstream={"pool": True}, teams={"web": {"models": ["*"]}},
                           clients=[{"name": "cli-bot", "team": "web", "key_sha256": key}])
    for name in ("openai", "anthropic", "gemini"):
        policy["providers"][name]["api_key_env"] = f"CENTRAL_{name.upper()}_KEY"
    d = make_douane(policy, args=("--mode", "reverse", "--set", f"ssl_verify_upstream_trusted_ca={cert}"),
                    env={"CENTRAL_OPENAI_KEY": "sk-central", "CENTRAL_ANTHROPIC_KEY": "a", "CENTRAL_GEMINI_KEY": "g"})
    wait_warm(server)
    env = {"OPENAI_BASE_URL": f"http://127.0.0.1:{d.port}/openai/v1", "OPENAI_API_KEY": "cli-bot:s3cret"}
    base = {k: v for k, v in os.environ.items() if k not in CA_VARS and "PROXY" not in k.upper()}
    for mode in ("plain", "stream", "plain"):
        done = subprocess.run([sys.executable, "-c", OPENAI_CALL, mode], env={**base, **env}, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.startswith("echo:") and EMAIL not in done.stdout, done.stderr
    sent = llm_requests()
    assert [header(r, "authorization") for r in sent] == ["Bearer sk-central"] * 3
    assert all(EMAIL not in r["raw"] for r in sent) and server.tls_connections < 3
    rows = d.rows(expect=3)
    assert {(r["client"], r["status"], r["upstream"]) for r in rows} == {("cli-bot", 200, url)}


def test_a_fallback_still_falls_back_with_the_pool_on(make_douane: Any,
                                                      tls_mock: tuple[str, mock_provider.TLSServer, str]) -> None:
    url, server, cert = tls_mock
    policy = routed_policy(url, upstream={"pool": True}, fallbacks=[
        {"when": {"model": "fail-500"}, "on": ["5xx"], "retries": 0,
         "to": [{"provider": "anthropic", "model": "claude-x"}]}])
    d = make_douane(policy, args=("--set", f"ssl_verify_upstream_trusted_ca={cert}"))
    with d.http() as http:
        r = http.post("https://api.openai.com/v1/chat/completions", headers={"authorization": "Bearer sk-x"},
                      json={"model": "fail-500", "messages": [{"role": "user", "content": "hello there"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: hello there"
    assert [req["path"] for req in llm_requests()] == ["/v1/chat/completions", "/v1/messages"]
    row = d.rows(expect=1)[0]
    assert row["model"] == "claude-x" and "fallback: answered by anthropic/claude-x" in row["reason"]


def test_transparent_mode_shares_the_pool(tmp_path: Path, certs: Path,
                                          tls_mock: tuple[str, mock_provider.TLSServer, str]) -> None:
    """`--mode transparent` (the README's namespace + REDIRECT recipe): a workload with no proxy set."""
    url, server, cert = tls_mock
    ns = Namespace()
    try:
        ns.create()
        d = Douane(tmp_path, routed_policy(url, upstream={"pool": True}), certs,
                   ("--mode", "transparent", "--listen-host", ns.host_ip,
                    "--set", f"ssl_verify_upstream_trusted_ca={cert}"))
        ns.redirect_to(d.port)
        d.start()
        try:
            wait_warm(server)
            for mode in ("plain", "stream", "plain"):
                done = ns.run([sys.executable, "-c", PYTHON_SDK, mode, f"Write to {EMAIL} today"], transparent_env(d))
                assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}\n{d.log()[-2000:]}"
                answer = json.loads(done.stdout.strip().splitlines()[-1])["text"]
                assert answer == "echo: Write to <EMAIL_ADDRESS> today"
            rows = d.rows(expect=3)
        finally:
            d.stop()
    finally:
        ns.destroy()
    assert {(r["host"], r["upstream"], r["status"]) for r in rows} == {("api.openai.com", url, 200)}
    assert len(llm_requests()) == 3 and all(EMAIL not in r["raw"] for r in llm_requests())
    assert server.tls_connections < 3


def test_an_http2_upstream_takes_the_requests_the_pool_forwards(tmp_path: Path, mock: str) -> None:
    """HTTP/2 refuses connection-specific header fields: the headers a client sent, as the relay
    forwards them, must pass. The upstream: mitmdump in reverse mode before the mock, which takes
    HTTP/2 when the client offers it first (the pool's TLS context does)."""
    port = free_port()
    mitmdump = subprocess.Popen([str(Path(sys.executable).parent / "mitmdump"), "-q", "--mode", f"reverse:{mock}",
                                 "--listen-host", "127.0.0.1", "--listen-port", str(port),
                                 "--set", f"confdir={tmp_path}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client_headers = {"Host": "api.openai.com", "Connection": "keep-alive", "Keep-Alive": "timeout=5",
                      "Proxy-Authorization": "Basic eDp5", "TE": "trailers", "Authorization": "Bearer sk-client",
                      "Content-Type": "application/json", "X-Stainless-Lang": "python"}

    async def exchange() -> tuple[int, str, bytes]:
        transport = pooled_transport(upstream_tls(False, str(tmp_path / "mitmproxy-ca-cert.pem"), None))
        try:
            r = await send(transport, "POST", f"https://localhost:{port}/v1/chat/completions",
                           outgoing_headers(client_headers, drop=("content-length",)),
                           b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "over h2"}]}')
            body = await r.aread()
            await r.aclose()
            return r.status_code, r.http_version, body
        finally:
            await transport.aclose()

    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "mitmproxy-ca-cert.pem").exists() or not listening(port):
            assert mitmdump.poll() is None and time.monotonic() < deadline, "mitmdump did not start"
            time.sleep(0.05)
        status, version, body = asyncio.run(exchange())
    finally:
        mitmdump.terminate()
        mitmdump.wait(20)
    assert (status, version) == (200, "HTTP/2")
    assert json.loads(body)["choices"][0]["message"]["content"] == "echo: over h2"
    assert header(llm_requests()[-1], "authorization") == "Bearer sk-client"


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False
