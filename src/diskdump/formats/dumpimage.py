# SPDX-License-Identifier: GPL-2.0-or-later
"""Reading a dump back from a device: both headers, the metadata and the chunk stream.

The layout is documented in formats/dumpheader.py (headers, metadata) and
formats/chunk.py (chunks); this module is their reader::

    trailing header (last block) --+--> the header to trust (read_dump_headers)
    leading header (reserve lba) --+
    metadata (meta_lba, crc32)     ---> DumpMetadata (notes, RAM runs, kernel log, ...)
    chunks from data_lba           ---> index by pfn ---> DumpImage (a MemorySource)

An encrypted dump (``DumpFlag.ENCRYPTED``, formats/encrypted.py) opens
without the key: headers, clear metadata and chunk headers are all readable,
and reading a page raises :class:`CryptoError`. With ``private_key`` the dump
key is unwrapped first (a wrong key fails before any chunk is read) and pages
are opened as they are decoded.

A dump whose header says COMPLETE must be entirely valid (any failure is a
:class:`FormatError`). In a dump not marked complete the chunk stream ends at
the first chunk whose header or payload fails: that is where the writer was
cut short, and everything before it is usable.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from diskdump._binary import checksum32
from diskdump.errors import (
    ChecksumError,
    CorruptDataError,
    DiskdumpError,
    ExcludedPageError,
    FormatError,
    HeaderMismatchError,
    NotThisFormatError,
    TruncatedError,
)
from diskdump.formats.chunk import (
    CHUNK_HEADER_SIZE,
    ChunkHeader,
    PageState,
    decode_payload,
)
from diskdump.formats.crypt import ChunkCipher
from diskdump.formats.dumpheader import (
    DumpFlag,
    DumpHeader,
    DumpMetadata,
    DumpStatus,
    unpack_metadata,
)
from diskdump.formats.encrypted import unlock_metadata
from diskdump.formats.memsource import PfnRun, merge_runs

__all__ = [
    "BlockSource",
    "ChunkRef",
    "DumpHeaders",
    "DumpImage",
    "open_dump",
    "read_dump_headers",
    "validate_dump",
]

log = logging.getLogger(__name__)


class BlockGeometryLike(Protocol):
    """The two geometry fields the reader needs (devices.base.DeviceGeometry has them)."""

    @property
    def block_size(self) -> int: ...

    @property
    def block_count(self) -> int: ...


class BlockSource(Protocol):
    """Positional block reads; ``devices.base.BlockIO`` satisfies it."""

    @property
    def geometry(self) -> BlockGeometryLike: ...

    def read(self, lba: int, buffer: bytearray | memoryview) -> None: ...


def _read(src: BlockSource, lba: int, blocks: int) -> bytes:
    buf = bytearray(blocks * src.geometry.block_size)
    src.read(lba, buf)
    return bytes(buf)


@dataclass(frozen=True, slots=True)
class DumpHeaders:
    """Both header copies of a dump and the one the reader trusts.

    :param header: the copy to use
    :param warnings: why the copies differ, in words (empty when they agree)
    """

    header: DumpHeader
    leading: DumpHeader | None
    trailing: DumpHeader | None
    warnings: tuple[str, ...]


def read_dump_headers(src: BlockSource, header_lba: int, *, name: str | None = None) -> DumpHeaders:
    """Read and reconcile the leading (at ``header_lba``) and trailing (last block) headers.

    Without needing the metadata, this gives a dump's extents, so savecore can
    re-initialise even a dump that was cut short before its metadata.

    :param header_lba: the partition label's ``reserve_blocks``
    :raises NotThisFormatError: neither copy is a live dump header (no dump)
    :raises HeaderMismatchError: the copies belong to different dumps or disagree
    :raises FormatError: a copy is corrupt and the other cannot stand in for it
    """
    geo = src.geometry
    found: list[DumpHeader | DiskdumpError] = []
    for lba in (header_lba, geo.block_count - 1):
        try:
            found.append(
                DumpHeader.unpack(_read(src, lba, 1), device=name, offset=lba * geo.block_size)
            )
        except FormatError as err:
            found.append(err)
    lead, trail = found
    if isinstance(lead, DumpHeader) and isinstance(trail, DumpHeader):
        return _reconcile(lead, trail, name)
    if isinstance(trail, DumpHeader):
        if trail.header_lba != header_lba:
            raise CorruptDataError(
                "trailing header names another leading header",
                device=name,
                field="header_lba",
                expected=header_lba,
                found=trail.header_lba,
            )
        return DumpHeaders(trail, None, trail, (f"leading header unusable: {lead}",))
    if isinstance(lead, DumpHeader):
        notes = () if lead.status is DumpStatus.INCOMPLETE else ("trailing header missing",)
        return DumpHeaders(lead, lead, None, notes)
    if isinstance(lead, NotThisFormatError) and isinstance(trail, NotThisFormatError):
        raise lead
    raise lead if not isinstance(lead, NotThisFormatError) else trail


def _reconcile(lead: DumpHeader, trail: DumpHeader, name: str | None) -> DumpHeaders:
    if lead.dump_id != trail.dump_id:
        raise HeaderMismatchError(
            "leading and trailing headers belong to different dumps",
            device=name,
            field="dump_id",
            expected=lead.dump_id.hex(),
            found=trail.dump_id.hex(),
        )
    if lead == trail:
        return DumpHeaders(lead, lead, trail, ())
    if lead.status is DumpStatus.INCOMPLETE and trail.status is DumpStatus.COMPLETE:
        # the writer was stopped between the trailer and the leading rewrite: the trailer
        # was written after the flush, so every chunk it counts is durable
        return DumpHeaders(trail, lead, trail, ("leading header was not rewritten",))
    raise HeaderMismatchError(
        "leading and trailing headers disagree",
        device=name,
        offset=lead.header_lba * lead.block_size,
        expected=repr(trail),
        found=repr(lead),
    )


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """A verified chunk header and the block it starts at."""

    lba: int
    header: ChunkHeader


def open_dump(
    src: BlockSource,
    header_lba: int,
    *,
    name: str | None = None,
    private_key: object | None = None,
) -> DumpImage:
    """Open the dump on a device as a :class:`DumpImage` (a MemorySource).

    Validates both headers, the metadata and every chunk header; in a dump
    not marked complete, every chunk payload is verified too and the stream
    ends at the first chunk that fails (where the writer was cut short).

    :param src: the device's blocks (a ``BlockIO`` over the whole device)
    :param header_lba: the partition label's ``reserve_blocks``
    :param name: device name for messages
    :param private_key: opens an encrypted dump (formats/crypt.load_private_key);
        ignored for a clear dump
    :raises NotThisFormatError: no dump here, or one cut short before its metadata
    :raises FormatError: the dump is corrupt
    :raises CryptoError: the wrong private key, or tampered sealed metadata
    """
    headers = read_dump_headers(src, header_lba, name=name)
    head = headers.header
    if head.block_size != src.geometry.block_size:
        raise CorruptDataError(
            "dump was written with another block size",
            device=name,
            field="block_size",
            expected=src.geometry.block_size,
            found=head.block_size,
        )
    raw = _read_metadata(src, head, name)
    offset = head.meta_lba * head.block_size
    meta = unpack_metadata(raw, device=name, offset=offset)
    cipher = None
    if head.flags & DumpFlag.ENCRYPTED and private_key is not None:
        cipher, meta = unlock_metadata(raw, meta, private_key, head, name=name, offset=offset)
    chunks, stop = _scan_chunks(src, head, name)
    return DumpImage(src, headers, meta, chunks, stop, name, cipher=cipher)


def _read_metadata(src: BlockSource, head: DumpHeader, name: str | None) -> bytes:
    raw = _read(src, head.meta_lba, head.meta_blocks)[: head.meta_size] if head.meta_size else b""
    actual = checksum32(raw)
    if actual != head.meta_crc:
        offset = head.meta_lba * head.block_size
        if head.status is DumpStatus.INCOMPLETE:
            raise NotThisFormatError(
                "dump was cut short before its metadata was written",
                device=name,
                offset=offset,
                field="meta_crc",
                expected=head.meta_crc,
                found=actual,
            )
        raise ChecksumError(
            "dump metadata checksum mismatch",
            device=name,
            offset=offset,
            field="meta_crc",
            expected=head.meta_crc,
            found=actual,
        )
    return raw


def _scan_chunks(
    src: BlockSource, head: DumpHeader, name: str | None
) -> tuple[list[ChunkRef], str | None]:
    finished = head.status is DumpStatus.COMPLETE
    limit = head.data_end_lba if finished else head.trailer_lba
    bs = head.block_size
    chunks: list[ChunkRef] = []
    lba = head.data_lba
    while lba < limit:
        try:
            ref = _next_chunk(src, head, lba, len(chunks), limit, name)
        except FormatError as err:
            if finished:
                raise
            log.info("chunk stream of %s ends at lba %d: %s", name, lba, err)
            return chunks, f"stream ends at lba {lba} (offset {lba * bs:#x}): {err}"
        chunks.append(ref)
        lba += ref.header.blocks(bs)
    if finished and (len(chunks) != head.chunk_count or lba != head.data_end_lba):
        raise CorruptDataError(
            "chunk stream disagrees with the dump header",
            device=name,
            offset=lba * bs,
            field="chunk_count",
            expected=(head.chunk_count, head.data_end_lba),
            found=(len(chunks), lba),
        )
    return chunks, None


def _next_chunk(
    src: BlockSource, head: DumpHeader, lba: int, sequence: int, limit: int, name: str | None
) -> ChunkRef:
    bs = head.block_size
    offset = lba * bs
    first = _read(src, lba, 1)
    ch = ChunkHeader.unpack(first, page_size=head.page_size, device=name, offset=offset)
    if ch.dump_id != head.dump_id or ch.sequence != sequence:
        raise CorruptDataError(
            "chunk belongs to another dump or is out of sequence",
            device=name,
            offset=offset,
            field="sequence",
            expected=(head.dump_id.hex(), sequence),
            found=(ch.dump_id.hex(), ch.sequence),
        )
    if ch.sealed != bool(head.flags & DumpFlag.ENCRYPTED):
        raise CorruptDataError(
            "chunk sealing disagrees with the dump header's ENCRYPTED flag",
            device=name,
            offset=offset,
            field="codec",
            expected="sealed" if head.flags & DumpFlag.ENCRYPTED else "clear",
            found="sealed" if ch.sealed else "clear",
        )
    blocks = ch.blocks(bs)
    if blocks > head.max_chunk_blocks or lba + blocks > limit:
        raise TruncatedError(
            "chunk extends past the data area",
            device=name,
            offset=offset,
            field="payload_size",
            expected=f"end <= lba {limit}",
            found=f"end lba {lba + blocks}",
        )
    if head.status is not DumpStatus.COMPLETE:
        payload = _chunk_payload(src, lba, ch, bs)
        actual = checksum32(payload)
        if actual != ch.payload_crc:
            raise ChecksumError(
                "chunk payload checksum mismatch",
                device=name,
                offset=offset + CHUNK_HEADER_SIZE,
                field="payload_crc",
                expected=ch.payload_crc,
                found=actual,
            )
    return ChunkRef(lba, ch)


def _chunk_payload(
    src: BlockSource, lba: int, ch: ChunkHeader, block_size: int, name: str | None = None
) -> bytes:
    data = _read(src, lba, ch.blocks(block_size))
    if ch.sealed:
        # no crc and no seal covers the zero fill: in an encrypted dump every byte counts
        for start, end in ch.zero_fill(block_size):
            if data[start:end].count(0) != end - start:
                at = start + next(i for i, b in enumerate(data[start:end]) if b)
                raise CorruptDataError(
                    f"chunk {ch.sequence} zero fill holds data (altered)",
                    device=name,
                    offset=lba * block_size + at,
                    field="zero fill",
                    expected=0,
                    found=data[at],
                )
    return data[CHUNK_HEADER_SIZE : CHUNK_HEADER_SIZE + ch.payload_size]


class DumpImage:
    """A dump on a device, as a MemorySource (pages by pfn, notes, RAM and data runs).

    Pages the dump holds are those of every chunk marked PRESENT (from the
    payload) or ZERO (known to be all zeros). Any other pfn raises
    :class:`ExcludedPageError`: it is never silently zero-filled.
    """

    def __init__(
        self,
        src: BlockSource,
        headers: DumpHeaders,
        meta: DumpMetadata,
        chunks: list[ChunkRef],
        stop_reason: str | None,
        name: str | None,
        *,
        cipher: ChunkCipher | None = None,
    ) -> None:
        self.src = src
        self._cipher = cipher
        self.headers = headers
        self.header = headers.header
        self.metadata = meta
        self.chunks = chunks
        self.stop_reason = stop_reason
        self.name = name
        self._by_pfn = sorted(chunks, key=lambda c: c.header.start_pfn)
        self._starts = [c.header.start_pfn for c in self._by_pfn]
        for a, b in zip(self._by_pfn, self._by_pfn[1:], strict=False):
            if a.header.end_pfn > b.header.start_pfn:
                raise CorruptDataError(
                    "chunks overlap",
                    device=name,
                    lba=b.lba,
                    field="start_pfn",
                    expected=f">= {a.header.end_pfn:#x}",
                    found=b.header.start_pfn,
                )
        held = [
            PfnRun(s, e)
            for c in self._by_pfn
            for s, e in c.header.iter_runs((PageState.PRESENT, PageState.ZERO))
        ]
        self._data_runs = merge_runs(held)
        self._cache: tuple[int, bytes, list[int]] | None = None

    @property
    def page_size(self) -> int:
        """Page size of the crashed kernel, in bytes."""
        return self.header.page_size

    @property
    def max_pfn(self) -> int:
        """Highest RAM pfn + 1."""
        return self.header.max_pfn

    def ram_runs(self) -> Sequence[PfnRun]:
        """RAM pfn runs recorded in the metadata."""
        return self.metadata.ram_runs

    def data_runs(self) -> Sequence[PfnRun]:
        """Pfn runs this dump holds (PRESENT or ZERO pages of the chunks read back)."""
        return self._data_runs

    @property
    def notes(self) -> bytes:
        """The ELF note blob the writer recorded."""
        return self.metadata.notes

    @property
    def incomplete(self) -> bool:
        """True unless the writer finished and nothing it planned is missing."""
        flags = self.header.flags
        return (
            not self.header.complete
            or self.stop_reason is not None
            or bool(flags & DumpFlag.SOURCE_SHORT)
        )

    @property
    def encrypted(self) -> bool:
        """True for an encrypted dump (whether or not it was opened with the key)."""
        return bool(self.header.flags & DumpFlag.ENCRYPTED)

    @property
    def locked(self) -> bool:
        """True for an encrypted dump opened without its key: pages and log are unreadable."""
        return self.encrypted and self._cipher is None

    @property
    def pages_held(self) -> int:
        """Number of pfns whose contents the dump holds."""
        return sum(r.pages for r in self._data_runs)

    def used_extents(self) -> list[tuple[int, int]]:
        """``(lba, blocks)`` ranges the dump may have written (re-initialise these)."""
        end = (
            self.chunks[-1].lba + self.chunks[-1].header.blocks(self.header.block_size)
            if self.chunks
            else self.header.data_lba
        )
        return self.header.finished(data_end_lba=max(end, self.header.data_end_lba)).extents()

    def read_pages(self, pfn: int, count: int) -> bytes:
        """Contents of ``count`` pages from ``pfn``.

        :raises ExcludedPageError: a page is not held (excluded, or lost when cut short)
        """
        ps = self.page_size
        out = bytearray(count * ps)
        for i in range(count):
            page = self._page(pfn + i)
            if page is not None:
                out[i * ps : (i + 1) * ps] = page
        return bytes(out)

    def _page(self, pfn: int) -> bytes | None:
        k = bisect.bisect_right(self._starts, pfn) - 1
        ref = self._by_pfn[k] if k >= 0 else None
        if ref is None or pfn >= ref.header.end_pfn:
            raise ExcludedPageError(
                "page is not in the dump", device=self.name, field="pfn", found=pfn
            )
        index = pfn - ref.header.start_pfn
        state = ref.header.states[index]
        if state == PageState.ZERO:
            return None
        if state != PageState.PRESENT:
            raise ExcludedPageError(
                "page was excluded from the dump",
                device=self.name,
                lba=ref.lba,
                field="pfn",
                found=pfn,
            )
        raw, ranks = self._decoded(ref)
        ps = self.page_size
        return raw[ranks[index] * ps : (ranks[index] + 1) * ps]

    def open_chunk(self, ref: ChunkRef) -> bytes:
        """Verify, open and decompress one chunk's payload (its PRESENT pages, in order).

        Also the way to authenticate a sealed chunk without PRESENT pages, whose
        header no page read would check.

        :raises FormatError: crc mismatch or a payload that does not decompress
        :raises CryptoError: a sealed chunk fails authentication, or no key was given
        """
        return self._decoded(ref)[0]

    def _decoded(self, ref: ChunkRef) -> tuple[bytes, list[int]]:
        if self._cache is not None and self._cache[0] == ref.lba:
            return self._cache[1], self._cache[2]
        ch = ref.header
        payload = _chunk_payload(self.src, ref.lba, ch, self.header.block_size, self.name)
        raw = decode_payload(
            ch,
            payload,
            device=self.name,
            offset=ref.lba * self.header.block_size + CHUNK_HEADER_SIZE,
            cipher=self._cipher,
        )
        ranks, rank = [], 0
        for state in ch.states:
            ranks.append(rank)
            rank += state == PageState.PRESENT
        self._cache = (ref.lba, raw, ranks)
        return raw, ranks


def validate_dump(image: DumpImage) -> None:
    """Read and decompress every chunk payload (expensive; opening checks only headers).

    :raises ChecksumError: a payload crc mismatch
    :raises CorruptDataError: a payload that does not decompress
    :raises CryptoError: a sealed payload fails authentication, or no key was given
    """
    for ref in image.chunks:
        image._decoded(ref)
