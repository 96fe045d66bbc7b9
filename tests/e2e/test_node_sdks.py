"""The official Node SDKs (openai, @anthropic-ai/sdk, @google/genai, on Node's fetch), unmodified,
through douane with only what `douane env node` prints: plain and streamed, redacted, audited.

Node 20's fetch ignores HTTPS_PROXY; the lines put douane's preload (undici's EnvHttpProxyAgent,
shipped with douane) in NODE_OPTIONS. The SDKs come from the npm registry into tests/node
(./scripts/test installs them); tests/node has no undici of its own, so the preload's is douane's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import mock_provider
from tests.e2e.conftest import CA_VARS, ROOT, Douane, body_of, routed_policy

NODE_DIR = ROOT / "tests" / "node"
SDK_CALL = NODE_DIR / "sdk_call.mjs"
EMAIL = "jane.roe@example.com"
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest", "gemini": "gemini-2.0-flash"}
SDK_VARS = ("OPENAI", "ANTHROPIC", "GEMINI", "GOOGLE", "NODE_")


@pytest.fixture(scope="module")
def douane(tmp_path_factory: pytest.TempPathFactory, mock: str, certs: Path) -> Iterator[Douane]:
    """A proxy of this module's own, not the session's shared one: other modules count its rows."""
    d = Douane(tmp_path_factory.mktemp("node"), routed_policy(mock), certs).start()
    yield d
    d.stop()


def workload_env(**extra: str) -> dict[str, str]:
    """This machine's environment without anything that would decide the route or the trust for the
    workload (proxies, CA variables, SDK settings, Node options), plus the SDKs' keys."""
    env = {k: v for k, v in os.environ.items()
           if k not in CA_VARS and "PROXY" not in k.upper() and not k.startswith(SDK_VARS)}
    env.update({"OPENAI_API_KEY": "sk-node-client", "ANTHROPIC_API_KEY": "sk-ant-node-client",
                "GEMINI_API_KEY": "node-client-key"}, **extra)
    return env


def douane_env_command(*args: str) -> str:
    """The `douane env` command line, run with this checkout's code."""
    return " ".join([sys.executable, "-m", "douane.cli", "env", *args])


def run_node(lines: str, provider: str, mode: str, text: str, env: dict[str, str]) -> dict[str, Any]:
    """Run sdk_call.mjs after `eval`-ing the lines `douane env` printed, as a user's shell would."""
    if not (NODE_DIR / "node_modules" / "openai").exists():
        pytest.fail(f"{NODE_DIR}/node_modules is missing: ./scripts/test installs it (npm ci in tests/node)")
    script = f'eval "$({lines})" && exec node {SDK_CALL} "$@"'
    env = {**env, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["bash", "-c", script, "node", provider, mode, MODELS[provider], text], env=env,
                          cwd=NODE_DIR, capture_output=True, text=True, timeout=120)
    out = done.stdout.strip().splitlines()
    if done.returncode not in (0, 3) or not out:
        raise AssertionError(f"node exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return {**json.loads(out[-1]), "exit": done.returncode, "stderr": done.stderr}


@pytest.mark.parametrize("mode", ["plain", "stream"])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_node_sdk_goes_through_douane(douane: Douane, received: list, provider: str, mode: str) -> None:
    lines = douane_env_command("node", "--proxy", douane.proxy, "--certs", str(douane.certs))
    got = run_node(lines, provider, mode, f"Write to {EMAIL} today", workload_env())
    assert got["exit"] == 0, got
    assert got["text"] == "echo: Write to <EMAIL_ADDRESS> today", "redacted before it left, answered through douane"
    assert got["id"] and got["id"].startswith("dou_"), "the answer carries douane's request id"
    assert "UNDICI-EHPA" not in got["stderr"] and "experimental" not in got["stderr"]

    row = douane.rows(f"SELECT * FROM requests WHERE id = '{got['id']}'", expect=1)[0]
    assert (row["provider"], row["stream"], row["status"], row["decision"]) == (provider, mode == "stream", 200,
                                                                                 "allowed")
    assert row["client"] == "anonymous" and row["pii_entities"] == ["EMAIL_ADDRESS"]
    assert row["output_tokens"] and row["output_tokens"] > 0
    with mock_provider.LOCK:
        sent = [body_of(r) for r in received if r["body"] is not None or r["raw"]]
    assert sent, "the mock provider got the call"
    assert EMAIL not in json.dumps(sent) and "<EMAIL_ADDRESS>" in json.dumps(sent)


def test_without_the_preload_node_fetch_goes_round_douane(douane: Douane, received: list) -> None:
    """The control: the same call with HTTPS_PROXY and the CA but not NODE_OPTIONS never reaches douane
    (Node 20's fetch goes direct; here there is no route out, so it fails), and douane has no row of it."""
    if int(subprocess.run(["node", "-p", "process.versions.node.split('.')[0]"], capture_output=True, text=True,
                          check=True).stdout) >= 22:
        pytest.fail("this control is for Node < 22 (whose fetch ignores HTTPS_PROXY); adapt it to this Node")
    marker = "control-without-preload"
    lines = douane_env_command("node", "--proxy", douane.proxy, "--certs", str(douane.certs)) + \
        " | grep -v '^export NODE_OPTIONS='"
    got = run_node(lines, "openai", "plain", marker, workload_env())
    assert got["exit"] == 3 and "text" not in got, got
    assert douane.rows(f"SELECT id FROM requests WHERE request_body LIKE '%{marker}%'") == []
    assert not [r for r in received if marker in (r["raw"] or "")]


def test_node_sdk_with_proxy_credentials_is_the_named_client(make_douane: Any, mock: str) -> None:
    import hashlib

    d = make_douane(routed_policy(mock, clients=[{"name": "node-bot", "team": "web",
                                                  "key_sha256": hashlib.sha256(b"s3cret-node").hexdigest()}],
                                  teams={"web": {"models": ["*"]}}))
    proxy = f"http://node-bot:s3cret-node@127.0.0.1:{d.port}"
    got = run_node(douane_env_command("node", "--proxy", proxy, "--certs", str(d.certs)), "anthropic", "stream",
                   "hello", workload_env())
    assert got["exit"] == 0 and got["text"] == "echo: hello", got
    row = d.rows(f"SELECT * FROM requests WHERE id = '{got['id']}'", expect=1)[0]
    assert (row["client"], row["team"]) == ("node-bot", "web")

    wrong = run_node(douane_env_command("node", "--proxy", proxy.replace("s3cret", "wrong"), "--certs", str(d.certs)),
                     "anthropic", "plain", "hello", workload_env())
    assert wrong["exit"] == 3 and "text" not in wrong, "wrong credentials: the SDK gets douane's refusal"


def test_the_preload_fails_closed_when_it_cannot_install_the_proxy(tmp_path: Path) -> None:
    """A preload that cannot load its undici stops the process: a fetch that would go round douane
    must not go at all."""
    lonely = tmp_path / "preload.mjs"
    lonely.write_text((ROOT / "douane" / "node" / "preload.mjs").read_text())  # no undici beside it
    env = workload_env(HTTPS_PROXY="http://127.0.0.1:9", NODE_OPTIONS=f"--import={lonely}")
    done = subprocess.run(["node", "-e", "console.log('ran')"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "ran" not in done.stdout
    assert "douane preload: could not route fetch through HTTPS_PROXY" in done.stderr


def test_the_preload_steps_aside_only_where_node_proxies_by_itself() -> None:
    script = ("import { nodeHonoursEnvProxy as f } from " + json.dumps((ROOT / "douane/node/preload.mjs").as_uri())
              + "; const on = {NODE_USE_ENV_PROXY: '1'};"
              " console.log(JSON.stringify([f('20.20.2', on), f('22.20.0', on), f('22.21.0', on), f('23.9.0', on),"
              " f('24.4.1', on), f('24.5.0', on), f('25.0.0', on), f('24.5.0', {}),"
              " f('24.5.0', {NODE_USE_ENV_PROXY: '0'})]))")
    done = subprocess.run(["node", "--input-type=module", "-e", script], env=workload_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [False, False, True, False, False, True, True, False, False]
