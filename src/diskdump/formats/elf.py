# SPDX-License-Identifier: GPL-2.0-or-later
"""ELF vmcore reader and writer (/proc/vmcore, ``makedumpfile -E``, QEMU dump-guest-memory).

Spec: the System V gABI (ELF-64 object file format, version 1.5) with the
Linux core conventions of ``fs/proc/vmcore.c``, kexec-tools
``kexec/crashdump-elf.c`` and makedumpfile (``elf_info.c``; e_flags bit 0 =
incomplete dump), as read by crash (``netdump.c``), libkdumpfile
(``elfdump.c``) and drgn (``program.c``). Handled: ELFCLASS64, ELFDATA2LSB,
ET_CORE, EM_X86_64.

File layout as we write it (a reader honours e_phoff wherever it points)::

    0x0      Elf64_Ehdr (64)       e_phoff = 64, e_flags bit 0 = incomplete
    0x40     Elf64_Phdr[e_phnum]   [0] PT_NOTE, [1..] PT_LOAD, one per data run
    ..       Elf64_Shdr[0]         only when e_phnum = PN_XNUM (0xffff): sh_info = real count
    ..       notes                 PRSTATUS per CPU, VMCOREINFO (PT_NOTE data, before all
                                   segment data: crash reads the notes only from there)
    page     segment data          PT_LOAD data, page aligned, in physical address order

Program header (56 bytes)::

    p_type p_flags | p_offset | p_vaddr | p_paddr | p_filesz | p_memsz | p_align

Reading: physical addresses come from p_paddr. [p_paddr, p_paddr + p_memsz)
is RAM; [p_paddr, p_paddr + p_filesz) is held in the file, the rest is RAM
that was excluded (``makedumpfile -E`` writes such tails). The kernel-text
PT_LOAD that kexec and /proc/vmcore add repeats memory of a RAM segment: the
segments are deduplicated by physical address (the one starting lower, or the
larger one, wins) and reads are served from the RAM segment. Segment edges
need not be page aligned (low RAM ends at 0x9fc00 on a PC): a page is *data*
when every byte of it that lies inside a PT_LOAD is held; its bytes that lie
in no PT_LOAD at all are not RAM and read as zeros. A page with any RAM byte
not held (a p_filesz < p_memsz tail) is excluded and never zero-filled.

Writing: p_align = 0 ("kdump ELF" for crash), p_flags RWX, p_paddr =
physical address, p_vaddr = page_offset + p_paddr when the direct-map base is
known, else p_vaddr = p_paddr as QEMU writes with paging=false (drgn then
reaches kernel-virtual memory through the page tables). Excluded pages are
left out: they split segments, so a reader sees a gap, never zeros.
"""

from __future__ import annotations

import logging
import os
import struct
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import IntEnum, IntFlag
from types import TracebackType
from typing import BinaryIO

from diskdump._binary import align_up
from diskdump.errors import (
    BadMagicError,
    CorruptDataError,
    DiskdumpError,
    ExcludedPageError,
    NotThisFormatError,
    TruncatedError,
    UnsupportedVersionError,
)
from diskdump.formats.filebacking import Backing, prefers_mmap
from diskdump.formats.memsource import (
    PfnRun,
    merge_runs,
)
from diskdump.formats.notes import NOTE_ALIGN, VMCOREINFO_NOTE_NAME, iter_notes
from diskdump.formats.vmcoreinfo import VmcoreInfo

__all__ = [
    "ELF_MAGIC",
    "PN_XNUM",
    "Elf64Ehdr",
    "Elf64Phdr",
    "Elf64Shdr",
    "ElfFlag",
    "ElfVmcore",
    "PhdrType",
    "is_elf",
]

log = logging.getLogger(__name__)

#: e_ident[EI_MAG0..EI_MAG3]
ELF_MAGIC = b"\x7fELF"
#: e_ident[EI_CLASS]: 64-bit objects
ELFCLASS64 = 2
#: e_ident[EI_DATA]: two's complement, little endian
ELFDATA2LSB = 1
#: e_version and e_ident[EI_VERSION]
EV_CURRENT = 1
#: e_type of a core file
ET_CORE = 4
#: e_machine of x86_64
EM_X86_64 = 62
#: e_phnum value meaning "the real count is in section header 0's sh_info" (gABI extended numbering)
PN_XNUM = 0xFFFF
#: byte offsets in e_ident
EI_CLASS, EI_DATA, EI_VERSION = 4, 5, 6
#: byte offsets of Elf64_Ehdr fields named in error messages (gABI layout, see _EHDR)
E_TYPE_OFFSET, E_MACHINE_OFFSET, E_SHOFF_OFFSET = 16, 18, 40
E_PHENTSIZE_OFFSET, E_PHNUM_OFFSET = 54, 56
#: x86_64 ``__START_KERNEL_map``: the kernel-text mapping (arch/x86/include/asm/page_64_types.h)
X86_64_KERNEL_TEXT_BASE = 0xFFFFFFFF80000000
#: lowest kernel-half address of x86_64 (4-level paging): direct maps live above it
X86_64_KERNEL_HALF = 0xFFFF800000000000
#: p_paddr/p_vaddr all-ones: "no such address" (kexec-tools for unmapped highmem; drgn)
NO_ADDRESS = 0xFFFFFFFFFFFFFFFF
#: x86_64 page size, used when the notes carry no VMCOREINFO PAGESIZE
DEFAULT_PAGE_SIZE = 4096
#: page sizes any Linux architecture uses (4 KiB .. 256 KiB); others in VMCOREINFO are ignored
MIN_PAGE_SIZE, MAX_PAGE_SIZE = 4096, 256 * 1024
#: pages per read_pages call in the writer (1 MiB of 4 KiB pages): bounds its memory
WRITE_BATCH_PAGES = 256
#: program headers packed per write in the writer
PHDR_BATCH = 4096


class PhdrType(IntEnum):
    """``p_type`` values a vmcore uses."""

    PT_NULL = 0
    PT_LOAD = 1
    PT_NOTE = 4


class PhdrFlag(IntFlag):
    """``p_flags``; kexec-tools writes RWX on every PT_LOAD."""

    PF_X = 1
    PF_W = 2
    PF_R = 4


class ElfFlag(IntFlag):
    """``e_flags`` of a vmcore (makedumpfile ``DUMP_ELF_INCOMPLETE``)."""

    INCOMPLETE = 1


_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
assert (_EHDR.size, _PHDR.size, _SHDR.size) == (64, 56, 64)


def _exact(buf: bytes | bytearray | memoryview, size: int, what: str) -> None:
    if len(buf) != size:
        raise TruncatedError(f"{what} is cut short", field="size", expected=size, found=len(buf))


@dataclass(frozen=True, slots=True)
class Elf64Ehdr:
    """``Elf64_Ehdr``: the ELF header (64 bytes at offset 0)."""

    SIZE = _EHDR.size

    e_ident: bytes
    e_type: int
    e_machine: int
    e_version: int
    e_entry: int
    e_phoff: int
    e_shoff: int
    e_flags: int
    e_ehsize: int
    e_phentsize: int
    e_phnum: int
    e_shentsize: int
    e_shnum: int
    e_shstrndx: int

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview) -> Elf64Ehdr:
        """Decode exactly :attr:`SIZE` bytes (no validation: see :meth:`ElfVmcore.open`)."""
        _exact(buf, cls.SIZE, "elf header")
        return cls(*_EHDR.unpack(buf))

    def pack(self) -> bytes:
        """Encode to :attr:`SIZE` bytes."""
        return _EHDR.pack(
            self.e_ident,
            self.e_type,
            self.e_machine,
            self.e_version,
            self.e_entry,
            self.e_phoff,
            self.e_shoff,
            self.e_flags,
            self.e_ehsize,
            self.e_phentsize,
            self.e_phnum,
            self.e_shentsize,
            self.e_shnum,
            self.e_shstrndx,
        )

    @classmethod
    def for_core(cls, *, phnum: int, shoff: int = 0, flags: int = 0) -> Elf64Ehdr:
        """The header of an x86_64 core with program headers right after it.

        :param phnum: e_phnum as stored (PN_XNUM for extended numbering)
        :param shoff: offset of section header 0 (extended numbering only)
        """
        ident = ELF_MAGIC + bytes((ELFCLASS64, ELFDATA2LSB, EV_CURRENT)) + bytes(9)
        return cls(
            ident,
            ET_CORE,
            EM_X86_64,
            EV_CURRENT,
            0,
            cls.SIZE,
            shoff,
            flags,
            cls.SIZE,
            Elf64Phdr.SIZE,
            phnum,
            Elf64Shdr.SIZE if shoff else 0,
            1 if shoff else 0,
            0,
        )


@dataclass(frozen=True, slots=True)
class Elf64Phdr:
    """``Elf64_Phdr``: one program header (56 bytes)."""

    SIZE = _PHDR.size

    p_type: int
    p_flags: int
    p_offset: int
    p_vaddr: int
    p_paddr: int
    p_filesz: int
    p_memsz: int
    p_align: int

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview) -> Elf64Phdr:
        """Decode exactly :attr:`SIZE` bytes."""
        _exact(buf, cls.SIZE, "program header")
        return cls(*_PHDR.unpack(buf))

    def pack(self) -> bytes:
        """Encode to :attr:`SIZE` bytes."""
        return _PHDR.pack(
            self.p_type,
            self.p_flags,
            self.p_offset,
            self.p_vaddr,
            self.p_paddr,
            self.p_filesz,
            self.p_memsz,
            self.p_align,
        )


@dataclass(frozen=True, slots=True)
class Elf64Shdr:
    """``Elf64_Shdr``; a vmcore has at most section 0, for extended numbering (PN_XNUM)."""

    SIZE = _SHDR.size

    sh_name: int
    sh_type: int
    sh_flags: int
    sh_addr: int
    sh_offset: int
    sh_size: int
    sh_link: int
    sh_info: int
    sh_addralign: int
    sh_entsize: int

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview) -> Elf64Shdr:
        """Decode exactly :attr:`SIZE` bytes."""
        _exact(buf, cls.SIZE, "section header")
        return cls(*_SHDR.unpack(buf))

    def pack(self) -> bytes:
        """Encode to :attr:`SIZE` bytes."""
        return _SHDR.pack(
            self.sh_name,
            self.sh_type,
            self.sh_flags,
            self.sh_addr,
            self.sh_offset,
            self.sh_size,
            self.sh_link,
            self.sh_info,
            self.sh_addralign,
            self.sh_entsize,
        )


def is_elf(f: BinaryIO) -> bool:
    """True if ``f`` starts with the ELF magic; never raises, never moves the file position."""
    try:
        try:
            head = os.pread(f.fileno(), len(ELF_MAGIC), 0)
        except (AttributeError, OSError, ValueError):
            position = f.tell()
            try:
                f.seek(0)
                head = f.read(len(ELF_MAGIC))
            finally:
                f.seek(position)
        return head == ELF_MAGIC
    except (OSError, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class _Piece:
    """Physical bytes [start, end) are RAM from one PT_LOAD; [start, data_end) are in the file."""

    start: int
    end: int
    data_end: int
    file_offset: int


def _subtract_runs(runs: Sequence[PfnRun], holes: Sequence[PfnRun]) -> list[PfnRun]:
    """``runs`` minus ``holes``; both ascending and merged."""
    out: list[PfnRun] = []
    index = 0
    for run in runs:
        start = run.start_pfn
        while index < len(holes) and holes[index].end_pfn <= start:
            index += 1
        probe = index
        while probe < len(holes) and holes[probe].start_pfn < run.end_pfn:
            if holes[probe].start_pfn > start:
                out.append(PfnRun(start, holes[probe].start_pfn))
            start = max(start, holes[probe].end_pfn)
            probe += 1
        if start < run.end_pfn:
            out.append(PfnRun(start, run.end_pfn))
    return out


def _dedupe(loads: Sequence[Elf64Phdr]) -> list[_Piece]:
    """Physical pieces of the PT_LOADs, without overlap: lower start, then larger size, wins."""
    order = sorted(
        (ph for ph in loads if ph.p_memsz and ph.p_paddr != NO_ADDRESS),
        key=lambda ph: (ph.p_paddr, -ph.p_memsz),
    )
    pieces: list[_Piece] = []
    covered = 0
    for ph in order:
        end = ph.p_paddr + ph.p_memsz
        start = max(ph.p_paddr, covered)
        if start >= end:
            log.debug("PT_LOAD paddr %#x-%#x repeats memory already mapped", ph.p_paddr, end)
            continue
        skip = start - ph.p_paddr
        data_end = max(start, ph.p_paddr + ph.p_filesz)
        pieces.append(_Piece(start, end, data_end, ph.p_offset + skip))
        covered = end
    return pieces


def _check_ehdr(ehdr: Elf64Ehdr, path: str) -> None:
    ident = ehdr.e_ident
    if ident[: len(ELF_MAGIC)] != ELF_MAGIC:
        raise BadMagicError(
            "not an elf file",
            path=path,
            offset=0,
            field="e_ident",
            expected=ELF_MAGIC,
            found=ident[: len(ELF_MAGIC)],
        )
    checks = (
        (ident[EI_CLASS], ELFCLASS64, "EI_CLASS", EI_CLASS, "elf class is not 64-bit"),
        (ident[EI_DATA], ELFDATA2LSB, "EI_DATA", EI_DATA, "elf data is not little endian"),
        (ident[EI_VERSION], EV_CURRENT, "EI_VERSION", EI_VERSION, "elf version is not current"),
        (ehdr.e_machine, EM_X86_64, "e_machine", E_MACHINE_OFFSET, "elf machine is not x86_64"),
    )
    for found, expected, field, offset, what in checks:
        if found != expected:
            raise UnsupportedVersionError(
                what, path=path, offset=offset, field=field, expected=expected, found=found
            )
    if ehdr.e_type != ET_CORE:
        raise NotThisFormatError(
            "elf file is not a core dump",
            path=path,
            offset=E_TYPE_OFFSET,
            field="e_type",
            expected=ET_CORE,
            found=ehdr.e_type,
        )
    if ehdr.e_phentsize != Elf64Phdr.SIZE:
        raise CorruptDataError(
            "bad program header size",
            path=path,
            offset=E_PHENTSIZE_OFFSET,
            field="e_phentsize",
            expected=Elf64Phdr.SIZE,
            found=ehdr.e_phentsize,
        )


def _program_header_count(ehdr: Elf64Ehdr, backing: Backing) -> int:
    """e_phnum, or section 0's sh_info under extended numbering (PN_XNUM)."""
    phnum = ehdr.e_phnum
    if phnum == PN_XNUM:
        if ehdr.e_shoff == 0 or ehdr.e_shentsize < Elf64Shdr.SIZE:
            raise CorruptDataError(
                "e_phnum is PN_XNUM but there is no section header 0",
                path=backing.path,
                offset=E_SHOFF_OFFSET,
                field="e_shoff",
                found=ehdr.e_shoff,
            )
        raw = backing.read(ehdr.e_shoff, Elf64Shdr.SIZE, "section header 0")
        phnum = Elf64Shdr.unpack(raw).sh_info
        log.debug("%s: extended numbering, %d program headers", backing.path, phnum)
    if phnum == 0:
        raise CorruptDataError(
            "elf core has no program headers",
            path=backing.path,
            offset=E_PHNUM_OFFSET,
            field="e_phnum",
            found=phnum,
        )
    return phnum


def _read_program_headers(ehdr: Elf64Ehdr, backing: Backing) -> list[Elf64Phdr]:
    phnum = _program_header_count(ehdr, backing)
    table_size = phnum * Elf64Phdr.SIZE
    if ehdr.e_phoff + table_size > backing.size:
        raise TruncatedError(
            "program headers run past the end of the file",
            path=backing.path,
            offset=ehdr.e_phoff,
            field="e_phoff",
            expected=f"end <= {backing.size:#x}",
            found=f"end {ehdr.e_phoff + table_size:#x}",
        )
    raw = backing.read(ehdr.e_phoff, table_size, "program headers")
    return [Elf64Phdr(*fields) for fields in _PHDR.iter_unpack(raw)]


def _check_segment(ph: Elf64Phdr, index: int, phoff: int, backing: Backing, clamp: bool) -> int:
    """Bytes of ``ph``'s file data present in the file (p_filesz, or less when ``clamp``)."""
    where = phoff + index * Elf64Phdr.SIZE
    if ph.p_type == PhdrType.PT_LOAD and ph.p_filesz > ph.p_memsz:
        raise CorruptDataError(
            f"program header {index} holds more file data than memory",
            path=backing.path,
            offset=where,
            field="p_filesz",
            expected=f"<= p_memsz {ph.p_memsz:#x}",
            found=ph.p_filesz,
        )
    end = ph.p_offset + ph.p_filesz
    if end <= backing.size:
        return ph.p_filesz
    if clamp and ph.p_type == PhdrType.PT_LOAD:
        held = max(0, backing.size - ph.p_offset)
        log.warning("%s: incomplete dump, segment %d cut at %#x", backing.path, index, held)
        return held
    raise TruncatedError(
        f"program header {index} data runs past the end of the file",
        path=backing.path,
        offset=where,
        field="p_filesz",
        expected=f"end <= {backing.size:#x}",
        found=f"end {end:#x} (p_offset {ph.p_offset:#x})",
    )


def _read_notes(phdrs: Sequence[Elf64Phdr], backing: Backing) -> bytes:
    """Every PT_NOTE's notes, concatenated (as /proc/vmcore merges them), each trimmed
    at its terminating empty note so the concatenation stays one valid blob."""
    parts: list[bytes] = []
    for ph in phdrs:
        if ph.p_type != PhdrType.PT_NOTE or ph.p_filesz == 0:
            continue
        raw = backing.read(ph.p_offset, ph.p_filesz, "note segment")
        used = 0
        for note in iter_notes(raw, path=backing.path, base_offset=ph.p_offset):
            used = min(len(raw), note.desc_offset + align_up(len(note.desc), NOTE_ALIGN))
        parts.append(bytes(raw[:used]))
    return b"".join(parts)


def _vmcoreinfo_page_size(notes: bytes, path: str) -> int:
    """VMCOREINFO's PAGESIZE when it is a sane power of two, else the x86_64 default."""
    for note in iter_notes(notes):
        if note.name == VMCOREINFO_NOTE_NAME:
            try:
                size = VmcoreInfo.unpack(note.desc).page_size
            except DiskdumpError as err:
                log.warning("%s: %s; assuming %d-byte pages", path, err, DEFAULT_PAGE_SIZE)
                break
            if MIN_PAGE_SIZE <= size <= MAX_PAGE_SIZE and size & (size - 1) == 0:
                return size
            log.warning("%s: odd PAGESIZE %d; assuming %d", path, size, DEFAULT_PAGE_SIZE)
            break
    return DEFAULT_PAGE_SIZE


def _direct_map_base(loads: Sequence[Elf64Phdr]) -> int | None:
    """p_vaddr - p_paddr shared by every direct-map PT_LOAD, or None (QEMU, or disagreement)."""
    bases = {
        ph.p_vaddr - ph.p_paddr
        for ph in loads
        if X86_64_KERNEL_HALF <= ph.p_vaddr < X86_64_KERNEL_TEXT_BASE and ph.p_paddr != NO_ADDRESS
    }
    return bases.pop() if len(bases) == 1 else None


class ElfVmcore:
    """An ELF vmcore opened for reading; a :class:`~diskdump.formats.memsource.MemorySource`.

    Open with :meth:`open` (a file, ``/proc/vmcore``) or :meth:`from_bytes`;
    close with :meth:`close` or a ``with`` block. Opening checks every header
    offset and length against the file size; page reads are slices of an
    mmap of the file (positional reads where mmap is refused).
    """

    def __init__(self, backing: Backing, *, page_size: int | None = None) -> None:
        self._backing = backing
        self.path = backing.path
        self.header = Elf64Ehdr.unpack(backing.read(0, Elf64Ehdr.SIZE, "elf header"))
        _check_ehdr(self.header, self.path)
        self.program_headers: tuple[Elf64Phdr, ...] = tuple(
            _read_program_headers(self.header, backing)
        )
        self.segments: tuple[Elf64Phdr, ...] = tuple(
            ph for ph in self.program_headers if ph.p_type == PhdrType.PT_LOAD
        )
        loads = _checked_segments(self.header, self.program_headers, backing)
        self._notes = _read_notes(self.program_headers, backing)
        self._page_size = page_size or _vmcoreinfo_page_size(self._notes, self.path)
        self._pieces = _dedupe(loads)
        self._starts = [piece.start for piece in self._pieces]
        self._ram, self._data = self._classify_pages()
        self._data_starts = [run.start_pfn for run in self._data]
        self.page_offset: int | None = _direct_map_base(self.segments)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        page_size: int | None = None,
        use_mmap: bool | None = None,
    ) -> ElfVmcore:
        """Open an ELF vmcore file (or ``/proc/vmcore``).

        :param path: the file
        :param page_size: page size in bytes; default VMCOREINFO's PAGESIZE, else 4096
        :param use_mmap: map the file in windows (falls back to pread by itself when mmap
            is refused); default: only for files under /proc (filebacking.prefers_mmap)
        :raises BadMagicError: not an ELF file
        :raises NotThisFormatError: an ELF file but not a core dump
        :raises UnsupportedVersionError: not ELFCLASS64, little-endian, x86_64
        :raises TruncatedError: a header or segment runs past the end of the file
        :raises CorruptDataError: inconsistent counts or sizes
        """
        name = os.fspath(path)
        backing = Backing.open(name, use_mmap=prefers_mmap(name) if use_mmap is None else use_mmap)
        try:
            return cls(backing, page_size=page_size)
        except BaseException:
            backing.close()
            raise

    @classmethod
    def from_bytes(
        cls, data: bytes, *, path: str = "<memory>", page_size: int | None = None
    ) -> ElfVmcore:
        """Read an ELF vmcore held in memory (tests, small images)."""
        return cls(Backing(path, None, bytes(data), len(data)), page_size=page_size)

    def close(self) -> None:
        """Release the mmap and the file descriptor; idempotent."""
        self._backing.close()

    def __enter__(self) -> ElfVmcore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _classify_pages(self) -> tuple[list[PfnRun], list[PfnRun]]:
        size = self._page_size
        ram = merge_runs(
            [PfnRun(p.start // size, align_up(p.end, size) // size) for p in self._pieces]
        )
        excluded = merge_runs(
            [
                PfnRun(p.data_end // size, align_up(p.end, size) // size)
                for p in self._pieces
                if p.data_end < p.end
            ]
        )
        return ram, _subtract_runs(ram, excluded)

    @property
    def page_size(self) -> int:
        """Page size in bytes."""
        return self._page_size

    @property
    def max_pfn(self) -> int:
        """Highest RAM pfn + 1."""
        return self._ram[-1].end_pfn if self._ram else 0

    def ram_runs(self) -> Sequence[PfnRun]:
        """RAM pfns: every page that a PT_LOAD's p_memsz touches."""
        return self._ram

    def data_runs(self) -> Sequence[PfnRun]:
        """Pfns whose RAM bytes the file holds entirely."""
        return self._data

    @property
    def notes(self) -> bytes:
        """Every PT_NOTE's notes, concatenated in file order."""
        return self._notes

    @property
    def incomplete(self) -> bool:
        """e_flags bit 0 (makedumpfile's mark of a dump cut short)."""
        return bool(self.header.e_flags & ElfFlag.INCOMPLETE)

    @property
    def vmcoreinfo(self) -> VmcoreInfo | None:
        """The VMCOREINFO note, parsed, or None when the dump has none (QEMU without it)."""
        for note in iter_notes(self._notes):
            if note.name == VMCOREINFO_NOTE_NAME:
                return VmcoreInfo.unpack(note.desc)
        return None

    def read_pages(self, pfn: int, count: int) -> bytes:
        """Contents of ``count`` pages from ``pfn``; they must lie in one data run.

        :raises ExcludedPageError: a page is not RAM or not held by the file
        """
        run = bisect_right(self._data_starts, pfn) - 1
        if count <= 0 or run < 0 or pfn + count > self._data[run].end_pfn:
            raise ExcludedPageError(
                f"pages {pfn:#x}-{pfn + max(count, 1) - 1:#x} are not all held by this vmcore",
                path=self.path,
                field="pfn",
                hint="excluded by filtering, cut short, or not RAM",
            )
        return self.read_physical(pfn * self._page_size, count * self._page_size)

    def read_physical(self, address: int, size: int) -> bytes:
        """Bytes at physical ``address``; bytes in no PT_LOAD read as zeros (not RAM).

        Callers check that the range is data (:meth:`read_pages` does).
        """
        index = max(bisect_right(self._starts, address) - 1, 0)
        if index < len(self._pieces):
            piece = self._pieces[index]
            if piece.start <= address and address + size <= piece.data_end:
                offset = piece.file_offset + address - piece.start
                return self._backing.read(offset, size, "segment data")
        out = bytearray(size)
        end = address + size
        while index < len(self._pieces) and self._pieces[index].start < end:
            piece = self._pieces[index]
            lo, hi = max(address, piece.start), min(end, piece.data_end)
            if lo < hi:
                offset = piece.file_offset + lo - piece.start
                out[lo - address : hi - address] = self._backing.read(offset, hi - lo, "segment")
            index += 1
        return bytes(out)

    def prefetch_pages(self, pfn: int, count: int) -> None:
        """Ask the kernel to start reading pages ``[pfn, pfn + count)`` of the file now.

        ``posix_fadvise(WILLNEED)``: asynchronous, a hint only (nothing happens for a
        mapped /proc/vmcore, already in memory). A dump level keeps scattered pages,
        and a read per run from a cold file defeats the kernel's sequential readahead;
        announcing each window's span a few windows ahead turns that into streaming.
        """
        address, end = pfn * self._page_size, (pfn + count) * self._page_size
        index = max(bisect_right(self._starts, address) - 1, 0)
        while index < len(self._pieces) and self._pieces[index].start < end:
            piece = self._pieces[index]
            lo, hi = max(address, piece.start), min(end, piece.data_end)
            if lo < hi:
                self._backing.advise(piece.file_offset + lo - piece.start, hi - lo)
            index += 1


def _checked_segments(
    ehdr: Elf64Ehdr, phdrs: Sequence[Elf64Phdr], backing: Backing
) -> list[Elf64Phdr]:
    """Check every PT_LOAD and PT_NOTE against the file; return the PT_LOADs, a segment of an
    incomplete dump that the file cuts short reduced to what the file holds."""
    clamp = bool(ehdr.e_flags & ElfFlag.INCOMPLETE)
    loads: list[Elf64Phdr] = []
    for index, ph in enumerate(phdrs):
        if ph.p_type not in (PhdrType.PT_LOAD, PhdrType.PT_NOTE):
            continue
        held = _check_segment(ph, index, ehdr.e_phoff, backing, clamp)
        if ph.p_type == PhdrType.PT_LOAD:
            loads.append(ph if held == ph.p_filesz else replace(ph, p_filesz=held))
    return loads
