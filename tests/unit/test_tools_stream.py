"""Tool calls in streamed answers: held from their first fragment until complete and judged, then
sent on byte for byte, or the stream ends with the provider's error event; streams without tool
calls are not held at all. And plain answers' calls read the same way."""

from __future__ import annotations

import json
import time

import pytest

from douane.call import Call, new_call_id
from douane.classify import open_call
from douane.detect.secrets import SecretsDetector
from douane.policy import Policy
from douane.providers import ADAPTERS, ProviderSpec
from douane.rewrite import OutputGuard, PseudonymRestorer, Stage
from douane.streaming import StreamTap
from douane.toolguard import ToolWatch, check_answer
from tests.mock_provider import tool_answer, tool_events

FORMATS = [("openai", False, "chat.completions", "/v1/chat/completions"),
           ("openai", True, "responses", "/v1/responses"),
           ("anthropic", False, "messages", "/v1/messages"),
           ("gemini", False, "streamGenerateContent", "/v1beta/models/m:streamGenerateContent")]
IDS = [f"{f}-{e}" for f, _, e, _ in FORMATS]
POLICY = Policy.model_validate({"tools": {
    "deny": ["shell"], "arguments": [{"name": "web", "tools": ["fetch"], "argument": "url", "hosts": ["ok.example"]}]}})


def call_for(fmt: str, path: str) -> Call:
    return open_call(new_call_id(), time.time(), ProviderSpec(fmt, fmt, ("h",)), "h", "POST", path)


def tap_for(fmt: str, endpoint: str, call: Call, policy: Policy = POLICY, stages: list[Stage] | None = None,
            factory: object = None) -> StreamTap:
    return StreamTap(ADAPTERS[fmt], endpoint, None, stages=stages or [],
                     stage_factory=factory or (lambda: ([], 0)), tools=ToolWatch(policy, call))  # type: ignore[arg-type]


def feed_events(tap: StreamTap, events: list[str]) -> list[bytes]:
    """Each event in two chunks, as the mock cuts them; what the client got after each event."""
    out = []
    for event in events:
        raw = event.encode()
        cut = len(raw) // 3
        out.append(b"".join([*tap(raw[:cut]), *tap(raw[cut:])]))
    out.append(b"".join(tap(b"")))
    return out


def is_tool_frame(event: str) -> bool:
    return any(k in event for k in ("tool_calls", "function_call", "tool_use", "input_json_delta", "functionCall"))


@pytest.mark.parametrize(("fmt", "responses", "endpoint", "path"), FORMATS, ids=IDS)
def test_an_allowed_call_goes_out_byte_for_byte_once_complete(fmt: str, responses: bool, endpoint: str,
                                                               path: str) -> None:
    events = tool_events(fmt, responses, "m", [("fetch", {"url": "https://ok.example/a"})])
    call = call_for(fmt, path)
    tap = tap_for(fmt, endpoint, call)
    sent = feed_events(tap, events)
    assert b"".join(sent) == "".join(events).encode()
    first_tool = next(i for i, e in enumerate(events) if is_tool_frame(e))
    assert all(sent[i] == events[i].encode() for i in range(first_tool)), "text before the call is not held"
    if fmt != "gemini":  # Gemini sends a call whole, in one event
        assert sent[first_tool] == b"", "a call's first fragment waits until the call is complete"
    assert [(u.direction, u.tool, u.decision) for u in call.tool_calls] == [("call", "fetch", "allowed")]
    assert json.loads(call.tool_calls[0].arguments or "") == {"url": "https://ok.example/a"}
    assert tap.blocked is None


@pytest.mark.parametrize(("fmt", "responses", "endpoint", "path"), FORMATS, ids=IDS)
@pytest.mark.parametrize(("tool", "args", "rule"), [
    ("shell", {"command": "ls"}, "tools.deny"), ("fetch", {"url": "https://evil.example/x"}, "tools.arguments.web")])
def test_a_denied_call_never_reaches_the_client(fmt: str, responses: bool, endpoint: str, path: str, tool: str,
                                               args: dict, rule: str) -> None:
    events = tool_events(fmt, responses, "m", [(tool, args)])
    call = call_for(fmt, path)
    tap = tap_for(fmt, endpoint, call)
    out = b"".join(feed_events(tap, events)).decode()
    assert tap.blocked is not None and tap.blocked.rule == rule
    first_tool = next(i for i, e in enumerate(events) if is_tool_frame(e))
    before = "".join(events[:first_tool])
    assert out.startswith(before)  # the text before the call went out as it came
    error = out[len(before):]  # then one event, the error: no fragment of the call
    assert error.count("\n\n") == 1 and rule in error and json.dumps(args) not in error
    assert error.startswith("event: error\ndata: " if fmt == "anthropic" else "data: {\"error\"")
    assert [(u.tool, u.decision, u.rule) for u in call.tool_calls] == [(tool, "blocked", rule)]


def test_a_stream_without_tool_calls_is_not_held() -> None:
    call = call_for("openai", "/v1/chat/completions")
    tap = tap_for("openai", "chat.completions", call)
    chunks = [{"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in ("a ", "b")]
    events = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    sent = feed_events(tap, events)
    assert sent[:3] == [e.encode() for e in events] and call.tool_calls == []


def test_openai_chat_text_passes_a_held_call() -> None:
    """Chat clients gather content and tool calls apart: text after a call's first fragment is not held."""
    events = tool_events("openai", False, "m", [("fetch", {"url": "https://ok.example"})])
    start = next(i for i, e in enumerate(events) if "tool_calls" in e)
    late_text = 'data: {"choices": [{"index": 0, "delta": {"content": "late"}, "finish_reason": null}]}\n\n'
    events.insert(start + 1, late_text)
    tap = tap_for("openai", "chat.completions", call_for("openai", "/v1/chat/completions"))
    sent = feed_events(tap, events)
    assert sent[start + 1] == late_text.encode()
    assert sorted(b"".join(sent).decode().split("\n\n")) == sorted("".join(events).split("\n\n"))


def test_anthropic_holds_everything_after_a_call_begins_to_keep_block_order() -> None:
    events = tool_events("anthropic", False, "m", [("fetch", {"url": "https://ok.example"})])
    start = next(i for i, e in enumerate(events) if "tool_use" in e)
    stop = next(i for i, e in enumerate(events) if i > start and "content_block_stop" in e)
    sent = feed_events(tap_for("anthropic", "messages", call_for("anthropic", "/v1/messages")), events)
    assert all(s == b"" for s in sent[start:stop])  # held until the block stops
    assert sent[stop] == "".join(events[start:stop + 1]).encode()  # then sent in order, as they came
    assert b"".join(sent) == "".join(events).encode()


def test_caps_count_the_calls_of_the_answer() -> None:
    policy = Policy.model_validate({"tools": {"max_calls_per_request": 1}})
    events = tool_events("openai", False, "m", [("a", {}), ("b", {})])
    call = call_for("openai", "/v1/chat/completions")
    tap = tap_for("openai", "chat.completions", call, policy)
    out = b"".join(feed_events(tap, events)).decode()
    assert tap.blocked is not None and tap.blocked.rule == "tools.max_calls_per_request"
    assert '"name": "a"' not in out  # the calls of one answer go out together, or not at all
    assert [(u.tool, u.decision) for u in call.tool_calls] == [("a", "allowed"), ("b", "blocked")]


def test_monitor_mode_records_and_holds_nothing_back_for_good() -> None:
    policy = Policy.model_validate({"mode": "monitor", "tools": {"deny": ["shell"]}})
    events = tool_events("anthropic", False, "m", [("shell", {"command": "rm -rf /"})])
    call = call_for("anthropic", "/v1/messages")
    tap = tap_for("anthropic", "messages", call, policy)
    assert b"".join(feed_events(tap, events)) == "".join(events).encode()
    assert [(u.decision, u.rule) for u in call.tool_calls] == [("monitored", "tools.deny")]
    assert any(r.startswith("tools.deny (monitor)") for r in call.reasons)


def test_without_tool_rules_calls_are_recorded_not_held() -> None:
    events = tool_events("openai", True, "m", [("anything", {"x": 1})])
    call = call_for("openai", "/v1/responses")
    tap = tap_for("openai", "responses", call, Policy())
    sent = feed_events(tap, events)
    assert sent[:-1] == [e.encode() for e in events]
    assert [(u.tool, u.decision, u.arguments) for u in call.tool_calls] == [("anything", "allowed", '{"x": 1}')]


def test_rewriting_stages_leave_a_clean_call_untouched_and_restore_placeholders_in_arguments() -> None:
    secrets = SecretsDetector()

    def stages(mapping: dict[str, str]) -> tuple[list[Stage], int]:
        return [OutputGuard(secrets, None, secrets_action="redact"), PseudonymRestorer(mapping)], 1

    clean = tool_events("anthropic", False, "m", [("fetch", {"url": "https://ok.example"})])
    tap = tap_for("anthropic", "messages", call_for("anthropic", "/v1/messages"), stages=stages({})[0],
                  factory=lambda: stages({}))
    out = b"".join(feed_events(tap, clean)).decode()
    tool_frames = [e for e in clean if "input_json_delta" in e or '"tool_use"' in e]
    assert all(f in out for f in tool_frames), "an untouched call's frames go out as they came"

    mapping = {"<EMAIL_ADDRESS_1>": "jane@corp.example"}
    events = tool_events("anthropic", False, "m", [("send", {"to": "<EMAIL_ADDRESS_1>"})])
    call = call_for("anthropic", "/v1/messages")
    tap = tap_for("anthropic", "messages", call, stages=stages(mapping)[0], factory=lambda: stages(mapping))
    out = b"".join(feed_events(tap, events)).decode()
    sent_args = "".join(json.loads(line[6:])["delta"]["partial_json"] for line in out.splitlines()
                        if line.startswith("data: ") and "input_json_delta" in line)
    assert json.loads(sent_args) == {"to": "jane@corp.example"}  # the client gets the user's value back
    assert call.tool_calls[0].arguments == '{"to": "<EMAIL_ADDRESS_1>"}'  # the audit keeps the placeholder


def test_a_call_cut_off_by_the_end_of_the_stream_is_judged_as_it_is() -> None:
    events = tool_events("openai", False, "m", [("shell", {"command": "ls"})])
    cut = [e for e in events if "finish_reason\": \"tool_calls" not in e and "[DONE]" not in e]
    call = call_for("openai", "/v1/chat/completions")
    tap = tap_for("openai", "chat.completions", call)
    out = b"".join(feed_events(tap, cut)).decode()
    assert tap.blocked is not None and tap.blocked.rule == "tools.deny" and '"shell"' not in out.split("tools.deny")[0]


@pytest.mark.parametrize(("fmt", "responses", "endpoint", "path"),
                         [(f, r, "generateContent" if f == "gemini" else e, p) for f, r, e, p in FORMATS], ids=IDS)
def test_plain_answers_calls_are_judged_and_recorded(fmt: str, responses: bool, endpoint: str, path: str) -> None:
    body = tool_answer(fmt, responses, "m", [("fetch", {"url": "https://ok.example"}), ("shell", {"command": "ls"})])
    parsed = ADAPTERS[fmt].parse_response(endpoint, body)
    call = call_for(fmt, path)
    block = check_answer(POLICY, call, parsed.tool_calls)
    assert block is not None and block.status == 403 and block.rule == "tools.deny" and "shell" in block.message
    assert [(u.direction, u.tool, u.decision) for u in call.tool_calls] == [
        ("call", "fetch", "allowed"), ("call", "shell", "blocked")]
    assert json.loads(call.tool_calls[0].arguments or "") == {"url": "https://ok.example"}


def test_the_deprecated_function_call_is_judged_plain_and_streamed() -> None:
    body = {"model": "m", "choices": [{"index": 0, "finish_reason": "function_call", "message": {
        "role": "assistant", "content": None, "function_call": {"name": "shell", "arguments": '{"command": "ls"}'}}}]}
    parsed = ADAPTERS["openai"].parse_response("chat.completions", body)
    block = check_answer(POLICY, call_for("openai", "/v1/chat/completions"), parsed.tool_calls)
    assert block is not None and block.rule == "tools.deny"
    deltas = [{"role": "assistant", "function_call": {"name": "shell", "arguments": ""}},
              {"function_call": {"arguments": '{"command"'}}, {"function_call": {"arguments": ': "ls"}'}}]
    chunks = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "function_call"}]})
    events = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    call = call_for("openai", "/v1/chat/completions")
    tap = tap_for("openai", "chat.completions", call)
    out = b"".join(feed_events(tap, events)).decode()
    assert tap.blocked is not None and tap.blocked.rule == "tools.deny" and '"name": "shell"' not in out
    assert [(u.tool, u.arguments) for u in call.tool_calls] == [("shell", '{"command": "ls"}')]
