"""OpenAI's Codex CLI, for real, through douane: its default transport is a WebSocket to
wss://api.openai.com/v1/responses. The mock answers only over WebSocket (plain HTTP gets a 404),
so a run that succeeds took the WebSocket path; the mock also keeps the upgrade it saw.

The CLI comes from the npm registry into tests/node (./scripts/test installs it)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import mock_ws
from tests.e2e.conftest import CA_VARS, ROOT, Douane, routed_policy
from tests.e2e.test_websocket import ws_mock  # noqa: F401 - the fixture

CODEX = ROOT / "tests" / "node" / "node_modules" / ".bin" / "codex"
EMAIL = "jane.roe@example.com"


@pytest.fixture()
def proxy(tmp_path: Path, ws_mock: str, certs: Path) -> Iterator[Douane]:  # noqa: F811
    mock_ws.reset()
    (tmp_path / "douane").mkdir()
    d = Douane(tmp_path / "douane", routed_policy(ws_mock), certs).start()
    yield d
    d.stop()


def codex_env(d: Douane, home: Path) -> dict[str, str]:
    """Codex with a throw-away home (no user config, no sessions kept), a fake key, douane as proxy."""
    env = {k: v for k, v in os.environ.items() if k not in CA_VARS and "PROXY" not in k.upper()
           and not k.startswith(("OPENAI", "CODEX"))}
    return {**env, "HOME": str(home), "CODEX_HOME": str(home / ".codex"), "CODEX_API_KEY": "sk-test-codex",
            "HTTPS_PROXY": d.proxy, "https_proxy": d.proxy, "NO_PROXY": "", "no_proxy": "",
            "SSL_CERT_FILE": d.bundle, "RUST_LOG": "warn"}


def test_codex_exec_goes_over_the_websocket_redacted_and_metered(proxy: Douane, tmp_path: Path) -> None:
    if not CODEX.exists():
        pytest.fail(f"{CODEX} is missing: ./scripts/test installs it (npm ci in tests/node)")
    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".codex").mkdir(parents=True)
    work.mkdir()
    run = subprocess.run(
        [str(CODEX), "exec", "--skip-git-repo-check", "--ephemeral", "--ignore-user-config", "--sandbox",
         "read-only", "-C", str(work), "-m", "gpt-4o-mini", f"say hello to {EMAIL}"],
        env=codex_env(proxy, home), cwd=work, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, f"codex failed:\n{run.stderr[-3000:]}\n--- douane ---\n{proxy.log()[-3000:]}"
    assert "echo: say hello to <EMAIL_ADDRESS>" in run.stdout, run.stdout

    upgrades = mock_ws.received("upgrade")
    assert upgrades and all(u["path"] == "/v1/responses" for u in upgrades), "the mock saw a WebSocket upgrade"
    assert not [h for h in mock_ws.received("http") if "/responses" in h["path"]], "no fallback to HTTPS"
    assert upgrades[0]["headers"]["authorization"] == "Bearer sk-test-codex"
    sent = [e["frame"] for e in mock_ws.received("frame") if (e["frame"] or {}).get("type") == "response.create"]
    assert sent and EMAIL not in json.dumps(sent), "the prompt reached the provider redacted"
    assert "say hello to <EMAIL_ADDRESS>" in json.dumps(sent[-1]["input"])

    rows = proxy.rows("SELECT * FROM requests WHERE method = 'WEBSOCKET' ORDER BY ts", expect=len(sent))
    assert len(rows) == len(sent), "one row per response (Codex warms the socket up with an empty one first)"
    answered = rows[-1]
    assert answered["provider"] == "openai" and answered["endpoint"] == "responses" and answered["stream"]
    assert answered["model"] == "gpt-4o-mini" and answered["pii_entities"] == ["EMAIL_ADDRESS"]
    assert answered["input_tokens"] == 11 and answered["output_tokens"] == 5 and answered["cost_usd"] > 0
    assert EMAIL not in (answered["request_body"] or "") + (answered["response_body"] or "")
