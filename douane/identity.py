"""Proxy credentials -> client and team. The policy stores only sha256 digests of the passwords."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from douane.policy import Policy

ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Identity:
    client: str
    team: str | None


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) from a `Basic` Proxy-Authorization value; None when absent or malformed."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class Directory:
    def __init__(self, policy: Policy):
        self.required = policy.clients is not None
        self._clients = {c.name: c for c in policy.clients or []}

    def identify(self, proxy_authorization: str | None) -> Identity | None:
        """The caller, or None when the policy names clients and the credentials do not match one."""
        if not self.required:
            return Identity(ANONYMOUS, None)
        creds = parse_basic(proxy_authorization)
        return None if creds is None else self._check(*creds)

    def identify_key(self, key: str | None) -> Identity | None:
        """The caller from a douane-issued API key (base-URL mode): `CLIENT:KEY`, the same name and
        password as its proxy credentials; None when the policy names clients and it matches none."""
        if not self.required:
            return Identity(ANONYMOUS, None)
        user, sep, password = (key or "").partition(":")
        return self._check(user, password) if sep else None

    def _check(self, user: str, password: str) -> Identity | None:
        digest = hashlib.sha256(password.encode()).hexdigest()
        client = self._clients.get(user)
        # Compare even for unknown names so timing does not reveal which client names exist.
        expected = client.key_sha256 if client else "0" * 64
        if hmac.compare_digest(digest, expected) and client is not None:
            return Identity(client.name, client.team)
        return None
