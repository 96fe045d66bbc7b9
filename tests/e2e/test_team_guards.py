"""Per-scope guard settings through a real `douane run` and the official SDKs: two clients of two teams
send the same prompt and get different outcomes (legal blocks PII, support pseudonymizes it), a
client's own settings sit on its team's, answers follow the scope's output guard, and every row
names the scope whose settings applied."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.e2e.conftest import Douane, routed_policy
from tests.e2e.test_sanitize import ask, last_user_text, refused_row, rows_of
from tests.e2e.test_sdks import EMAIL, only_row

AWS = "AKIAIOSFODNN7EXAMPLE"
PASSWORDS = {"lawyer": "pw-law", "agent": "pw-support", "intern": "pw-intern", "analyst": "pw-research"}
TEAMS = {"lawyer": "legal", "agent": "support", "intern": "legal", "analyst": "research"}


def creds(name: str) -> str:
    return f"{name}:{PASSWORDS[name]}"


def digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, mock: str, certs: Path) -> Iterator[Douane]:
    clients = [{"name": name, "team": TEAMS[name], "key_sha256": digest(pw)} for name, pw in PASSWORDS.items()]
    clients[2]["guards"] = {"pii": {"action": "monitor"}}  # the intern: only recorded, on top of legal's
    policy = routed_policy(mock, pii={"action": "redact"}, output={"secrets": "redact"}, clients=clients, teams={
        "legal": {"guards": {"pii": {"action": "block"}, "output": {"secrets": "block"}}},
        "support": {"guards": {"pii": {"action": "pseudonymize"}}},
        "research": {}})
    d = Douane(tmp_path_factory.mktemp("teams"), policy, certs).start()
    yield d
    d.stop()


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_two_teams_send_the_same_prompt_and_get_their_own_outcome(proxy: Douane, received: list, fmt: str) -> None:
    prompt = f"please write to {EMAIL} today"
    reply, support_id = ask(fmt, proxy, creds("agent"), prompt)
    assert last_user_text(fmt, received[-1]) == "please write to <EMAIL_ADDRESS_1> today"
    assert reply == f"echo: {prompt}", "support's pseudonyms are restored for the client"
    status, message, legal = refused_row(fmt, proxy, "lawyer", creds("lawyer"), prompt)
    assert status == 403 and "pii.block" in message
    assert len(received) == 1, "legal's call never left"
    support = only_row(proxy, support_id)
    assert support["guards"] == "teams.support.guards" and "pii.pseudonymize" in support["reason"]
    assert (legal["decision"], legal["guards"], legal["team"]) == ("blocked", "teams.legal.guards", "legal")
    assert legal["reason"] == "pii.block"


def test_a_team_without_guards_of_its_own_gets_the_policy(proxy: Douane, received: list) -> None:
    reply, call_id = ask("openai", proxy, creds("analyst"), f"mail {EMAIL}")
    assert reply == "echo: mail <EMAIL_ADDRESS>" and EMAIL not in received[-1]["raw"]
    row = only_row(proxy, call_id)
    assert row["guards"] == "policy" and "pii.redact" in row["reason"]


def test_a_client_scope_sits_on_its_team(proxy: Douane, received: list) -> None:
    reply, call_id = ask("anthropic", proxy, creds("intern"), f"mail {EMAIL}")
    assert EMAIL in received[-1]["raw"], "the intern's own setting: monitor"
    assert reply == f"echo: mail {EMAIL}"
    row = only_row(proxy, call_id)
    assert row["guards"] == "clients.intern.guards" and "pii.monitor: EMAIL_ADDRESS x1" in row["reason"]
    assert row["pii_entities"] == ["EMAIL_ADDRESS"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_answers_follow_the_scope_output_guard(proxy: Douane, stream: bool) -> None:
    reply, call_id = ask("openai", proxy, creds("agent"), f"the key is {AWS} ok", stream)
    assert reply == "echo: the key is <SECRET:AWS Access Key> ok", "support: the policy's redact"
    assert only_row(proxy, call_id)["output_findings"] == ["secret:AWS Access Key"]
    before = len(rows_of(proxy, "intern"))
    with pytest.raises((openai.APIError, anthropic.APIError)) as e:
        ask("openai", proxy, creds("intern"), f"the key is {AWS} ok", stream)  # legal's output block
    assert "output.secrets.block" in str(e.value)
    row = rows_of(proxy, "intern", before + 1)[before]
    assert row["decision"] == "blocked" and row["guards"] == "clients.intern.guards"
    assert AWS not in (row["response_body"] or "")
