"""Wire formats: one adapter per provider format, plus SSE framing. Knows nothing of policy."""

from douane.providers.base import (
    Adapter,
    CanonicalRequest,
    CanonicalResponse,
    Message,
    StreamEvent,
    TextPart,
    ToolCall,
    ToolDef,
    ToolResult,
    UnknownFormat,
    UnreadableBody,
    Untranslatable,
    Usage,
)
from douane.providers.registry import ADAPTERS, BUILTIN_PROVIDERS, ProviderSpec, ProviderTable, adapter_for

__all__ = ["ADAPTERS", "BUILTIN_PROVIDERS", "Adapter", "CanonicalRequest", "CanonicalResponse", "Message",
           "ProviderSpec", "ProviderTable", "StreamEvent", "TextPart", "ToolCall", "ToolDef", "ToolResult",
           "UnknownFormat", "UnreadableBody", "Untranslatable", "Usage", "adapter_for"]
