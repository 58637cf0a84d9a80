# SPDX-License-Identifier: GPL-2.0-or-later
"""VMCOREINFO: the kernel's ``KEY=VALUE`` description of itself, parsed into typed values.

Spec: ``kernel/vmcore_info.c`` (``kernel/crash_core.c`` before Linux 6.9) and
``include/linux/vmcore_info.h`` (the ``VMCOREINFO_*`` macros), as read by
drgn (``drgn_program_parse_vmcoreinfo``), libkdumpfile (``vmcoreinfo.c``)
and crash (``kernel.c``). Handled: every kernel since 2.6.24, x86_64 keys.

Layout (the descriptor of the ``VMCOREINFO`` note, type 0; no trailing NUL)::

    OSRELEASE=6.1.0-13-amd64\\n          string
    BUILD-ID=0123...cdef\\n              40 hex digits (recent kernels)
    PAGESIZE=4096\\n                     decimal
    SYMBOL(swapper_pg_dir)=ffffffff8a40a000\\n   hex, no 0x, KASLR-relocated
    SIZE(page)=64\\n                     decimal sizeof
    OFFSET(page.flags)=0\\n              decimal offsetof
    LENGTH(mem_section)=2048\\n          decimal element count
    NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\\n    signed decimal (%ld) ...
    NUMBER(VMALLOC_START)=0xffffc90000000000\\n  ... except this one: hex with 0x
    KERNELOFFSET=e000000\\n              hex, no 0x
    CRASHTIME=1700000000\\n              decimal, appended at crash time only

Parsing follows drgn's strictness: a number must fill its value exactly
(``12ab`` is not decimal); a malformed value is an error when it is asked for,
naming the key. Lines without ``=`` are ignored (libkdumpfile does the
same), the first occurrence of a key wins (crash's substring search), and
:meth:`VmcoreInfo.pack` gives back the text exactly as it was read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from diskdump.errors import CorruptDataError, NotThisFormatError
from diskdump.formats.notes import VMCOREINFO_NOTE_NAME, iter_notes

__all__ = ["VmcoreInfo", "validate_vmcoreinfo", "vmcoreinfo_from_notes"]

#: keys whose values are hex without ``0x`` (include/linux/vmcore_info.h: VMCOREINFO_SYMBOL
#: prints ``%lx``; arch/x86/kernel/vmcore_info_64.c prints KERNELOFFSET with ``%lx``)
_HEX = re.compile(r"(?:0[xX])?[0-9a-fA-F]+")
#: ``%ld``/``%d``; NUMBER(VMALLOC_START) is printed ``%#lx``: accept 0x on NUMBER values
_SIGNED = re.compile(r"-?[0-9]+|0[xX][0-9a-fA-F]+")
_UNSIGNED = re.compile(r"[0-9]+")
#: a BUILD-ID is 20 bytes (GNU build-id, SHA-1) printed as 40 hex digits
_BUILD_ID = re.compile(r"[0-9a-fA-F]{2,128}")


def _parse_entries(text: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in text.split("\n"):
        key, sep, value = line.partition("=")
        if sep and key and key not in entries:
            entries[key] = value
    return entries


@dataclass(frozen=True, slots=True)
class VmcoreInfo:
    """Parsed VMCOREINFO text; typed accessors raise naming the key when it is missing or bad.

    :param raw: the text exactly as found (trailing NULs, if any, kept)
    """

    raw: str
    entries: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        entries = MappingProxyType(_parse_entries(self.raw.rstrip("\0")))
        object.__setattr__(self, "entries", entries)

    @classmethod
    def unpack(cls, desc: bytes | bytearray | memoryview) -> VmcoreInfo:
        """Parse a VMCOREINFO note descriptor (latin-1, so every byte string is accepted)."""
        return cls(bytes(desc).decode("latin-1"))

    @classmethod
    def from_entries(cls, entries: Mapping[str, str | int]) -> VmcoreInfo:
        """Build the text the kernel would print: one ``KEY=VALUE\\n`` line per entry, in order.

        Integers are printed in decimal; pass strings for hex values (``SYMBOL``).
        """
        return cls("".join(f"{key}={value}\n" for key, value in entries.items()))

    def pack(self) -> bytes:
        """The text as bytes, exactly as read or built."""
        return self.raw.encode("latin-1")

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def get(self, key: str) -> str | None:
        """Raw value of ``key`` (``"SYMBOL(prb)"``), or None."""
        return self.entries.get(key)

    def _value(self, key: str, pattern: re.Pattern[str], expected: str) -> str:
        value = self.entries.get(key)
        if value is None:
            raise CorruptDataError("vmcoreinfo lacks a key", field=key, expected=expected)
        if pattern.fullmatch(value) is None:
            raise CorruptDataError(
                "vmcoreinfo value is malformed", field=key, expected=expected, found=value
            )
        return value

    def _hex(self, key: str) -> int:
        return int(self._value(key, _HEX, "hex digits"), 16)

    def _decimal(self, key: str) -> int:
        return int(self._value(key, _UNSIGNED, "a decimal number"), 10)

    def _signed(self, key: str) -> int:
        value = self._value(key, _SIGNED, "a signed decimal or 0x-hex number")
        # Base by prefix, never int(value, 0): a decimal with a leading zero ("0943")
        # is an error for base 0 (found by fuzzing); the kernel prints %ld, so decimal.
        return int(value, 16) if value[:2] in ("0x", "0X") else int(value, 10)

    @property
    def osrelease(self) -> str:
        """``OSRELEASE``: the kernel release (``6.1.0-13-amd64``)."""
        value = self.entries.get("OSRELEASE")
        if not value:
            raise CorruptDataError("vmcoreinfo lacks a key", field="OSRELEASE")
        return value

    @property
    def build_id(self) -> bytes | None:
        """``BUILD-ID`` as bytes; None on kernels that do not print it (before 5.19)."""
        if "BUILD-ID" not in self.entries:
            return None
        return bytes.fromhex(self._value("BUILD-ID", _BUILD_ID, "hex digits"))

    @property
    def page_size(self) -> int:
        """``PAGESIZE`` in bytes."""
        return self._decimal("PAGESIZE")

    def symbol(self, name: str) -> int:
        """``SYMBOL(name)``: a kernel virtual address (already KASLR-relocated)."""
        return self._hex(f"SYMBOL({name})")

    def size(self, name: str) -> int:
        """``SIZE(name)``: sizeof, in bytes."""
        return self._decimal(f"SIZE({name})")

    def offset(self, member: str) -> int:
        """``OFFSET(struct.member)``: offsetof, in bytes."""
        return self._decimal(f"OFFSET({member})")

    def length(self, name: str) -> int:
        """``LENGTH(name)``: element count."""
        return self._decimal(f"LENGTH({name})")

    def number(self, name: str) -> int:
        """``NUMBER(name)``: signed decimal, or hex with ``0x`` (``NUMBER(VMALLOC_START)``)."""
        return self._signed(f"NUMBER({name})")

    @property
    def kerneloffset(self) -> int:
        """``KERNELOFFSET``: the KASLR slide of the kernel text, in bytes."""
        return self._hex("KERNELOFFSET")

    @property
    def crashtime(self) -> int | None:
        """``CRASHTIME`` in seconds since the epoch, or None when the text has none."""
        if "CRASHTIME" not in self.entries:
            return None
        return self._signed("CRASHTIME")

    @property
    def phys_base(self) -> int:
        """``NUMBER(phys_base)``: where the kernel image really is minus where it was linked."""
        return self.number("phys_base")

    def with_crashtime(self, crashtime: int) -> VmcoreInfo:
        """A copy whose ``CRASHTIME`` line says ``crashtime`` (replaced in place, or appended).

        :param crashtime: seconds since the epoch
        """
        text = self.raw.rstrip("\0")
        lines = text.split("\n")
        new_line = f"CRASHTIME={crashtime}"
        for index, line in enumerate(lines):
            if line.startswith("CRASHTIME="):
                lines[index] = new_line
                return VmcoreInfo("\n".join(lines))
        if text and not text.endswith("\n"):
            text += "\n"
        return VmcoreInfo(f"{text}{new_line}\n")


def validate_vmcoreinfo(info: VmcoreInfo) -> None:
    """Apply drgn's acceptance rules: OSRELEASE, a power-of-two PAGESIZE, SYMBOL(swapper_pg_dir).

    :raises CorruptDataError: naming the first key that fails
    """
    _ = info.osrelease
    page_size = info.page_size
    if page_size <= 0 or page_size & (page_size - 1):
        raise CorruptDataError(
            "vmcoreinfo page size is not a power of two",
            field="PAGESIZE",
            expected="a power of two",
            found=page_size,
        )
    info.symbol("swapper_pg_dir")


def vmcoreinfo_from_notes(
    blob: bytes | bytearray | memoryview, *, path: str | None = None, base_offset: int = 0
) -> VmcoreInfo:
    """Parse the first ``VMCOREINFO`` note of a note blob.

    :raises NotThisFormatError: the blob holds no VMCOREINFO note
    :raises TruncatedError: a note size runs past the end of ``blob``
    """
    for note in iter_notes(blob, path=path, base_offset=base_offset):
        if note.name == VMCOREINFO_NOTE_NAME:
            return VmcoreInfo.unpack(note.desc)
    raise NotThisFormatError(
        "no VMCOREINFO note in the notes",
        path=path,
        offset=base_offset,
        hint="QEMU writes it only with -device vmcoreinfo and the guest's qemu_fw_cfg module",
    )
