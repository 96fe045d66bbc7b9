"""Request standardisation: the policy's `defaults:` applied to a chat call's body, in its format.

The first rule whose `when` matches the call (team, client, provider, model, endpoint) sets what the
client left out (temperature, max output tokens, the provider's end-user field naming the client),
caps the output tokens it asked for (clamped, or the call refused), and puts the organisation's
system prompt first unless it already is. It runs on the parsed body before douane reads it
(douane.classify.read_request), so every stage after it, the guards, the meter and the audit, sees
the standardised call, and what leaves is that body. Each change is noted on the row as
`defaults[i]: ...`. In monitor mode nothing changes: the notes say `monitor: would ...`.

Chat endpoints only: OpenAI chat.completions and responses, Anthropic messages, Gemini
generateContent / streamGenerateContent. Gemini has no end-user field: `tag_user` notes that.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from douane.call import Call
from douane.decision import Block
from douane.policy.model import Defaults, Policy
from douane.routing import Facts, matches

# per format and endpoint: (the keys that may hold the output cap, in the order read; the key set when missing)
_MAX_KEYS: dict[str, tuple[tuple[str, ...], str]] = {
    "chat.completions": (("max_completion_tokens", "max_tokens"), "max_tokens"),
    "responses": (("max_output_tokens",), "max_output_tokens"),
    "messages": (("max_tokens",), "max_tokens"),
    "generateContent": (("maxOutputTokens", "max_output_tokens"), "maxOutputTokens"),
    "streamGenerateContent": (("maxOutputTokens", "max_output_tokens"), "maxOutputTokens"),
}
_GEMINI = ("generateContent", "streamGenerateContent")
_GEMINI_MODEL = re.compile(r"models/([^/:]+):")


def standardise(policy: Policy, call: Call, body: dict[str, Any], enforcing: bool) -> Block | None:
    """Apply the first matching rule to `body` (in place, when enforcing); a Block when the call
    asks for more output tokens than a `reject` cap allows."""
    if not policy.defaults or call.endpoint not in _MAX_KEYS:
        return None
    facts = Facts(call.team, call.client, call.provider.name, model_of(call, body), call.endpoint, 0)
    hit = next(((i, rule) for i, rule in enumerate(policy.defaults) if matches(rule.when, facts)), None)
    if hit is None:
        return None
    i, rule = hit
    changes: list[str] = []
    block = _apply(rule, call, body if enforcing else copy.deepcopy(body), changes, f"defaults[{i}]")
    prefix = f"defaults[{i}]" if enforcing else f"monitor: would apply defaults[{i}]"
    for change in changes:
        call.note(f"{prefix}: {change}")
    if block is not None and not enforcing:  # the caller's refusal would note a body it could not read
        call.note(f"monitor: would block {block.rule}")
        return None
    return block


def model_of(call: Call, body: dict[str, Any]) -> str | None:
    """The model the call names: the body's, or Gemini's path segment."""
    model = body.get("model")
    if isinstance(model, str):
        return model
    found = _GEMINI_MODEL.search(call.path)
    return found.group(1) if found else None


def _apply(rule: Defaults, call: Call, body: dict[str, Any], changes: list[str], name: str) -> Block | None:
    endpoint = call.endpoint
    assert endpoint is not None
    config = _gemini_config(body) if endpoint in _GEMINI else body
    if config is not None:
        block = _parameters(rule, config, endpoint, changes, name)
        if block is not None:
            return block
        if endpoint in _GEMINI and config and not any(k in body for k in ("generationConfig", "generation_config")):
            body["generationConfig"] = config
    if rule.tag_user:
        _tag_user(endpoint, body, call.client, changes)
    if rule.system_prompt is not None:
        _SYSTEM[endpoint](body, rule.system_prompt, changes)
    return None


def _parameters(rule: Defaults, config: dict[str, Any], endpoint: str, changes: list[str], name: str) -> Block | None:
    """Temperature and output tokens: set when missing, capped when over."""
    if rule.temperature is not None and config.get("temperature") is None:
        config["temperature"] = rule.temperature
        changes.append(f"set temperature {rule.temperature:g}")
    keys, new_key = _MAX_KEYS[endpoint]
    key = next((k for k in keys if config.get(k) is not None), None)
    if key is None and rule.max_tokens is not None:
        key = new_key
        config[key] = rule.max_tokens
        changes.append(f"set {key} {rule.max_tokens}")
    cap = rule.max_tokens_cap
    asked = config.get(key) if key is not None else None
    if cap is not None and isinstance(asked, int) and asked > cap.cap:
        if cap.over == "reject":
            return Block(400, f"{name}.max_tokens_cap", f"{key} {asked} is over this caller's cap of {cap.cap} "
                         f"output tokens ({name}.max_tokens_cap); ask for {cap.cap} or fewer")
        assert key is not None
        config[key] = cap.cap
        changes.append(f"clamped {key} {asked} -> {cap.cap}")
    return None


def _gemini_config(body: dict[str, Any]) -> dict[str, Any] | None:
    """Gemini's generationConfig (a new one, attached only if something is set); None when it is
    not shaped as documented (the parser refuses the call)."""
    config = body.get("generationConfig", body.get("generation_config"))
    if config is None:
        return {}
    return config if isinstance(config, dict) else None


def _tag_user(endpoint: str, body: dict[str, Any], client: str, changes: list[str]) -> None:
    if endpoint in _GEMINI:
        changes.append("tag_user: Gemini has no end-user field; not tagged")
    elif endpoint == "messages":
        metadata = body.setdefault("metadata", {})
        if isinstance(metadata, dict) and not metadata.get("user_id"):
            metadata["user_id"] = client
            changes.append(f"set metadata.user_id {client}")
    elif not body.get("user"):
        body["user"] = client
        changes.append(f"set user {client}")


# -- the organisation's system prompt, first and once, in each format --------------------------------


def _chat_system(body: dict[str, Any], prompt: str, changes: list[str]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    first = messages[0] if messages else None
    if isinstance(first, dict) and first.get("role") in ("system", "developer") \
            and _starts(first.get("content"), prompt):
        return
    messages.insert(0, {"role": "system", "content": prompt})
    changes.append("prepended the system prompt")


def _responses_system(body: dict[str, Any], prompt: str, changes: list[str]) -> None:
    _prepend_text(body, "instructions", prompt, changes)


def _anthropic_system(body: dict[str, Any], prompt: str, changes: list[str]) -> None:
    system = body.get("system")
    if isinstance(system, list):
        first = system[0] if system else None
        if isinstance(first, dict) and _starts(first.get("text"), prompt):
            return
        system.insert(0, {"type": "text", "text": prompt})
        changes.append("prepended the system prompt")
        return
    _prepend_text(body, "system", prompt, changes)


def _gemini_system(body: dict[str, Any], prompt: str, changes: list[str]) -> None:
    key = "system_instruction" if "system_instruction" in body else "systemInstruction"
    instruction = body.get(key)
    if instruction is None:
        body[key] = {"parts": [{"text": prompt}]}
        changes.append("set the system prompt")
        return
    parts = instruction.get("parts") if isinstance(instruction, dict) else None
    if not isinstance(parts, list):
        return  # not shaped as documented: the parser refuses the call
    first = parts[0] if parts else None
    if isinstance(first, dict) and _starts(first.get("text"), prompt):
        return
    parts.insert(0, {"text": prompt})
    changes.append("prepended the system prompt")


def _prepend_text(body: dict[str, Any], key: str, prompt: str, changes: list[str]) -> None:
    current = body.get(key)
    if _starts(current, prompt) or (current is not None and not isinstance(current, str)):
        return  # already first; or not text: the parser refuses the call
    body[key] = f"{prompt}\n\n{current}" if current else prompt
    changes.append("set the system prompt" if not current else "prepended the system prompt")


def _starts(value: Any, prompt: str) -> bool:
    return isinstance(value, str) and value.startswith(prompt)


_SYSTEM: dict[str, Callable[[dict[str, Any], str, list[str]], None]] = {
    "chat.completions": _chat_system, "responses": _responses_system, "messages": _anthropic_system,
    "generateContent": _gemini_system, "streamGenerateContent": _gemini_system,
}
