"""Everything douane learns about one call, filled stage by stage; the audit stage writes it once."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

from douane.audit.record import AuditRecord
from douane.meter.limits import Reservation
from douane.providers import CanonicalRequest, ProviderSpec, TextPart, ToolCall, ToolResult, Usage

METADATA_KEY = "douane"


# 128 random bits per call like a uuid4, from a generator seeded once by the OS rather than a
# getrandom() system call per call. Not a counter: ids must not tell a client how busy others are.
_IDS = random.Random(os.urandom(32))


def new_call_id() -> str:
    return f"dou_{_IDS.getrandbits(128):032x}"


# a tool call's arguments (or a result's text) kept in the audit: enough to see what was asked
MAX_TOOL_TEXT = 16_384


@dataclass(slots=True)
class ToolUse:
    """One tool call seen in a call, for the `tool_calls` view: asked by the model (call), resent in
    the history (history), a result sent back (result), or a tool offered to the model (definition)."""

    direction: str
    tool: str | None
    decision: str = "allowed"  # allowed | blocked | monitored (a rule matched in monitor) | stripped
    rule: str | None = None
    arguments: str | None = None  # as the audit keeps it: redacted, never a user's own values
    source: ToolCall | ToolResult | None = None  # in the request's body: read when the row is made, as it left

    def row(self, keep_text: bool = True, sent: bool = True) -> dict[str, str | None]:
        """`sent`: whether the request left (rewritten by the guards); the text of one that did not is
        not kept: it was never redacted."""
        text = self.arguments
        if self.source is not None:
            text = (self.source.arguments if isinstance(self.source, ToolCall) else self.source.text) if sent else None
        if not keep_text:
            text = None
        elif text is not None and len(text) > MAX_TOOL_TEXT:
            text = text[:MAX_TOOL_TEXT] + f"...[truncated {len(text) - MAX_TOOL_TEXT} chars]"
        return {"direction": self.direction, "tool": self.tool, "arguments": text, "decision": self.decision,
                "rule": self.rule}


@dataclass(slots=True)
class Call:
    id: str
    started: float  # epoch seconds, when the request arrived
    provider: ProviderSpec
    host: str
    method: str
    path: str  # without the query string
    endpoint: str | None
    client: str = "anonymous"
    team: str | None = None
    request: CanonicalRequest | None = None
    model_requested: str | None = None
    model: str | None = None
    stream: bool = False
    upstream: str | None = None
    decision: str = "allowed"
    reasons: list[str] = field(default_factory=list)
    pii_entities: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    strip_usage_chunk: bool = False
    body_changed: bool = False  # douane changed what the prompt says (redaction, routing, tools)
    forward_as_read: bool = False  # send douane's serialisation of the body even when unchanged
    error: str | None = None
    request_body: str | None = None
    response_body: str | None = None
    request_bytes: int | None = None
    response_bytes: int | None = None
    ttfb_ms: float | None = None
    latency_ms: float | None = None
    status: int | None = None
    recorded: bool = False
    estimated_tokens: int | None = None
    cost_usd: float | None = None
    price_source: str | None = None
    reservation: Reservation | None = None
    injection_score: float | None = None
    injection_rule: str | None = None
    pseudonyms: dict[str, str] = field(default_factory=dict)  # placeholder -> original, to restore
    output_findings: list[str] = field(default_factory=list)  # e.g. "secret:AWS Access Key"
    served_by: str | None = None  # the provider that answered (a route or fallback may change it)
    served_model: str | None = None
    other_parts: list[TextPart] = field(default_factory=list)  # strings of the body no adapter part reads
    other_keys: list[str] = field(default_factory=list)  # the body's object keys
    max_output_tokens: int | None = None  # the output cap the body asks for, checked
    choices: int = 1  # answers asked for (OpenAI n, Gemini candidateCount)
    usage_estimated: bool = False  # no usage from the provider: estimated from what was seen
    tool_calls: list[ToolUse] = field(default_factory=list)  # every tool call seen, for the audit
    client_request_id: str | None = None  # the client's own id for the call (x-request-id, idempotency-key)

    def note(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)

    def add_error(self, error: str) -> None:
        """Record an error; a later one adds to the earlier ones instead of replacing them."""
        if not self.error:
            self.error = error
        elif error not in self.error.split("; "):
            self.error = f"{self.error}; {error}"

    def to_record(self, mode: str, bodies: bool = True) -> AuditRecord:
        return AuditRecord(
            id=self.id,
            ts=datetime.fromtimestamp(self.started, UTC),
            client=self.client,
            team=self.team,
            provider=self.provider.name,
            endpoint=self.endpoint or "other",
            method=self.method,
            path=self.path,
            host=self.host,
            upstream=self.upstream,
            model_requested=self.model_requested,
            model=self.served_model or self.model or self.model_requested,
            served_by=self.served_by,
            stream=self.stream,
            status=self.status,
            decision=self.decision,
            reason="; ".join(self.reasons) or None,
            mode=mode,
            pii_entities=sorted(set(self.pii_entities)),
            output_findings=sorted(set(self.output_findings)),
            injection_score=self.injection_score,
            injection_rule=self.injection_rule,
            input_tokens=self.usage.input_tokens,
            output_tokens=self.usage.output_tokens,
            cached_tokens=self.usage.cached_tokens,
            reasoning_tokens=self.usage.reasoning_tokens,
            cost_usd=self.cost_usd,
            price_source=self.price_source,
            latency_ms=self.latency_ms,
            ttfb_ms=self.ttfb_ms,
            request_bytes=self.request_bytes,
            response_bytes=self.response_bytes,
            error=self.error,
            request_body=self.request_body,
            response_body=self.response_body,
            tool_calls=[use.row(bodies, sent=self.request_body is not None) for use in self.tool_calls],
            client_request_id=self.client_request_id,
        )
