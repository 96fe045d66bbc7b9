"""Translation between wire formats (OpenAI chat, Anthropic messages, Gemini), for routes and
fallbacks that cross providers: requests, plain replies, and streams event by event.

Everything goes through one neutral shape, so each format needs a reader and a writer, not one
converter per pair. What a format cannot express is dropped (images, provider-specific options).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------------------------------------
# neutral shapes


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass
class Turn:
    role: str  # user | assistant | tool
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    tool_name: str | None = None


@dataclass
class Chat:
    model: str | None
    system: str = ""
    turns: list[Turn] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)  # {name, description, parameters}
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False


@dataclass
class Reply:
    model: str | None
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish: str = "stop"  # stop | length | tool_calls | content_filter
    input_tokens: int | None = None
    output_tokens: int | None = None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content
                       if not isinstance(p, dict) or p.get("type") in (None, "text", "input_text", "output_text"))
    return ""


def _call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


# ---------------------------------------------------------------------------------------------
# requests


def read_request(fmt: str, body: dict[str, Any], model: str | None = None, stream: bool = False) -> Chat:
    if fmt == "openai":
        return _read_openai(body)
    if fmt == "anthropic":
        return _read_anthropic(body)
    return _read_gemini(body, model, stream)


def write_request(fmt: str, chat: Chat, model: str) -> tuple[dict[str, Any], str]:
    """The body and the path for `fmt`."""
    if fmt == "openai":
        return _write_openai(chat, model), "/v1/chat/completions"
    if fmt == "anthropic":
        return _write_anthropic(chat, model), "/v1/messages"
    method = "streamGenerateContent?alt=sse" if chat.stream else "generateContent"
    return _write_gemini(chat), f"/v1beta/models/{model}:{method}"


def _read_openai(body: dict[str, Any]) -> Chat:
    stop = body.get("stop")
    chat = Chat(model=body.get("model"), max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
                temperature=body.get("temperature"), top_p=body.get("top_p"),
                stop=[stop] if isinstance(stop, str) else list(stop or []), stream=body.get("stream") is True)
    systems = []
    for msg in body.get("messages") or []:
        role = msg.get("role")
        if role in ("system", "developer"):
            systems.append(_text(msg.get("content")))
        elif role == "tool":
            chat.turns.append(Turn("tool", _text(msg.get("content")), tool_call_id=msg.get("tool_call_id")))
        else:
            calls = [ToolCall(c.get("id") or _call_id(), c["function"]["name"],
                              c["function"].get("arguments") or "{}")
                     for c in msg.get("tool_calls") or [] if c.get("function")]
            chat.turns.append(Turn("assistant" if role == "assistant" else "user", _text(msg.get("content")),
                                   tool_calls=calls))
    chat.system = "\n\n".join(s for s in systems if s)
    for tool in body.get("tools") or []:
        fn = tool.get("function") or {}
        if fn.get("name"):
            chat.tools.append({"name": fn["name"], "description": fn.get("description", ""),
                               "parameters": fn.get("parameters") or {"type": "object", "properties": {}}})
    return chat


def _write_openai(chat: Chat, model: str) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if chat.system:
        messages.append({"role": "system", "content": chat.system})
    for t in chat.turns:
        if t.role == "tool":
            messages.append({"role": "tool", "tool_call_id": t.tool_call_id or "", "content": t.text})
        elif t.role == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": t.text or None}
            if t.tool_calls:
                msg["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments}} for c in t.tool_calls]
            messages.append(msg)
        else:
            messages.append({"role": "user", "content": t.text})
    body: dict[str, Any] = {"model": model, "messages": messages}
    if chat.max_tokens:
        body["max_tokens"] = chat.max_tokens
    for key, value in (("temperature", chat.temperature), ("top_p", chat.top_p)):
        if value is not None:
            body[key] = value
    if chat.stop:
        body["stop"] = chat.stop
    if chat.tools:
        body["tools"] = [{"type": "function", "function": t} for t in chat.tools]
    if chat.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _read_anthropic(body: dict[str, Any]) -> Chat:
    chat = Chat(model=body.get("model"), system=_text(body.get("system")), max_tokens=body.get("max_tokens"),
                temperature=body.get("temperature"), top_p=body.get("top_p"),
                stop=list(body.get("stop_sequences") or []), stream=body.get("stream") is True)
    for msg in body.get("messages") or []:
        content = msg.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        texts, calls = [], []
        for b in blocks:
            if b.get("type") == "text":
                texts.append(b.get("text", ""))
            elif b.get("type") == "tool_use":
                calls.append(ToolCall(b.get("id") or _call_id(), b.get("name", ""), json.dumps(b.get("input") or {})))
            elif b.get("type") == "tool_result":
                chat.turns.append(Turn("tool", _text(b.get("content")), tool_call_id=b.get("tool_use_id")))
        if texts or calls:
            chat.turns.append(Turn("assistant" if msg.get("role") == "assistant" else "user", "".join(texts),
                                   tool_calls=calls))
    for tool in body.get("tools") or []:
        if tool.get("name"):
            chat.tools.append({"name": tool["name"], "description": tool.get("description", ""),
                               "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}})
    return chat


def _write_anthropic(chat: Chat, model: str) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if messages and messages[-1]["role"] == role:  # Anthropic wants turns to alternate
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for t in chat.turns:
        if t.role == "tool":
            add("user", [{"type": "tool_result", "tool_use_id": t.tool_call_id or "", "content": t.text}])
        elif t.role == "assistant":
            blocks: list[dict[str, Any]] = [{"type": "text", "text": t.text}] if t.text else []
            for c in t.tool_calls:
                try:
                    args = json.loads(c.arguments or "{}")
                except ValueError:
                    args = {"arguments": c.arguments}
                blocks.append({"type": "tool_use", "id": c.id, "name": c.name, "input": args})
            add("assistant", blocks)
        else:
            add("user", [{"type": "text", "text": t.text}])
    body: dict[str, Any] = {"model": model, "max_tokens": chat.max_tokens or 4096, "messages": messages}
    if chat.system:
        body["system"] = chat.system
    for key, value in (("temperature", chat.temperature), ("top_p", chat.top_p)):
        if value is not None:
            body[key] = value
    if chat.stop:
        body["stop_sequences"] = chat.stop
    if chat.tools:
        body["tools"] = [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
                         for t in chat.tools]
    if chat.stream:
        body["stream"] = True
    return body


def _read_gemini(body: dict[str, Any], model: str | None, stream: bool) -> Chat:
    config = body.get("generationConfig") or {}
    system = body.get("systemInstruction") or body.get("system_instruction") or {}
    chat = Chat(model=model, system=_text(system.get("parts")), max_tokens=config.get("maxOutputTokens"),
                temperature=config.get("temperature"), top_p=config.get("topP"),
                stop=list(config.get("stopSequences") or []), stream=stream)
    for content in body.get("contents") or []:
        texts, calls = [], []
        for part in content.get("parts") or []:
            if "text" in part:
                texts.append(part["text"])
            elif "functionCall" in part:
                fc = part["functionCall"]
                calls.append(ToolCall(fc.get("id") or _call_id(), fc.get("name", ""), json.dumps(fc.get("args") or {})))
            elif "functionResponse" in part:
                fr = part["functionResponse"]
                resp = fr.get("response")
                content = resp.get("content") if isinstance(resp, dict) else None
                text = content if isinstance(content, str) else json.dumps(resp)
                chat.turns.append(Turn("tool", text, tool_call_id=fr.get("id") or fr.get("name"),
                                       tool_name=fr.get("name")))
        if texts or calls:
            chat.turns.append(Turn("assistant" if content.get("role") == "model" else "user", "".join(texts),
                                   tool_calls=calls))
    for tool in body.get("tools") or []:
        for fn in tool.get("functionDeclarations") or tool.get("function_declarations") or []:
            chat.tools.append({"name": fn.get("name"), "description": fn.get("description", ""),
                               "parameters": fn.get("parameters") or {"type": "object", "properties": {}}})
    return chat


def _write_gemini(chat: Chat) -> dict[str, Any]:
    names = {c.id: c.name for t in chat.turns for c in t.tool_calls}
    contents: list[dict[str, Any]] = []
    for t in chat.turns:
        if t.role == "tool":
            name = t.tool_name or names.get(t.tool_call_id or "", "tool")
            part: dict[str, Any] = {"functionResponse": {"name": name, "response": {"content": t.text}}}
            role = "user"
            parts = [part]
        else:
            parts = [{"text": t.text}] if t.text else []
            for c in t.tool_calls:
                try:
                    args = json.loads(c.arguments or "{}")
                except ValueError:
                    args = {"arguments": c.arguments}
                parts.append({"functionCall": {"name": c.name, "args": args}})
            role = "model" if t.role == "assistant" else "user"
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    body: dict[str, Any] = {"contents": contents}
    if chat.system:
        body["systemInstruction"] = {"parts": [{"text": chat.system}]}
    config: dict[str, Any] = {}
    for key, value in (("maxOutputTokens", chat.max_tokens), ("temperature", chat.temperature),
                       ("topP", chat.top_p)):
        if value is not None:
            config[key] = value
    if chat.stop:
        config["stopSequences"] = chat.stop
    if config:
        body["generationConfig"] = config
    if chat.tools:
        body["tools"] = [{"functionDeclarations": chat.tools}]
    return body


# ---------------------------------------------------------------------------------------------
# plain replies

_FINISH_FROM = {
    "openai": {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter",
               "function_call": "tool_calls"},
    "anthropic": {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                  "refusal": "content_filter", "pause_turn": "stop"},
    "gemini": {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
               "PROHIBITED_CONTENT": "content_filter", "BLOCKLIST": "content_filter", "SPII": "content_filter"},
}
_FINISH_TO = {
    "openai": {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter"},
    "anthropic": {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"},
    "gemini": {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"},
}


def finish_from(fmt: str, reason: Any) -> str:
    return _FINISH_FROM[fmt].get(str(reason), "stop")


def read_reply(fmt: str, body: dict[str, Any]) -> Reply:
    if fmt == "openai":
        choice = (body.get("choices") or [{}])[0]
        msg = choice.get("message") or {}
        usage = body.get("usage") or {}
        return Reply(body.get("model"), _text(msg.get("content")),
                     [ToolCall(c.get("id") or _call_id(), c["function"]["name"], c["function"].get("arguments") or "{}")
                      for c in msg.get("tool_calls") or [] if c.get("function")],
                     finish_from("openai", choice.get("finish_reason")), usage.get("prompt_tokens"),
                     usage.get("completion_tokens"))
    if fmt == "anthropic":
        usage = body.get("usage") or {}
        blocks = body.get("content") or []
        return Reply(body.get("model"), "".join(b.get("text", "") for b in blocks if b.get("type") == "text"),
                     [ToolCall(b.get("id") or _call_id(), b.get("name", ""), json.dumps(b.get("input") or {}))
                      for b in blocks if b.get("type") == "tool_use"],
                     finish_from("anthropic", body.get("stop_reason")),
                     (usage.get("input_tokens") or 0) + (usage.get("cache_read_input_tokens") or 0)
                     + (usage.get("cache_creation_input_tokens") or 0) if usage else None,
                     usage.get("output_tokens"))
    cand = (body.get("candidates") or [{}])[0]
    parts = (cand.get("content") or {}).get("parts") or []
    usage = body.get("usageMetadata") or {}
    calls = [ToolCall(p["functionCall"].get("id") or _call_id(), p["functionCall"].get("name", ""),
                      json.dumps(p["functionCall"].get("args") or {})) for p in parts if "functionCall" in p]
    finish = finish_from("gemini", cand.get("finishReason"))
    return Reply(body.get("modelVersion"), "".join(p.get("text", "") for p in parts if "text" in p), calls,
                 "tool_calls" if calls and finish == "stop" else finish, usage.get("promptTokenCount"),
                 (usage.get("candidatesTokenCount") or 0) + (usage.get("thoughtsTokenCount") or 0) if usage else None)


def write_reply(fmt: str, r: Reply, model: str) -> dict[str, Any]:
    n_in, n_out = r.input_tokens or 0, r.output_tokens or 0
    if fmt == "openai":
        msg: dict[str, Any] = {"role": "assistant", "content": r.text or (None if r.tool_calls else "")}
        if r.tool_calls:
            msg["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.name, "arguments": c.arguments}} for c in r.tool_calls]
        return {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion", "created": int(time.time()),
                "model": model, "choices": [{"index": 0, "message": msg, "logprobs": None,
                                             "finish_reason": _FINISH_TO["openai"][r.finish]}],
                "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}}
    if fmt == "anthropic":
        content: list[dict[str, Any]] = [{"type": "text", "text": r.text}] if r.text or not r.tool_calls else []
        for c in r.tool_calls:
            content.append({"type": "tool_use", "id": c.id, "name": c.name, "input": _args(c.arguments)})
        return {"id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": _FINISH_TO["anthropic"][r.finish], "stop_sequence": None,
                "usage": {"input_tokens": n_in, "output_tokens": n_out}}
    parts: list[dict[str, Any]] = [{"text": r.text}] if r.text or not r.tool_calls else []
    parts += [{"functionCall": {"name": c.name, "args": _args(c.arguments)}} for c in r.tool_calls]
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0,
                            "finishReason": _FINISH_TO["gemini"][r.finish]}],
            "usageMetadata": {"promptTokenCount": n_in, "candidatesTokenCount": n_out,
                              "totalTokenCount": n_in + n_out}, "modelVersion": model}


def _args(arguments: str) -> Any:
    try:
        return json.loads(arguments or "{}")
    except ValueError:
        return {"arguments": arguments}


# ---------------------------------------------------------------------------------------------
# streams: a reader turns upstream events into neutral ones, a writer renders them for the client


@dataclass
class Ev:
    kind: str  # start | text | tool_start | tool_args | finish | usage | error
    text: str = ""
    index: int = 0
    id: str = ""
    name: str = ""
    finish: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str | None = None


class StreamReader:
    def __init__(self, fmt: str):
        self.fmt = fmt
        self.started = False
        self._anthropic_tools: dict[int, int] = {}  # content block index -> tool index

    def feed(self, data: Any) -> Iterator[Ev]:
        if not isinstance(data, dict):
            return
        if not self.started:
            self.started = True
            model = data.get("model") or data.get("modelVersion") or (data.get("message") or {}).get("model")
            yield Ev("start", model=model)
        yield from getattr(self, "_" + self.fmt)(data)

    def _openai(self, d: dict[str, Any]) -> Iterator[Ev]:
        for choice in d.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                yield Ev("text", text=delta["content"])
            for tc in delta.get("tool_calls") or []:
                fn = tc.get("function") or {}
                if tc.get("id") or fn.get("name"):
                    yield Ev("tool_start", index=tc.get("index", 0), id=tc.get("id") or _call_id(),
                             name=fn.get("name", ""))
                if fn.get("arguments"):
                    yield Ev("tool_args", index=tc.get("index", 0), text=fn["arguments"])
            if choice.get("finish_reason"):
                yield Ev("finish", finish=finish_from("openai", choice["finish_reason"]))
        if d.get("usage"):
            yield Ev("usage", input_tokens=d["usage"].get("prompt_tokens"),
                     output_tokens=d["usage"].get("completion_tokens"))
        if isinstance(d.get("error"), dict):
            yield Ev("error", text=str(d["error"].get("message")))

    def _anthropic(self, d: dict[str, Any]) -> Iterator[Ev]:
        kind = d.get("type")
        if kind == "message_start":
            usage = (d.get("message") or {}).get("usage") or {}
            yield Ev("usage", input_tokens=(usage.get("input_tokens") or 0)
                     + (usage.get("cache_read_input_tokens") or 0) + (usage.get("cache_creation_input_tokens") or 0))
        elif kind == "content_block_start" and (d.get("content_block") or {}).get("type") == "tool_use":
            block = d["content_block"]
            index = len(self._anthropic_tools)
            self._anthropic_tools[d.get("index", 0)] = index
            yield Ev("tool_start", index=index, id=block.get("id") or _call_id(), name=block.get("name", ""))
        elif kind == "content_block_delta":
            delta = d.get("delta") or {}
            if delta.get("type") == "text_delta":
                yield Ev("text", text=delta.get("text", ""))
            elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                yield Ev("tool_args", index=self._anthropic_tools.get(d.get("index", 0), 0),
                         text=delta["partial_json"])
        elif kind == "message_delta":
            reason = (d.get("delta") or {}).get("stop_reason")
            if reason:
                yield Ev("finish", finish=finish_from("anthropic", reason))
            usage = d.get("usage") or {}
            if usage.get("output_tokens") is not None:
                yield Ev("usage", output_tokens=usage["output_tokens"])
        elif kind == "error":
            yield Ev("error", text=str((d.get("error") or {}).get("message")))

    def _gemini(self, d: dict[str, Any]) -> Iterator[Ev]:
        for cand in d.get("candidates") or []:
            for part in (cand.get("content") or {}).get("parts") or []:
                if part.get("text"):
                    yield Ev("text", text=part["text"])
                elif "functionCall" in part:
                    fc = part["functionCall"]
                    index = getattr(self, "_gemini_tools", 0)
                    self._gemini_tools = index + 1
                    yield Ev("tool_start", index=index, id=fc.get("id") or _call_id(), name=fc.get("name", ""))
                    yield Ev("tool_args", index=index, text=json.dumps(fc.get("args") or {}))
            if cand.get("finishReason"):
                tools = getattr(self, "_gemini_tools", 0)
                finish = finish_from("gemini", cand["finishReason"])
                yield Ev("finish", finish="tool_calls" if tools and finish == "stop" else finish)
        usage = d.get("usageMetadata")
        if usage:
            yield Ev("usage", input_tokens=usage.get("promptTokenCount"),
                     output_tokens=(usage.get("candidatesTokenCount") or 0) + (usage.get("thoughtsTokenCount") or 0))


def _sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class StreamWriter:
    """Renders neutral events in the client's format; `close()` ends the stream properly."""

    def __init__(self, fmt: str, model: str):
        self.fmt = fmt
        self.model = model
        self.id = uuid.uuid4().hex[:24]
        self.finish = "stop"
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self._started = False
        self._block: str | None = None  # anthropic: the open content block kind
        self._blocks = 0
        self._tools: dict[int, dict[str, str]] = {}

    def write(self, ev: Ev) -> bytes:
        if ev.kind == "usage":
            self.input_tokens = ev.input_tokens if ev.input_tokens is not None else self.input_tokens
            self.output_tokens = ev.output_tokens if ev.output_tokens is not None else self.output_tokens
            return b""
        if ev.kind == "finish":
            self.finish = ev.finish
            return b""
        out = b"" if self._started else self._start()
        self._started = True
        if ev.kind == "start":
            return out
        return out + getattr(self, "_" + self.fmt)(ev)

    def _start(self) -> bytes:
        if self.fmt == "openai":
            return self._chunk({"role": "assistant", "content": ""})
        if self.fmt == "anthropic":
            return _sse({"type": "message_start", "message": {
                "id": "msg_" + self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}},
                "message_start")
        return b""

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({"id": "chatcmpl-" + self.id, "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": self.model, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                       "finish_reason": finish}]})

    def _openai(self, ev: Ev) -> bytes:
        if ev.kind == "text":
            return self._chunk({"content": ev.text})
        if ev.kind == "tool_start":
            return self._chunk({"tool_calls": [{"index": ev.index, "id": ev.id, "type": "function",
                                                "function": {"name": ev.name, "arguments": ""}}]})
        if ev.kind == "tool_args":
            return self._chunk({"tool_calls": [{"index": ev.index, "function": {"arguments": ev.text}}]})
        if ev.kind == "error":
            return _sse({"error": {"message": ev.text, "type": "upstream_error"}})
        return b""

    def _anthropic_open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._anthropic_close()
        self._block = kind
        out += _sse({"type": "content_block_start", "index": self._blocks, "content_block": block},
                    "content_block_start")
        return out

    def _anthropic_close(self) -> bytes:
        if self._block is None:
            return b""
        self._block = None
        self._blocks += 1
        return _sse({"type": "content_block_stop", "index": self._blocks - 1}, "content_block_stop")

    def _anthropic(self, ev: Ev) -> bytes:
        if ev.kind == "text":
            out = b"" if self._block == "text" else self._anthropic_open("text", {"type": "text", "text": ""})
            return out + _sse({"type": "content_block_delta", "index": self._blocks,
                               "delta": {"type": "text_delta", "text": ev.text}}, "content_block_delta")
        if ev.kind == "tool_start":
            return self._anthropic_open("tool", {"type": "tool_use", "id": ev.id, "name": ev.name, "input": {}})
        if ev.kind == "tool_args":
            return _sse({"type": "content_block_delta", "index": self._blocks,
                         "delta": {"type": "input_json_delta", "partial_json": ev.text}}, "content_block_delta")
        if ev.kind == "error":
            return _sse({"type": "error", "error": {"type": "api_error", "message": ev.text}}, "error")
        return b""

    def _gemini(self, ev: Ev) -> bytes:
        if ev.kind == "text":
            return _sse({"candidates": [{"content": {"role": "model", "parts": [{"text": ev.text}]}, "index": 0}],
                         "modelVersion": self.model})
        if ev.kind == "tool_start":
            self._tools[ev.index] = {"name": ev.name, "args": ""}
        elif ev.kind == "tool_args":
            self._tools.setdefault(ev.index, {"name": "", "args": ""})["args"] += ev.text
        elif ev.kind == "error":
            return _sse({"error": {"code": 500, "message": ev.text, "status": "INTERNAL"}})
        return b""

    def close(self) -> bytes:
        out = b"" if self._started else self._start()
        self._started = True
        n_in, n_out = self.input_tokens or 0, self.output_tokens or 0
        if self.fmt == "openai":
            out += self._chunk({}, _FINISH_TO["openai"][self.finish])
            # always: the meter reads it, and the answer tap hides it from a client that did not ask
            out += _sse({"id": "chatcmpl-" + self.id, "object": "chat.completion.chunk",
                         "created": int(time.time()), "model": self.model, "choices": [],
                         "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}})
            return out + b"data: [DONE]\n\n"
        if self.fmt == "anthropic":
            out += self._anthropic_close()
            out += _sse({"type": "message_delta", "delta": {"stop_reason": _FINISH_TO["anthropic"][self.finish],
                                                            "stop_sequence": None},
                         "usage": {"input_tokens": n_in, "output_tokens": n_out}}, "message_delta")
            return out + _sse({"type": "message_stop"}, "message_stop")
        parts: list[dict[str, Any]] = [{"functionCall": {"name": t["name"], "args": _args(t["args"])}}
                                       for t in self._tools.values()]
        return out + _sse({"candidates": [{"content": {"role": "model", "parts": parts or [{"text": ""}]}, "index": 0,
                                           "finishReason": _FINISH_TO["gemini"][self.finish]}],
                           "usageMetadata": {"promptTokenCount": n_in, "candidatesTokenCount": n_out,
                                             "totalTokenCount": n_in + n_out}, "modelVersion": self.model})
