"""Anthropic's Claude Code, for real, through douane (non-interactive, `claude -p`), against the mock
answering with a Bash tool call: the call the policy allows runs (its file appears), the one it
denies never reaches Claude Code (no file; Claude Code reports douane's error), and both are rows.

The CLI comes from the npm registry into tests/node (./scripts/test installs it)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import CA_VARS, ROOT, Douane, routed_policy

CLAUDE = ROOT / "tests" / "node" / "node_modules" / ".bin" / "claude"


def claude(d: Douane, home: Path, work: Path, command: str) -> subprocess.CompletedProcess[str]:
    """`claude -p` asked (through the mock) to run `command` with its Bash tool, which it may use."""
    env = {k: v for k, v in os.environ.items() if k not in CA_VARS and "PROXY" not in k.upper()
           and not k.startswith(("ANTHROPIC", "CLAUDE"))}
    env.update({"HOME": str(home), "HTTPS_PROXY": d.proxy, "https_proxy": d.proxy, "NO_PROXY": "", "no_proxy": "",
                "NODE_EXTRA_CA_CERTS": str(d.certs / "mitmproxy-ca-cert.pem"), "ANTHROPIC_API_KEY": "sk-ant-test",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"})
    prompt = "CALL Bash " + json.dumps({"command": command, "description": "make a file"})
    return subprocess.run([str(CLAUDE), "-p", prompt, "--model", "claude-tool-call", "--allowedTools", "Bash",
                           "--output-format", "json"], env=env, cwd=work, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=180)


def test_claude_code_runs_the_allowed_call_and_never_sees_the_denied_one(make_douane: Any, mock: str,
                                                                         tmp_path: Path) -> None:
    if not CLAUDE.exists():
        pytest.fail(f"{CLAUDE} is missing: ./scripts/test installs it (npm ci in tests/node)")
    d = make_douane(routed_policy(mock, tools={"arguments": [
        {"name": "no-forbidden", "tools": ["Bash"], "argument": "command", "deny": "forbidden"}]}))
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()

    ran = claude(d, home, work, "touch allowed.txt")
    assert ran.returncode == 0, f"claude failed:\n{ran.stdout[-2000:]}\n{ran.stderr[-2000:]}\n{d.log()[-2000:]}"
    assert (work / "allowed.txt").exists(), "the allowed Bash call ran"
    assert json.loads(ran.stdout)["num_turns"] == 2  # the call, then its result sent back

    refused = claude(d, home, work, "touch forbidden.txt")
    assert not (work / "forbidden.txt").exists(), "the denied call never reached Claude Code"
    out = json.loads(refused.stdout)
    assert out["is_error"] and "tools.arguments.no-forbidden" in out["result"]

    calls = d.rows("SELECT * FROM tool_calls WHERE tool = 'Bash' AND direction <> 'definition' ORDER BY ts, position",
                   expect=4)
    seen = [(c["direction"], c["decision"], c["rule"],
             None if c["direction"] == "result" else json.loads(c["arguments"])["command"]) for c in calls]
    assert seen == [("call", "allowed", None, "touch allowed.txt"), ("history", "allowed", None, "touch allowed.txt"),
                    ("result", "allowed", None, None), ("call", "blocked", "tools.arguments.no-forbidden",
                                                        "touch forbidden.txt")]
    blocked = d.rows(f"SELECT * FROM requests WHERE id = '{calls[-1]['request_id']}'", expect=1)[0]
    assert blocked["decision"] == "blocked" and blocked["reason"].startswith("tools.arguments.no-forbidden")
