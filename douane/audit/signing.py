"""Ed25519 signatures over audit statements (segment seals, checkpoints, tombstones).

The operator holds the key (`audit.signing_key_file`, a PEM file as `openssl genpkey -algorithm
ed25519` writes it). A signed statement carries the public key it was signed with (`key`, base64)
and its signature (`sig`, base64) over its canonical JSON: every other field, keys sorted, no
spaces. Verify checks signatures against the keys an auditor trusts (`--key PUBLIC.pem`); without
one it can only check that every statement was signed by one and the same key, and says which.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def canonical(statement: dict[str, Any]) -> bytes:
    """What is signed and hashed: the statement without its signature, as compact sorted JSON."""
    body = {k: v for k, v in statement.items() if k != "sig"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def key_id(public_b64: str) -> str:
    """A short name for a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(base64.b64decode(public_b64)).hexdigest()[:16]


def _raw_public(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


@dataclass(frozen=True)
class Signer:
    private: Ed25519PrivateKey
    public_b64: str

    @classmethod
    def from_file(cls, path: str | Path) -> Signer:
        """The operator's key; ValueError says what is wrong and what to do."""
        try:
            raw = Path(path).read_bytes()
        except OSError as e:
            raise ValueError(f"cannot read the signing key {path}: {e.strerror or e}") from None
        try:
            key = serialization.load_pem_private_key(raw, password=None)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path} is not an unencrypted PEM private key ({e}); make one with: "
                             f"openssl genpkey -algorithm ed25519 -out {path}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} holds a {type(key).__name__.removesuffix('PrivateKey')} key; the audit is "
                             f"signed with Ed25519: openssl genpkey -algorithm ed25519 -out {path}")
        return cls(key, _raw_public(key.public_key()))

    @property
    def key_id(self) -> str:
        return key_id(self.public_b64)

    def sign(self, statement: dict[str, Any]) -> dict[str, Any]:
        """The statement with `key` and `sig` added."""
        signed = {**statement, "key": self.public_b64}
        signed["sig"] = base64.b64encode(self.private.sign(canonical(signed))).decode()
        return signed


def load_public_key(path: str | Path) -> str:
    """A public key (base64 raw) from a PEM public key, or from the private key it belongs to."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read the key {path}: {e.strerror or e}") from None
    try:
        public = serialization.load_pem_public_key(raw)
    except ValueError:
        try:
            public = serialization.load_pem_private_key(raw, password=None).public_key()
        except (ValueError, TypeError):
            raise ValueError(f"{path} is neither a PEM public key nor an unencrypted PEM private key; write the "
                             f"public key with: openssl pkey -in KEY.pem -pubout -out {path}") from None
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 key")
    return _raw_public(public)


def check(statement: dict[str, Any]) -> str | None:
    """None when the statement's signature is valid for the key it names, else what is wrong."""
    key, sig = statement.get("key"), statement.get("sig")
    if not isinstance(key, str) or not isinstance(sig, str):
        return "not signed"
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key, validate=True))
        public.verify(base64.b64decode(sig, validate=True), canonical(statement))
    except (ValueError, InvalidSignature):
        return "the signature does not match"
    return None
