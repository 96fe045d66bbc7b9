import gzip
import json
import zlib

from douane.providers import ADAPTERS
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


def test_filters_can_rewrite_event_text() -> None:
    def upper(event) -> bool:
        for p in event.parts:
            p.replace(p.text.upper())
        return bool(event.parts)

    tap = StreamTap(ADAPTERS["openai"], "chat.completions", None, filters=[upper])
    out = run(tap, openai_stream(with_usage=False))
    assert b'"content":"HEL"' in out and tap.assembled == "HELLO"


def test_non_json_events_pass_untouched() -> None:
    data = b"data: not json\n\n: ping\n\n"
    tap = StreamTap(ADAPTERS["anthropic"], "messages", None)
    assert run(tap, data, step=3) == data
