"""The bad-input corpus (issue 9): every malformed, oversized, ambiguous or unusual request douane has
a defined answer for, sent through a real `douane run`, each with that answer.

A case is a request (method, host, path or raw request target, headers, body bytes) and what must
come of it: the status; when douane refuses it, the rule, in the provider's own error shape and as
the row's reason; whether it reached the provider, and what the provider got (never an unread body,
never the user's PII). README's bad-input table is this list.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import re
import socket
import ssl
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import brotli
import httpx
import pytest
import zstandard

from tests.e2e.conftest import Douane, routed_policy
from tests.e2e.test_sdks import EMAIL, PHONE

LIMIT = 64 * 1024  # the corpus proxy's limits.max_request_bytes
MAX_STRINGS = 1000  # and its limits.max_json_strings
HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com", "gemini": "generativelanguage.googleapis.com"}
FORMAT_OF = {host: fmt for fmt, host in HOSTS.items()}
GEMINI = "/v1beta/models/gemini-2.0-flash:generateContent"


# -- bodies ------------------------------------------------------------------------------------------

def js(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def chat(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


def claude(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": text}], **extra}


def gemini(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


def raw_chat(content: bytes, extra: bytes = b"") -> bytes:
    """A chat body written by hand, for bytes and literals no JSON encoder writes."""
    return b'{"model": "gpt-4o-mini", ' + extra + b'"messages": [{"role": "user", "content": "' + content + b'"}]}'


def nested(depth: int, opener: str, closer: str) -> bytes:
    return (opener * depth + closer * depth).encode()


def deep_chat(inner: bytes) -> bytes:
    return b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "x": ' + inner + b"}"


BOMB = gzip.compress(js(chat("x" * (LIMIT * 4))))  # ~1 KB that expands past the limit
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4).decode()
MULTIPART_BOUNDARY = "douane-corpus-boundary"
BINARY = b"\x00\x01binary " + EMAIL.encode() + b"\xff\xfe"


def multipart(filename: str, ctype: str, payload: bytes) -> bytes:
    b = MULTIPART_BOUNDARY.encode()
    return (b"--" + b + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--' + b
            + f'\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode()
            + f"Content-Type: {ctype}\r\n\r\n".encode() + payload + b"\r\n--" + b + b"--\r\n")


# -- what the provider must have got -----------------------------------------------------------------

Check = Callable[[dict[str, Any]], None]


def redacted(*placeholders: str) -> Check:
    """The PII is gone from what was sent, and the placeholders stand where it was."""
    def check(sent: dict[str, Any]) -> None:
        raw = sent["raw"]
        assert EMAIL not in raw and PHONE not in raw, raw[:300]
        for p in placeholders or ("<EMAIL_ADDRESS>",):
            assert p in raw, raw[:300]
    return check


def at(path: tuple[Any, ...], value: Any) -> Check:
    """The provider's body holds `value` at `path`."""
    def check(sent: dict[str, Any]) -> None:
        node = json.loads(sent["raw"])
        for key in path:
            node = node[key]
        assert node == value, node
    return check


def unchanged(body: bytes) -> Check:
    def check(sent: dict[str, Any]) -> None:
        assert sent["raw"].encode("utf-8", "replace") == body.decode("utf-8", "replace").encode("utf-8", "replace")
    return check


def all_of(*checks: Check) -> Check:
    def check(sent: dict[str, Any]) -> None:
        for c in checks:
            c(sent)
    return check


# -- the cases ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    body: bytes = b""
    fmt: str = "openai"
    path: str = "/v1/chat/completions"
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None  # a raw request target, sent as it is (no client-side normalisation)
    proxy: str = "small"  # which proxy (POLICIES): small limits | defaults | monitor
    status: int = 200
    rule: str | None = None  # douane's refusal: the rule in the provider's error shape and the row's reason
    forwarded: bool = True
    sent: Check | None = None  # what the provider must have got
    reason: str | None = None  # part of the row's reason, for a call douane let through
    row: Mapping[str, Any] = field(default_factory=dict)  # more columns the row must have
    message: str | None = None  # part of the refusal's message (the place a shape was not readable)
    any_refusal: bool = False  # refused, whatever the status and rule (a transport still being built)

    @property
    def host(self) -> str:
        return HOSTS[self.fmt]


def refused(id: str, body: bytes, rule: str, status: int = 400, **kw: Any) -> Case:
    return Case(id, body, status=status, rule=rule, forwarded=False, **kw)


def bad_number(id: str, body: dict[str, Any], fmt: str = "openai", path: str | None = None) -> Case:
    path = path or {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "gemini": GEMINI}[fmt]
    return refused(id, js(body), "invalid_number", fmt=fmt, path=path)


def encoded(id: str, encoding: str, pack: Callable[[bytes], bytes]) -> Case:
    return Case(id, pack(js(chat(f"mail {EMAIL}"))), headers={"content-encoding": encoding},
                sent=all_of(redacted(), lambda s: _no_header(s, "content-encoding")), reason="pii.redact")


def _no_pii(raw: str) -> None:
    assert EMAIL not in raw and PHONE not in raw, raw[:300]


def _no_header(sent: dict[str, Any], name: str) -> None:
    assert name not in {k.lower() for k in sent["headers"]}, sent["headers"]


UNREADABLE = "unreadable_body"
WEBSOCKET_UPGRADE = {"upgrade": "websocket", "connection": "Upgrade", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
                     "sec-websocket-version": "13"}
JSON = {"content-type": "application/json"}

CASES = [
    # -- bodies that are not a JSON object -----------------------------------------------------------
    refused("malformed-json", b'{"model": "gpt-4o-mini", "messages": [', UNREADABLE),
    refused("malformed-json-anthropic", b'{"model": "claude-haiku-4-5", "max_tokens": ', UNREADABLE,
            fmt="anthropic", path="/v1/messages"),
    refused("malformed-json-gemini", b'{"contents": [{"parts": [{"text": "hi"}', UNREADABLE, fmt="gemini", path=GEMINI),
    refused("json-array", b'[{"role": "user", "content": "hi"}]', UNREADABLE),
    refused("json-string", b'"hello"', UNREADABLE),
    refused("json-number", b"42", UNREADABLE),
    refused("json-null", b"null", UNREADABLE),
    refused("empty-body", b"", UNREADABLE),
    refused("trailing-garbage", js(chat()) + b" and more", UNREADABLE),
    refused("two-documents", js(chat()) + js(chat()), UNREADABLE),
    refused("invalid-utf8", raw_chat(b"caf\xe9 \xff"), UNREADABLE),
    refused("utf8-encoded-surrogate", raw_chat(b"\xed\xa0\x80"), UNREADABLE),
    refused("escaped-lone-surrogate", raw_chat(b"a \\ud800 b"), UNREADABLE),
    refused("nan-literal", raw_chat(b"hi", b'"temperature": NaN, '), UNREADABLE),
    refused("infinity-literal", raw_chat(b"hi", b'"temperature": Infinity, '), UNREADABLE),
    refused("minus-infinity-literal", raw_chat(b"hi", b'"top_p": -Infinity, '), UNREADABLE),
    Case("duplicate-key-hiding-pii", b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "mail '
         + EMAIL.encode() + b'"}], "messages": [{"role": "user", "content": "hi"}]}',
         sent=all_of(at(("messages",), [{"role": "user", "content": "hi"}]), lambda s: _no_pii(s["raw"]))),
    refused("byte-order-mark", b"\xef\xbb\xbf" + js(chat()), UNREADABLE),
    refused("model-not-a-string", js({**chat(), "model": 123}), UNREADABLE),
    # -- bodies past the policy's limits --------------------------------------------------------------
    refused("nested-arrays-100000", deep_chat(nested(100_000, "[", "]")), UNREADABLE, proxy="defaults"),
    refused("nested-objects-100000", deep_chat(b'{"a":' * 100_000 + b"1" + b"}" * 100_000), UNREADABLE,
            proxy="defaults"),
    refused("nested-past-max-json-depth", deep_chat(nested(70, "[", "]")), "limits.max_json_depth"),
    refused("more-strings-than-max-json-strings", js(chat(metadata={f"k{i}": "v" for i in range(MAX_STRINGS)})),
            "limits.max_json_strings"),
    refused("content-length-over-the-limit", js(chat("x" * LIMIT)), "limits.max_request_bytes", status=413),
    refused("chunked-body-over-the-limit", js(chat("x" * LIMIT)), "limits.max_request_bytes", status=413,
            headers={"transfer-encoding": "chunked"}),
    refused("gzip-bomb", BOMB, "limits.max_request_bytes", status=413, headers={"content-encoding": "gzip"}),
    # -- numbers that decide what a call may cost -----------------------------------------------------
    bad_number("max-tokens-huge", chat(max_tokens=10**12)),
    bad_number("max-tokens-past-64-bits", chat(max_tokens=2**70)),
    bad_number("max-tokens-negative", chat(max_tokens=-1)),
    bad_number("max-tokens-zero", chat(max_tokens=0)),
    bad_number("max-tokens-float", chat(max_tokens=10.5)),
    bad_number("max-tokens-string", chat(max_tokens="100")),
    bad_number("max-tokens-boolean", chat(max_tokens=True)),
    bad_number("max-completion-tokens-huge", chat(max_completion_tokens=10**9)),
    bad_number("max-output-tokens-negative", {"model": "gpt-4o-mini", "input": "hi", "max_output_tokens": -5},
               path="/v1/responses"),
    bad_number("anthropic-max-tokens-string", claude(max_tokens="16"), fmt="anthropic"),
    bad_number("anthropic-max-tokens-zero", claude(max_tokens=0), fmt="anthropic"),
    bad_number("gemini-maxOutputTokens-huge", gemini(generationConfig={"maxOutputTokens": 10**12}), fmt="gemini"),
    bad_number("gemini-max_output_tokens-negative", gemini(generation_config={"max_output_tokens": -1}), fmt="gemini"),
    bad_number("n-zero", chat(n=0)),
    bad_number("n-thousand", chat(n=1000)),
    bad_number("n-float", chat(n=2.5)),
    bad_number("gemini-candidateCount-huge", gemini(generationConfig={"candidateCount": 500}), fmt="gemini"),
    bad_number("gemini-candidate_count-string", gemini(generation_config={"candidate_count": "2"}), fmt="gemini"),
    Case("max-tokens-null", js(chat(max_tokens=None)), sent=at(("max_tokens",), None)),
    Case("n-null", js(chat(n=None)), sent=at(("n",), None)),
    # -- text in shapes the adapters do not read, and PII outside the messages -------------------------
    refused("content-as-an-object", js({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": {
        "text": f"mail {EMAIL}"}}]}), UNREADABLE, message="messages[0].content"),
    refused("messages-as-a-string", js({"model": "gpt-4o-mini", "messages": f"mail {EMAIL}"}), UNREADABLE,
            message="messages"),
    refused("content-in-nested-arrays", js({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [
        [[f"mail {EMAIL}"]]]}]}), UNREADABLE, message="messages[0].content[0]"),
    refused("tool-calls-true", js({"model": "gpt-4o-mini", "messages": [
        {"role": "assistant", "content": "x", "tool_calls": True}]}), UNREADABLE, message="messages[0].tool_calls"),
    refused("tool-call-without-a-name", js({"model": "gpt-4o-mini", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"arguments": "{}"}}]}]}), UNREADABLE,
        message="messages[0].tool_calls[0]"),
    Case("pii-in-metadata", js(chat(metadata={"note": f"for {EMAIL}"})), sent=at(("metadata", "note"),
                                                                                 "for <EMAIL_ADDRESS>"),
         reason="pii.redact: EMAIL_ADDRESS x1"),
    Case("pii-in-a-tool-definition", js(chat(tools=[{"type": "function", "function": {
        "name": "lookup", "description": f"ask {EMAIL}", "parameters": {"type": "object"}}}])),
        sent=at(("tools", 0, "function", "description"), "ask <EMAIL_ADDRESS>"), reason="pii.redact"),
    Case("pii-in-an-unknown-field", js(chat(x_vendor_extension={"deep": [f"call {PHONE}"]})),
         sent=at(("x_vendor_extension", "deep", 0), "call <PHONE_NUMBER>"), reason="pii.redact: PHONE_NUMBER x1"),
    Case("pii-in-anthropic-system-blocks", js(claude(system=[{"type": "text", "text": f"cc {EMAIL}"}])),
         fmt="anthropic", path="/v1/messages", sent=at(("system", 0, "text"), "cc <EMAIL_ADDRESS>"),
         reason="pii.redact"),
    Case("pii-in-gemini-system-instruction", js(gemini(systemInstruction={"parts": [{"text": f"cc {EMAIL}"}]})),
         fmt="gemini", path=GEMINI, sent=at(("systemInstruction", "parts", 0, "text"), "cc <EMAIL_ADDRESS>"),
         reason="pii.redact"),
    refused("pii-in-an-object-key", js(chat(metadata={EMAIL: "owner"})), "pii.in_key"),
    Case("image-data-uri-not-scanned", js({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": PNG}}, {"type": "text", "text": "what is this?"}]}]}),
        sent=at(("messages", 0, "content", 0, "image_url", "url"), PNG), reason="attachments not scanned: 1"),
    Case("text-that-starts-with-data-is-scanned", js(chat(f"data: mail {EMAIL}")),
         sent=at(("messages", 0, "content"), "data: mail <EMAIL_ADDRESS>"), reason="pii.redact"),
    # -- encodings ------------------------------------------------------------------------------------
    encoded("gzip-body", "gzip", gzip.compress),
    encoded("br-body", "br", brotli.compress),
    encoded("zstd-body", "zstd", zstandard.ZstdCompressor().compress),
    encoded("deflate-body", "deflate", zlib.compress),
    refused("corrupt-gzip-body", gzip.compress(js(chat()))[:-12] + b"garbage!", UNREADABLE,
            headers={"content-encoding": "gzip"}),
    refused("unknown-content-encoding", js(chat()), UNREADABLE, headers={"content-encoding": "compress"}),
    # -- paths ----------------------------------------------------------------------------------------
    Case("gemini-path-%3A", js(gemini(f"mail {EMAIL}")), fmt="gemini", sent=redacted(), reason="path canonicalised",
         path="/v1beta/models/gemini-2.0-flash%3AgenerateContent", row={"endpoint": "generateContent"}),
    Case("gemini-path-%3a", js(gemini(f"mail {EMAIL}")), fmt="gemini", sent=redacted(), reason="path canonicalised",
         path="/v1beta/models/gemini-2.0-flash%3agenerateContent", row={"endpoint": "generateContent"}),
    Case("gemini-path-dot-segments", js(gemini(f"mail {EMAIL}")), fmt="gemini",
         target="/v1beta/models/other/../gemini-2.0-flash:generateContent", sent=redacted(),
         reason="path canonicalised"),
    Case("gemini-path-encoded-dots", js(gemini(f"mail {EMAIL}")), fmt="gemini",
         target="/v1beta/models/x/%2e%2e/gemini-2.0-flash:generateContent", sent=redacted(),
         reason="path canonicalised"),
    refused("path-%2F", js(gemini(f"mail {EMAIL}")), "ambiguous_path", fmt="gemini",
            path="/v1beta/models%2Fgemini-2.0-flash:generateContent"),
    refused("path-%25", js(gemini(f"mail {EMAIL}")), "ambiguous_path", fmt="gemini",
            path="/v1beta/models/gemini-2.0-flash%253AgenerateContent"),
    refused("path-backslash", js(chat(f"mail {EMAIL}")), "ambiguous_path", target="/v1\\chat/completions"),
    refused("path-dot-dot-above-root", js(chat(f"mail {EMAIL}")), "ambiguous_path",
            target="/../v1/chat/completions"),
    # -- endpoints douane does not model --------------------------------------------------------------
    Case("get-on-the-chat-endpoint", method="GET", status=404, row={"endpoint": "other", "method": "GET"}),
    Case("jsonl-upload-redacted", multipart("batch.jsonl", "application/jsonl", (js({
        "custom_id": "1", "body": chat(f"mail {EMAIL}")}) + b"\n")), path="/v1/files",
        headers={"content-type": f"multipart/form-data; boundary={MULTIPART_BOUNDARY}"}, sent=redacted(),
        reason="pii.redact: EMAIL_ADDRESS x1"),
    Case("text-upload-redacted", f"notes for {EMAIL}\n".encode(), path="/v1/files",
         headers={"content-type": "text/plain"}, sent=redacted(), reason="pii.redact: EMAIL_ADDRESS x1"),
    Case("json-other-endpoint-redacted", js({"input_file_id": "file-1", "metadata": {"owner": EMAIL}}),
         path="/v1/batches", sent=at(("metadata", "owner"), "<EMAIL_ADDRESS>"), reason="pii.redact"),
    refused("pii-in-a-key-of-an-upload", js({"metadata": {EMAIL: "owner"}}), "pii.in_key", path="/v1/batches"),
    Case("binary-upload-forwarded-unscanned", BINARY, path="/v1/uploads/u1/parts",
         headers={"content-type": "application/octet-stream"}, sent=unchanged(BINARY), reason="forwarded unscanned"),
    refused("other-endpoint-under-block", js({"purpose": "batch"}), "other_endpoints.block", status=403,
            path="/v1/batches", proxy="defaults"),
    # -- where the request says it goes --------------------------------------------------------------
    refused("host-header-names-another-host", js(chat(f"mail {EMAIL}")), "misdirected_request", status=421,
            headers={"host": "example.com"}),
    refused("host-header-names-another-provider", js(chat(f"mail {EMAIL}")), "misdirected_request", status=421,
            headers={"host": "api.anthropic.com"}),
    refused("websocket-upgrade-on-an-unknown-path", method="GET", path="/v1/unknown-socket", status=403,
            rule="websocket.block", any_refusal=True, body=b"", headers=WEBSOCKET_UPGRADE),
    # -- monitor mode: what is not readable is forwarded and recorded, limits still hold ---------------
    Case("monitor-malformed-json-forwarded", b'{"model": "gpt-4o-mini", "messages": [', proxy="monitor", status=400,
         sent=unchanged(b'{"model": "gpt-4o-mini", "messages": ['), reason="unreadable body: forwarded uninspected"),
    refused("monitor-body-over-the-limit", js(chat("x" * LIMIT)), "limits.max_request_bytes", status=413,
            proxy="monitor"),
]


# -- the proxies ---------------------------------------------------------------------------------------

POLICIES = {
    "small": {"limits": {"max_request_bytes": LIMIT, "max_json_strings": MAX_STRINGS}},
    "defaults": {"other_endpoints": "block"},  # and the default limits
    "monitor": {"mode": "monitor", "limits": {"max_request_bytes": LIMIT}},
}


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory, mock: str, certs: Any) -> Iterator[dict[str, Douane]]:
    started: dict[str, Douane] = {}
    try:
        for name, extra in POLICIES.items():
            started[name] = Douane(tmp_path_factory.mktemp(f"corpus-{name}"), routed_policy(mock, **extra),
                                   certs).start()
        yield started
    finally:
        for d in started.values():
            d.stop()


def send(d: Douane, case: Case) -> httpx.Response:
    headers = {**JSON, **case.headers} if case.method == "POST" else dict(case.headers)
    if case.target is not None:
        return send_raw(d, case, headers)
    content: bytes | Iterator[bytes] = case.body
    if headers.pop("transfer-encoding", None) == "chunked":  # no content-length: the size is known only once read
        content = iter([case.body[i:i + 4096] for i in range(0, len(case.body), 4096)])
    with d.http() as client:
        return client.request(case.method, f"https://{case.host}{case.path}", content=content or None,
                              headers=headers)


def send_raw(d: Douane, case: Case, headers: dict[str, str]) -> httpx.Response:
    """The request with its target exactly as written (HTTP clients resolve '..' and escape '\\'),
    through a CONNECT tunnel of its own."""
    assert case.target is not None
    sock = socket.create_connection(("127.0.0.1", d.port), timeout=30)
    try:
        sock.sendall(f"CONNECT {case.host}:443 HTTP/1.1\r\nHost: {case.host}:443\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200"), head
        tls = ssl.create_default_context(cafile=d.bundle).wrap_socket(sock, server_hostname=case.host)
        lines = [f"{case.method} {case.target} HTTP/1.1", f"Host: {case.host}", f"Content-Length: {len(case.body)}",
                 "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
        tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + case.body)
        answer = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
        answer.begin()
        return httpx.Response(answer.status, headers=answer.getheaders(), content=answer.read())
    finally:
        sock.close()


RULE = re.compile(r"\[rule: ([\w.]+)\]")


def assert_provider_error(fmt: str, response: httpx.Response, status: int, rule: str) -> None:
    """The refusal in the provider's own error shape (CONTRACT.md), naming the rule."""
    body = response.json()
    if fmt == "openai":
        assert set(body["error"]) >= {"message", "type", "code"} and body["error"]["code"] == rule
        message = body["error"]["message"]
    elif fmt == "anthropic":
        assert body["type"] == "error" and set(body["error"]) >= {"type", "message"}
        message = body["error"]["message"]
    else:
        assert body["error"]["code"] == status and isinstance(body["error"]["status"], str)
        message = body["error"]["message"]
    assert RULE.findall(message) == [rule], message


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_has_a_defined_answer(proxies: dict[str, Douane], received: list, case: Case) -> None:
    d = proxies[case.proxy]
    r = send(d, case)
    call_id = r.headers.get("x-douane-request-id")
    assert call_id, f"no x-douane-request-id: {r.status_code} {r.text[:300]}"
    row = d.rows(f"SELECT * FROM requests WHERE id = '{call_id}'", expect=1)[0]
    if case.any_refusal:
        assert 400 <= r.status_code < 500 and received == [], r.text[:300]
        assert row["decision"] == "blocked" and row["status"] == r.status_code
        return
    assert r.status_code == case.status, r.text[:500]
    assert row["status"] == case.status
    if case.rule is not None:
        assert_provider_error(case.fmt, r, case.status, case.rule)
        assert case.message is None or case.message in r.text, r.text
        assert row["decision"] == "blocked" and row["reason"].split("; ")[-1] == case.rule, row["reason"]
    else:
        assert row["decision"] == "allowed"
        if case.reason is not None:
            assert case.reason in (row["reason"] or ""), row["reason"]
    for column, value in case.row.items():
        assert row[column] == value, (column, row[column])
    assert len(received) == (1 if case.forwarded else 0), "forwarded" if received else "not forwarded"
    if case.sent is not None:
        case.sent(received[0])
    stored = (row["request_body"] or "") + (row["response_body"] or "")
    assert EMAIL not in stored and PHONE not in stored or case.proxy == "monitor", "no PII in the audit store"


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
