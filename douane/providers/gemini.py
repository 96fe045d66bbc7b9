"""Gemini (Generative Language API) wire format: generateContent, streamGenerateContent, embeddings."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from douane.providers.base import (
    Adapter,
    CanonicalRequest,
    CanonicalResponse,
    Message,
    StreamEvent,
    TextPart,
    Usage,
    int_or_none,
    string_leaves,
)

_PATH = re.compile(r"/(?:models|tunedModels)/(?P<model>[^/:?]+):(?P<method>[A-Za-z]+)")
_METHODS = {"generateContent", "streamGenerateContent", "countTokens", "embedContent", "batchEmbedContents"}


def _parts_of(content: Any, kind: str) -> list[TextPart]:
    parts: list[TextPart] = []
    for part in content.get("parts") or [] if isinstance(content, dict) else []:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            parts.append(TextPart(part, "text", kind))
        elif isinstance(part.get("functionCall"), dict):
            parts.extend(string_leaves(part["functionCall"].get("args"), "tool_call"))
        elif isinstance(part.get("functionResponse"), dict):
            parts.extend(string_leaves(part["functionResponse"].get("response"), "tool_result"))
    return parts


class GeminiAdapter(Adapter):
    format = "gemini"
    error_types = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                   404: "NOT_FOUND", 407: "UNAUTHENTICATED", 413: "INVALID_ARGUMENT",
                   429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE"}

    def endpoint(self, method: str, path: str) -> str | None:
        m = _PATH.search(path.split("?", 1)[0])
        if method != "POST" or not m or m.group("method") not in _METHODS:
            return None
        return m.group("method")

    @staticmethod
    def model_from_path(path: str) -> str | None:
        m = _PATH.search(path.split("?", 1)[0])
        return unquote(m.group("model")) if m else None

    def parse_request(self, endpoint: str, path: str, body: Any) -> CanonicalRequest:
        messages: list[Message] = []
        system = body.get("systemInstruction") or body.get("system_instruction")
        if isinstance(system, dict):
            messages.append(Message("system", _parts_of(system, "system")))
        contents = body.get("contents")
        if isinstance(contents, dict):  # a single Content is accepted by the API too
            contents = [contents]
        for content in contents or []:
            if isinstance(content, dict):
                role = str(content.get("role", "user"))
                messages.append(Message(role, _parts_of(content, "text")))
        if endpoint == "embedContent":
            messages.append(Message("user", _parts_of(body.get("content"), "text")))
        for req in body.get("requests") or [] if endpoint == "batchEmbedContents" else []:
            if isinstance(req, dict):
                messages.append(Message("user", _parts_of(req.get("content"), "text")))
        config = body.get("generationConfig") or {}
        max_tokens = int_or_none(config.get("maxOutputTokens")) if isinstance(config, dict) else None
        return CanonicalRequest(endpoint, self.model_from_path(path), endpoint == "streamGenerateContent",
                                messages, body, max_tokens)

    @staticmethod
    def _usage(raw: Any) -> Usage | None:
        if not isinstance(raw, dict):
            return None
        output = int_or_none(raw.get("candidatesTokenCount"))
        thoughts = int_or_none(raw.get("thoughtsTokenCount"))
        return Usage(input_tokens=int_or_none(raw.get("promptTokenCount")),
                     output_tokens=None if output is None and thoughts is None else (output or 0) + (thoughts or 0),
                     cached_tokens=int_or_none(raw.get("cachedContentTokenCount")), reasoning_tokens=thoughts)

    def _candidate_parts(self, body: dict) -> list[TextPart]:
        parts: list[TextPart] = []
        for cand in body.get("candidates") or []:
            if isinstance(cand, dict):
                parts.extend(_parts_of(cand.get("content"), "text"))
        return parts

    def parse_response(self, endpoint: str, body: Any) -> CanonicalResponse:
        chunks = body if isinstance(body, list) else [body]  # streamGenerateContent without alt=sse: an array
        parts: list[TextPart] = []
        usage = Usage()
        model = None
        for chunk in chunks:
            if isinstance(chunk, dict):
                parts.extend(self._candidate_parts(chunk))
                usage.update(self._usage(chunk.get("usageMetadata")))
                model = chunk.get("modelVersion") if isinstance(chunk.get("modelVersion"), str) else model
        return CanonicalResponse(model, parts, usage)

    def parse_stream_event(self, endpoint: str, event_name: str | None, data: Any,
                           request: CanonicalRequest | None) -> StreamEvent:
        if not isinstance(data, dict):
            return StreamEvent()
        err = data.get("error")
        final = any(isinstance(c, dict) and c.get("finishReason") for c in data.get("candidates") or [])
        return StreamEvent(parts=self._candidate_parts(data), usage=self._usage(data.get("usageMetadata")),
                           model=data.get("modelVersion") if isinstance(data.get("modelVersion"), str) else None,
                           error=str(err.get("message")) if isinstance(err, dict) else None, final=final)

    def error_body(self, status: int, message: str, code: str) -> dict[str, Any]:
        return {"error": {"code": status, "message": message, "status": self.error_type(status)}}
