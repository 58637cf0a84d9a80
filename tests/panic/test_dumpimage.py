# SPDX-License-Identifier: GPL-2.0-or-later
"""Reading a dump back: header reconciliation, damaged parts, excluded pages, extents."""

from __future__ import annotations

import pytest

from diskdump.devices.base import BlockIO
from diskdump.devices.memory import MemoryDevice
from diskdump.errors import (
    ChecksumError,
    CorruptDataError,
    ExcludedPageError,
    HeaderMismatchError,
    NotThisFormatError,
)
from diskdump.formats.chunk import CHUNK_HEADER_SIZE
from diskdump.formats.dumpheader import (
    DumpHeader,
    DumpStatus,
    cleared_block,
    header_block,
)
from diskdump.formats.dumpimage import open_dump, read_dump_headers, validate_dump
from diskdump.formats.memsource import MemorySource
from diskdump.formats.partition import BLOCK_SIZE, PartitionLabel
from diskdump.panic.writer import write_dump
from tests.panic.helpers import assert_pages_match, formatted, settings, small_source, state

BS = BLOCK_SIZE


def _dumped() -> tuple[MemoryDevice, PartitionLabel, MemorySource]:
    src = small_source(2)
    dev, label = formatted(blocks=3000)
    write_dump(src, state(), [dev], settings(chunk_pages=128))
    dev.reopen()
    return dev, label, src


def _block(dev: MemoryDevice, lba: int) -> bytearray:
    return dev.data[lba * BS : (lba + 1) * BS]


def _put(dev: MemoryDevice, lba: int, data: bytes) -> None:
    dev.data[lba * BS : (lba + 1) * BS] = data


def test_headers_agree_on_a_complete_dump() -> None:
    dev, label, _ = _dumped()
    found = read_dump_headers(BlockIO(dev), label.reserve_blocks, name="d")
    assert found.leading == found.trailing == found.header and found.warnings == ()
    extents = open_dump(BlockIO(dev), label.reserve_blocks).used_extents()
    head = found.header
    assert extents[0][0] == label.reserve_blocks and extents[-1] == (2999, 1)
    assert extents[0][0] + extents[0][1] >= head.data_end_lba


def test_either_header_copy_can_stand_in_for_the_other() -> None:
    dev, label, src = _dumped()
    trailer = bytes(_block(dev, 2999))
    _put(dev, label.reserve_blocks, bytes(BS))  # leading copy destroyed
    image = open_dump(BlockIO(dev), label.reserve_blocks)
    assert image.headers.leading is None and "leading header unusable" in image.headers.warnings[0]
    assert_pages_match(image, src)
    _put(dev, label.reserve_blocks, trailer)
    _put(dev, 2999, bytes(BS))  # trailing copy destroyed
    image = open_dump(BlockIO(dev), label.reserve_blocks)
    assert image.headers.warnings == ("trailing header missing",)
    assert not image.incomplete


def test_cut_between_trailer_and_leading_rewrite_trusts_the_trailer() -> None:
    dev, label, src = _dumped()
    final = DumpHeader.unpack(_block(dev, label.reserve_blocks))
    _put(dev, label.reserve_blocks, header_block(final.finished(status=DumpStatus.INCOMPLETE)))
    image = open_dump(BlockIO(dev), label.reserve_blocks)
    assert image.headers.warnings == ("leading header was not rewritten",)
    assert not image.incomplete
    assert_pages_match(image, src)


def test_headers_of_different_dumps_or_disagreeing() -> None:
    dev, label, _ = _dumped()
    final = DumpHeader.unpack(_block(dev, 2999))
    _put(dev, 2999, header_block(final.finished(dump_id=b"x" * 16)))
    with pytest.raises(
        HeaderMismatchError,
        match=r"^leading and trailing headers belong to "
        r"different dumps in field dump_id on d: expected '[0-9a-f]{32}', "
        r"got '(78){16}'$",
    ):
        read_dump_headers(BlockIO(dev), label.reserve_blocks, name="d")
    _put(dev, 2999, header_block(final.finished(chunk_count=final.chunk_count + 1)))
    with pytest.raises(HeaderMismatchError, match=r"^leading and trailing headers disagree"):
        read_dump_headers(BlockIO(dev), label.reserve_blocks, name="d")


def test_no_dump_and_cleared_dump() -> None:
    dev, label = formatted(blocks=3000)
    with pytest.raises(NotThisFormatError, match=r"^no dump header in field magic"):
        open_dump(BlockIO(dev), label.reserve_blocks)
    dev, label, _ = _dumped()
    head = DumpHeader.unpack(_block(dev, 2999))
    _put(dev, label.reserve_blocks, cleared_block(head))
    _put(dev, 2999, cleared_block(head))
    with pytest.raises(NotThisFormatError, match=r"^dump header was cleared"):
        open_dump(BlockIO(dev), label.reserve_blocks)


def test_damage_inside_a_complete_dump_is_reported() -> None:
    dev, label, _ = _dumped()
    head = DumpHeader.unpack(_block(dev, 2999))
    dev.data[head.meta_lba * BS + 10] ^= 1
    with pytest.raises(
        ChecksumError,
        match=r"^dump metadata checksum mismatch in field meta_crc "
        r"at offset 0x101000",
    ):
        open_dump(BlockIO(dev), label.reserve_blocks)
    dev, label, _ = _dumped()
    head = DumpHeader.unpack(_block(dev, 2999))
    dev.data[head.data_lba * BS + 40] ^= 1  # a chunk header field
    with pytest.raises(ChecksumError, match=r"^chunk header checksum mismatch"):
        open_dump(BlockIO(dev), label.reserve_blocks)
    dev, label, _ = _dumped()
    head = DumpHeader.unpack(_block(dev, 2999))
    dev.data[head.data_lba * BS + CHUNK_HEADER_SIZE + 7] ^= 1  # the first chunk's payload
    image = open_dump(BlockIO(dev), label.reserve_blocks)  # opening checks headers only
    with pytest.raises(ChecksumError, match=r"^chunk payload checksum mismatch"):
        validate_dump(image)


def test_chunk_from_another_dump_is_corrupt_in_a_complete_dump() -> None:
    dev, label, _ = _dumped()
    other, _, _ = _dumped()
    head = DumpHeader.unpack(_block(dev, 2999))
    lba = head.data_lba
    dev.data[lba * BS : (lba + 1) * BS] = other.data[lba * BS : (lba + 1) * BS]
    with pytest.raises(CorruptDataError, match=r"chunk belongs to another dump or is out of "):
        open_dump(BlockIO(dev), label.reserve_blocks)


def test_pages_not_held_raise_excluded() -> None:
    dev, label, src = _dumped()
    image = open_dump(BlockIO(dev), label.reserve_blocks, name="d")
    last = image.data_runs()[-1]
    with pytest.raises(ExcludedPageError, match=r"^page is not in the dump in field pfn on d: "):
        image.read_pages(last.end_pfn + 10_000, 1)
    missing = next(
        p
        for c in image.chunks
        for i, p in enumerate(range(c.header.start_pfn, c.header.end_pfn))
        if c.header.states[i] == 0
    )
    with pytest.raises(ExcludedPageError, match=r"^page was excluded from the dump"):
        image.read_pages(missing, 1)
    assert image.pages_held == sum(r.pages for r in src.data_runs())


def test_cut_before_the_metadata_is_no_dump_but_has_extents() -> None:
    dev, label, _ = _dumped()
    head = DumpHeader.unpack(_block(dev, 2999))
    first = head.finished(
        status=DumpStatus.INCOMPLETE, data_end_lba=head.data_lba, chunk_count=0, pages_written=0
    )
    _put(dev, label.reserve_blocks, header_block(first))
    _put(dev, 2999, bytes(BS))
    dev.data[head.meta_lba * BS + 3] ^= 1  # the metadata write never completed
    with pytest.raises(
        NotThisFormatError,
        match=r"^dump was cut short before its metadata was "
        r"written in field meta_crc at offset 0x101000",
    ):
        open_dump(BlockIO(dev), label.reserve_blocks)
    found = read_dump_headers(BlockIO(dev), label.reserve_blocks)
    assert found.header.extents()[0] == (
        label.reserve_blocks,
        head.data_lba + head.max_chunk_blocks - label.reserve_blocks,
    )
