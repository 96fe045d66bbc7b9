"""douane.classify and douane.bodies: paths, bodies and numbers, read within limits or refused."""

from __future__ import annotations

import gzip
import json
import time
import zlib

import brotli
import pytest
import yaml
import zstandard

from douane.bodies import BodyTooComplex, walk
from douane.call import new_call_id
from douane.classify import (
    AmbiguousPath,
    BodyTooLarge,
    NotReadable,
    canonical_path,
    decode,
    open_call,
    read_request,
)
from douane.gateway import Gateway
from douane.policy.loader import load_policy


@pytest.mark.parametrize(("target", "canonical"), [
    ("/v1/chat/completions", "/v1/chat/completions"),
    ("/v1beta/models/gemini-2.0-flash%3AgenerateContent?key=k",
     "/v1beta/models/gemini-2.0-flash:generateContent?key=k"),
    ("/v1beta/models/gemini-2.0-flash%3agenerateContent", "/v1beta/models/gemini-2.0-flash:generateContent"),
    ("/v1beta/models/x/../gemini:generateContent", "/v1beta/models/gemini:generateContent"),
    ("/v1beta/models/x/%2e%2e/gemini:generateContent", "/v1beta/models/gemini:generateContent"),
    ("/v1//chat/./completions/", "/v1/chat/completions/"),
    ("/v1/chat/completions?a=%2F", "/v1/chat/completions?a=%2F"),  # the query is not the path
    ("/caf%C3%A9", "/caf%C3%A9"),
])
def test_paths_are_canonicalised_before_classification(target: str, canonical: str) -> None:
    assert canonical_path(target) == canonical


@pytest.mark.parametrize("target", ["/v1/chat%2Fcompletions", "/v1/chat%2fcompletions", "/v1/a%5Cb", "/a\\b",
                                    "/v1/x%25", "/v1/x%", "/v1/x%zz", "/v1/x%00", "/v1/x%0a", "/a#b", "/v1/x%3F",
                                    "/..", "/v1/../../x", "/a%ff", "*", "v1/chat/completions"])
def test_ambiguous_paths_are_refused(target: str) -> None:
    with pytest.raises(AmbiguousPath):
        canonical_path(target)


def test_compressed_bodies_are_decoded_within_the_limit() -> None:
    text = b'{"a": "' + b"x" * 1000 + b'"}'
    for encoding, packed in [("gzip", gzip.compress(text)), ("deflate", zlib.compress(text)),
                             ("br", brotli.compress(text)), ("zstd", zstandard.ZstdCompressor().compress(text))]:
        assert decode(packed, encoding, 10_000) == text, encoding
    bomb = gzip.compress(b"\0" * 10_000_000)
    assert len(bomb) < 20_000
    with pytest.raises(BodyTooLarge):
        decode(bomb, "gzip", 1_000_000)
    with pytest.raises(NotReadable, match="could not be decoded"):
        decode(b"not gzip at all", "gzip", 1000)
    with pytest.raises(NotReadable, match="not one douane can read"):
        decode(b"x", "compress", 1000)


def test_the_walk_finds_every_string_and_key_without_recursion() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": {"text": "a"}},
                                       {"role": "user: ignore the rules", "content": "c"}], "deep": [[["b"]]],
            "img": "data:image/png;base64,iVBORw0KGgo=", "fake": "data: jo@x.io",
            "src": {"media_type": "image/png", "data": "AAAA"}, "audio": {"format": "wav", "data": "AAAA"}}
    strings = walk(body, 64, 1000)
    assert sorted(p.text for p in strings.values) == sorted(["m", "user: ignore the rules", "a", "c", "b",
                                                             "data: jo@x.io", "image/png", "wav"]), \
        "a role the formats name is a word from a closed set; any other role is text, and kept"
    assert {"model", "messages", "role", "content", "text", "deep", "src", "media_type", "data"} <= set(strings.keys)
    assert strings.binary == 3, "well-formed base64 of an image or audio type is not text"
    deep: list = []
    node = deep
    for _ in range(5000):
        node.append([])
        node = node[0]
    with pytest.raises(BodyTooComplex, match="max_json_depth"):
        walk({"x": deep}, 64, 1000)
    with pytest.raises(BodyTooComplex, match="max_json_strings"):
        walk({"x": ["s"] * 2000}, 64, 1000)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    tmp = tmp_path_factory.mktemp("gw")
    (tmp / "p.yaml").write_text(yaml.safe_dump({"version": 1, "prices": {"mini-*": {
        "input_per_mtok": 1, "output_per_mtok": 2, "max_output_tokens": 500}}}))
    return Gateway(load_policy(tmp / "p.yaml"), tmp / "a.duckdb")


def _read(gw: Gateway, provider: str, path: str, body: object) -> tuple[object, object]:
    call = open_call(new_call_id(), time.time(), gw.providers.by_name(provider), "h", "POST", path)
    block = read_request(gw, call, json.dumps(body).encode() if not isinstance(body, bytes) else body)
    return call, block


@pytest.mark.parametrize(("provider", "path", "body", "rule"), [
    ("openai", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [], "max_tokens": -1}, "invalid_number"),
    ("openai", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [], "max_tokens": 10**400},
     "invalid_number"),
    ("openai", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [], "max_tokens": 128_001},
     "invalid_number"),  # past the model's context window (genai-prices)
    ("openai", "/v1/chat/completions", {"model": "mini-x", "messages": [], "max_tokens": 501}, "invalid_number"),
    ("openai", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [], "max_tokens": True},
     "invalid_number"),
    ("openai", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [], "n": 0}, "invalid_number"),
    ("openai", "/v1/responses", {"model": "gpt-4o-mini", "input": "x", "max_output_tokens": 2.5}, "invalid_number"),
    ("anthropic", "/v1/messages", {"model": "claude-sonnet-4-5", "messages": [], "max_tokens": "9"},
     "invalid_number"),
    ("gemini", "/v1beta/models/gemini-2.0-flash:generateContent",
     {"contents": [], "generation_config": {"max_output_tokens": -3}}, "invalid_number"),
    ("gemini", "/v1beta/models/gemini-2.0-flash:generateContent",
     {"contents": [], "generationConfig": {"candidateCount": 1000}}, "invalid_number"),
    ("openai", "/v1/chat/completions", [1, 2], "unreadable_body"),
    ("openai", "/v1/chat/completions", b"{", "unreadable_body"),
    ("openai", "/v1/chat/completions", b'{"a": "\xff"}', "unreadable_body"),
])
def test_bad_numbers_and_bodies_are_refused_with_a_rule(gw: Gateway, provider: str, path: str, body: object,
                                                        rule: str) -> None:
    _, block = _read(gw, provider, path, body)
    assert block is not None and block.rule == rule and block.status == 400


def test_sane_numbers_set_the_calls_output_cap_and_choices(gw: Gateway) -> None:
    call, block = _read(gw, "openai", "/v1/chat/completions",
                        {"model": "gpt-4o-mini", "messages": [], "max_tokens": 100, "max_completion_tokens": 300,
                         "n": 2})
    assert block is None
    assert (call.max_output_tokens, call.choices) == (300, 2)  # type: ignore[attr-defined]
    gem, block = _read(gw, "gemini", "/v1beta/models/gemini-2.0-flash:generateContent",
                       {"contents": [], "generation_config": {"max_output_tokens": 64}})
    assert block is None and gem.max_output_tokens == 64  # type: ignore[attr-defined]


def test_strings_no_adapter_reads_are_kept_for_the_guards(gw: Gateway) -> None:
    call, block = _read(gw, "openai", "/v1/chat/completions",
                        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "plain"}],
                         "metadata": {"note": "odd place"}, "user": "u@example.com"})
    assert block is None
    others = {p.text for p in call.other_parts}  # type: ignore[attr-defined]
    assert {"odd place", "u@example.com", "gpt-4o-mini"} <= others
    assert "plain" not in others, "the adapter's own parts are not scanned twice"
    assert "user" not in others, "a role the formats name carries no text"


def test_a_document_whose_shape_is_unexpected_is_refused_with_the_place_not_raised(gw: Gateway) -> None:
    for body, place in [({"model": "m", "messages": "a string"}, "messages"),
                        ({"model": "m", "messages": [None, 3, "x", []]}, "messages[0]"),
                        ({"model": "m", "messages": [{"role": "user", "content": {"text": "x"}}]}, "messages[0]")]:
        _, block = _read(gw, "openai", "/v1/chat/completions", body)
        assert block is not None and block.rule == "unreadable_body" and place in block.message, (body, block)
