# SPDX-License-Identifier: GPL-2.0-or-later
"""Kernel modules for an initramfs: find, decompress and order them for busybox ``insmod``.

busybox ``insmod`` neither resolves dependencies nor reads compressed modules.
Debian 12's 6.1 kernel ships plain ``.ko`` files; its 6.12 kernel ships ``.ko.xz``
(CONFIG_MODULE_COMPRESS_XZ=y). Modules are therefore decompressed on the host and
ordered by the ``depends=`` field of their ``.modinfo`` section (the field modpost
writes; see scripts/mod/modpost.c), so no modules.dep (written by depmod at
install time, absent from the unpacked package) is needed.

A module that the kernel has built in (listed in ``modules.builtin``) is
skipped: the 6.12 package builds virtio and virtio_pci in, 6.1 has them as
modules.
"""

from __future__ import annotations

import lzma
import re
from dataclasses import dataclass
from pathlib import Path

import zstandard

from diskdump.errors import VMError

__all__ = ["KernelModule", "resolve_modules"]

#: module suffixes in the order they are tried
_SUFFIXES = (".ko", ".ko.xz", ".ko.zst")
#: modinfo entries are NUL-separated key=value strings
_DEPENDS = re.compile(rb"(?:^|\0)depends=([^\0]*)\0")


@dataclass(frozen=True, slots=True)
class KernelModule:
    """One module ready for ``insmod``: its name and uncompressed ELF bytes."""

    name: str
    data: bytes


def _canonical(name: str) -> str:
    # the kernel treats '-' and '_' in module names alike
    return name.replace("-", "_")


def _index(modules_dir: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in (modules_dir / "kernel").rglob("*.ko*"):
        for suffix in _SUFFIXES:
            if path.name.endswith(suffix):
                index[_canonical(path.name[: -len(suffix)])] = path
    return index


def _builtin(modules_dir: Path) -> set[str]:
    listing = modules_dir / "modules.builtin"
    if not listing.exists():
        return set()
    names = set()
    for line in listing.read_text().split():
        names.add(_canonical(Path(line).name.removesuffix(".ko")))
    return names


def _decompress(path: Path) -> bytes:
    raw = path.read_bytes()
    try:
        if path.name.endswith(".xz"):
            return lzma.decompress(raw, format=lzma.FORMAT_XZ)
        if path.name.endswith(".zst"):
            return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    except (lzma.LZMAError, zstandard.ZstdError) as err:
        raise VMError(f"cannot decompress kernel module: {err}", path=str(path)) from err
    return raw


def _depends(data: bytes) -> list[str]:
    match = _DEPENDS.search(data)
    if match is None or not match.group(1):
        return []
    return [_canonical(d) for d in match.group(1).decode().split(",") if d]


def resolve_modules(modules_dir: Path, names: list[str]) -> list[KernelModule]:
    """Modules ``names`` and their dependencies, decompressed, dependencies first.

    :param modules_dir: ``lib/modules/<release>`` of an unpacked kernel package
    :param names: module names; those built into the kernel are skipped
    :return: modules in a load order busybox ``insmod`` can follow
    :raises VMError: a module is neither a file nor built in, or a dependency loop
    """
    index = _index(modules_dir)
    builtin = _builtin(modules_dir)
    ordered: list[KernelModule] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in done or name in builtin:
            return
        if name in chain:
            raise VMError("kernel module dependency loop", found=" -> ".join((*chain, name)))
        path = index.get(name)
        if path is None:
            raise VMError("kernel module not found", path=str(modules_dir), found=name)
        data = _decompress(path)
        for dep in _depends(data):
            visit(dep, (*chain, name))
        done.add(name)
        ordered.append(KernelModule(name, data))

    for name in names:
        visit(_canonical(name), ())
    return ordered
