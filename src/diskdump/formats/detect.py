# SPDX-License-Identifier: GPL-2.0-or-later
"""Which vmcore container a file is, opening it as a MemorySource, and what the container says.

Probed in this order, by the first bytes of the file (never by its name)::

    offset 0   7f 45 4c 46 ("\\x7fELF")          ELF vmcore      formats/elf.py
    offset 0   "KDUMP   "                        kdump-compressed formats/kdump_read.py
    offset 0   "makedumpfile\\0..." type 1        flattened kdump  formats/flattened.py
                                                 (read in place through its record index)

Anything else is :class:`~diskdump.errors.NotThisFormatError`. The
container's own view of the crash (kdump header utsname, timestamp and
sub-header phys_base; the ELF kernel-text segment's phys_base) is gathered
in :class:`ContainerInfo` so the summary can cross-check it with VMCOREINFO.
"""

from __future__ import annotations

import contextlib
import enum
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from diskdump.errors import NotThisFormatError
from diskdump.formats.codecs import CompressFlag
from diskdump.formats.elf import ElfVmcore, is_elf
from diskdump.formats.flattened import is_flattened
from diskdump.formats.kdump import is_kdump
from diskdump.formats.kdump_read import KdumpFile
from diskdump.formats.memsource import MemorySource

__all__ = [
    "ContainerInfo",
    "VmcoreFormat",
    "container_info",
    "detect_format",
    "open_vmcore",
    "opened_vmcore",
]

#: __START_KERNEL_map: a PT_LOAD whose p_vaddr is at or above it maps the kernel text
_START_KERNEL_MAP = 0xFFFFFFFF80000000
_U64 = (1 << 64) - 1


class VmcoreFormat(enum.StrEnum):
    """Container formats :func:`open_vmcore` reads."""

    ELF = "elf"
    KDUMP = "kdump"
    FLATTENED = "kdump-flattened"


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """What a container records about the crash, beside the memory and notes.

    :param format: ``"elf"``, ``"kdump"``, ``"kdump-flattened"``, or the source's class name
    :param dump_level: makedumpfile ``-d`` bits, when the container records them
    :param compression: ``"none"``, ``"zlib"``, ``"lzo"``, ``"snappy"``, ``"zstd"``, or None
    :param phys_base: the container's phys_base (kdump sub header, ELF kernel-text segment)
    :param utsname: (release, machine, nodename, version) from a kdump header, if any
    :param timestamp: seconds since the epoch from a kdump header (0 = not set: None)
    :param nr_cpus: CPU count from a kdump header
    """

    format: str
    dump_level: int | None = None
    compression: str | None = None
    phys_base: int | None = None
    utsname: tuple[str, str, str, str] | None = None
    timestamp: int | None = None
    nr_cpus: int | None = None


def detect_format(path: str | os.PathLike[str]) -> VmcoreFormat:
    """The container format of ``path``, by its first bytes.

    :raises NotThisFormatError: none of the formats above, or a block device
    :raises OSError: the file cannot be opened
    """
    if stat.S_ISBLK(os.stat(path).st_mode):
        raise NotThisFormatError(
            "is a block device, not a vmcore file",
            path=os.fspath(path),
            hint="dumps on dump devices are read by diskdump savecore",
        )
    with open(path, "rb") as f:
        if is_elf(f):
            return VmcoreFormat.ELF
        if is_kdump(f):
            return VmcoreFormat.KDUMP
        if is_flattened(f):
            return VmcoreFormat.FLATTENED
    raise NotThisFormatError(
        "not a vmcore (neither ELF, kdump-compressed nor flattened)",
        path=os.fspath(path),
        offset=0,
        hint="diskdump info reads vmcore files; dump devices are read by diskdump savecore",
    )


def open_vmcore(path: str | os.PathLike[str]) -> MemorySource:
    """Open ``path`` as a :class:`MemorySource`; the caller closes it (see :func:`opened_vmcore`).

    :raises NotThisFormatError: not a vmcore
    :raises FormatError: the container is corrupt (see the format's reader)
    """
    kind = detect_format(path)
    if kind is VmcoreFormat.ELF:
        return ElfVmcore.open(path)
    return KdumpFile.open(path)


@contextlib.contextmanager
def opened_vmcore(path: str | os.PathLike[str]) -> Iterator[MemorySource]:
    """``with opened_vmcore(path) as source:`` - :func:`open_vmcore`, closed on exit."""
    source = open_vmcore(path)
    try:
        yield source
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def container_info(source: MemorySource) -> ContainerInfo:
    """What ``source``'s container records (format, level, compression, header fields)."""
    if isinstance(source, KdumpFile):
        return _kdump_info(source)
    if isinstance(source, ElfVmcore):
        return _elf_info(source)
    return ContainerInfo(format=type(source).__name__.lower())


def _kdump_info(kfile: KdumpFile) -> ContainerInfo:
    uts = kfile.header.uts
    names = [(flag.name or "").lower() for flag in CompressFlag if flag in kfile.compression]
    return ContainerInfo(
        format=VmcoreFormat.FLATTENED if kfile.flattened else VmcoreFormat.KDUMP,
        dump_level=kfile.dump_level,
        compression="+".join(n for n in names if n) or "none",
        phys_base=kfile.sub_header.phys_base,
        utsname=(uts.release, uts.machine, uts.nodename, uts.version),
        timestamp=kfile.header.tv_sec or None,
        nr_cpus=kfile.header.nr_cpus,
    )


def _elf_info(elf: ElfVmcore) -> ContainerInfo:
    # kexec's kernel-text PT_LOAD: p_paddr = p_vaddr - __START_KERNEL_map + phys_base
    phys_base = next(
        (
            (ph.p_paddr - (ph.p_vaddr - _START_KERNEL_MAP)) & _U64
            for ph in elf.segments
            if _START_KERNEL_MAP <= ph.p_vaddr < _U64
        ),
        None,
    )
    return ContainerInfo(format=VmcoreFormat.ELF, compression="none", phys_base=phys_base)
