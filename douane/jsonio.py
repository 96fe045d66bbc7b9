"""JSON on the hot path: orjson, with the standard library for what orjson reads differently.

Each call parses the request, may re-serialise it, parses and may re-serialise the answer, and
writes an audit line: with the standard json module that was ~0.1 ms per 2 KB call, several times
orjson's cost. Where orjson differs, json does the work: text it refuses (NaN and Infinity
literals, lone surrogates) and integers past 64 bits (orjson would read them as floats and
change them). One difference stays: a NaN that json read is written back as null.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

# digits as "d", the rest as spaces
_DIGITS = bytes(100 if 48 <= c <= 57 else 32 for c in range(256))
_STRIDE = 9


def may_hold_long_integer(raw: bytes) -> bool:
    """True for every text with a run of 18 or more digits (any integer orjson would read as a
    float has 19 or more), and rarely otherwise.

    Such a run holds two bytes 9 apart that are both digits, with only digits between: every
    ninth byte is enough to find them, a ninth of the work of reading every byte.
    """
    sampled = raw[::_STRIDE].translate(_DIGITS)
    i = sampled.find(b"dd")
    while i != -1:
        start = i * _STRIDE
        if raw[start:start + _STRIDE + 1].isdigit():
            return True
        i = sampled.find(b"dd", i + 1)
    return False


def loads(data: bytes | str) -> Any:
    """json.loads: raises ValueError (UnicodeDecodeError for invalid UTF-8) on what it cannot read,
    nesting too deep for the parsers included (orjson stops at 1024 levels, json at the recursion limit)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    try:
        if may_hold_long_integer(raw):
            return json.loads(data)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return json.loads(data)
    except RecursionError:
        raise ValueError("the JSON nests too deeply to be read") from None


def dumps(obj: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact UTF-8 JSON; what orjson cannot encode goes through json with ASCII escapes."""
    try:
        return orjson.dumps(obj, default=default)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(obj, separators=(",", ":"), default=default).encode()
