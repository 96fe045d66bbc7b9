"""A chat's next call starts with this call's messages: remember how they were pseudonymized.

Chat clients resend the whole history every turn. Each resent message would be looked up in the
scan cache and pseudonymized again, in order (the placeholders are numbered by first appearance),
which at forty turns cost more than the new message's own scan. Here a call's text parts, as the
client sent them, key what douane sent instead and the pseudonym state after them; the next call
of the same chat finds its prefix and carries on from there. Keys are the texts themselves (a
tuple compares them in full), never a hash of them: another chat's rewrite must never be reused.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from douane.detect.injection import Verdict
from douane.detect.pii import Finding, Pseudonyms


@dataclass(frozen=True)
class Rewritten:
    texts: tuple[str, ...]  # the text parts as the client sent them
    trusted: tuple[bool, ...]  # the model's own earlier answers (not scored for injection)
    findings: tuple[Sequence[Finding], ...]
    verdicts: tuple[Verdict, ...]  # per part; empty without an injection guard
    sent: tuple[str, ...] = ()  # each part as douane forwarded it
    pseudonyms: Pseudonyms | None = None  # the state after the last part: copy it before going on
    counts: Counter[str] = field(default_factory=Counter)  # findings per entity over all parts
    clean: bool = False  # no invisible or control characters in any of the texts (sanitize)

    def rewritten_as(self, sent: tuple[str, ...], pseudonyms: Pseudonyms, counts: Counter[str]) -> Rewritten:
        return replace(self, sent=sent, pseudonyms=pseudonyms, counts=counts)


class Prefixes:
    """The most recent calls' rewrites, found by the longest prefix of a new call's texts."""

    def __init__(self, size: int = 256, new_parts: int = 4):
        self._data: OrderedDict[tuple[str, ...], Rewritten] = OrderedDict()
        self._size = size
        self._new_parts = new_parts  # how many parts a turn may add (the answer, the next message, tools)
        self._lock = threading.Lock()

    def longest(self, texts: Sequence[str]) -> Rewritten | None:
        n = len(texts)
        for k in range(n, max(0, n - self._new_parts - 1), -1):
            key = tuple(texts[:k])
            with self._lock:
                hit = self._data.get(key)
                if hit is not None:
                    self._data.move_to_end(key)
                    return hit
        return None

    def remember(self, entry: Rewritten) -> None:
        with self._lock:
            self._data[entry.texts] = entry
            if len(self._data) > self._size:
                self._data.popitem(last=False)
