# SPDX-License-Identifier: GPL-2.0-or-later
"""Loop-device helpers for the root tier: attach an image, always detach, hash a device."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import need_root, need_tool

#: bytes hashed per read when fingerprinting a device
_HASH_CHUNK = 1 << 20


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a tool, capturing its output; fail the test with its stderr if it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def make_image(path: Path, size: int) -> Path:
    """A preallocated (not sparse) image file of ``size`` bytes."""
    with open(path, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, size)
    return path


@contextlib.contextmanager
def loop_device(image: Path) -> Iterator[str]:
    """Attach ``image`` to a free loop device; detach it whatever happens."""
    need_root()
    losetup = need_tool("losetup")
    dev = run(losetup, "--find", "--show", str(image)).stdout.strip()
    try:
        yield dev
    finally:
        run(losetup, "--detach", dev, check=False)


def device_hash(path: str) -> str:
    """SHA-256 of the whole device or file, read through the page cache after a flush."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
