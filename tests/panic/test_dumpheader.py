# SPDX-License-Identifier: GPL-2.0-or-later
"""Dump header and metadata: round trips, corruption, cleared and missing headers."""

from __future__ import annotations

import re
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskdump.errors import (
    ChecksumError,
    CorruptDataError,
    NotThisFormatError,
    TruncatedError,
    UnsupportedVersionError,
)
from diskdump.formats.dumpheader import (
    CLEARED_MAGIC,
    HEADER_SIZE,
    DumpFlag,
    DumpHeader,
    DumpMetadata,
    DumpStatus,
    Utsname,
    cleared_block,
    header_block,
    is_cleared_header,
    is_dump_header,
    pack_metadata,
    unpack_metadata,
)
from diskdump.formats.memsource import PfnRun

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
uts_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=64)


@st.composite
def headers(draw: st.DrawFn) -> DumpHeader:
    header_lba = draw(st.integers(0, 1 << 20))
    meta_size = draw(st.integers(0, 1 << 20))
    bs = draw(st.sampled_from([1024, 4096, 8192]))
    meta_blocks = -(-meta_size // bs)
    data_lba = header_lba + 1 + meta_blocks + draw(st.integers(0, 4))
    data_end = data_lba + draw(st.integers(0, 1 << 30))
    return DumpHeader(
        dump_id=draw(st.binary(min_size=16, max_size=16)),
        partition_uuid=draw(st.binary(min_size=16, max_size=16)),
        block_size=bs,
        page_size=bs * draw(st.sampled_from([1, 4])),
        device_blocks=data_end + 1 + draw(st.integers(0, 100)),
        header_lba=header_lba,
        meta_lba=header_lba + 1,
        meta_size=meta_size,
        meta_crc=draw(u32),
        codec=draw(st.sampled_from([0, 1, 2, 4, 0x20])),
        data_lba=data_lba,
        data_end_lba=data_end,
        max_chunk_blocks=draw(st.integers(1, 2**32 - 1)),
        status=draw(st.sampled_from(DumpStatus)),
        flags=DumpFlag(draw(st.integers(0, 0x1F))),
        chunk_count=draw(u32),
        pages_planned=draw(u64),
        pages_written=draw(u64),
        max_pfn=draw(u64),
        phys_base=draw(u64),
        crash_time=draw(u64),
        dump_start_time=draw(u64),
        dump_end_time=draw(u64),
        nr_cpus=draw(u32),
        crashing_cpu=draw(st.integers(-1, 2**31 - 1)),
        dump_level=draw(st.integers(0, 31)),
        applied_level=draw(st.integers(0, 31)),
        utsname=Utsname(*(draw(uts_text) for _ in range(6))),
    )


@given(headers())
def test_header_round_trip(header: DumpHeader) -> None:
    raw = header.pack()
    assert len(raw) == HEADER_SIZE == DumpHeader.SIZE
    back = DumpHeader.unpack(raw)
    assert back == header
    assert back.pack() == raw
    assert is_dump_header(header_block(header))


runs = st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(1, 1 << 20)), max_size=20)


def _runs(pairs: list[tuple[int, int]]) -> tuple[PfnRun, ...]:
    out, pos = [], 0
    for gap, length in pairs:
        out.append(PfnRun(pos + gap, pos + gap + length))
        pos += gap + length
    return tuple(out)


@given(st.binary(max_size=3000), runs, runs, st.text(max_size=200), st.text(max_size=2000))
def test_metadata_round_trip(notes: bytes, ram: list, data: list, panic: str, log: str) -> None:
    meta = DumpMetadata(
        notes=notes,
        ram_runs=_runs(ram),
        data_runs=_runs(data),
        panic_string=panic,
        kernel_log=log,
        vmcoreinfo=b"OSRELEASE=6.1.0\n",
        source="/proc/vmcore (elf)",
    )
    raw = pack_metadata(meta)
    assert unpack_metadata(raw) == meta
    assert pack_metadata(unpack_metadata(raw)) == raw


def _header(**kw: object) -> DumpHeader:
    base = dict(
        dump_id=b"\x01" * 16,
        partition_uuid=b"\x02" * 16,
        block_size=4096,
        page_size=4096,
        device_blocks=1000,
        header_lba=256,
        meta_lba=257,
        meta_size=100,
        meta_crc=0,
        codec=0,
        data_lba=258,
        data_end_lba=258,
        max_chunk_blocks=300,
    )
    base.update(kw)
    return DumpHeader(**base)  # type: ignore[arg-type]


def test_header_checksum_mismatch() -> None:
    raw = bytearray(_header().pack())
    raw[100] ^= 1
    with pytest.raises(
        ChecksumError,
        match=r"^dump header checksum mismatch in field header_crc "
        r"at offset 0x3fc on /dev/x: expected 0x[0-9a-f]+, got 0x[0-9a-f]+$",
    ):
        DumpHeader.unpack(raw, device="/dev/x")


def test_header_no_dump_and_cleared() -> None:
    with pytest.raises(
        NotThisFormatError,
        match=r"^no dump header in field magic at offset "
        r"0x100000 on d: expected b'DDUMPHDR', got b'DDPATTRN'$",
    ):
        DumpHeader.unpack(b"DDPATTRN".ljust(4096, b"\0"), device="d", offset=0x100000)
    block = cleared_block(_header())
    assert is_cleared_header(block) and not is_dump_header(block)
    assert block.startswith(CLEARED_MAGIC + b"\x01" * 16)
    with pytest.raises(NotThisFormatError, match=r"^dump header was cleared"):
        DumpHeader.unpack(block)


def test_header_truncated_and_version() -> None:
    with pytest.raises(
        TruncatedError, match=r"^dump header is cut short.*expected 0x400, got 0xa$"
    ):
        DumpHeader.unpack(b"DDUMPHDR\0\0")
    raw = bytearray(_header().pack())
    struct.pack_into("<I", raw, 8, 7)
    with pytest.raises(
        UnsupportedVersionError,
        match=r"unsupported dump header in field "
        r"header_version.*expected \(1, 1024\), got \(7, 1024\)",
    ):
        DumpHeader.unpack(raw)


def test_header_field_out_of_range() -> None:
    raw = _header(data_end_lba=5000).pack()
    with pytest.raises(CorruptDataError, match=r"field out of range in field data_end_lba"):
        DumpHeader.unpack(raw)


def test_metadata_record_past_end_and_bad_runs() -> None:
    raw = bytearray(pack_metadata(DumpMetadata(notes=b"x" * 10)))
    struct.pack_into("<I", raw, 4, 1000)
    with pytest.raises(TruncatedError, match=re.escape("metadata record extends past the end")):
        unpack_metadata(raw, device="d", offset=0x2000)
    bad = struct.pack("<HHI", 2, 0, 24) + b"\0" * 24
    with pytest.raises(CorruptDataError, match=r"pfn run list has a partial entry"):
        unpack_metadata(bad)
    overlap = struct.pack("<HHI", 2, 0, 32) + struct.pack("<QQQQ", 0, 10, 5, 20)
    with pytest.raises(CorruptDataError, match=r"pfn runs overlap or are not ascending"):
        unpack_metadata(overlap)


def test_extents_cover_header_data_next_chunk_and_trailer() -> None:
    head = _header(data_end_lba=400, max_chunk_blocks=50)
    assert head.extents() == [(256, 400 + 50 - 256), (999, 1)]
    near_end = _header(data_end_lba=990, max_chunk_blocks=50)
    assert near_end.extents() == [(256, 999 - 256), (999, 1)]
