"""Results per text, shared by the detectors: chat clients resend their whole history every turn,
so most texts of a request were scanned before."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable


class TextCache[T]:
    """A thread-safe LRU keyed by the text itself (its hash is cached on the str object, so repeated
    lookups of one request's strings are free); long texts are keyed by a digest, so the cache
    never holds more than `max_chars_kept` characters per entry."""

    def __init__(self, size: int = 8192, max_chars_kept: int = 65536):
        self._data: OrderedDict[Hashable, T] = OrderedDict()
        self._size = size
        self._max_chars = max_chars_kept
        self._lock = threading.Lock()

    def key(self, text: str) -> Hashable:
        if len(text) <= self._max_chars:
            return text
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def __contains__(self, text: str) -> bool:
        return self.key(text) in self._data

    def get(self, text: str) -> T | None:
        key = self.key(text)
        hit = self._data.get(key)  # one atomic dict read: no lock on the path every resent message takes
        if hit is not None:
            with contextlib.suppress(KeyError):  # evicted by another thread meanwhile: still a valid answer
                self._data.move_to_end(key)
        return hit

    def put(self, text: str, value: T) -> None:
        key = self.key(text)
        with self._lock:
            self._data[key] = value
            if len(self._data) > self._size:
                self._data.popitem(last=False)
