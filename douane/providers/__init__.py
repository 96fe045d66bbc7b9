"""Wire formats: one adapter per provider format, plus SSE framing. Knows nothing of policy."""

from douane.providers.base import Adapter, CanonicalRequest, CanonicalResponse, StreamEvent, TextPart, Usage
from douane.providers.registry import ADAPTERS, BUILTIN_PROVIDERS, ProviderSpec, ProviderTable

__all__ = ["ADAPTERS", "BUILTIN_PROVIDERS", "Adapter", "CanonicalRequest", "CanonicalResponse",
           "ProviderSpec", "ProviderTable", "StreamEvent", "TextPart", "Usage"]
