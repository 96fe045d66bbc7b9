"""Gemini (Generative Language API) wire format: generateContent, streamGenerateContent, countTokens,
embeddings. Reads all; writes generateContent and streamGenerateContent.

The API reads protobuf JSON: fields in lowerCamelCase or snake_case, and one object where a list is
documented. Both are read, so that no spelling the API accepts carries text past the guards.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

from douane.providers.base import (
    Adapter,
    CanonicalRequest,
    CanonicalResponse,
    EventWriter,
    Message,
    StreamEvent,
    TextPart,
    ToolCall,
    ToolDef,
    ToolResult,
    UnreadableBody,
    Usage,
    as_dict,
    as_list,
    int_or_none,
    need_dict,
    need_str,
    number_or_none,
    sse,
    str_or_none,
    string_leaves,
    strings,
)

_PATH = re.compile(r"/(?:models|tunedModels)/(?P<model>[^/:?]+):(?P<method>[A-Za-z]+)")
_METHODS = {"generateContent", "streamGenerateContent", "countTokens", "embedContent", "batchEmbedContents"}


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _read_content(content: Any, kind: str, into: Message) -> None:
    """A Content's parts into `into`: texts, function calls and function responses. (Text parts
    inline: this runs for every message of every call.)"""
    if type(content) is not dict:
        if content is None:
            return
        raise UnreadableBody("", "an object", content)
    parts = content.get("parts")
    if type(parts) is not list:
        parts = as_list(parts, "parts", single=True)
    append = into.parts.append
    for part in parts:  # (the index is looked up only for an error)
        if type(part) is not dict:
            raise UnreadableBody(f"parts[{_index(parts, part)}]", "an object", part)
        text = part.get("text")
        if type(text) is str:
            append(TextPart(part, "text", kind))
        elif text is not None:
            raise UnreadableBody(f"parts[{_index(parts, part)}].text", "a string", text)
        else:
            try:
                _read_call_or_result(part, into)
            except UnreadableBody as e:
                raise e.within(f"parts[{_index(parts, part)}]") from None


def _index(items: list[Any], item: Any) -> int:
    return next(i for i, x in enumerate(items) if x is item)


def _read_call_or_result(part: dict[str, Any], into: Message) -> None:
    call = as_dict(_get(part, "functionCall", "function_call"), "functionCall")
    if call is not None:
        args = as_dict(call.get("args"), "functionCall.args")
        into.add_call(ToolCall(need_str(call.get("name"), "functionCall.name"), str_or_none(call.get("id")),
                               call, "args", list(string_leaves(args, "tool_call"))))
    result = as_dict(_get(part, "functionResponse", "function_response"), "functionResponse")
    if result is not None:
        parts = list(string_leaves(as_dict(result.get("response"), "functionResponse.response"), "tool_result"))
        into.add_result(ToolResult(str_or_none(result.get("id")), str_or_none(result.get("name")), result,
                                   "response", parts))


def _each_content(body: dict[str, Any], key: str) -> list[Message]:
    """The Contents under `key` (a list, or one), each a message."""
    messages = []
    for i, content in enumerate(as_list(body.get(key), key, single=True)):
        if type(content) is not dict:
            raise UnreadableBody(f"{key}[{i}]", "an object", content)
        role = content.get("role")
        message = Message(role if type(role) is str else "user", [])
        try:
            _read_content(content, "text", message)
        except UnreadableBody as e:
            raise e.within(f"{key}[{i}]") from None
        messages.append(message)
    return messages


def _json_schema(declaration: dict[str, Any]) -> dict[str, Any] | None:
    """A function's parameters as JSON Schema: `parametersJsonSchema` is one; `parameters` is Gemini's
    OpenAPI-style Schema, whose type names (OBJECT, STRING) JSON Schema spells in lower case."""
    schema = _get(declaration, "parametersJsonSchema", "parameters_json_schema")
    if isinstance(schema, dict):
        return schema
    schema = declaration.get("parameters")
    return _lower_types(schema) if isinstance(schema, dict) else None


def _lower_types(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_lower_types(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: _lower_types(s) for name, s in value.items()}
        elif key in ("items", "anyOf", "any_of"):
            out["anyOf" if key == "any_of" else key] = _lower_types(value)
        else:
            out[key] = value
    return out


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    output = int_or_none(raw.get("candidatesTokenCount"))
    thoughts = int_or_none(raw.get("thoughtsTokenCount"))
    return Usage(input_tokens=int_or_none(raw.get("promptTokenCount")),
                 output_tokens=None if output is None and thoughts is None else (output or 0) + (thoughts or 0),
                 cached_tokens=int_or_none(raw.get("cachedContentTokenCount")), reasoning_tokens=thoughts)


def _wire_usage(usage: Usage) -> dict[str, Any]:
    n_in, n_out, thoughts = usage.input_tokens or 0, usage.output_tokens or 0, usage.reasoning_tokens
    out: dict[str, Any] = {"promptTokenCount": n_in, "candidatesTokenCount": n_out - (thoughts or 0),
                           "totalTokenCount": n_in + n_out}
    if thoughts is not None:
        out["thoughtsTokenCount"] = thoughts
    if usage.cached_tokens is not None:
        out["cachedContentTokenCount"] = usage.cached_tokens
    return out


def _wire_parts(text: str, calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"text": text}] if text else []
    return parts + [{"functionCall": {"name": c.name or "", "args": c.arguments_object()}}
                    for c in calls if c.kind == "function"]


class GeminiAdapter(Adapter):
    format = "gemini"
    chat_endpoint = "generateContent"
    error_types = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                   404: "NOT_FOUND", 407: "UNAUTHENTICATED", 413: "INVALID_ARGUMENT",
                   429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE"}
    finish_in = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
                 "PROHIBITED_CONTENT": "content_filter", "BLOCKLIST": "content_filter", "SPII": "content_filter",
                 "IMAGE_SAFETY": "content_filter"}
    finish_out = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"}

    def endpoint(self, method: str, path: str) -> str | None:
        m = _PATH.search(path.split("?", 1)[0])
        if method != "POST" or not m or m.group("method") not in _METHODS:
            return None
        return m.group("method")

    @staticmethod
    def model_from_path(path: str) -> str | None:
        m = _PATH.search(path.split("?", 1)[0])
        return unquote(m.group("model")) if m else None

    # -- requests ---------------------------------------------------------------------------------
    def parse_request(self, endpoint: str, path: str, body: Any) -> CanonicalRequest:
        messages = self._conversation(body)
        if endpoint == "countTokens":  # the call to count may come whole
            inner = as_dict(_get(body, "generateContentRequest", "generate_content_request"),
                            "generateContentRequest")
            if inner is not None:
                try:
                    messages += self._conversation(inner)
                except UnreadableBody as e:
                    raise e.within("generateContentRequest") from None
        if endpoint == "embedContent":
            embedded = Message("user")
            try:
                _read_content(body.get("content"), "text", embedded)
            except UnreadableBody as e:
                raise e.within("content") from None
            messages.append(embedded)
        if endpoint == "batchEmbedContents":
            for i, req in enumerate(as_list(body.get("requests"), "requests", single=True)):
                embedded = Message("user")
                try:
                    _read_content(need_dict(req).get("content"), "text", embedded)
                except UnreadableBody as e:
                    raise e.within(f"requests[{i}].content") from None
                messages.append(embedded)
        config = as_dict(_get(body, "generationConfig", "generation_config"), "generationConfig") or {}
        return CanonicalRequest(endpoint, self.model_from_path(path), endpoint == "streamGenerateContent",
                                messages, body, int_or_none(_get(config, "maxOutputTokens", "max_output_tokens")),
                                number_or_none(config.get("temperature")),
                                number_or_none(_get(config, "topP", "top_p")),
                                strings(_get(config, "stopSequences", "stop_sequences")), self._tools(body))

    @staticmethod
    def _conversation(body: dict[str, Any]) -> list[Message]:
        messages = []
        system = _get(body, "systemInstruction", "system_instruction")
        if system is not None:
            message = Message("system")
            try:
                _read_content(system, "system", message)
            except UnreadableBody as e:
                raise e.within("systemInstruction") from None
            messages.append(message)
        return messages + _each_content(body, "contents")

    @staticmethod
    def _tools(body: dict[str, Any]) -> list[ToolDef]:
        """Function declarations, and Gemini's own tools (googleSearch, codeExecution, ...) by name."""
        defs = []
        for i, tool in enumerate(as_list(body.get("tools"), "tools", single=True)):
            tool = need_dict(tool, f"tools[{i}]")
            for key in tool:
                if key not in ("functionDeclarations", "function_declarations"):
                    defs.append(ToolDef(None, kind=key))
                    continue
                for j, fn in enumerate(as_list(tool[key], f"tools[{i}].{key}", single=True)):
                    fn = need_dict(fn, f"tools[{i}].{key}[{j}]")
                    defs.append(ToolDef(str_or_none(fn.get("name")), str_or_none(fn.get("description")) or "",
                                        _json_schema(fn)))
        return defs

    def write_request(self, request: CanonicalRequest, model: str) -> tuple[dict[str, Any], str]:
        names = {c.id: c.name for c in request.tool_calls() if c.id and c.name}
        contents: list[dict[str, Any]] = []

        def add(role: str, parts: list[dict[str, Any]]) -> None:
            if contents and contents[-1]["role"] == role:
                contents[-1]["parts"].extend(parts)
            else:
                contents.append({"role": role, "parts": parts})

        for m in request.messages:
            if m.speaker == "system":
                continue
            if m.tool_results:
                add("user", [{"functionResponse": {"name": r.name or names.get(r.call_id or "") or "tool",
                                                   "response": {"content": r.text}}} for r in m.tool_results])
            parts = _wire_parts(m.text, m.tool_calls)
            if parts:
                add("model" if m.speaker == "assistant" else "user", parts)
        body: dict[str, Any] = {"contents": contents}
        if request.system:
            body["systemInstruction"] = {"parts": [{"text": request.system}]}
        config: dict[str, Any] = {}
        for key, value in (("maxOutputTokens", request.max_tokens), ("temperature", request.temperature),
                           ("topP", request.top_p)):
            if value is not None:
                config[key] = value
        if request.stop:
            config["stopSequences"] = request.stop
        if config:
            body["generationConfig"] = config
        tools = [t for t in request.tools if t.kind == "function" and t.name]
        if tools:
            body["tools"] = [{"functionDeclarations": [
                {"name": t.name, "description": t.description,
                 "parametersJsonSchema": t.parameters or {"type": "object", "properties": {}}} for t in tools]}]
        method = "streamGenerateContent?alt=sse" if request.stream else "generateContent"
        return body, f"/v1beta/models/{model}:{method}"

    # -- replies ----------------------------------------------------------------------------------
    def _read_chunk(self, chunk: dict[str, Any], out: CanonicalResponse | StreamEvent) -> None:
        """One GenerateContentResponse (a whole reply, or one event of a stream) into `out`."""
        for i, cand in enumerate(as_list(chunk.get("candidates"), "candidates", single=True)):
            reply = Message("model")
            try:
                cand = need_dict(cand)
                content = cand.get("content")
                if content is not None:
                    try:
                        _read_content(content, "text", reply)
                    except UnreadableBody as e:
                        raise e.within("content") from None
            except UnreadableBody as e:
                raise e.within(f"candidates[{i}]") from None
            out.parts.extend(reply.parts)
            out.tool_calls.extend(reply.tool_calls)
            if i == 0:
                out.finish = self.finish_from(cand.get("finishReason"))
        if out.tool_calls and out.finish == "stop":  # Gemini says STOP after a function call
            out.finish = "tool_calls"
        out.model = str_or_none(chunk.get("modelVersion")) or out.model

    def parse_response(self, endpoint: str, body: Any) -> CanonicalResponse:
        out = CanonicalResponse(None, [], Usage())
        chunks = body if isinstance(body, list) else [body]  # streamGenerateContent without alt=sse: an array
        for i, chunk in enumerate(chunks):
            if isinstance(chunk, dict):
                try:
                    self._read_chunk(chunk, out)
                except UnreadableBody as e:
                    raise e.within(f"[{i}]") if chunks is body else e from None
                out.usage.update(_usage(chunk.get("usageMetadata")))
        return out

    def write_response(self, response: CanonicalResponse, model: str) -> dict[str, Any]:
        calls = response.tool_calls
        parts = _wire_parts(response.text, calls) or [{"text": ""}]
        return {"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0,
                                "finishReason": self.finish_out[response.finish or "stop"]}],
                "usageMetadata": _wire_usage(response.usage), "modelVersion": model}

    # -- streams ----------------------------------------------------------------------------------
    def parse_stream_event(self, endpoint: str, event_name: str | None, data: Any,
                           request: CanonicalRequest | None) -> StreamEvent:
        out = StreamEvent()
        if not isinstance(data, dict):
            return out
        self._read_chunk(data, out)
        out.final = out.finish is not None
        out.usage = _usage(data.get("usageMetadata"))
        err = data.get("error")
        out.error = str(err.get("message")) if isinstance(err, dict) else None
        return out

    def event_writer(self, model: str) -> EventWriter:
        return GeminiEventWriter(self, model)

    def error_body(self, status: int, message: str, code: str) -> dict[str, Any]:
        return {"error": {"code": status, "message": message, "status": self.error_type(status)}}


class GeminiEventWriter(EventWriter):
    """Text as it comes, one GenerateContentResponse per delta; function calls whole, in the last
    event (Gemini sends a call's arguments in one piece), with the finish reason and usage."""

    def __init__(self, adapter: Adapter, model: str):
        super().__init__(adapter, model)
        self._calls: dict[int, list[str]] = {}  # position -> [name, arguments so far]

    def text(self, text: str) -> bytes:
        return sse({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}],
                    "modelVersion": self.model})

    def tool_start(self, position: int, call_id: str, name: str) -> bytes:
        self._calls[position] = [name, ""]
        return b""

    def tool_arguments(self, position: int, fragment: str) -> bytes:
        self._calls.setdefault(position, ["", ""])[1] += fragment
        return b""

    def end(self, finish: str, usage: Usage) -> bytes:
        calls = [ToolCall(name, container={"a": args}, key="a") for name, args in self._calls.values()]
        parts = _wire_parts("", calls) or [{"text": ""}]
        return sse({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0,
                                    "finishReason": self.adapter.finish_out[finish]}],
                    "usageMetadata": _wire_usage(usage), "modelVersion": self.model})
