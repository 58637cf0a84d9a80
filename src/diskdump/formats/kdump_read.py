# SPDX-License-Identifier: GPL-2.0-or-later
"""Reader of kdump-compressed vmcores (plain or flattened), as a :class:`MemorySource`.

Layout and spec sources: see :mod:`diskdump.formats.kdump` (diagram there).
Header versions 1 to 6 are read. What the reader does, and why:

* every offset and size from the file is checked against the file size before use;
* both bitmaps are read once; a page's descriptor index is the number of set
  bits of the 2nd bitmap below it, found from prefix counts kept per block of
  :data:`PFNS_PER_COUNT` pfns plus one popcount inside the block (crash keeps
  the same kind of table), so a lookup never loops over pages;
* an incomplete dump (status bit 0x8) has descriptors whose offset is 0 (never
  written): those pages are reported as excluded, never zero-filled;
* flattened files (``makedumpfile -F``) are read through the index of
  :mod:`diskdump.formats.flattened`.

The deep checks (2nd bitmap within the 1st, every descriptor inside the file,
every page decompressing to one page) are in :func:`validate_kdump`.
"""

from __future__ import annotations

import logging
import os
import struct
from array import array
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Protocol

from diskdump._binary import check_range, read_at
from diskdump.errors import (
    CorruptDataError,
    ExcludedPageError,
    UnsupportedVersionError,
)
from diskdump.formats.codecs import Codec, CompressFlag, codec_for_flag
from diskdump.formats.flattened import FlattenedView, is_flattened
from diskdump.formats.kdump import (
    BITS_PER_BYTE,
    KDUMP_MIN_VERSION,
    KDUMP_VERSION,
    DiskDumpHeader,
    DumpStatus,
    KdumpSubHeader,
    PageDesc,
    bitmap_to_runs,
    check_block_size,
    check_signature,
    sub_header_fields,
)
from diskdump.formats.memsource import PfnRun, merge_runs

__all__ = ["PFNS_PER_COUNT", "KdumpFile", "RandomAccess", "validate_kdump"]

log = logging.getLogger(__name__)

#: pfns per prefix-count block of the descriptor index (512 bitmap bytes; crash: BITMAP_SECT_LEN)
PFNS_PER_COUNT = 4096
_COUNT_BYTES = PFNS_PER_COUNT // BITS_PER_BYTE
#: descriptors read at once when scanning an incomplete dump for unwritten pages
_SCAN_DESCS = 65536
#: page_desc is three 8-byte words: offset, size|flags, page_flags
_DESC_WORDS = 3
#: low half of the second word: page_desc.size
_SIZE_MASK = 0xFFFFFFFF
#: every flag value a page descriptor may carry (0 = raw)
_PAGE_FLAGS = (0, CompressFlag.ZLIB, CompressFlag.LZO, CompressFlag.SNAPPY, CompressFlag.ZSTD)


class RandomAccess(Protocol):
    """A read-only byte container with positional reads (a file, a flattened stream's index)."""

    @property
    def size(self) -> int:
        """Length of the (reassembled) file, in bytes."""
        ...

    def pread(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes at ``offset``.

        :raises TruncatedError: the range is not all present
        """
        ...


class FileView:
    """:class:`RandomAccess` over an open file descriptor (``os.pread``)."""

    def __init__(self, fd: int, *, path: str | None = None) -> None:
        self.fd = fd
        self.path = path
        self._size = os.fstat(fd).st_size

    @property
    def size(self) -> int:
        """File size in bytes."""
        return self._size

    def pread(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes at ``offset``."""
        return read_at(self.fd, offset, size, what="kdump data", path=self.path)


class KdumpFile:
    """A kdump-compressed vmcore opened for reading; a :class:`MemorySource`.

    Use :meth:`open` for a path; it recognises the flattened form too.

    :param view: the file's bytes
    :param path: name used in messages
    :raises BadMagicError: not a ``KDUMP   `` file
    :raises UnsupportedVersionError: header_version outside 1-6
    :raises TruncatedError: a region the headers name lies past the end of the file
    :raises CorruptDataError: inconsistent header fields
    """

    def __init__(self, view: RandomAccess, *, path: str | None = None) -> None:
        self.view = view
        self.path = path
        self.flattened = isinstance(view, FlattenedView)
        self._fd: int | None = None
        self.header = DiskDumpHeader.unpack(view.pread(0, DiskDumpHeader.SIZE), path=path)
        self._check_header()
        bs = self.header.block_size
        version = self.header.header_version
        raw_sub = view.pread(bs, sub_header_fields(version))
        self.sub_header = KdumpSubHeader.unpack(
            raw_sub.ljust(KdumpSubHeader.SIZE, b"\0"), header_version=version
        )
        self._max_mapnr = (
            self.sub_header.max_mapnr_64 if version >= KDUMP_VERSION else self.header.max_mapnr
        )
        self._read_bitmaps()
        self.notes = self._region(self.sub_header.offset_note, self.sub_header.size_note, 4, "note")
        self.vmcoreinfo = self._region(
            self.sub_header.offset_vmcoreinfo, self.sub_header.size_vmcoreinfo, 3, "vmcoreinfo"
        )
        self.erase_info = self._region(
            self.sub_header.offset_eraseinfo, self.sub_header.size_eraseinfo, 5, "eraseinfo"
        )
        self._codecs: dict[int, Codec] = {int(flag): codec_for_flag(flag) for flag in _PAGE_FLAGS}
        self._data_runs = self._find_data_runs()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> KdumpFile:
        """Open a kdump-compressed file, plain or flattened.

        :raises FormatError: see the class
        """
        name = os.fspath(path)
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with os.fdopen(os.dup(fd), "rb") as probe:
                flat = is_flattened(probe)
            view: RandomAccess = FlattenedView(fd, path=name) if flat else FileView(fd, path=name)
            kfile = cls(view, path=name)
        except BaseException:
            os.close(fd)
            raise
        kfile._fd = fd
        return kfile

    def close(self) -> None:
        """Close the file if :meth:`open` opened it."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> KdumpFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- header checks ---------------------------------------------------------------------

    def _check_header(self) -> None:
        header = self.header
        check_signature(header.signature, path=self.path)
        if not KDUMP_MIN_VERSION <= header.header_version <= KDUMP_VERSION:
            raise UnsupportedVersionError(
                "kdump header version not supported",
                path=self.path,
                offset=len(header.signature),
                field="header_version",
                expected=f"{KDUMP_MIN_VERSION}..{KDUMP_VERSION}",
                found=header.header_version,
            )
        check_block_size(header.block_size, path=self.path)
        if header.sub_hdr_size < 1 or header.bitmap_blocks < 2 or header.bitmap_blocks % 2:
            raise CorruptDataError(
                "kdump header names no sub header or not two equal bitmaps",
                path=self.path,
                field="sub_hdr_size" if header.sub_hdr_size < 1 else "bitmap_blocks",
                found=header.sub_hdr_size if header.sub_hdr_size < 1 else header.bitmap_blocks,
            )
        check_range(
            0,
            (1 + header.sub_hdr_size) * header.block_size,
            self.view.size,
            what="kdump sub-header area",
            path=self.path,
            field="sub_hdr_size",
        )

    def _read_bitmaps(self) -> None:
        header = self.header
        bs = header.block_size
        half_size = header.bitmap_blocks // 2 * bs
        needed = -(-self._max_mapnr // BITS_PER_BYTE)
        if needed > half_size:
            raise CorruptDataError(
                "kdump bitmaps are too small for max_mapnr",
                path=self.path,
                field="bitmap_blocks",
                expected=f">= {2 * -(-needed // bs)} blocks",
                found=header.bitmap_blocks,
            )
        self.bitmap1_offset = (1 + header.sub_hdr_size) * bs
        self.bitmap2_offset = self.bitmap1_offset + half_size
        self.desc_offset = self.bitmap1_offset + header.bitmap_blocks * bs
        # crash maps the whole bitmap area: the file must reach the end of the 2nd bitmap
        check_range(
            self.bitmap1_offset,
            2 * half_size,
            self.view.size,
            what="kdump bitmaps",
            path=self.path,
            field="bitmap_blocks",
        )
        self.bitmap1 = self.view.pread(self.bitmap1_offset, needed)
        self.bitmap2 = self.view.pread(self.bitmap2_offset, needed)
        self._prefix = array("Q")
        total = 0
        for start in range(0, needed, _COUNT_BYTES):
            self._prefix.append(total)
            total += int.from_bytes(
                self.bitmap2[start : start + _COUNT_BYTES], "little"
            ).bit_count()
        self._prefix.append(total)
        self.desc_count = total

    def _region(self, offset: int, size: int, min_version: int, name: str) -> bytes:
        if self.header.header_version < min_version or offset == 0 or size == 0:
            return b""
        check_range(
            offset,
            size,
            self.view.size,
            what=f"kdump {name} area",
            path=self.path,
            field=f"offset_{name}",
        )
        return self.view.pread(offset, size)

    # -- descriptor index ------------------------------------------------------------------

    def desc_index(self, pfn: int) -> int:
        """Number of set bits of the 2nd bitmap below ``pfn`` (= the index of its descriptor)."""
        block = pfn // PFNS_PER_COUNT
        first = block * _COUNT_BYTES
        byte = pfn // BITS_PER_BYTE
        count = int(self._prefix[block])
        count += int.from_bytes(self.bitmap2[first:byte], "little").bit_count()
        rem = pfn % BITS_PER_BYTE
        if rem and byte < len(self.bitmap2):
            count += (self.bitmap2[byte] & ((1 << rem) - 1)).bit_count()
        return count

    def read_descs(self, index: int, count: int) -> list[PageDesc]:
        """Descriptors ``[index, index + count)``; ones past the end read as offset 0."""
        start = self.desc_offset + index * PageDesc.SIZE
        available = max(0, min(count, (self.view.size - start) // PageDesc.SIZE))
        if available < count and not self.incomplete:
            check_range(
                start,
                count * PageDesc.SIZE,
                self.view.size,
                what="page descriptor array",
                path=self.path,
            )
        raw = self.view.pread(start, available * PageDesc.SIZE) if available else b""
        descs = [PageDesc(*fields) for fields in PageDesc.STRUCT.iter_unpack(raw)]
        descs.extend(PageDesc(0, 0, 0) for _ in range(count - available))
        return descs

    def _find_data_runs(self) -> list[PfnRun]:
        runs = bitmap_to_runs(self.bitmap2, self._max_mapnr)
        if not self.incomplete:
            return runs
        # pages whose descriptor was never written (offset 0) are excluded, not zero
        held: list[PfnRun] = []
        for run in runs:
            base = self.desc_index(run.start_pfn)
            for chunk in range(0, run.pages, _SCAN_DESCS):
                count = min(_SCAN_DESCS, run.pages - chunk)
                written = self._desc_written(base + chunk, count)
                held.extend(_nonzero_runs(written, run.start_pfn + chunk))
        log.info(
            "%s: incomplete dump, %d of %d descriptors written",
            self.path,
            sum(r.pages for r in held),
            self.desc_count,
        )
        return merge_runs(held)

    def _desc_written(self, index: int, count: int) -> Sequence[bool]:
        # an interrupted writer leaves offset 0, or data that never reached the file
        start = self.desc_offset + index * PageDesc.SIZE
        available = max(0, min(count, (self.view.size - start) // PageDesc.SIZE))
        raw = self.view.pread(start, available * PageDesc.SIZE) if available else b""
        words = struct.unpack(f"<{available * _DESC_WORDS}Q", raw)
        offsets = words[0::_DESC_WORDS]
        sizes = words[1::_DESC_WORDS]
        size = self.view.size
        written = [
            offset > 0 and offset + (word & _SIZE_MASK) <= size
            for offset, word in zip(offsets, sizes, strict=True)
        ]
        return written + [False] * (count - available)

    # -- MemorySource ----------------------------------------------------------------------

    @property
    def page_size(self) -> int:
        """Page size (= block_size), in bytes."""
        return self.header.block_size

    @property
    def max_pfn(self) -> int:
        """max_mapnr (64-bit field for v6)."""
        return self._max_mapnr

    @property
    def incomplete(self) -> bool:
        """True when status has DUMP_DH_COMPRESSED_INCOMPLETE."""
        return bool(self.header.status & DumpStatus.INCOMPLETE)

    @property
    def dump_level(self) -> int:
        """The ``-d`` mask the writer used."""
        return self.sub_header.dump_level

    @property
    def compression(self) -> CompressFlag:
        """The compression bits of the header status."""
        return CompressFlag(self.header.status & sum(_PAGE_FLAGS))

    def ram_runs(self) -> list[PfnRun]:
        """RAM pfns (1st bitmap)."""
        return bitmap_to_runs(self.bitmap1, self._max_mapnr)

    def data_runs(self) -> list[PfnRun]:
        """pfns with page data (2nd bitmap, less unwritten descriptors of incomplete dumps)."""
        return list(self._data_runs)

    def read_pages(self, pfn: int, count: int) -> bytes:
        """Contents of ``count`` pages from ``pfn``, decompressed.

        :raises ExcludedPageError: a page is not RAM, was filtered out, or was never written
        :raises CorruptDataError: a descriptor or its data are invalid
        :raises TruncatedError: page data lie past the end of the file
        """
        self._check_held(pfn, count)
        descs = self.read_descs(self.desc_index(pfn), count)
        return b"".join(self._iter_page_data(pfn, descs))

    def _check_held(self, pfn: int, count: int) -> None:
        end = pfn + count
        if pfn < 0 or count < 0 or end > self._max_mapnr:
            raise ExcludedPageError(
                "page lies beyond max_mapnr",
                path=self.path,
                field="pfn",
                expected=f"< {self._max_mapnr:#x}",
                found=end - 1,
            )
        if self.desc_index(end) - self.desc_index(pfn) != count:
            raise ExcludedPageError(
                "page is not in the dump (excluded or a memory hole)",
                path=self.path,
                field="pfn",
                found=_first_clear(self.bitmap2, pfn, end),
            )

    def _iter_page_data(self, pfn: int, descs: list[PageDesc]) -> Iterator[bytes]:
        bs = self.header.block_size
        for number, desc in enumerate(descs):
            unwritten = desc.offset + desc.size > self.view.size and self.incomplete
            if desc.offset == 0 or unwritten:
                raise ExcludedPageError(
                    "page was never written (incomplete dump)",
                    path=self.path,
                    field="pfn",
                    found=pfn + number,
                )
            self._check_desc(desc, pfn + number)
            raw = self.view.pread(desc.offset, desc.size)
            if desc.flags == 0:
                yield raw
                continue
            try:
                yield self._codecs[desc.flags].decompress(raw, bs)
            except CorruptDataError as err:
                raise CorruptDataError(
                    f"page {pfn + number:#x}: {err.what}",
                    path=self.path,
                    offset=desc.offset,
                    field="page data",
                    expected=err.expected,
                    found=err.found,
                ) from err

    def _check_desc(self, desc: PageDesc, pfn: int) -> None:
        bs = self.header.block_size
        problem = None
        if desc.flags not in self._codecs:
            problem = ("flags", "unknown compression flags", desc.flags)
        elif desc.size > bs or desc.size == 0 or (desc.flags == 0 and desc.size != bs):
            problem = ("size", "page descriptor has a bad size", desc.size)
        elif desc.offset < self.desc_offset or desc.offset + desc.size > self.view.size:
            problem = ("offset", "page data lie outside the file", desc.offset)
        if problem is not None:
            raise CorruptDataError(
                f"page {pfn:#x}: {problem[1]}",
                path=self.path,
                offset=self.desc_offset + self.desc_index(pfn) * PageDesc.SIZE,
                field=problem[0],
                found=problem[2],
            )


def _nonzero_runs(written: Sequence[bool], pfn0: int) -> list[PfnRun]:
    runs: list[PfnRun] = []
    start = None
    for number, offset in enumerate(written):
        if offset and start is None:
            start = number
        elif not offset and start is not None:
            runs.append(PfnRun(pfn0 + start, pfn0 + number))
            start = None
    if start is not None:
        runs.append(PfnRun(pfn0 + start, pfn0 + len(written)))
    return runs


def _first_clear(bitmap: bytes, start: int, end: int) -> int:
    for pfn in range(start, end):
        byte = pfn // BITS_PER_BYTE
        if byte >= len(bitmap) or not bitmap[byte] >> (pfn % BITS_PER_BYTE) & 1:
            return pfn
    return end


def validate_kdump(kfile: KdumpFile, *, decompress: bool = True) -> int:
    """Deep checks: 2nd bitmap within the 1st, every descriptor valid, every page decodable.

    :param decompress: also decompress every page (the slow part)
    :return: the number of pages checked
    :raises CorruptDataError: the first inconsistency found
    """
    first = int.from_bytes(kfile.bitmap1, "little")
    second = int.from_bytes(kfile.bitmap2, "little")
    if second & ~first:
        bad = (second & ~first) & -(second & ~first)
        raise CorruptDataError(
            "2nd bitmap holds a pfn the 1st does not",
            path=kfile.path,
            offset=kfile.bitmap2_offset,
            field="bitmap",
            found=bad.bit_length() - 1,
        )
    checked = 0
    for run in bitmap_to_runs(kfile.bitmap2, kfile.max_pfn):
        pfn = run.start_pfn
        while pfn < run.end_pfn:
            count = min(_SCAN_DESCS, run.end_pfn - pfn)
            descs = kfile.read_descs(kfile.desc_index(pfn), count)
            for number, desc in enumerate(descs):
                unwritten = desc.offset == 0 or desc.offset + desc.size > kfile.view.size
                if unwritten and kfile.incomplete:
                    continue
                if decompress:
                    b"".join(kfile._iter_page_data(pfn + number, [desc]))
                else:
                    kfile._check_desc(desc, pfn + number)
                checked += 1
            pfn += count
    return checked
