"""AI services the policy does not name: workloads calling them are shadow AI."""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import socket

# Public LLM API hosts (globs). Hosts the policy names as providers are never shadow.
KNOWN_AI_HOSTS = (
    "api.openai.com", "*.openai.azure.com", "api.anthropic.com", "generativelanguage.googleapis.com",
    "*-aiplatform.googleapis.com", "aiplatform.googleapis.com", "bedrock-runtime.*.amazonaws.com",
    "api.mistral.ai", "api.cohere.ai", "api.cohere.com", "api.groq.com", "api.together.xyz",
    "api.together.ai", "api.fireworks.ai", "api.deepseek.com", "api.x.ai", "api.perplexity.ai",
    "openrouter.ai", "api-inference.huggingface.co", "router.huggingface.co", "api.replicate.com",
    "api.ai21.com", "api.moonshot.cn", "dashscope.aliyuncs.com", "api.cerebras.ai", "inference.baseten.co",
)


def is_ai_host(host: str, extra: list[str] | tuple[str, ...] = ()) -> bool:
    host = host.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(host, pattern) for pattern in (*KNOWN_AI_HOSTS, *extra))


_INET_ATON = re.compile(r"[0-9a-fA-FxX.]+")


def is_public_ip(host: str) -> bool:
    """A host written as a globally routable IP address (not private, loopback, link-local, ...), in
    any form the system resolver reads as one: `134744072`, `0x8080808` and `8.8.2056` all connect
    to 8.8.8.8, so they are judged as 8.8.8.8."""
    name = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(name).is_global
    except ValueError:
        pass
    if not _INET_ATON.fullmatch(name):
        return False
    try:
        return ipaddress.IPv4Address(socket.inet_aton(name)).is_global
    except OSError:
        return False

