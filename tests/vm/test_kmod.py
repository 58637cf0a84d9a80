# SPDX-License-Identifier: GPL-2.0-or-later
"""Module resolution for busybox insmod: dependency order, decompression, built-ins."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest
import zstandard

from diskdump.errors import VMError
from diskdump.vm.kmod import resolve_modules


def _module(depends: str) -> bytes:
    # the shape of a .modinfo section: NUL-separated key=value strings
    return b"\x7fELF fake\0license=GPL\0depends=" + depends.encode() + b"\0name=x\0vermagic=6\0"


@pytest.fixture
def modules_dir(tmp_path: Path) -> Path:
    root = tmp_path / "lib/modules/6.99.0"
    drivers = root / "kernel/drivers"
    drivers.mkdir(parents=True)
    (drivers / "virtio_ring.ko").write_bytes(_module(""))
    (drivers / "virtio.ko.xz").write_bytes(
        lzma.compress(_module("virtio_ring"), format=lzma.FORMAT_XZ)
    )
    (drivers / "virtio-pci.ko.zst").write_bytes(
        zstandard.ZstdCompressor().compress(_module("virtio,virtio_ring,built_in_lib"))
    )
    (drivers / "virtio_blk.ko").write_bytes(_module("virtio,virtio_ring"))
    (drivers / "loop_a.ko").write_bytes(_module("loop_b"))
    (drivers / "loop_b.ko").write_bytes(_module("loop_a"))
    (drivers / "broken.ko.xz").write_bytes(b"not xz at all")
    (root / "modules.builtin").write_text("kernel/lib/built_in_lib.ko\n")
    return root


def test_dependencies_first_and_decompressed(modules_dir: Path) -> None:
    modules = resolve_modules(modules_dir, ["virtio_blk", "virtio_pci"])
    names = [m.name for m in modules]
    assert names == ["virtio_ring", "virtio", "virtio_blk", "virtio_pci"]
    assert all(m.data.startswith(b"\x7fELF") for m in modules)
    assert b"depends=virtio_ring\0" in modules[1].data


def test_builtin_is_skipped(modules_dir: Path) -> None:
    assert resolve_modules(modules_dir, ["built_in_lib"]) == []


def test_missing_module(modules_dir: Path) -> None:
    with pytest.raises(VMError, match=r"kernel module not found on .*6\.99\.0: got 'nvme'"):
        resolve_modules(modules_dir, ["nvme"])


def test_dependency_loop(modules_dir: Path) -> None:
    with pytest.raises(VMError, match=r"dependency loop: got 'loop_a -> loop_b -> loop_a'"):
        resolve_modules(modules_dir, ["loop_a"])


def test_corrupt_compressed_module(modules_dir: Path) -> None:
    with pytest.raises(VMError, match=r"cannot decompress kernel module: .* on .*broken\.ko\.xz"):
        resolve_modules(modules_dir, ["broken"])
