import random

from douane.providers.sse import SSEFramer, parse_event

STREAM = (b"event: message_start\ndata: {\"a\": 1}\n\n"
          b": keep-alive comment\n\n"
          b"data: {\"b\": 2}\r\n\r\n"
          b"data: line one\ndata: line two\n\n"
          b"data: [DONE]\n\n")


def test_any_chunking_gives_the_same_events() -> None:
    whole = SSEFramer().feed(STREAM)
    assert [e.data for e in whole] == ['{"a": 1}', None, '{"b": 2}', "line one\nline two", "[DONE]"]
    assert whole[0].name == "message_start"
    rng = random.Random(7)
    for _ in range(200):
        framer, events, pos = SSEFramer(), [], 0
        while pos < len(STREAM):
            step = rng.randint(1, 9)
            events += framer.feed(STREAM[pos:pos + step])
            pos += step
        assert [e.raw for e in events] == [e.raw for e in whole]
        assert b"".join(e.raw for e in events) == STREAM


def test_unterminated_tail_is_flushed() -> None:
    framer = SSEFramer()
    assert framer.feed(b"data: {\"x\": 1}\n\ndata: tail") != []
    rest = framer.flush()
    assert rest is not None and rest.data == "tail"
    assert framer.flush() is None


def test_with_data_keeps_other_fields() -> None:
    event = parse_event(b"event: content_block_delta\nid: 7\ndata: {\"old\": true}\n\n")
    rebuilt = parse_event(event.with_data('{"new": true}'))
    assert rebuilt.name == "content_block_delta" and rebuilt.data == '{"new": true}'
    assert b"id: 7" in rebuilt.raw and rebuilt.raw.endswith(b"\n\n")
