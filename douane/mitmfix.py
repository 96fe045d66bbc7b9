"""A fix to mitmproxy that keeps its garbage out of the collector's way.

mitmproxy checks the type of every field of every request and response it makes
(`MessageData.__post_init__` → `typecheck.check_option_type`). That function builds its TypeError
in a local before raising it, and an `Optional[...]` field that is None (trailers, on nearly every
message) raises and catches one: the error's traceback holds the frame, the frame holds the error.
Each such cycle also holds, through the frames it links back to, whatever the callers had in hand
(the flow, its bodies). Nothing frees them until a garbage collection; they pile into the oldest
generation, whose full collection then took ~100 ms in the middle of someone's call.

`install()` puts in a copy that raises a fresh error each time (no local holds it, so no cycle),
with the same checks and the same messages.
"""

from __future__ import annotations

import typing
from collections import abc
from types import UnionType
from typing import Any

from mitmproxy.utils import typecheck


def check_option_type(name: str, value: Any, typeinfo: Any) -> None:
    """mitmproxy's check (mitmproxy/utils/typecheck.py), raising without a reference cycle."""
    origin = typing.get_origin(typeinfo)
    if origin is typing.Union or origin is UnionType:
        for member in typing.get_args(typeinfo):
            try:
                check_option_type(name, value, member)
            except TypeError:
                pass
            else:
                return
        raise _mismatch(name, value, typeinfo)
    if origin is tuple:
        types = typing.get_args(typeinfo)
        if not isinstance(value, tuple | list) or len(types) != len(value):
            raise _mismatch(name, value, typeinfo)
        for i, (item, member) in enumerate(zip(value, types, strict=True)):
            check_option_type(f"{name}[{i}]", item, member)
        return
    if origin is abc.Sequence:
        if not isinstance(value, tuple | list):
            raise _mismatch(name, value, typeinfo)
        member = typing.get_args(typeinfo)[0]
        for item in value:
            check_option_type(name, item, member)
        return
    if origin is typing.IO or typeinfo in (typing.TextIO, typing.BinaryIO):
        if not hasattr(value, "read"):
            raise _mismatch(name, value, typeinfo)
        return
    if typeinfo is typing.Any or isinstance(value, typeinfo):
        return
    if typeinfo is float and isinstance(value, int):
        return
    raise _mismatch(name, value, typeinfo)


def _mismatch(name: str, value: Any, typeinfo: Any) -> TypeError:
    return TypeError(f"Expected {typeinfo} for {name}, but got {type(value)}.")


def install() -> None:
    typecheck.check_option_type = check_option_type
