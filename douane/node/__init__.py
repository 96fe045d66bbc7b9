"""What douane ships for Node workloads: the `--import` preload that routes fetch through HTTPS_PROXY,
and the undici it loads (vendored unmodified by scripts/vendor_undici, MIT, see undici/LICENSE)."""

from __future__ import annotations

from pathlib import Path

PRELOAD = Path(__file__).resolve().parent / "preload.mjs"
UNDICI_VERSION = "6.29.1"  # supports Node >= 18.17; the version scripts/vendor_undici pins
