"""Base-URL (reverse) mode: `douane run --mode reverse`, for workloads that cannot trust a CA. The
official SDKs set only their base URL (http://douane/<provider>...) and, as their API key, the
client's douane key CLIENT:KEY: no proxy, no CA. douane identifies the client by it, forwards with
the provider's central key (the client's key never reaches the provider), and applies the same
guards, routes and audit: plain and streamed, in the three formats.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import mock_provider
from tests.e2e.conftest import CA_VARS, ROOT, Douane, body_of, routed_policy

EMAIL = "jane.roe@example.com"
NODE_DIR = ROOT / "tests" / "node"
SDK_CALL = NODE_DIR / "sdk_call.mjs"
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest", "gemini": "gemini-2.0-flash"}
DOUANE_KEY = "node-bot:s3cret-node"
CENTRAL = {"openai": "sk-central-openai", "anthropic": "sk-ant-central", "gemini": "central-gemini-key"}
KEY_HEADER = {"openai": ("authorization", f"Bearer {CENTRAL['openai']}"),
              "anthropic": ("x-api-key", CENTRAL["anthropic"]), "gemini": ("x-goog-api-key", CENTRAL["gemini"])}


def reverse_policy(mock: str, **extra: Any) -> dict[str, Any]:
    providers = {name: {"upstream": mock, "api_key_env": f"CENTRAL_{name.upper()}_KEY"} for name in CENTRAL}
    return routed_policy(mock, providers=providers, teams={"web": {"models": ["*"]}},
                         clients=[{"name": "node-bot", "team": "web",
                                   "key_sha256": hashlib.sha256(b"s3cret-node").hexdigest()}], **extra)


CENTRAL_ENV = {f"CENTRAL_{name.upper()}_KEY": key for name, key in CENTRAL.items()}


@pytest.fixture(scope="module")
def reverse(tmp_path_factory: pytest.TempPathFactory, mock: str, certs: Path) -> Any:
    routes = [{"when": {"model": "claude-routed"}, "set_provider": "openai", "set_model": "gpt-4o-mini"}]
    d = Douane(tmp_path_factory.mktemp("reverse"), reverse_policy(mock, routes=routes), certs, ("--mode", "reverse"),
               CENTRAL_ENV).start()
    yield d
    d.stop()


def workload_env(d: Douane, key: str = DOUANE_KEY) -> dict[str, str]:
    """The SDKs' base URLs and keys only: no proxy variable, no CA."""
    env = {k: v for k, v in os.environ.items()
           if k not in CA_VARS and "PROXY" not in k.upper()
           and not k.startswith(("OPENAI", "ANTHROPIC", "GEMINI", "GOOGLE", "NODE_"))}
    base = f"http://127.0.0.1:{d.port}"
    return {**env, "OPENAI_BASE_URL": f"{base}/openai/v1", "ANTHROPIC_BASE_URL": f"{base}/anthropic",
            "GOOGLE_GEMINI_BASE_URL": f"{base}/gemini", "OPENAI_API_KEY": key, "ANTHROPIC_API_KEY": key,
            "GEMINI_API_KEY": key}


def node_call(env: dict[str, str], provider: str, mode: str, text: str, model: str | None = None) -> dict[str, Any]:
    if not (NODE_DIR / "node_modules" / "openai").exists():
        pytest.fail(f"{NODE_DIR}/node_modules is missing: ./scripts/test installs it (npm ci in tests/node)")
    done = subprocess.run(["node", str(SDK_CALL), provider, mode, model or MODELS[provider], text], env=env,
                          cwd=NODE_DIR, capture_output=True, text=True, timeout=120)
    out = done.stdout.strip().splitlines()
    if done.returncode not in (0, 3) or not out:
        raise AssertionError(f"node exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return {**json.loads(out[-1]), "exit": done.returncode}


def sent_to_mock(received: list) -> list[dict[str, Any]]:
    with mock_provider.LOCK:
        return [dict(r) for r in received]


@pytest.mark.parametrize("mode", ["plain", "stream"])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_node_sdk_with_a_base_url_goes_through_douane(reverse: Douane, received: list, provider: str,
                                                      mode: str) -> None:
    got = node_call(workload_env(reverse), provider, mode, f"Write to {EMAIL} today")
    assert got["exit"] == 0, got
    assert got["text"] == "echo: Write to <EMAIL_ADDRESS> today", "redacted before it left, answered through douane"
    row = reverse.rows(f"SELECT * FROM requests WHERE id = '{got['id']}'", expect=1)[0]
    assert (row["provider"], row["stream"], row["status"], row["decision"]) == (provider, mode == "stream", 200,
                                                                                 "allowed")
    assert (row["client"], row["team"]) == ("node-bot", "web"), "identified by the douane key"
    assert row["pii_entities"] == ["EMAIL_ADDRESS"] and row["output_tokens"] > 0
    [call] = sent_to_mock(received)
    header, value = KEY_HEADER[provider]
    assert {k.lower(): v for k, v in call["headers"].items()}.get(header) == value, "the provider's central key"
    assert "s3cret-node" not in json.dumps(call), "the douane key never reaches the provider"
    assert EMAIL not in json.dumps(body_of(call))


@pytest.mark.parametrize("mode", ["plain", "stream"])
def test_python_sdk_with_a_base_url_goes_through_douane(reverse: Douane, received: list, mode: str) -> None:
    script = (
        "import json, sys, openai\n"
        "c = openai.OpenAI(max_retries=0)\n"
        "m = [{'role': 'user', 'content': sys.argv[2]}]\n"
        "if sys.argv[1] == 'stream':\n"
        "    r = c.chat.completions.with_raw_response.create(model='gpt-4o-mini', messages=m, stream=True)\n"
        "    text = ''.join(x.choices[0].delta.content or '' for x in r.parse() if x.choices)\n"
        "else:\n"
        "    r = c.chat.completions.with_raw_response.create(model='gpt-4o-mini', messages=m)\n"
        "    text = r.parse().choices[0].message.content\n"
        "print(json.dumps([text, r.headers.get('x-douane-request-id')]))\n")
    done = subprocess.run([sys.executable, "-c", script, mode, f"mail {EMAIL}"], env=workload_env(reverse),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    text, call_id = json.loads(done.stdout)
    assert text == "echo: mail <EMAIL_ADDRESS>"
    row = reverse.rows(f"SELECT * FROM requests WHERE id = '{call_id}'", expect=1)[0]
    assert (row["client"], row["provider"], row["stream"]) == ("node-bot", "openai", mode == "stream")


def test_a_route_still_sends_the_call_anywhere(reverse: Douane, received: list) -> None:
    """An Anthropic-format call routed to OpenAI: translated, sent with OpenAI's central key."""
    got = node_call(workload_env(reverse), "anthropic", "plain", "hello routed", model="claude-routed")
    assert got["exit"] == 0 and got["text"] == "echo: hello routed", got
    row = reverse.rows(f"SELECT * FROM requests WHERE id = '{got['id']}'", expect=1)[0]
    assert (row["client"], row["provider"], row["served_by"], row["model"]) == ("node-bot", "anthropic", "openai",
                                                                                "gpt-4o-mini")
    [call] = sent_to_mock(received)
    assert call["path"] == "/v1/chat/completions"
    assert {k.lower(): v for k, v in call["headers"].items()}["authorization"] == f"Bearer {CENTRAL['openai']}"


@pytest.mark.parametrize("key", ["node-bot:wrong", "s3cret-node", "sk-a-real-provider-key"])
def test_a_wrong_douane_key_is_refused_in_the_sdks_shape(reverse: Douane, received: list, key: str) -> None:
    got = node_call(workload_env(reverse, key), "openai", "plain", f"secret {EMAIL}")
    assert got["exit"] == 3 and got["status"] == 401 and "douane key" in got["error"], got
    assert sent_to_mock(received) == [], "nothing forwarded"


def test_a_path_naming_no_provider_is_answered_404(reverse: Douane, received: list) -> None:
    env = workload_env(reverse) | {"OPENAI_BASE_URL": f"http://127.0.0.1:{reverse.port}/v1"}
    got = node_call(env, "openai", "plain", "hello")
    assert got["exit"] == 3 and got["status"] == 404 and "/openai" in got["error"], got
    assert sent_to_mock(received) == []


def test_without_named_clients_callers_are_anonymous_and_their_key_goes_on(make_douane: Any,
                                                                           received: list) -> None:
    d = make_douane(args=("--mode", "reverse"))
    got = node_call(workload_env(d, "sk-the-teams-own-key"), "anthropic", "stream", "hi")
    assert got["exit"] == 0 and got["text"] == "echo: hi", got
    assert d.rows(f"SELECT client FROM requests WHERE id = '{got['id']}'", expect=1)[0]["client"] == "anonymous"
    [call] = sent_to_mock(received)
    assert "sk-the-teams-own-key" in json.dumps(call["headers"]), "the caller's own key, where its SDK put it"


def test_named_clients_without_central_keys_are_refused_at_start(make_douane: Any, mock: str) -> None:
    policy = reverse_policy(mock)
    del policy["providers"]["gemini"]["api_key_env"]
    d = make_douane(policy, start=False, args=("--mode", "reverse"), env=CENTRAL_ENV)
    with pytest.raises(RuntimeError, match="no central key for gemini"):
        d.start()
