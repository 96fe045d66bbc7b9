"""Every string of a JSON body, wherever it is: what the guards read besides the adapter's text parts.

An adapter reads the shapes its format documents (messages, system prompt, tool calls). A body can
put text anywhere else (`"content": {"text": ...}`, `"messages": "..."`, metadata, tool definitions,
nested arrays), and the provider may still read it. So the guards also get every other string of
the body, and every object key, found here by one iterative walk that also holds the body to the
policy's limits (depth, number of strings): a body past them is refused, not forwarded unread.

Binary attachments (images, audio, files as base64) are not text: they are counted, not scanned.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from douane.providers import TextPart

# keys that carry a media type next to base64 data (OpenAI, Anthropic, Gemini spellings)
_MEDIA_KEYS = ("media_type", "mime_type", "mimeType", "format")
_AUDIO_FORMATS = {"wav", "mp3", "flac", "opus", "pcm16", "aac", "ogg", "webm", "m4a"}
_BINARY_MEDIA = re.compile(r"(?:image|audio|video)/[\w.+-]+|application/(?:pdf|octet-stream)")
_DATA_URI = re.compile(r"data:([\w.+-]+/[\w.+-]+)(?:;[\w.+-]+=[\w.+-]+)*;base64,")
_BASE64 = re.compile(r"[A-Za-z0-9+/=_-]*")
# A message's role, when it is one of the names the three formats define, is a word from a closed set:
# no text to inspect. Any other value of a "role" is kept, and scanned like every other string.
ROLE_NAMES = frozenset({"system", "developer", "user", "assistant", "model", "tool", "function"})


class BodyTooComplex(ValueError):
    """The body is past a limit of the policy; `rule` names the limit."""

    def __init__(self, rule: str, message: str):
        self.rule = rule
        super().__init__(message)


@dataclass(slots=True)
class Strings:
    """The body's strings: every value (where it sits: its container and key), every object key,
    binary values skipped. Parts are made only when asked for: most strings of a chat are the
    adapter's own, which it has parts for already."""

    found: list[tuple[Any, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    binary: int = 0  # base64 attachments not scanned
    depth: int = 0

    @property
    def values(self) -> list[TextPart]:
        """Every value, as a rewritable part."""
        return [TextPart(c, k, "other") for c, k in self.found]

    def others(self, known: Iterable[TextPart]) -> list[TextPart]:
        """The values no adapter part points at, as rewritable parts."""
        seen = {(id(p.container), p.key) for p in known}
        return [TextPart(c, k, "other") for c, k in self.found if (id(c), k) not in seen]


def _binary(container: Any, key: Any, value: str) -> bool:
    """A base64 attachment of a non-text type: a data: URI, or `data` next to a media type. Only
    well-formed base64 counts: a text that merely starts with "data:" is text, and is scanned."""
    if value.startswith("data:"):
        m = _DATA_URI.match(value)
        return m is not None and bool(_BINARY_MEDIA.fullmatch(m.group(1).lower())) \
            and bool(_BASE64.fullmatch(value, m.end()))
    if key != "data" or not isinstance(container, dict):
        return False
    for name in _MEDIA_KEYS:
        media = container.get(name)
        if isinstance(media, str):
            media = media.lower()
            typed = media in _AUDIO_FORMATS or bool(_BINARY_MEDIA.fullmatch(media))
            return typed and bool(_BASE64.fullmatch(value))
    return False


def walk(body: Any, max_depth: int, max_strings: int) -> Strings:
    """Every string and key of a parsed JSON body, depth first, without recursion.

    Raises BodyTooComplex past `max_depth` levels of nesting or `max_strings` strings. A chat resends
    its whole history, so this runs over every message of every call: exact type tests first (what
    the JSON readers make), isinstance only for what they did not; a role named in ROLE_NAMES is
    counted, not kept."""
    out = Strings()
    found, keys = out.found, out.keys
    stack: list[tuple[Any, int]] = [(body, 1)]
    count = deepest = 0
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise BodyTooComplex("limits.max_json_depth",
                                 f"the body nests deeper than {max_depth} levels (limits.max_json_depth)")
        if depth > deepest:
            deepest = depth
        items: Iterable[tuple[Any, Any]]
        if isinstance(node, dict):
            keys.extend(node)
            count += len(node)
            items = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            continue
        below = depth + 1
        for key, value in items:
            kind = type(value)
            if kind is str or isinstance(value, str):
                count += 1
                if (key == "data" or value.startswith("data:")) and _binary(node, key, value):
                    out.binary += 1
                elif key == "role" and value in ROLE_NAMES:
                    continue
                else:
                    found.append((node, key))
            elif kind is dict or kind is list or isinstance(value, dict | list):
                stack.append((value, below))
        if count > max_strings:
            raise BodyTooComplex("limits.max_json_strings",
                                 f"the body holds more than {max_strings} strings and keys (limits.max_json_strings)")
    out.depth = deepest
    return out
