# SPDX-License-Identifier: GPL-2.0-or-later
"""Chunks: round trips over every codec, and every way a chunk can be damaged."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskdump._binary import checksum32
from diskdump.errors import (
    BadMagicError,
    ChecksumError,
    CorruptDataError,
    TruncatedError,
    UnsupportedVersionError,
)
from diskdump.formats.chunk import (
    CHUNK_HEADER_SIZE,
    MAX_CHUNK_PAGES,
    ChunkHeader,
    PageState,
    build_chunk,
    chunk_blocks,
    decode_payload,
    is_chunk,
    pack_states,
    unpack_states,
)
from diskdump.formats.codecs import CODEC_NAMES, CompressFlag, get_codec

PS = 4096
BS = 4096


def _pages(states: bytes, seed: int) -> bytes:
    out = []
    for i, state in enumerate(states):
        if state == PageState.PRESENT:
            # half text-like (compressible), half random
            out.append(os.urandom(PS) if (i + seed) % 2 else bytes([i % 251]) * PS)
    return b"".join(out)


@given(st.lists(st.sampled_from(list(PageState)), min_size=1, max_size=MAX_CHUNK_PAGES))
def test_state_map_round_trip(states: list[PageState]) -> None:
    raw = bytes(states)
    assert unpack_states(pack_states(raw), len(raw)) == raw


@pytest.mark.parametrize("codec_name", CODEC_NAMES)
def test_chunk_round_trip_every_codec(codec_name: str) -> None:
    codec = get_codec(codec_name)
    states = bytes([PageState.PRESENT] * 40 + [PageState.ZERO] * 10 + [PageState.EXCLUDED] * 14)
    raw = _pages(states, 0)
    data = build_chunk(
        sequence=7,
        dump_id=b"i" * 16,
        start_pfn=0x1000,
        states=states,
        raw=raw,
        codec=codec,
        block_size=BS,
    )
    assert len(data) % BS == 0 and is_chunk(data)
    head = ChunkHeader.unpack(data, page_size=PS)
    assert (head.sequence, head.start_pfn, head.page_count, head.present_count) == (
        7,
        0x1000,
        64,
        40,
    )
    assert len(data) // BS == head.blocks(BS) == chunk_blocks(head.payload_size, BS)
    if codec_name != "none":
        assert head.codec == codec.flag and head.payload_size < len(raw)
    payload = data[CHUNK_HEADER_SIZE : CHUNK_HEADER_SIZE + head.payload_size]
    assert decode_payload(head, payload) == raw
    assert head.pack() == data[:CHUNK_HEADER_SIZE]
    assert list(head.iter_runs((PageState.PRESENT, PageState.ZERO))) == [(0x1000, 0x1000 + 50)]


def test_incompressible_chunk_is_stored_raw() -> None:
    states = bytes([PageState.PRESENT] * 4)
    raw = os.urandom(4 * PS)
    data = build_chunk(
        sequence=0,
        dump_id=bytes(16),
        start_pfn=0,
        states=states,
        raw=raw,
        codec=get_codec("zlib"),
        block_size=BS,
    )
    head = ChunkHeader.unpack(data, page_size=PS)
    assert head.codec == CompressFlag.NONE and head.payload_size == len(raw)


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - MAX_CHUNK_PAGES - 1),
    st.binary(min_size=16, max_size=16),
    st.lists(
        st.sampled_from([PageState.ZERO, PageState.EXCLUDED]), min_size=1, max_size=MAX_CHUNK_PAGES
    ),
)
def test_chunk_header_round_trip(seq: int, pfn: int, dump_id: bytes, states: list[int]) -> None:
    head = ChunkHeader(CompressFlag.NONE, seq, dump_id, pfn, len(states), 0, 0, 0, 0, bytes(states))
    raw = head.pack()
    assert ChunkHeader.unpack(raw, page_size=PS) == head
    assert ChunkHeader.unpack(raw, page_size=PS).pack() == raw


def _chunk() -> bytearray:
    states = bytes([PageState.PRESENT] * 8)
    return bytearray(
        build_chunk(
            sequence=1,
            dump_id=b"d" * 16,
            start_pfn=64,
            states=states,
            raw=_pages(states, 1),
            codec=get_codec("zlib"),
            block_size=BS,
        )
    )


def test_chunk_errors() -> None:
    data = _chunk()
    with pytest.raises(TruncatedError, match=r"^chunk header is cut short at offset 0x2000 on d"):
        ChunkHeader.unpack(data[:100], page_size=PS, device="d", offset=0x2000)
    with pytest.raises(
        BadMagicError,
        match=r"^not a chunk in field magic at offset 0x0: "
        r"expected b'DDCHUNK1', got b'DDPATTRN'$",
    ):
        ChunkHeader.unpack(b"DDPATTRN" + bytes(data[8:]), page_size=PS)
    bad = bytearray(data)
    struct.pack_into("<H", bad, 8, 9)
    with pytest.raises(UnsupportedVersionError, match=r"unsupported chunk in field version.*got 9"):
        ChunkHeader.unpack(bad, page_size=PS)
    bad = bytearray(data)
    bad[33] ^= 0xFF  # start_pfn
    with pytest.raises(ChecksumError, match=r"chunk header checksum mismatch in field header_crc"):
        ChunkHeader.unpack(bad, page_size=PS)
    head = ChunkHeader.unpack(data, page_size=PS)
    payload = bytearray(data[CHUNK_HEADER_SIZE : CHUNK_HEADER_SIZE + head.payload_size])
    payload[5] ^= 1
    with pytest.raises(
        ChecksumError, match=r"chunk payload checksum mismatch in field payload_crc"
    ):
        decode_payload(head, bytes(payload), device="d", offset=0x10200)


def test_chunk_corrupt_fields() -> None:
    head = ChunkHeader.unpack(_chunk(), page_size=PS)
    wrong_count = ChunkHeader(
        head.codec,
        1,
        head.dump_id,
        64,
        8,
        7,
        head.payload_size,
        head.raw_size,
        head.payload_crc,
        head.states,
    )
    with pytest.raises(CorruptDataError, match=r"chunk counts disagree with its state map"):
        ChunkHeader.unpack(wrong_count.pack(), page_size=PS)
    bad = bytearray(head.pack())
    struct.pack_into("<H", bad, 10, 0x40)  # no codec has flag 0x40
    fixed = bytes(bad[:60])
    smap = bytes(bad[64 : 64 + 2])
    struct.pack_into("<I", bad, 60, checksum32(smap, checksum32(fixed)))
    with pytest.raises(CorruptDataError, match=r"unknown chunk codec in field codec.*got 0x40"):
        ChunkHeader.unpack(bad, page_size=PS)
    zero_pages = ChunkHeader(head.codec, 1, head.dump_id, 64, 0, 0, 0, 0, 0, b"")
    with pytest.raises(CorruptDataError, match=r"chunk page count out of range"):
        ChunkHeader.unpack(zero_pages.pack(), page_size=PS)
    garbage = b"\x78\x9c" + b"\xff" * 30  # zlib header, then nonsense
    lying = ChunkHeader(
        CompressFlag.ZLIB,
        0,
        bytes(16),
        0,
        1,
        1,
        len(garbage),
        PS,
        checksum32(garbage),
        bytes([PageState.PRESENT]),
    )
    with pytest.raises(CorruptDataError, match=r"chunk payload does not decompress"):
        decode_payload(lying, garbage)


@given(
    st.lists(st.sampled_from(list(PageState)), min_size=1, max_size=96),
    st.sampled_from(["none", "zlib", "zstd"]),
    st.integers(0, 2**40),
    st.binary(min_size=1, max_size=64),
)
def test_build_and_decode_round_trip(
    states: list[PageState], name: str, pfn: int, seed: bytes
) -> None:
    raw_states = bytes(states)
    present = raw_states.count(PageState.PRESENT)
    raw = (seed * (present * PS // len(seed) + 1))[: present * PS]
    data = build_chunk(
        sequence=3,
        dump_id=b"r" * 16,
        start_pfn=pfn,
        states=raw_states,
        raw=raw,
        codec=get_codec(name),
        block_size=BS,
    )
    head = ChunkHeader.unpack(data, page_size=PS)
    assert head.states == raw_states and head.start_pfn == pfn and head.raw_size == len(raw)
    payload = data[CHUNK_HEADER_SIZE : CHUNK_HEADER_SIZE + head.payload_size]
    assert decode_payload(head, payload) == raw


@given(st.lists(st.integers(0, 255), max_size=1800))
def test_pack_states_matches_the_bit_layout(states: list[int]) -> None:
    """Byte-lane packing equals the documented layout: page i at bits 2*(i%4) of byte i//4."""
    expected = bytearray(-(-len(states) // 4))
    for i, state in enumerate(states):
        expected[i // 4] |= (state & 3) << (2 * (i % 4))
    assert pack_states(states) == bytes(expected)
    assert unpack_states(pack_states(states), len(states)) == bytes(s & 3 for s in states)
