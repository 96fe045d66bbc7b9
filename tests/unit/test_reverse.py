"""Base-URL mode's pure parts: which provider a path names, where the SDK put its key, and the
douane key checked as proxy credentials are."""

from __future__ import annotations

import hashlib

import pytest

from douane.identity import ANONYMOUS, Directory, Identity
from douane.policy import Policy
from douane.providers.registry import ProviderSpec, ProviderTable
from douane.reverse import api_key, destination, unknown_path_message, workload_lines

PROVIDERS = ProviderTable([
    ProviderSpec("openai", "openai", ("api.openai.com",)),
    ProviderSpec("anthropic", "anthropic", ("api.anthropic.com",)),
    ProviderSpec("gemini", "gemini", ("generativelanguage.googleapis.com",)),
    ProviderSpec("inhouse", "openai", ("llm.internal:8443",)),
])


@pytest.mark.parametrize(("path", "expected"), [
    ("/openai/v1/chat/completions", ("openai", "api.openai.com", 443, "/v1/chat/completions")),
    ("/anthropic/v1/messages?beta=true", ("anthropic", "api.anthropic.com", 443, "/v1/messages?beta=true")),
    ("/gemini/v1beta/models/g:streamGenerateContent?alt=sse",
     ("gemini", "generativelanguage.googleapis.com", 443, "/v1beta/models/g:streamGenerateContent?alt=sse")),
    ("/inhouse/v1/chat/completions", ("inhouse", "llm.internal", 8443, "/v1/chat/completions")),
    ("/openai", ("openai", "api.openai.com", 443, "/")),
    ("/openai?x=1", ("openai", "api.openai.com", 443, "/?x=1")),
])
def test_the_first_segment_names_the_provider_and_the_rest_is_its_path(path: str, expected: tuple) -> None:
    where = destination(path, PROVIDERS)
    assert where is not None
    assert (where.spec.name, where.host, where.port, where.path) == expected and where.scheme == "https"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/", "", "/OpenAI/v1/chat", "/openai%2Fv1/chat",
                                  "/api.openai.com/v1/chat", "/mistral/v1/chat"])
def test_a_path_that_names_no_provider_has_no_destination(path: str) -> None:
    assert destination(path, PROVIDERS) is None
    message = unknown_path_message(path, PROVIDERS)
    assert "/openai, /anthropic, /gemini, /inhouse" in message and "OPENAI_BASE_URL=" in message


@pytest.mark.parametrize(("headers", "query", "key"), [
    ({"authorization": "Bearer bot:pw"}, {}, "bot:pw"),
    ({"authorization": "bearer  bot:pw "}, {}, "bot:pw"),
    ({"x-api-key": "bot:pw"}, {}, "bot:pw"),
    ({"x-goog-api-key": "bot:pw"}, {}, "bot:pw"),
    ({"api-key": "bot:pw"}, {}, "bot:pw"),
    ({}, {"key": "bot:pw"}, "bot:pw"),
    ({"authorization": "Basic Ym90OnB3"}, {}, None),
    ({}, {}, None),
])
def test_the_key_is_read_wherever_the_sdks_put_it(headers: dict, query: dict, key: str | None) -> None:
    assert api_key(headers, query) == key


def directory(clients: list[dict] | None) -> Directory:
    return Directory(Policy.model_validate({"version": 1, "clients": clients,
                                            "teams": {"web": {"models": ["*"]}} if clients else {}}))


def test_the_douane_key_is_the_proxy_credentials() -> None:
    d = directory([{"name": "bot", "team": "web", "key_sha256": hashlib.sha256(b"pw").hexdigest()}])
    assert d.identify_key("bot:pw") == Identity("bot", "web")
    for wrong in ("bot:nope", "other:pw", "pw", "", None, ":pw", "bot:"):
        assert d.identify_key(wrong) is None, wrong


def test_without_named_clients_every_key_is_anonymous() -> None:
    assert directory(None).identify_key("sk-anything") == Identity(ANONYMOUS, None)


def test_the_banner_lines_name_each_sdks_variable() -> None:
    lines = workload_lines("http://douane:8080", PROVIDERS, "CLIENT:KEY")
    assert "export OPENAI_BASE_URL=http://douane:8080/openai/v1" in lines
    assert "export ANTHROPIC_BASE_URL=http://douane:8080/anthropic" in lines
    assert "export GOOGLE_GEMINI_BASE_URL=http://douane:8080/gemini" in lines
    assert "export GEMINI_API_KEY=CLIENT:KEY" in lines
    assert "# inhouse (openai format): base URL http://douane:8080/inhouse" in lines
    assert not [line for line in workload_lines("http://d:1", PROVIDERS, None) if "API_KEY" in line]
