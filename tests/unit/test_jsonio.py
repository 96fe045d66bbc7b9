"""douane.jsonio reads and writes what the json module does, faster."""

from __future__ import annotations

import json

import pytest

from douane import jsonio


@pytest.mark.parametrize("raw", [
    b'{"model":"m","messages":[{"role":"user","content":"h\\u00e9llo \\ud83d\\ude00"}]}',
    '{"a":"é","b":[1,2.5,true,null]}'.encode(),
    b'{"seed": 123456789012345678901234567890}',
    b'{"a":"\\ud800"}',
    b'{"a": NaN, "b": Infinity}',
])
def test_reads_what_json_reads(raw: bytes) -> None:
    expected = json.loads(raw)
    got = jsonio.loads(raw)
    assert json.dumps(got) == json.dumps(expected)


@pytest.mark.parametrize("raw, error", [(b'{"a":1', ValueError), (b'{"a":"\xff"}', UnicodeDecodeError),
                                        (b"", ValueError)])
def test_refuses_what_json_refuses(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        jsonio.loads(raw)


@pytest.mark.parametrize("obj", [{"a": "é", "n": 2**70}, {"a": "\ud800"}, [1, "x", None]])
def test_writes_what_json_reads_back(obj: object) -> None:
    assert json.loads(jsonio.dumps(obj)) == obj


def test_long_digit_runs_are_always_seen() -> None:
    import random
    rng = random.Random(2)
    for _ in range(2000):
        run = rng.randint(1, 40)
        pad = "".join(rng.choice("ab 12,:") for _ in range(rng.randint(0, 30)))
        raw = (pad + "7" * run + pad[::-1]).encode()
        if run >= 18:
            assert jsonio.may_hold_long_integer(raw), raw
        if not any(c.isdigit() for c in pad) and run < 10:
            assert not jsonio.may_hold_long_integer(raw), raw
