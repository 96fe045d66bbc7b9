"""Which provider a target host belongs to, and the adapter for its wire format."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from douane.providers.anthropic import AnthropicAdapter
from douane.providers.base import Adapter, UnknownFormat
from douane.providers.gemini import GeminiAdapter
from douane.providers.openai import OpenAIAdapter

ADAPTERS: dict[str, Adapter] = {a.format: a for a in (OpenAIAdapter(), AnthropicAdapter(), GeminiAdapter())}


def adapter_for(fmt: str) -> Adapter:
    """The adapter of a wire format; an unknown one is an error, never a fallback to another format."""
    adapter = ADAPTERS.get(fmt)
    if adapter is None:
        raise UnknownFormat(f"unknown wire format {fmt!r}: douane reads and writes {', '.join(sorted(ADAPTERS))}")
    return adapter

# name -> (format, default hosts)
BUILTIN_PROVIDERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "openai": ("openai", ("api.openai.com",)),
    "anthropic": ("anthropic", ("api.anthropic.com",)),
    "gemini": ("gemini", ("generativelanguage.googleapis.com",)),
}


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    format: str
    hosts: tuple[str, ...]
    upstream: str | None = None
    api_key_env: str | None = None
    api_key_file: str | None = None
    adapter: Adapter = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "adapter", adapter_for(self.format))


class ProviderTable:
    """Maps the real target (CONNECT host and port) to a provider; never the client's Host header."""

    def __init__(self, specs: list[ProviderSpec]):
        self.specs = specs
        self._exact: dict[tuple[str, int | None], ProviderSpec] = {}
        for spec in specs:
            for host in spec.hosts:
                name, _, port = host.lower().partition(":")
                self._exact[(name, int(port) if port else None)] = spec

    def by_name(self, name: str) -> ProviderSpec:
        return next(s for s in self.specs if s.name == name)

    def match(self, host: str, port: int) -> ProviderSpec | None:
        host = host.lower().rstrip(".")
        return self._exact.get((host, port)) or self._exact.get((host, None))

    def allow_hosts(self) -> list[str]:
        """Regexes for mitmproxy's allow_hosts (matched without case): intercept these, tunnel
        everything else untouched. A trailing dot (`api.openai.com.`, a fully qualified name that
        some clients send) names the same host and must be intercepted too."""
        out = []
        for spec in self.specs:
            for host in spec.hosts:
                name, _, port = host.partition(":")
                out.append(f"^{re.escape(name.rstrip('.'))}\\.?:{port or '[0-9]+'}$")
        return out
