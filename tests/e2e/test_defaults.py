"""Request standardisation (`defaults:`) through a real `douane run`: what reaches the provider in
each of the three formats, plain and streamed, and what the row notes."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.e2e.conftest import Douane, body_of, routed_policy

ORG = "You are ACME's support assistant. Never promise refunds."
KEY = "bot-key"
RULE = {"when": {"team": "support"}, "temperature": 0.2, "max_tokens": 512,
        "max_tokens_cap": {"cap": 1024, "over": "clamp"}, "tag_user": True, "system_prompt": ORG}


def policy(mock: str, mode: str = "enforce") -> dict[str, Any]:
    return routed_policy(mock, mode=mode, teams={"support": {}}, defaults=[RULE],
                         clients=[{"name": "bot", "team": "support",
                                   "key_sha256": hashlib.sha256(KEY.encode()).hexdigest()}])


def call(fmt: str, stream: bool, extra: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """(url, body) of a chat call in the format, asking for a stream or not."""
    extra = extra or {}
    if fmt == "openai":
        return "https://api.openai.com/v1/chat/completions", {
            "model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "Where is it?"}],
            **extra}
    if fmt == "anthropic":
        return "https://api.anthropic.com/v1/messages", {
            "model": "claude-haiku-4-5", "max_tokens": 4000, "stream": stream,
            "messages": [{"role": "user", "content": "Where is it?"}], **extra}
    action = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:{action}", {
        "contents": [{"role": "user", "parts": [{"text": "Where is it?"}]}], **extra}


def system_texts(fmt: str, body: dict[str, Any]) -> list[str]:
    """Every system text the provider got, in order."""
    if fmt == "openai":
        return [m["content"] for m in body["messages"] if m["role"] == "system"]
    if fmt == "anthropic":
        system = body.get("system")
        return [system] if isinstance(system, str) else [b["text"] for b in system or []]
    return [p["text"] for p in body.get("systemInstruction", {}).get("parts", [])]


def send(d: Douane, url: str, body: dict[str, Any]) -> Any:
    with d.http(f"bot:{KEY}") as http:
        r = http.post(url, json=body)
    assert r.status_code == 200, r.text
    return r


@pytest.fixture(scope="module")
def standardising(tmp_path_factory: pytest.TempPathFactory, mock: str, certs: Any) -> Any:
    d = Douane(tmp_path_factory.mktemp("defaults"), policy(mock), certs).start()
    yield d
    d.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_the_provider_gets_the_standardised_call(standardising: Douane, received: list, fmt: str,
                                                 stream: bool) -> None:
    r = send(standardising, *call(fmt, stream))
    got = body_of(received[-1])
    row = standardising.rows(f"SELECT * FROM requests WHERE id = '{r.headers['x-douane-request-id']}'", expect=1)[0]

    assert system_texts(fmt, got) == [ORG]
    config = got.get("generationConfig", {}) if fmt == "gemini" else got
    assert config["temperature"] == 0.2
    if fmt == "openai":
        assert (got["max_tokens"], got["user"]) == (512, "bot")
        assert "defaults[0]: set max_tokens 512" in row["reason"]
    elif fmt == "anthropic":
        assert (got["max_tokens"], got["metadata"]) == (1024, {"user_id": "bot"})
        assert "defaults[0]: clamped max_tokens 4000 -> 1024" in row["reason"]
    else:
        assert config["maxOutputTokens"] == 512
        assert "defaults[0]: tag_user: Gemini has no end-user field; not tagged" in row["reason"]
    assert "defaults[0]: set temperature 0.2" in row["reason"]
    assert "it?" in r.text  # the mock's echo (word by word when streamed) came back through the answer stages


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_the_organisation_prompt_is_there_once(standardising: Douane, received: list, fmt: str) -> None:
    already = {"openai": None, "anthropic": {"system": ORG + " Be brief."},
               "gemini": {"systemInstruction": {"parts": [{"text": ORG}]}}}[fmt]
    url, body = call(fmt, False, already)
    if fmt == "openai":
        body["messages"].insert(0, {"role": "system", "content": ORG})
    send(standardising, url, body)
    texts = system_texts(fmt, body_of(received[-1]))
    assert texts == [ORG + " Be brief." if fmt == "anthropic" else ORG]


def test_monitor_mode_notes_what_it_would_change_and_changes_nothing(make_douane: Any, mock: str,
                                                                     received: list) -> None:
    d = make_douane(policy(mock, mode="monitor"))
    url, body = call("openai", False)
    r = send(d, url, body)
    got = body_of(received[-1])
    (row,) = d.rows(expect=1)
    assert got == body and row["id"] == r.headers["x-douane-request-id"]
    assert "monitor: would apply defaults[0]: prepended the system prompt" in row["reason"]
