"""moderation: harmful content and the policy's deny patterns in answers, through a real `douane run`, the
official SDKs of the three formats (plain and streamed) and a WebSocket: `redact` replaces the sentence
with `<MODERATED:<category>>`, `block` answers 403 (plain) or ends the stream with the provider's error
event before the harmful sentence leaves, `monitor` lets it through and records it. The row's reason
starts with `moderation.`.

One proxy serves the three actions: the policy redacts, two teams override it (block, monitor). The mock
provider's `*harmful*` models answer tests/mock_provider.HARMFUL_REPLY."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors

from tests.e2e.conftest import Douane, routed_policy
from tests.e2e.test_sanitize import as_client, ask, rows_of
from tests.e2e.test_sdks import only_row
from tests.e2e.test_websocket import create, socket, until, upstream, websocket_rows, ws_mock  # noqa: F401
from tests.mock_provider import HARMFUL_REPLY

MODELS = {"openai": "gpt-4o-mini-harmful", "anthropic": "claude-haiku-4-5-harmful",
          "gemini": "gemini-2.0-flash-harmful"}
PASSWORDS = {"redactor": "pw-redact", "blocker": "pw-block", "watcher": "pw-watch"}
REDACTED = "Sure, here is what to do. <MODERATED:violence> Anything else?"
DENIED = "The codename is Project Bluebird."


def creds(name: str) -> str:
    return f"{name}:{PASSWORDS[name]}"


def moderating_policy(upstream_url: str) -> dict[str, Any]:
    return routed_policy(
        upstream_url, moderation={"action": "redact", "deny": [r"\bproject bluebird\b"]},
        clients=[{"name": n, "team": t, "key_sha256": hashlib.sha256(PASSWORDS[n].encode()).hexdigest()}
                 for n, t in (("redactor", "plain"), ("blocker", "strict"), ("watcher", "observe"))],
        teams={"plain": {}, "strict": {"guards": {"moderation": {"action": "block"}}},
               "observe": {"guards": {"moderation": {"action": "monitor"}}}})


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, mock: str, certs: Path) -> Iterator[Douane]:
    d = Douane(tmp_path_factory.mktemp("moderation"), moderating_policy(mock), certs).start()
    yield d
    d.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_redact_replaces_the_harmful_sentence(proxy: Douane, fmt: str, stream: bool) -> None:
    reply, call_id = ask(fmt, proxy, creds("redactor"), "tell me", stream, model=MODELS[fmt])
    assert reply == REDACTED
    row = only_row(proxy, call_id)
    assert (row["decision"], row["stream"], row["guards"]) == ("allowed", stream, "policy")
    assert row["reason"].startswith("moderation.violence (redact)")
    assert row["output_findings"] == ["moderation:violence"]
    assert "stab" not in (row["response_body"] or ""), "the audit keeps the answer as it left"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_a_deny_pattern_redacts_its_sentence(proxy: Douane, fmt: str, stream: bool) -> None:
    reply, call_id = ask(fmt, proxy, creds("redactor"), f"{DENIED} Thanks.", stream)
    assert reply == "<MODERATED:deny> Thanks.", "the echo's first sentence carries the denied name"
    row = only_row(proxy, call_id)
    assert row["reason"].startswith("moderation.deny (redact)") and row["output_findings"] == ["moderation:deny"]
    assert "bluebird" not in (row["response_body"] or "").lower()


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_block_answers_403_naming_the_rule(proxy: Douane, fmt: str) -> None:
    before = len(rows_of(proxy, "blocker"))
    status, message = refused_with(fmt, proxy, MODELS[fmt])
    assert status == 403 and "moderation.violence" in message
    row = rows_of(proxy, "blocker", before + 1)[before]
    assert (row["decision"], row["status"], row["guards"]) == ("blocked", 403, "teams.strict.guards")
    assert row["reason"].startswith("moderation.violence") and row["output_findings"] == ["moderation:violence"]
    assert "stab" not in (row["response_body"] or "")


def refused_with(fmt: str, d: Douane, model: str) -> tuple[int, str]:
    """(status, message) of the SDK's error for a plain call refused by the blocker's settings."""
    with pytest.raises((openai.PermissionDeniedError, anthropic.PermissionDeniedError,
                        genai_errors.ClientError)) as e:
        ask(fmt, d, creds("blocker"), "tell me", model=model)
    err = e.value
    if isinstance(err, genai_errors.ClientError):
        return err.code, err.message or ""
    assert isinstance(err, openai.PermissionDeniedError | anthropic.PermissionDeniedError)
    return err.status_code, err.message


def test_block_ends_each_stream_with_the_providers_error_event(proxy: Douane) -> None:
    """The harmful sentence never leaves: the client gets the harmless one before it, then an error the
    SDK raises."""
    before = len(rows_of(proxy, "blocker"))
    with as_client(proxy, creds("blocker")):
        got = []
        with pytest.raises(openai.APIError) as e:
            text = ""
            stream = openai.OpenAI(api_key="sk-x", max_retries=0).chat.completions.create(
                model=MODELS["openai"], stream=True, messages=[{"role": "user", "content": "tell me"}])
            for chunk in stream:
                text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
        got.append(text)
        with pytest.raises(anthropic.APIStatusError) as ae:
            text = ""
            with anthropic.Anthropic(api_key="sk-x", max_retries=0).messages.stream(
                    model=MODELS["anthropic"], max_tokens=64, messages=[{"role": "user", "content": "tell me"}]) as s:
                for piece in s.text_stream:
                    text += piece
        got.append(text)
        g = genai.Client(api_key="x", http_options={"retry_options": {"attempts": 1}})
        with pytest.raises(genai_errors.ClientError) as ge:
            text = ""
            for ch in g.models.generate_content_stream(model=MODELS["gemini"], contents="tell me"):
                text += ch.text or ""
        got.append(text)
    assert "moderation.violence" in e.value.message and e.value.body["code"] == "moderation.violence"
    assert "moderation.violence" in str(ae.value.body)
    assert ge.value.code == 403 and "moderation.violence" in (ge.value.message or "")
    for text in got:
        assert "stab" not in text and text.startswith("Sure, here is what to do."), got
    rows = rows_of(proxy, "blocker", before + 3)[before:]
    assert [r["stream"] for r in rows] == [True, True, True]
    for r in rows:
        assert r["decision"] == "blocked" and r["reason"].startswith("moderation.violence")
        assert r["output_findings"] == ["moderation:violence"] and "stab" not in (r["response_body"] or "")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_monitor_forwards_unchanged_and_records(proxy: Douane, fmt: str, stream: bool) -> None:
    reply, call_id = ask(fmt, proxy, creds("watcher"), "tell me", stream, model=MODELS[fmt])
    assert reply == HARMFUL_REPLY
    row = only_row(proxy, call_id)
    assert (row["decision"], row["guards"]) == ("allowed", "teams.observe.guards")
    assert row["reason"].startswith("moderation.violence (monitor)")
    assert row["output_findings"] == ["moderation:violence"]


def test_a_websocket_answer_is_moderated_too(tmp_path: Path, ws_mock: str, upstream: str,  # noqa: F811
                                            certs: Path) -> None:
    """The Responses API over a WebSocket runs the same stages: the echoed harmful text is redacted for
    the policy's clients and ends the response with an error event for the blocking team's."""
    d = Douane(tmp_path, moderating_policy(ws_mock), certs).start()
    harmful = "Grab the knife and stab him in the throat until he stops moving. Bye."
    try:
        with socket(d, credentials=creds("redactor")) as conn:
            conn.send(create(harmful))
            redacted = until(conn, "response.completed")
        with socket(d, credentials=creds("blocker")) as conn:
            conn.send(create(harmful))
            blocked = until(conn, "response.completed")
        text = "".join(e["delta"] for e in redacted if e.get("type") == "response.output_text.delta")
        assert "stab" not in text and "<MODERATED:violence>" in text and text.endswith("Bye.")
        assert blocked[-1]["type"] == "error" and blocked[-1]["error"]["code"] == "moderation.violence"
        assert not any("stab" in (e.get("delta") or "") for e in blocked)
        first, second = websocket_rows(d, 2)
        assert first["reason"].startswith("moderation.violence (redact)")
        assert second["decision"] == "blocked" and second["reason"].startswith("moderation.violence")
    finally:
        d.stop()
