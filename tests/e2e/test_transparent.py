"""Transparent mode: a workload that sets no proxy at all, in a network namespace whose TCP 443 the
kernel redirects to `douane run --mode transparent` (the README's recipe: a veth pair and one
iptables REDIRECT rule). The official SDKs (Python's openai, Node's three) only trust douane's CA;
their calls are redacted at the mock, answered through douane and audited, plain and streamed.

Needs root, `ip netns` and iptables' nat table: when the kernel refuses one of them the test fails
and says which, it never skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import mock_provider
from tests.e2e.conftest import CA_VARS, ROOT, Douane, body_of, routed_policy

EMAIL = "jane.roe@example.com"
NODE_DIR = ROOT / "tests" / "node"
SDK_CALL = NODE_DIR / "sdk_call.mjs"
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest", "gemini": "gemini-2.0-flash"}
# What the workload's DNS answers for the providers: an address nothing listens on (TEST-NET-3), so a
# call that is not redirected to douane fails instead of reaching anything.
NOWHERE = "203.0.113.10"
PROVIDER_HOSTS = ("api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com")


def sh(*argv: str, netns: str | None = None) -> None:
    """Run a setup command; a refusal fails the test with the command and the kernel's words."""
    command = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.fail(f"transparent-mode setup: `{' '.join(command)}` failed ({done.returncode}): "
                    f"{done.stderr.strip()}; this test needs root, iproute2 and iptables with the nat table")


class Namespace:
    """A network namespace whose only way out is a veth pair to this host, and whose TCP 443 one
    iptables rule redirects to douane: the README's recipe."""

    def __init__(self) -> None:
        n = os.getpid() % 4000
        self.name = f"douane-t{os.getpid()}"
        self.host_if, self.peer_if = f"dth{n}", f"dtc{n}"
        self.host_ip, self.peer_ip = f"10.251.{n // 16}.{(n % 16) * 16 + 1}", f"10.251.{n // 16}.{(n % 16) * 16 + 2}"
        self.etc = Path("/etc/netns") / self.name
        self.rule: list[str] | None = None

    def create(self) -> Namespace:
        for tool in ("ip", "iptables"):
            if shutil.which(tool) is None:
                pytest.fail(f"{tool} is not on PATH: ./scripts/test installs iproute2 and iptables")
        sh("ip", "netns", "add", self.name)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if)
        sh("ip", "link", "set", self.peer_if, "netns", self.name)
        sh("ip", "addr", "add", f"{self.host_ip}/28", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        sh("ip", "link", "set", "lo", "up", netns=self.name)
        sh("ip", "addr", "add", f"{self.peer_ip}/28", "dev", self.peer_if, netns=self.name)
        sh("ip", "link", "set", self.peer_if, "up", netns=self.name)
        sh("ip", "route", "add", "default", "via", self.host_ip, netns=self.name)
        self.etc.mkdir(parents=True, exist_ok=True)  # `ip netns exec` mounts these over /etc
        (self.etc / "hosts").write_text(f"127.0.0.1 localhost\n{NOWHERE} {' '.join(PROVIDER_HOSTS)}\n")
        return self

    def redirect_to(self, port: int) -> None:
        """The recipe's one rule: the namespace's TCP 443 goes to douane's port on this host."""
        self.rule = ["PREROUTING", "-i", self.host_if, "-p", "tcp", "--dport", "443", "-j", "REDIRECT",
                     "--to-ports", str(port)]
        sh("iptables", "-t", "nat", "-A", *self.rule)

    def destroy(self) -> None:
        if self.rule is not None:
            subprocess.run(["iptables", "-t", "nat", "-D", *self.rule], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        shutil.rmtree(self.etc, ignore_errors=True)

    def run(self, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], env=env, cwd=cwd, capture_output=True,
                              text=True, timeout=120)


@pytest.fixture(scope="module")
def transparent(tmp_path_factory: pytest.TempPathFactory, mock: str, certs: Path) -> Iterator[tuple[Namespace,
                                                                                                     Douane]]:
    ns = Namespace()
    try:
        ns.create()
        d = Douane(tmp_path_factory.mktemp("transparent"), routed_policy(mock), certs,
                   ("--mode", "transparent", "--listen-host", ns.host_ip))
        ns.redirect_to(d.port)
        d.start()
        try:
            yield ns, d
        finally:
            d.stop()
    finally:
        ns.destroy()


def workload_env(d: Douane) -> dict[str, str]:
    """No proxy variable at all: only the CA (and the SDKs' keys)."""
    env = {k: v for k, v in os.environ.items()
           if k not in CA_VARS and "PROXY" not in k.upper() and not k.startswith(("OPENAI", "ANTHROPIC", "GEMINI",
                                                                                   "GOOGLE", "NODE_"))}
    return {**env, "SSL_CERT_FILE": d.bundle, "NODE_EXTRA_CA_CERTS": str(d.certs / "mitmproxy-ca-cert.pem"),
            "OPENAI_API_KEY": "sk-transparent", "ANTHROPIC_API_KEY": "sk-ant-transparent",
            "GEMINI_API_KEY": "transparent-key", "PYTHONPATH": str(ROOT)}


def assert_redacted_and_audited(d: Douane, received: list, call_id: str, provider: str, stream: bool,
                                host: str) -> None:
    row = d.rows(f"SELECT * FROM requests WHERE id = '{call_id}'", expect=1)[0]
    assert (row["provider"], row["stream"], row["status"], row["decision"]) == (provider, stream, 200, "allowed")
    assert row["host"] == host, "the provider's host, not the address the workload resolved"
    assert row["pii_entities"] == ["EMAIL_ADDRESS"]
    with mock_provider.LOCK:
        sent = json.dumps([body_of(r) for r in received if r["body"] is not None or r["raw"]])
    assert "<EMAIL_ADDRESS>" in sent and EMAIL not in sent, "redacted before it reached the provider"


PYTHON_SDK = """
import json, sys, openai
client = openai.OpenAI(max_retries=0)
messages = [{"role": "user", "content": sys.argv[2]}]
if sys.argv[1] == "stream":
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
else:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    text = raw.parse().choices[0].message.content
print(json.dumps({"text": text, "id": raw.headers.get("x-douane-request-id")}))
"""


@pytest.mark.parametrize("mode", ["plain", "stream"])
def test_python_sdk_without_a_proxy_goes_through_douane(transparent: tuple[Namespace, Douane], received: list,
                                                        mode: str) -> None:
    ns, d = transparent
    done = ns.run([sys.executable, "-c", PYTHON_SDK, mode, f"Write to {EMAIL} today"], workload_env(d))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}\n{d.log()[-2000:]}"
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["text"] == "echo: Write to <EMAIL_ADDRESS> today"
    assert_redacted_and_audited(d, received, got["id"], "openai", mode == "stream", "api.openai.com")


@pytest.mark.parametrize("mode", ["plain", "stream"])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_node_sdks_without_a_proxy_or_preload_go_through_douane(transparent: tuple[Namespace, Douane],
                                                                received: list, provider: str, mode: str) -> None:
    if not (NODE_DIR / "node_modules" / "openai").exists():
        pytest.fail(f"{NODE_DIR}/node_modules is missing: ./scripts/test installs it (npm ci in tests/node)")
    ns, d = transparent
    done = ns.run(["node", str(SDK_CALL), provider, mode, MODELS[provider], f"Write to {EMAIL} today"],
                  workload_env(d), cwd=NODE_DIR)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}\n{d.log()[-2000:]}"
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["text"] == "echo: Write to <EMAIL_ADDRESS> today"
    host = {"openai": "api.openai.com", "anthropic": "api.anthropic.com",
            "gemini": "generativelanguage.googleapis.com"}[provider]
    assert_redacted_and_audited(d, received, got["id"], provider, mode == "stream", host)


def test_a_host_header_naming_another_provider_than_the_server_name_is_refused(
        transparent: tuple[Namespace, Douane], received: list) -> None:
    """The provider/host agreement rule holds in transparent mode: the server name stands for the
    target, and a Host header naming another provider is refused (421) and recorded."""
    ns, d = transparent
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "misdirected"}]})
    done = ns.run(["curl", "-sS", "-w", "\n%{http_code}", "https://api.openai.com/v1/chat/completions",
                   "-H", "host: api.anthropic.com", "-H", "content-type: application/json", "--data-binary", body],
                  workload_env(d) | {"CURL_CA_BUNDLE": d.bundle})
    assert done.returncode == 0, done.stderr
    assert done.stdout.rsplit("\n", 1)[1] == "421"
    assert "the TLS server name names openai; the Host header names anthropic" in done.stdout
    row: dict[str, Any] = d.rows("SELECT * FROM requests WHERE status = 421", expect=1)[0]
    assert (row["decision"], row["provider"], row["host"]) == ("blocked", "openai", "api.openai.com")
    with mock_provider.LOCK:
        assert not [r for r in received if "misdirected" in (r["raw"] or "")], "nothing forwarded"


def test_transparent_mode_refuses_a_policy_that_names_clients(tmp_path: Path, mock: str, certs: Path) -> None:
    d = Douane(tmp_path, routed_policy(mock, clients=[{"name": "bot", "team": "web", "key_sha256": "0" * 64}],
                                      teams={"web": {"models": ["*"]}}), certs,
               ("--mode", "transparent"))
    with pytest.raises(RuntimeError, match="redirected connections carry no proxy credentials"):
        d.start()
    assert d.stop() == 1
