# SPDX-License-Identifier: GPL-2.0-or-later
"""Fixtures of the savecore tests: a small synthetic kernel and formatted image files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from diskdump.devices import open_device
from diskdump.formats.partition import PartitionLabel
from diskdump.partition.label import find_dump, read_label
from diskdump.partition.ops import format_device
from diskdump.partition.verify import verify_device
from diskdump.savecore.save import KILL_HOOK_ENV
from tests.builders.kernel import MIB, SyntheticKernel, build_kernel
from tests.savecore.dumpbuilder import Knobs, write_dump

#: image size: 32 MiB of RAM dumped with room to spare
IMAGE_SIZE = 48 * MIB


@pytest.fixture(scope="session")
def small_kernel() -> SyntheticKernel:
    """A 32 MiB synthetic 6.1 kernel (phys_base 0 so that the image fits)."""
    return build_kernel(ram_size=32 * MIB, phys_base=0, kernel_offset=0)


def make_image(path: Path, size: int = IMAGE_SIZE) -> PartitionLabel:
    """A preallocated image file formatted as a dump partition."""
    with open(path, "wb") as file:
        os.posix_fallocate(file.fileno(), 0, size)
    with open_device(path, writable=True) as device:
        return format_device(device)


DumpFactory = Callable[..., Path]


@pytest.fixture
def dumped(tmp_path: Path, small_kernel: SyntheticKernel) -> DumpFactory:
    """``dumped(name="dev0.img", knobs=Knobs(...), **write_dump_kwargs)`` -> image path."""

    def make(name: str = "dev0.img", knobs: Knobs | None = None, **kwargs: Any) -> Path:
        path = tmp_path / name
        label = make_image(path)
        kwargs.setdefault("kernel_log", small_kernel.expected_dmesg)
        with open_device(path, writable=True) as device:
            write_dump(device, label, small_kernel.source, knobs=knobs or Knobs(), **kwargs)
        return path

    return make


@pytest.fixture
def crash_dir(tmp_path: Path) -> Path:
    path = tmp_path / "crash"
    path.mkdir(mode=0o700)
    return path


def saves(crash: Path) -> list[Path]:
    """Complete saves in ``crash`` (directories with an info.json), by name."""
    return sorted(
        p
        for p in crash.iterdir()
        if not p.name.startswith(".") and not p.is_symlink() and (p / "info.json").is_file()
    )


def info_of(save: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((save / "info.json").read_text())
    return data


def device_state(path: Path) -> tuple[bool, bool, bool]:
    """(holds a dump: leading header, trailing header, pattern verifies everywhere)."""
    with open_device(path) as device:
        label = read_label(device)
        presence = find_dump(device, label)
        ok = verify_device(device, label=label).ok
    return presence.leading, presence.trailing, ok


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_savecore(
    image: Path, crash: Path, kill_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`diskdump savecore` in a subprocess; ``kill_at`` names the step it SIGKILLs itself after."""
    env = {k: v for k, v in os.environ.items() if k != KILL_HOOK_ENV}
    if kill_at is not None:
        env[KILL_HOOK_ENV] = kill_at
    argv = [
        sys.executable,
        "-m",
        "diskdump.cli.main",
        "savecore",
        "--device",
        str(image),
        "--dir",
        str(crash),
        "--min-free",
        "0",
        "--quiet",
    ]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
