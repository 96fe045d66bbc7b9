"""The CA clients trust: created once in the certs folder (mitmproxy's confdir), key kept 0600."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

# mitmproxy reads its CA from confdir under this basename.
BASENAME = "mitmproxy"
KEY_FILES = (f"{BASENAME}-ca.pem", f"{BASENAME}-ca.p12")
BUNDLE_NAME = "douane-ca-bundle.pem"


def ensure_ca(certs: str | Path) -> Path:
    """Create the CA in `certs` if missing; the path of the PEM certificate clients must trust."""
    from mitmproxy.certs import CertStore

    folder = Path(certs).absolute()
    if not (folder / KEY_FILES[0]).exists():
        CertStore.create_store(folder, BASENAME, 2048, organization="douane", cn="douane local CA")
    for name in KEY_FILES:
        key = folder / name
        if key.exists() and key.stat().st_mode & 0o077:
            os.chmod(key, 0o600)
    return folder / f"{BASENAME}-ca-cert.pem"


def system_bundle() -> Path:
    """The machine's CA bundle (not $SSL_CERT_FILE, which may already point at a douane bundle)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                      "/etc/ssl/cert.pem"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    import certifi

    return Path(certifi.where())


def write_bundle(certs: str | Path, target: str | Path) -> Path:
    """System CAs plus ours: clients keep trusting hosts douane tunnels without intercepting."""
    ca = ensure_ca(certs)
    out = Path(target).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    system = system_bundle().read_bytes()
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_bytes(system.rstrip(b"\n") + b"\n\n# douane CA\n" + ca.read_bytes())
    os.replace(tmp, out)
    return out
