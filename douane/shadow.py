"""AI services the policy does not name: workloads calling them are shadow AI."""

from __future__ import annotations

import fnmatch
import ipaddress

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


def is_public_ip(host: str) -> bool:
    """A host written as a globally routable IP address (not private, loopback, link-local, ...)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_global
    except ValueError:
        return False

