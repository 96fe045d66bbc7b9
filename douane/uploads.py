"""Bodies of provider endpoints douane does not model (files, batches, fine-tuning, vector stores):
the text they carry, found, sanitised and scanned for PII under the call's guard settings.

A batch's prompts reach the provider as a JSON-lines file uploaded to /v1/files: the chat endpoint's
guards never see them. So text bodies are read whatever the endpoint: JSON (every string), JSON
lines (each line), multipart uploads (each text part, by its type or its file name) and plain text.
Redaction rewrites them in place; other bytes (images, archives) are forwarded as they are, and the
row says so.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from email.message import Message
from typing import TYPE_CHECKING, Any

from douane import jsonio
from douane.bodies import BodyTooComplex, walk
from douane.decision import Block
from douane.detect.pii import redact
from douane.guard import sanitize_strings
from douane.guard_settings import Guards
from douane.providers import TextPart

if TYPE_CHECKING:
    from douane.gateway import Gateway

_TEXT_SUFFIXES = (".jsonl", ".json", ".txt", ".csv", ".tsv", ".md", ".yaml", ".yml", ".xml", ".html", ".ndjson")
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


@dataclass
class UploadScan:
    body: bytes | None = None  # the rewritten body, when anything was redacted
    entities: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    block: Block | None = None


_BINARY_RPC = ("application/grpc", "application/x-protobuf", "application/protobuf", "application/x-google-protobuf")


def binary_rpc_refusal(content_type: str) -> Block | None:
    """gRPC and protobuf bodies carry prompts as binary fields douane cannot read (the older Gemini
    SDKs speak gRPC by default): refused, rather than forwarded as an upload that holds no text."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if not ctype.startswith(_BINARY_RPC):
        return None
    return Block(415, "unsupported_transport",
                 f"douane cannot inspect {ctype} bodies, so this call was not forwarded; use the provider's "
                 "REST (JSON) transport instead (for google-generativeai: genai.configure(transport='rest'))")


def _is_text(content_type: str, filename: str | None = None) -> bool:
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype.startswith("text/") or ctype.endswith(("json", "jsonl", "ndjson", "xml", "yaml", "csv")):
        return True
    return filename is not None and filename.lower().endswith(_TEXT_SUFFIXES)


class _Found:
    """The texts found in a body: values as rewritable parts, object keys as plain strings."""

    def __init__(self, gw: Gateway):
        self.limits = gw.policy.limits
        self.values: list[TextPart] = []
        self.keys: list[str] = []


class _Text:
    """A text read one of three ways: one JSON document, JSON lines, or plain text."""

    def __init__(self, text: str, found: _Found, json_lines: bool):
        self.lines: list[Any] = []  # per line: a parsed JSON document, or a _Box holding its text
        for line in text.split("\n") if json_lines else [text]:
            self.lines.append(self._read(line, found))

    @staticmethod
    def _read(line: str, found: _Found) -> Any:
        if line.strip():
            try:
                doc = jsonio.loads(line)
            except ValueError:
                doc = None
            if isinstance(doc, dict | list):
                strings = walk(doc, found.limits.max_json_depth, found.limits.max_json_strings)
                found.values.extend(strings.values)
                found.keys.extend(strings.keys)
                return doc
        box = _Box([line])
        found.values.append(TextPart(box, 0, "other"))
        return box

    def render(self) -> str:
        return "\n".join(line[0] if isinstance(line, _Box) else jsonio.dumps(line).decode() for line in self.lines)


class _Box(list[str]):
    """A line that is not JSON, held so that its redacted text can be put back."""


class _Multipart:
    """A multipart/form-data body: its text parts read, the others kept byte for byte."""

    def __init__(self, delimiter: bytes, body: bytes, found: _Found, notes: list[str]):
        self.delimiter = delimiter
        self.pieces: list[bytes | tuple[bytes, _Text, bytes]] = []
        for piece in body.split(delimiter):
            self.pieces.append(self._read(piece, found, notes))

    @staticmethod
    def _read(piece: bytes, found: _Found, notes: list[str]) -> bytes | tuple[bytes, _Text, bytes]:
        head, sep, payload = piece.partition(b"\r\n\r\n")
        if not sep or piece.startswith(b"--"):
            return piece
        headers = Message()
        for line in head.decode("latin-1").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip()] = value.strip()
        ctype = headers.get("content-type", "text/plain")
        param = headers.get_param("filename", header="content-disposition")
        filename = param if isinstance(param, str) else None
        tail = b"\r\n" if payload.endswith(b"\r\n") else b""
        data = payload[: len(payload) - len(tail)]
        label = filename or ctype
        if not _is_text(ctype, filename):
            notes.append(f"upload part {label} forwarded unscanned (not text)")
            return piece
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            notes.append(f"upload part {label} forwarded unscanned (not UTF-8)")
            return piece
        json_lines = (filename or "").lower().endswith((".jsonl", ".ndjson")) or "jsonl" in ctype or "ndjson" in ctype
        return head + b"\r\n\r\n", _Text(text, found, json_lines), tail

    def render(self) -> bytes:
        return self.delimiter.join(p if isinstance(p, bytes) else p[0] + p[1].render().encode() + p[2]
                                   for p in self.pieces)


def _read_body(gw: Gateway, content_type: str, body: bytes, found: _Found, notes: list[str]
               ) -> _Multipart | _Text | None:
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        m = _BOUNDARY.search(content_type)
        return _Multipart(b"--" + m.group(1).encode("latin-1"), body, found, notes) if m else None
    if not _is_text(content_type or "text/plain"):
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    stripped = text.strip()
    json_lines = "jsonl" in ctype or "ndjson" in ctype or ("\n" in stripped and stripped.startswith("{")
                                                            and ctype != "application/json")
    return _Text(text, found, json_lines)


def scan_upload(gw: Gateway, guards: Guards, content_type: str, body: bytes) -> UploadScan:
    """Scan a body of an endpoint douane does not model, and apply the scope's `sanitize` and PII
    actions to it."""
    out = UploadScan()
    found = _Found(gw)
    try:
        doc = _read_body(gw, content_type, body, found, out.notes)
    except BodyTooComplex as e:
        out.block = Block(400, e.rule, f"{e}; it was not forwarded because douane cannot inspect it", always=True)
        return out
    if doc is None:
        out.notes.append(f"other endpoint: body forwarded unscanned ({content_type or 'no content-type'} is not text)")
        return out
    cleaning = sanitize_strings(guards, found.values, found.keys, gw.enforcing, out.notes.append)
    if cleaning.block is not None:
        out.block = cleaning.block
        return out
    changed = cleaning.changed
    findings = [guards.pii_detector.scan(p.text) for p in found.values]
    in_keys = Counter(f.entity for key in dict.fromkeys(found.keys) for f in guards.pii_detector.scan(key))
    counts = Counter(f.entity for fs in findings for f in fs) + in_keys
    out.notes.append(f"other endpoint: {len(found.values)} text value(s) scanned")
    if counts:
        out.entities = sorted(counts)
        summary = ", ".join(f"{e} x{n}" for e, n in sorted(counts.items()))
        action = guards.pii.action
        if action == "monitor":
            out.notes.append(f"pii.monitor: {summary}")
        elif action == "block":
            out.block = Block(403, "pii.block", f"the request body contains {summary}")
        elif not gw.enforcing:
            out.notes.append(f"monitor: would redact {summary}")
        elif in_keys:
            out.block = Block(400, "pii.in_key", "a JSON object key of the body holds PII, which douane cannot "
                              "redact; send it as a string value instead", always=True)
        else:
            for part, fs in zip(found.values, findings, strict=True):
                if fs:
                    part.replace(redact(part.text, fs))
            changed = True
            out.notes.append(f"pii.redact: {summary}" + (" (pseudonyms cannot be restored here)"
                                                           if action == "pseudonymize" else ""))
    if changed and out.block is None:
        out.body = doc.render() if isinstance(doc, _Multipart) else doc.render().encode()
    return out
