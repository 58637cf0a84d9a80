# SPDX-License-Identifier: GPL-2.0-or-later
"""The kdump-compressed ("diskdump") vmcore format: on-disk structures and the probe.

Spec source: makedumpfile ``diskdump_mod.h`` and ``IMPLEMENTATION``,
``makedumpfile.c`` (write_kdump_header, write_kdump_pages_and_bitmap_cyclic);
readers crash ``diskdump.c``, libkdumpfile ``src/kdumpfile/diskdump.c``. x86_64
(LP64, little endian) layout. Signature ``KDUMP   ``; header_version 1 to 6
read (6 written, as makedumpfile >= 1.5 and QEMU). The reader lives in
:mod:`diskdump.formats.kdump_read`, the writer in :mod:`diskdump.formats.kdump_write`.

File layout (bs = block_size = page size; every region but the page data
starts on a block boundary)::

    offset                                   contents
    0                                        disk_dump_header (464 bytes), zero to bs
    bs                                       kdump_sub_header (104 bytes)
    bs + 104                                 ELF note blob (size_note bytes, v4+)
    (1 + sub_hdr_size) * bs                  1st bitmap: pfn is RAM
    (1 + sub_hdr_size + bitmap_blocks/2)*bs  2nd bitmap: pfn has a page descriptor
    (1 + sub_hdr_size + bitmap_blocks) * bs  page_desc[popcount(2nd bitmap)], 24 bytes each
    after the descriptors                    page data (the shared zero page first at level 1)
    after the page data                      erase info text (v5+, optional)

    disk_dump_header (x86_64)            kdump_sub_header (x86_64)
    0    signature "KDUMP   "            0   phys_base
    8    header_version                  8   dump_level          (v1)
    12   utsname (6 x char[65])          12  split               (v2)
    408  timestamp {tv_sec, tv_usec}     16  start_pfn, end_pfn  (v2)
    424  status                          32  offset_vmcoreinfo, size_vmcoreinfo (v3)
    428  block_size                      48  offset_note, size_note (v4)
    432  sub_hdr_size (blocks)           64  offset_eraseinfo, size_eraseinfo (v5)
    436  bitmap_blocks (both bitmaps)    80  start_pfn_64, end_pfn_64, max_mapnr_64 (v6)
    440  max_mapnr (32-bit)
    444  total_ram_blocks, device_blocks, written_blocks, current_cpu, nr_cpus

    page_desc: 0 offset (0 = not written), 8 size, 12 flags (codec bit), 16 page_flags

Bitmaps: pfn n is bit (n & 7) of byte (n >> 3). The 2nd bitmap is a subset of
the 1st; a pfn set in the 1st but not the 2nd was excluded (filtered).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntFlag
from typing import BinaryIO

from diskdump.errors import BadMagicError, CorruptDataError, TruncatedError
from diskdump.formats.codecs import CompressFlag
from diskdump.formats.memsource import PfnRun

__all__ = [
    "DISKDUMP_SIGNATURE",
    "KDUMP_SIGNATURE",
    "KDUMP_VERSION",
    "DiskDumpHeader",
    "DumpStatus",
    "KdumpSubHeader",
    "NewUtsname",
    "PageDesc",
    "bitmap_to_runs",
    "is_kdump",
    "runs_to_bitmap",
    "sub_header_fields",
]

#: signature of kdump-compressed files (makedumpfile ``KDUMP_SIGNATURE``)
KDUMP_SIGNATURE = b"KDUMP   "
#: signature of 2004 Fujitsu diskdump files (``DISK_DUMP_SIGNATURE``); not read
DISKDUMP_SIGNATURE = b"DISKDUMP"
#: header version written (makedumpfile >= 1.5.0, QEMU)
KDUMP_VERSION = 6
#: oldest header version read: v1 added dump_level, which makedumpfile requires too
KDUMP_MIN_VERSION = 1
#: ``struct new_utsname`` field length (__NEW_UTS_LEN + 1)
UTS_FIELD_SIZE = 65
#: 32-bit ``max_mapnr`` of the main header saturates at this value (v6 adds max_mapnr_64)
MAX_MAPNR_32 = 0xFFFFFFFF
#: bits per bitmap byte
BITS_PER_BYTE = 8
_ALL_ONES_BYTE = 0xFF


class DumpStatus(IntFlag):
    """``disk_dump_header.status`` bits (makedumpfile ``diskdump_mod.h``)."""

    COMPRESSED_ZLIB = CompressFlag.ZLIB
    COMPRESSED_LZO = CompressFlag.LZO
    COMPRESSED_SNAPPY = CompressFlag.SNAPPY
    #: DUMP_DH_COMPRESSED_INCOMPLETE: the writer ran out of space or source
    INCOMPLETE = 0x08
    #: DUMP_DH_EXCLUDED_VMEMMAP: unused vmemmap pages were excluded
    EXCLUDED_VMEMMAP = 0x10
    COMPRESSED_ZSTD = CompressFlag.ZSTD


_UTSNAME = struct.Struct("<" + f"{UTS_FIELD_SIZE}s" * 6)
_HEADER = struct.Struct("<8si390s6xqqIiiIIIIIIi")
_SUB_HEADER = struct.Struct("<QiiQQqQqQqQQQQ")
_PAGE_DESC = struct.Struct("<qIIQ")


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


@dataclass(frozen=True, slots=True)
class NewUtsname:
    """``struct new_utsname``: six NUL-padded 65-byte strings (latin-1)."""

    SIZE = _UTSNAME.size

    sysname: str = "Linux"
    nodename: str = ""
    release: str = ""
    version: str = ""
    machine: str = "x86_64"
    domainname: str = ""

    def __post_init__(self) -> None:
        for name in ("sysname", "nodename", "release", "version", "machine", "domainname"):
            # 65 bytes without a NUL occur on disk (readers then call utsname insane)
            if len(getattr(self, name).encode("latin-1")) > UTS_FIELD_SIZE:
                raise ValueError(f"utsname.{name} longer than {UTS_FIELD_SIZE} bytes")

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview) -> NewUtsname:
        """Decode 390 bytes; each field ends at its first NUL."""
        return cls(*(_cstr(raw) for raw in _UTSNAME.unpack(bytes(buf))))

    def pack(self) -> bytes:
        """Encode to 390 bytes, each field NUL-padded."""
        return _UTSNAME.pack(
            *(
                getattr(self, name).encode("latin-1")
                for name in ("sysname", "nodename", "release", "version", "machine", "domainname")
            )
        )


@dataclass(frozen=True, slots=True)
class DiskDumpHeader:
    """``struct disk_dump_header`` (x86_64, 464 bytes) at file offset 0."""

    SIZE = _HEADER.size

    signature: bytes = KDUMP_SIGNATURE
    header_version: int = KDUMP_VERSION
    utsname: bytes = bytes(NewUtsname.SIZE)  #: the raw 390 bytes; see :attr:`uts`
    tv_sec: int = 0
    tv_usec: int = 0
    status: int = 0
    block_size: int = 4096
    sub_hdr_size: int = 1
    bitmap_blocks: int = 2
    max_mapnr: int = 0
    total_ram_blocks: int = 0
    device_blocks: int = 0
    written_blocks: int = 0
    current_cpu: int = 0
    nr_cpus: int = 0

    @classmethod
    def unpack(
        cls, buf: bytes | bytearray | memoryview, *, path: str | None = None
    ) -> DiskDumpHeader:
        """Decode the first :attr:`SIZE` bytes of ``buf``.

        :raises TruncatedError: ``buf`` is shorter than 464 bytes
        """
        if len(buf) < cls.SIZE:
            raise TruncatedError(
                "kdump main header is cut short",
                path=path,
                offset=0,
                expected=f"{cls.SIZE} bytes",
                found=f"{len(buf)} bytes",
            )
        return cls(*_HEADER.unpack_from(buf))

    def pack(self) -> bytes:
        """Encode to 464 bytes."""
        return _HEADER.pack(
            self.signature,
            self.header_version,
            self.utsname,
            self.tv_sec,
            self.tv_usec,
            self.status,
            self.block_size,
            self.sub_hdr_size,
            self.bitmap_blocks,
            self.max_mapnr,
            self.total_ram_blocks,
            self.device_blocks,
            self.written_blocks,
            self.current_cpu,
            self.nr_cpus,
        )

    @property
    def uts(self) -> NewUtsname:
        """The utsname decoded."""
        return NewUtsname.unpack(self.utsname)


#: bytes of the sub header each header version defines (fields after that are zero)
_SUB_HEADER_SIZE_BY_VERSION = {1: 12, 2: 32, 3: 48, 4: 64, 5: 80, 6: 104}


@dataclass(frozen=True, slots=True)
class KdumpSubHeader:
    """``struct kdump_sub_header`` (x86_64, 104 bytes) at file offset block_size."""

    SIZE = _SUB_HEADER.size

    phys_base: int = 0
    dump_level: int = 0
    split: int = 0
    start_pfn: int = 0
    end_pfn: int = 0
    offset_vmcoreinfo: int = 0
    size_vmcoreinfo: int = 0
    offset_note: int = 0
    size_note: int = 0
    offset_eraseinfo: int = 0
    size_eraseinfo: int = 0
    start_pfn_64: int = 0
    end_pfn_64: int = 0
    max_mapnr_64: int = 0

    @classmethod
    def unpack(
        cls, buf: bytes | bytearray | memoryview, *, header_version: int = KDUMP_VERSION
    ) -> KdumpSubHeader:
        """Decode 104 bytes; fields later than ``header_version`` defines read as 0.

        :raises ValueError: ``buf`` is shorter than 104 bytes
        """
        defined = sub_header_fields(header_version)
        raw = bytes(buf[:defined]).ljust(cls.SIZE, b"\0")
        return cls(*_SUB_HEADER.unpack(raw))

    def pack(self) -> bytes:
        """Encode to 104 bytes."""
        return _SUB_HEADER.pack(
            self.phys_base,
            self.dump_level,
            self.split,
            self.start_pfn,
            self.end_pfn,
            self.offset_vmcoreinfo,
            self.size_vmcoreinfo,
            self.offset_note,
            self.size_note,
            self.offset_eraseinfo,
            self.size_eraseinfo,
            self.start_pfn_64,
            self.end_pfn_64,
            self.max_mapnr_64,
        )


def sub_header_fields(header_version: int) -> int:
    """How many leading bytes of the sub header ``header_version`` defines."""
    if header_version < KDUMP_MIN_VERSION:
        return 0
    return _SUB_HEADER_SIZE_BY_VERSION[min(header_version, KDUMP_VERSION)]


@dataclass(frozen=True, slots=True)
class PageDesc:
    """``struct page_desc`` (24 bytes): where one dumpable page is stored."""

    SIZE = _PAGE_DESC.size
    STRUCT = _PAGE_DESC

    offset: int  #: file offset of the data; 0 = never written (incomplete dump)
    size: int  #: stored bytes
    flags: int  #: 0 raw, else one :class:`CompressFlag`
    page_flags: int = 0  #: unused by every reader

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview) -> PageDesc:
        """Decode exactly 24 bytes."""
        return cls(*_PAGE_DESC.unpack(bytes(buf)))

    def pack(self) -> bytes:
        """Encode to 24 bytes."""
        return _PAGE_DESC.pack(self.offset, self.size, self.flags, self.page_flags)


assert NewUtsname.SIZE == 390
assert DiskDumpHeader.SIZE == 464
assert KdumpSubHeader.SIZE == 104
assert PageDesc.SIZE == 24


def is_kdump(f: BinaryIO) -> bool:
    """True when ``f`` starts with the ``KDUMP   `` signature.

    Never raises for "not this format" and never moves the file position
    (reads with ``pread`` when ``f`` has a descriptor, else seeks back).
    """
    try:
        head = _peek(f, len(KDUMP_SIGNATURE))
    except (OSError, ValueError):
        return False
    return head == KDUMP_SIGNATURE


def _peek(f: BinaryIO, size: int) -> bytes:
    try:
        fd = f.fileno()
    except (OSError, AttributeError, ValueError):
        fd = -1
    if fd >= 0:
        return os.pread(fd, size, 0)
    where = f.tell()
    try:
        f.seek(0)
        return f.read(size)
    finally:
        f.seek(where)


# a byte with every bit set is a whole run of 8 pfns; any other non-zero byte is partial
_RUN_BYTES = re.compile(rb"\xff+|[\x01-\xfe]")
#: bitmap bytes compared at once against zeros (all-zero blocks are skipped by one memcmp)
_SCAN_BLOCK = 4096
_ZERO_BLOCK = bytes(_SCAN_BLOCK)


def bitmap_to_runs(bitmap: bytes | bytearray | memoryview, limit_pfn: int) -> list[PfnRun]:
    """The runs of set bits of a kdump bitmap, below ``limit_pfn``.

    Cost is proportional to the number of runs plus one block comparison per
    4 KiB of bitmap: all-zero blocks (the holes of a sparse address space) are
    skipped whole, set bytes are found by the regular-expression engine.
    """
    raw = bytes(bitmap)
    spans: list[tuple[int, int]] = []
    for block in range(0, len(raw), _SCAN_BLOCK):
        if raw[block : block + _SCAN_BLOCK] == _ZERO_BLOCK[: min(_SCAN_BLOCK, len(raw) - block)]:
            continue
        for match in _RUN_BYTES.finditer(raw, block, min(block + _SCAN_BLOCK, len(raw))):
            first = match.start() * BITS_PER_BYTE
            byte = raw[match.start()]
            if match.end() - match.start() > 1 or byte == _ALL_ONES_BYTE:
                spans.append((first, match.end() * BITS_PER_BYTE))
            else:
                spans.extend((first + bit, first + bit + 1) for bit in range(8) if byte >> bit & 1)
    return _clip_runs(_join_spans(spans), limit_pfn)


def _join_spans(spans: list[tuple[int, int]]) -> list[PfnRun]:
    runs: list[PfnRun] = []
    start = end = -1
    for lo, hi in spans:
        if lo == end:
            end = hi
            continue
        if end > start >= 0:
            runs.append(PfnRun(start, end))
        start, end = lo, hi
    if end > start >= 0:
        runs.append(PfnRun(start, end))
    return runs


def _clip_runs(runs: list[PfnRun], limit_pfn: int) -> list[PfnRun]:
    out = [run for run in runs if run.end_pfn <= limit_pfn]
    for run in runs[len(out) :]:
        if run.start_pfn < limit_pfn:
            out.append(PfnRun(run.start_pfn, limit_pfn))
        break
    return out


def runs_to_bitmap(runs: Sequence[PfnRun], start_pfn: int, end_pfn: int) -> bytearray:
    """The bitmap bytes for pfns ``[start_pfn, end_pfn)``; ``start_pfn`` must be a multiple of 8.

    :param runs: ascending, non-overlapping runs (parts outside the window are ignored)
    """
    if start_pfn % BITS_PER_BYTE:
        raise ValueError(f"bitmap window must start on a byte, got pfn {start_pfn:#x}")
    out = bytearray(-(-(end_pfn - start_pfn) // BITS_PER_BYTE))
    for run in runs:
        lo = max(run.start_pfn, start_pfn) - start_pfn
        hi = min(run.end_pfn, end_pfn) - start_pfn
        if lo >= hi:
            continue
        # partial head byte, whole bytes, partial tail byte
        while lo < hi and lo % BITS_PER_BYTE:
            out[lo >> 3] |= 1 << (lo & 7)
            lo += 1
        whole = (hi - lo) // BITS_PER_BYTE
        out[lo >> 3 : (lo >> 3) + whole] = b"\xff" * whole
        lo += whole * BITS_PER_BYTE
        while lo < hi:
            out[lo >> 3] |= 1 << (lo & 7)
            lo += 1
    return out


def check_signature(signature: bytes, *, path: str | None) -> None:
    """Raise unless ``signature`` is ``KDUMP   ``.

    :raises BadMagicError: another signature (legacy ``DISKDUMP`` files are named as such)
    """
    if signature == KDUMP_SIGNATURE:
        return
    what = (
        "legacy diskdump files are not read"
        if signature == DISKDUMP_SIGNATURE
        else "not a kdump-compressed file"
    )
    raise BadMagicError(
        what, path=path, offset=0, field="signature", expected=KDUMP_SIGNATURE, found=signature
    )


def check_block_size(block_size: int, *, path: str | None) -> None:
    """Raise unless ``block_size`` is a power of two of at least 4 KiB, as libkdumpfile wants.

    :raises CorruptDataError: any other value
    """
    if block_size < MIN_BLOCK_SIZE or block_size > MAX_BLOCK_SIZE or block_size & (block_size - 1):
        raise CorruptDataError(
            "kdump block size is not a power of two in [4 KiB, 256 KiB]",
            path=path,
            offset=_BLOCK_SIZE_OFFSET,
            field="block_size",
            found=block_size,
        )


#: libkdumpfile's sanity range for block_size (diskdump.c try_header)
MIN_BLOCK_SIZE = 4096
MAX_BLOCK_SIZE = 262144
#: file offset of disk_dump_header.block_size (x86_64)
_BLOCK_SIZE_OFFSET = 428
