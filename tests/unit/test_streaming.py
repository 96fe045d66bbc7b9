import gzip
import json
import zlib

import pytest

from douane.detect.secrets import SecretsDetector
from douane.providers import ADAPTERS
from douane.providers.sse import SSEFramer
from douane.rewrite import OutputGuard, PseudonymRestorer
from douane.streaming import StreamTap, make_decoder


def openai_stream(with_usage: bool) -> bytes:
    chunks = [{"model": "m", "choices": [{"index": 0, "delta": {"content": w}}]} for w in ("Hel", "lo")]
    if with_usage:
        chunks.append({"model": "m", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}})
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


def run(tap: StreamTap, data: bytes, step: int = 5) -> bytes:
    out = []
    for i in range(0, len(data), step):
        out += tap(data[i:i + step])
    out += tap(b"")
    return b"".join(out)


def test_tap_assembles_text_and_usage_and_passes_events_through() -> None:
    data = openai_stream(with_usage=True)
    tap = StreamTap(ADAPTERS["openai"], "chat.completions", None)
    assert run(tap, data) == data
    assert tap.assembled == "Hello" and tap.usage.input_tokens == 4 and tap.usage.output_tokens == 2
    assert tap.finished and tap.model == "m"


def test_tap_hides_the_usage_chunk_douane_asked_for() -> None:
    tap = StreamTap(ADAPTERS["openai"], "chat.completions", None, strip_internal=True)
    out = run(tap, openai_stream(with_usage=True))
    assert out == openai_stream(with_usage=False)
    assert tap.usage.output_tokens == 2


def test_tap_decodes_gzip_upstream() -> None:
    data = openai_stream(with_usage=False)
    tap = StreamTap(ADAPTERS["openai"], "chat.completions", None, decoder=make_decoder("gzip"))
    assert run(tap, gzip.compress(data), step=7) == data
    raw_deflate = zlib.compress(data)
    tap = StreamTap(ADAPTERS["openai"], "chat.completions", None, decoder=make_decoder("deflate"))
    assert run(tap, raw_deflate) == data


def test_non_json_events_pass_untouched() -> None:
    data = b"data: not json\n\n: ping\n\n"
    tap = StreamTap(ADAPTERS["anthropic"], "messages", None)
    assert run(tap, data, step=3) == data


def chunks_of(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def sse(events: list[tuple[str | None, dict]]) -> bytes:
    return b"".join((f"event: {n}\n" if n else "").encode() + b"data: " + json.dumps(d).encode() + b"\n\n"
                    for n, d in events)


def char_stream(fmt: str, text: str, size: int = 3) -> bytes:
    """An upstream stream in `fmt` whose text arrives `size` characters per event."""
    pieces = [text[i:i + size] for i in range(0, len(text), size)]
    if fmt == "openai":
        body = [(None, {"id": "c", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]})
                for p in pieces]
        body.append((None, {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        return sse(body) + b"data: [DONE]\n\n"
    if fmt == "anthropic":
        body = [("message_start", {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 1}}}),
                ("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}})]
        body += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": p}}) for p in pieces]
        body += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                 ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                    "usage": {"output_tokens": 3}}),
                 ("message_stop", {"type": "message_stop"})]
        return sse(body)
    body = [(None, {"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}, "index": 0}]})
            for p in pieces[:-1]]
    body.append((None, {"candidates": [{"content": {"role": "model", "parts": [{"text": pieces[-1]}]},
                                        "finishReason": "STOP", "index": 0}]}))
    return sse(body)


def client_text(fmt: str, raw: bytes) -> str:
    """What the client's SDK would assemble from the stream."""
    out = []
    for event in SSEFramer().feed(raw):
        if event.data is None or event.data == "[DONE]":
            continue
        info = ADAPTERS[fmt].parse_stream_event("", event.name, json.loads(event.data), None)
        out.extend(p.text for p in info.parts if p.kind == "text")
    return "".join(out)


MAPPING = {"<EMAIL_ADDRESS_1>": "jane.roe@example.com", "<PHONE_NUMBER_1>": "212-555-0143"}
ENDPOINT = {"openai": "chat.completions", "anthropic": "messages", "gemini": "streamGenerateContent"}


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("size", [1, 3, 7])
def test_pseudonyms_are_restored_across_events(fmt: str, size: int) -> None:
    reply = "Write to <EMAIL_ADDRESS_1> or call <PHONE_NUMBER_1>; <not a placeholder> stays <"
    tap = StreamTap(ADAPTERS[fmt], ENDPOINT[fmt], None, stages=[PseudonymRestorer(MAPPING)], audit_after=0)
    out = run(tap, char_stream(fmt, reply, size), step=11)
    assert client_text(fmt, out) == ("Write to jane.roe@example.com or call 212-555-0143; "
                                     "<not a placeholder> stays <")
    assert tap.assembled == reply, "the audit keeps what the provider sent, not the user's values"
    assert b"jane.roe" in out and b"EMAIL_ADDRESS_1" not in out


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_secret_split_across_events_is_redacted(fmt: str) -> None:
    reply = "Sure, the key is AKIAIOSFODNN7EXAMPLE and the token sk-ant-api03-" + "x" * 40 + " done."
    tap = StreamTap(ADAPTERS[fmt], ENDPOINT[fmt], None, stages=[OutputGuard(SecretsDetector(), None)])
    out = run(tap, char_stream(fmt, reply, 3), step=5)
    text = client_text(fmt, out)
    assert "AKIA" not in text and "sk-ant" not in text and b"AKIAIOSFODNN7" not in out
    assert text == "Sure, the key is <SECRET:AWS Access Key> and the token <SECRET:Anthropic API Key> done."


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_block_ends_the_stream_with_a_provider_error(fmt: str) -> None:
    reply = "harmless start " * 30 + "AKIAIOSFODNN7EXAMPLE" + " tail" * 50
    tap = StreamTap(ADAPTERS[fmt], ENDPOINT[fmt], None,
                    stages=[OutputGuard(SecretsDetector(), None, secrets_action="block")])
    out = run(tap, char_stream(fmt, reply, 4), step=9)
    assert b"AKIA" not in out and tap.blocked is not None and tap.blocked.rule == "output.secrets.block"
    last = SSEFramer().feed(out)[-1]
    err = json.loads(last.data or "{}")
    assert ("error" in err) and "output.secrets.block" in json.dumps(err)
    if fmt == "anthropic":
        assert last.name == "error"
    assert client_text(fmt, out).startswith("harmless start")


def test_monitor_changes_nothing_and_records() -> None:
    reply = "key AKIAIOSFODNN7EXAMPLE here"
    data = char_stream("openai", reply, 3)
    guard = OutputGuard(SecretsDetector(), None, secrets_action="monitor")
    tap = StreamTap(ADAPTERS["openai"], "chat.completions", None, stages=[guard])
    out = run(tap, data, step=7)
    assert client_text("openai", out) == reply
    assert [f.name for f in guard.findings] == ["AWS Access Key"]


def test_tool_call_arguments_are_restored_across_events() -> None:
    args = '{"to": "<EMAIL_ADDRESS_1>", "body": "hi <PHONE_NUMBER_1>"}'
    pieces = [args[i:i + 4] for i in range(0, len(args), 4)]
    openai_events = [(None, {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "c1", "type": "function", "function": {"name": "send", "arguments": ""}}]}}]})]
    openai_events += [(None, {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": p}}]}}]}) for p in pieces]
    openai_events.append((None, {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}))
    anthropic_events = [("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
        "type": "tool_use", "id": "t1", "name": "send", "input": {}}})]
    anthropic_events += [("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
        "type": "input_json_delta", "partial_json": p}}) for p in pieces]
    anthropic_events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    for fmt, events in (("openai", openai_events), ("anthropic", anthropic_events)):
        tap = StreamTap(ADAPTERS[fmt], ENDPOINT[fmt], None, stages=[PseudonymRestorer(MAPPING)],
                        stage_factory=lambda: ([PseudonymRestorer(MAPPING)], 0))
        out = run(tap, sse(events), step=13)
        got = ""
        for event in SSEFramer().feed(out):
            info = ADAPTERS[fmt].parse_stream_event("", event.name, json.loads(event.data), None)
            got += "".join(p.text for p in info.parts if p.kind == "tool_call")
        assert json.loads(got) == {"to": "jane.roe@example.com", "body": "hi 212-555-0143"}, fmt


@pytest.mark.parametrize(("fmt", "bad"), [
    ("openai", {"choices": True}),
    ("anthropic", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ["AKIA"]}}),
    ("gemini", {"candidates": [{"content": {"parts": "AKIAIOSFODNN7EXAMPLE"}}]}),
])
def test_an_event_douane_cannot_read_ends_the_stream_with_a_provider_error(fmt: str, bad: dict) -> None:
    """The output guard cannot judge what it cannot read: the event is held back and the client's
    stream ends with its provider's error event, naming why."""
    data = char_stream(fmt, "fine so far", 4)
    events = SSEFramer().feed(data)
    cut = len(events) // 2
    raw = b"".join(e.raw for e in events[:cut]) + sse([(None, bad)]) + b"".join(e.raw for e in events[cut:])
    tap = StreamTap(ADAPTERS[fmt], ENDPOINT[fmt], None, stages=[OutputGuard(SecretsDetector(), None)])
    out = run(tap, raw, step=7)
    assert b"AKIA" not in out and json.dumps(bad).encode() not in out
    assert tap.blocked is not None and tap.blocked.rule == "unreadable_answer"
    last = SSEFramer().feed(out)[-1]
    assert "unreadable_answer" in (last.data or "") and "error" in json.loads(last.data or "{}")
    before = "".join(client_text(fmt, e.raw) for e in events[:cut])
    assert before and before.startswith(client_text(fmt, out)), "at most what came before (less what was held)"
