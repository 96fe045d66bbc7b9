"""A call's facts before any guard runs: its provider and endpoint (from a canonical path), its body
read within limits into the canonical request, and its numbers checked.

One rule throughout: what douane cannot read it cannot inspect, so it is refused, never forwarded
unread. Pure logic over bytes and strings; addons/classify.py glues it to flows.
"""

from __future__ import annotations

import io
import json
import re
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_to_bytes

import orjson

from douane import jsonio
from douane.bodies import BodyTooComplex, walk
from douane.call import Call
from douane.decision import Block
from douane.defaults import standardise
from douane.providers import ProviderSpec, UnreadableBody

if TYPE_CHECKING:
    from douane.gateway import Gateway


class AmbiguousPath(ValueError):
    """A path that two servers could read two ways: refused rather than guessed."""


_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
# what must not appear in a path, raw or percent-encoded: it would change its segments or its query,
# or be read one way by douane and another by the provider's front end
_AMBIGUOUS = frozenset(range(0x20)) | {0x7F, ord("/"), ord("\\"), ord("%"), ord("?"), ord("#")}
_RAW_AMBIGUOUS = re.compile(r"[\x00-\x1f\x7f\\#]|%(?![0-9A-Fa-f]{2})")
_SAFE = "/:@!$&'()*+,;=-._~"


def canonical_path(target: str) -> str:
    """The request target with its path percent-decoded, dot segments resolved and slashes merged;
    the query string is kept as it was. The upstream is sent this path, so what douane classified
    is what the provider reads.

    Raises AmbiguousPath for a backslash, '#', control character or stray '%'; for a
    percent-encoded '/', '\\', '%', '?', '#' or control character; for percent-encoded bytes that
    are not UTF-8; and for '..' above the root."""
    path, sep, query = target.partition("?")
    shown = target[:200]
    if not path.startswith("/"):
        raise AmbiguousPath(f"the request target {shown!r} is not an absolute path")
    if _RAW_AMBIGUOUS.search(path):
        raise AmbiguousPath(f"the path {shown!r} holds a backslash, '#', control character or stray '%'")
    if "%" in path:
        if any(int(m.group()[1:], 16) in _AMBIGUOUS for m in _PERCENT.finditer(path)):
            raise AmbiguousPath(f"the path {shown!r} percent-encodes a '/', '\\', '%', '?', '#' or control "
                                "character, which servers decode differently")
        try:
            path = unquote_to_bytes(path).decode("utf-8")
        except UnicodeDecodeError:
            raise AmbiguousPath(f"the path {shown!r} percent-encodes bytes that are not UTF-8") from None
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                raise AmbiguousPath(f"the path {shown!r} climbs above the root with '..'")
            segments.pop()
            continue
        segments.append(segment)
    trailing = "/" if path.endswith("/") and segments else ""
    return "/" + "/".join(quote(s, safe=_SAFE) for s in segments) + trailing + sep + query


def open_call(call_id: str, started: float, spec: ProviderSpec, host: str, method: str, path: str,
              client: str = "anonymous", team: str | None = None) -> Call:
    """A Call for a request to a provider host; `path` is the canonical request target."""
    return Call(id=call_id, started=started, provider=spec, host=host, method=method, path=path.split("?", 1)[0],
                endpoint=spec.adapter.endpoint(method, path), client=client, team=team)


CLIENT_REQUEST_ID_HEADERS = ("x-request-id", "idempotency-key", "x-idempotency-key", "x-client-request-id")
MAX_CLIENT_REQUEST_ID = 200


def client_request_id(headers: Mapping[str, str]) -> str | None:
    """The client's own id for a call, for the audit (the first of the usual headers it sends): printable
    ASCII, at most 200 characters; anything else is not an id and is not kept."""
    for name in CLIENT_REQUEST_ID_HEADERS:
        value = (headers.get(name) or "").strip()
        if value and len(value) <= MAX_CLIENT_REQUEST_ID and value.isascii() and value.isprintable():
            return value
    return None


# -- bodies -----------------------------------------------------------------------------------------

class NotReadable(ValueError):
    """The body cannot be read (encoding, JSON, size); the message says why, for the caller."""


class BodyTooLarge(NotReadable):
    """The body is past the size limit once decoded."""


def decode(raw: bytes, encoding: str | None, limit: int) -> bytes:
    """The body with its Content-Encoding undone, never more than `limit` bytes of it (a small
    compressed body may expand a thousandfold)."""
    enc = (encoding or "").strip().lower()
    if enc in ("", "identity"):
        return raw
    try:
        if enc in ("gzip", "x-gzip", "deflate"):
            d = zlib.decompressobj(wbits=47 if enc != "deflate" else 15)
            out = d.decompress(raw, limit + 1)
        elif enc == "br":
            import brotli

            out = brotli.Decompressor().process(raw, output_buffer_limit=limit + 1)
        elif enc == "zstd":
            import zstandard

            out = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read(limit + 1)
        else:
            raise NotReadable(f"the body's content-encoding {encoding!r} is not one douane can read "
                                 "(gzip, deflate, br, zstd)")
    except NotReadable:
        raise
    except Exception as e:  # zlib.error, brotli.error, zstandard.ZstdError: a corrupt stream
        raise NotReadable(f"the body's {enc} encoding could not be decoded: {e}") from None
    if len(out) > limit:
        raise BodyTooLarge(f"the body expands past the limit of {limit} bytes when its {enc} encoding is undone "
                             "(limits.max_request_bytes)")
    return out


def parse_json(raw: bytes) -> Any:
    """JSON text of a request, read strictly (RFC 8259), as NotReadable when it is not.

    What one parser reads and another refuses or reads otherwise is a way past the guards: a lone
    surrogate (escaped, or encoded in the bytes), NaN and Infinity literals are refused, not read
    the lenient way jsonio reads a provider's answers. orjson is strict; the standard library, which
    reads what orjson cannot (integers past 64 bits, nesting past 1024 levels), is made strict."""
    if not jsonio.may_hold_long_integer(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # not JSON, or JSON orjson cannot read: the strict reader below says which
    try:
        text = raw.decode("utf-8")  # the strict codec refuses encoded surrogates too
    except UnicodeDecodeError as e:
        raise NotReadable(f"the body is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        body = json.loads(text, parse_constant=_no_constant)
        json.dumps(body, ensure_ascii=False).encode("utf-8")  # a lone surrogate escape cannot be encoded
    except RecursionError:
        raise NotReadable("the body could not be read as JSON: it nests too deeply to be read") from None
    except UnicodeEncodeError:
        raise NotReadable("the body holds a lone surrogate (\\ud800-\\udfff escaped alone), which is not "
                             "text; send valid UTF-16 pairs") from None
    except ValueError as e:
        raise NotReadable(f"the body could not be read as JSON: {e}") from None
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (RFC 8259); send a number or null")


def read_request(gw: Gateway, call: Call, raw: bytes) -> Block | None:
    """Parse a provider call's body into the call's canonical request, within the policy's limits.

    Every string the adapter does not read is kept on the call for the guards (call.other_parts)."""
    limits = gw.policy.limits
    try:
        body = parse_json(raw)
        if not isinstance(body, dict):
            raise NotReadable("the body is JSON but not an object")
        model = body.get("model")
        if model is not None and not isinstance(model, str) and call.provider.format != "gemini":
            # the allow-lists, routes and prices match model names: a number or an object is none
            raise NotReadable(f"the body's model must be a string, not {type(model).__name__}")
        standardised = standardise(gw.policy, call, body, gw.enforcing)  # the policy's defaults:, first
        if standardised is not None:
            return standardised
        strings = walk(body, limits.max_json_depth, limits.max_json_strings)
    except BodyTooComplex as e:
        return Block(400, e.rule, f"{e}; it was not forwarded because douane cannot inspect it", always=True)
    except NotReadable as e:
        return Block(400, "unreadable_body", f"{e}; it was not forwarded because douane cannot inspect it")
    assert call.endpoint is not None
    try:
        request = call.provider.adapter.parse_request(call.endpoint, call.path, body)
    except UnreadableBody as e:
        return Block(400, "unreadable_body", f"the body is not shaped as the provider's API documents it: {e}; "
                     "it was not forwarded because douane cannot inspect it")
    call.request = request
    # what leaves is the body as douane read it, not the client's bytes: a key sent twice (which a
    # provider's parser might take the first of, and douane's takes the last of) cannot hide text
    call.forward_as_read = gw.enforcing
    call.model_requested = call.model = request.model
    call.stream = request.stream
    call.other_parts = strings.others(request.text_parts())
    call.other_keys = list(dict.fromkeys(strings.keys))
    if strings.binary:
        call.note(f"attachments not scanned: {strings.binary} base64 image/audio/file value(s)")
    return check_numbers(gw, call, body)


# -- numbers ------------------------------------------------------------------------------------------

# (JSON path, meaning) of the numbers that decide how much a call may cost, per wire format
_OUTPUT_CAPS: dict[str, list[tuple[str, ...]]] = {
    "openai": [("max_tokens",), ("max_completion_tokens",), ("max_output_tokens",)],
    "anthropic": [("max_tokens",)],
    "gemini": [("generationConfig", "maxOutputTokens"), ("generationConfig", "max_output_tokens"),
               ("generation_config", "maxOutputTokens"), ("generation_config", "max_output_tokens")],
}
_CHOICES: dict[str, list[tuple[str, ...]]] = {
    "openai": [("n",)],
    "anthropic": [],
    "gemini": [("generationConfig", "candidateCount"), ("generationConfig", "candidate_count"),
               ("generation_config", "candidateCount"), ("generation_config", "candidate_count")],
}
MAX_CHOICES = 128


def _at(body: dict[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = body
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_numbers(gw: Gateway, call: Call, body: dict[str, Any]) -> Block | None:
    """Output caps and choice counts must be whole numbers within 1..the model's maximum: they set
    the worst case a budget reserves, and a provider would refuse anything else anyway."""
    fmt = call.provider.format
    cap = gw.pricer.max_tokens(call.provider.name, call.model) or gw.policy.limits.max_output_tokens
    for path in _OUTPUT_CAPS[fmt]:
        present, value = _at(body, path)
        if not present or value is None:  # null: the provider's default, as if absent
            continue
        name = ".".join(path)
        if not _whole(value) or not 1 <= value <= cap:
            return _bad_number(name, value, f"a whole number from 1 to {cap}")
        call.max_output_tokens = max(call.max_output_tokens or 0, value)
    for path in _CHOICES[fmt]:
        present, value = _at(body, path)
        if not present or value is None:
            continue
        if not _whole(value) or not 1 <= value <= MAX_CHOICES:
            return _bad_number(".".join(path), value, f"a whole number from 1 to {MAX_CHOICES}")
        call.choices = value
    return None


def _bad_number(name: str, value: Any, wanted: str) -> Block:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return Block(400, "invalid_number", f"{name} must be {wanted}, not {shown}; it was not forwarded",
                 always=True)
