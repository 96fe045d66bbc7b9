"""Base-URL (reverse) mode: for workloads that cannot trust douane's CA.

The workload points its SDK's base URL at douane over plain HTTP and sends a douane-issued key
where the SDK puts its API key. One listener serves every provider: the path's first segment names
it (the provider's name in the policy), the rest is the provider's own path:

    OPENAI_BASE_URL=http://douane:8080/openai/v1        -> https://api.openai.com/v1/...
    ANTHROPIC_BASE_URL=http://douane:8080/anthropic     -> https://api.anthropic.com/v1/...
    GOOGLE_GEMINI_BASE_URL=http://douane:8080/gemini    -> https://generativelanguage.googleapis.com/...

The key is the client's proxy credentials, `CLIENT:KEY`, checked against `key_sha256` in the policy
as for HTTPS_PROXY; douane removes it and forwards with the provider's central key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from douane.providers.registry import ProviderSpec, ProviderTable

# mitmproxy's reverse mode needs a destination; douane replaces it on every request it serves. It
# is a name that never resolves (RFC 2606 .invalid): a request douane did not place goes nowhere.
PLACEHOLDER_HOST = "douane.invalid"
PLACEHOLDER_PORT = 9
PLACEHOLDER = f"http://{PLACEHOLDER_HOST}:{PLACEHOLDER_PORT}"

# Where each provider's SDKs read their base URL from, and the part of it after douane's prefix.
BASE_URL_VARS = {"openai": ("OPENAI_BASE_URL", "/v1"), "anthropic": ("ANTHROPIC_BASE_URL", ""),
                 "gemini": ("GOOGLE_GEMINI_BASE_URL", "")}
KEY_VARS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}


@dataclass(frozen=True)
class Destination:
    spec: ProviderSpec
    scheme: str
    host: str
    port: int
    path: str  # the provider's own path, query included


def destination(path: str, providers: ProviderTable) -> Destination | None:
    """The provider the path's first segment names and the request's place there; None when it
    names no provider."""
    name, sep, rest = path.lstrip("/").partition("/")
    name, qsep, query = name.partition("?")
    spec = next((s for s in providers.specs if s.name == name), None)
    if spec is None or not spec.hosts:
        return None
    host, _, port = spec.hosts[0].partition(":")
    own = "/" + rest if sep else "/"
    if qsep:
        own += "?" + query
    return Destination(spec, "https", host, int(port) if port else 443, own)


def unknown_path_message(path: str, providers: ProviderTable) -> str:
    names = ", ".join(f"/{s.name}" for s in providers.specs)
    return (f"douane (base-URL mode): {path.split('?', 1)[0]!r} does not start with a provider's name ({names}); "
            "set the SDK's base URL to http://HOST:PORT/<provider>, e.g. OPENAI_BASE_URL=http://HOST:PORT/openai/v1")


def api_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The key the SDK sent, wherever its provider's SDKs put it: a Bearer token (OpenAI), x-api-key
    (Anthropic), x-goog-api-key or ?key= (Gemini), api-key (Azure OpenAI)."""
    bearer = headers.get("authorization", "")
    if bearer[:7].lower() == "bearer ":
        return bearer[7:].strip()
    for name in ("x-api-key", "x-goog-api-key", "api-key"):
        if headers.get(name):
            return headers[name].strip()
    return query.get("key") or None


def workload_lines(base: str, providers: ProviderTable, credentials: str | None) -> list[str]:
    """The variables a workload sets for base-URL mode (for `douane run`'s banner)."""
    lines = []
    for spec in providers.specs:
        if spec.name not in BASE_URL_VARS:  # a provider of the policy's own: its SDK's base-URL setting
            lines.append(f"# {spec.name} ({spec.format} format): base URL {base}/{spec.name}")
            continue
        var, suffix = BASE_URL_VARS[spec.name]
        lines.append(f"export {var}={base}/{spec.name}{suffix}")
        if credentials:
            lines.append(f"export {KEY_VARS[spec.name]}={credentials}")
    return lines
