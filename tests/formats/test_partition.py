# SPDX-License-Identifier: GPL-2.0-or-later
"""The partition label codec and the per-block pattern."""

from __future__ import annotations

import functools
import hashlib
import struct
import uuid
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskdump.errors import (
    BadMagicError,
    ChecksumError,
    CorruptDataError,
    TruncatedError,
    UnsupportedVersionError,
)
from diskdump.formats.partition import (
    BLOCK_SIGNATURE,
    BLOCK_SIZE,
    DEFAULT_RESERVE_BLOCKS,
    FILL_DOMAIN,
    LABEL_SIZE,
    BlockPattern,
    LabelCopy,
    PartitionLabel,
    is_partition_label,
    new_label,
)

labels = st.builds(
    PartitionLabel,
    uuid=st.uuids(),
    block_count=st.integers(DEFAULT_RESERVE_BLOCKS + 16, 2**63 - 1),
    reserve_blocks=st.just(DEFAULT_RESERVE_BLOCKS) | st.integers(DEFAULT_RESERVE_BLOCKS, 4096),
    format_time=st.integers(0, 2**63 - 1),
    pattern_period_blocks=st.integers(1, 1 << 16),
    copy=st.sampled_from(LabelCopy),
).filter(lambda lab: lab.block_count >= lab.reserve_blocks + 16)


@given(labels)
def test_label_round_trip(label: PartitionLabel) -> None:
    raw = label.pack()
    assert len(raw) == LABEL_SIZE
    back = PartitionLabel.unpack(raw)
    assert back == label
    assert back.pack() == raw
    assert is_partition_label(label.pack_block())


@given(st.binary(max_size=LABEL_SIZE + 8))
def test_is_partition_label_never_raises(data: bytes) -> None:
    assert is_partition_label(data) is False


def _relabel(raw: bytes, offset: int, fmt: str, value: object) -> bytes:
    """Patch a field and fix the checksum, to reach the checks behind it."""
    buf = bytearray(raw)
    struct.pack_into(fmt, buf, offset, value)
    struct.pack_into("<I", buf, LABEL_SIZE - 4, zlib.crc32(buf[: LABEL_SIZE - 4]))
    return bytes(buf)


def test_label_errors_name_field_and_offset() -> None:
    raw = new_label(10_000, format_time=1).pack()
    with pytest.raises(
        TruncatedError,
        match=r"label is cut short .*on /dev/x: expected '128 bytes', got '100 bytes'",
    ):
        PartitionLabel.unpack(raw[:100], device="/dev/x")
    with pytest.raises(BadMagicError, match=r"no diskdump partition label in field magic at off"):
        PartitionLabel.unpack(b"X" + raw[1:])
    with pytest.raises(UnsupportedVersionError, match=r"version at offset 0x8: expected 1, got 7"):
        PartitionLabel.unpack(raw[:8] + struct.pack("<I", 7) + raw[12:])
    flipped = bytearray(raw)
    flipped[40] ^= 1
    with pytest.raises(ChecksumError, match=r"checksum mismatch in field checksum at offset 0x7c"):
        PartitionLabel.unpack(flipped)
    with pytest.raises(CorruptDataError, match=r"field block_size .*expected 0x1000, got 0x200"):
        PartitionLabel.unpack(_relabel(raw, 0x20, "<I", 512))
    with pytest.raises(CorruptDataError, match=r"field reserve_blocks .*got 0x10"):
        PartitionLabel.unpack(_relabel(raw, 0x30, "<Q", 16))
    with pytest.raises(CorruptDataError, match=r"field pattern_kind .*got 9"):
        PartitionLabel.unpack(_relabel(raw, 0x40, "<I", 9))
    with pytest.raises(CorruptDataError, match=r"field block_count"):
        new_label(DEFAULT_RESERVE_BLOCKS + 3)


@functools.cache
def _fill_stream(u: uuid.UUID, period: int) -> bytes:
    return hashlib.shake_256(FILL_DOMAIN + u.bytes).digest(period * BLOCK_SIZE)


def _reference_block(label: PartitionLabel, lba: int) -> bytes:
    """The spec written out the slow way, one block at a time."""
    period = label.pattern_period_blocks
    stream = _fill_stream(label.uuid, period)
    index = lba % period
    fill = stream[index * BLOCK_SIZE + 32 : (index + 1) * BLOCK_SIZE]
    return BLOCK_SIGNATURE + label.uuid.bytes + struct.pack("<Q", lba) + fill


@settings(max_examples=40, deadline=None)
@given(
    st.uuids(),
    st.integers(1, 300),
    st.integers(0, 2**40),
    st.integers(1, 64),
)
def test_expected_matches_reference(u: uuid.UUID, period: int, lba: int, count: int) -> None:
    label = PartitionLabel(uuid=u, block_count=2**41, pattern_period_blocks=period)
    pattern = BlockPattern(label, max_blocks=64)
    want = b"".join(_reference_block(label, lba + i) for i in range(count))
    assert pattern.expected(lba, count) == want
    out = bytearray(count * BLOCK_SIZE)
    pattern.fill(out, lba)
    assert out == want
    assert pattern.matches(want, lba)
    # reusing the buffer: same rotation restamps only the lbas, another rotation recopies
    for later in (lba + 3 * period, lba + 1):
        pattern.fill(out, later, holds_lba=lba)
        assert out == b"".join(_reference_block(label, later + i) for i in range(count))
        lba = later


def test_aligned_fast_path_is_restamped() -> None:
    label = new_label(100_000)
    pattern = BlockPattern(label, max_blocks=512)
    first = bytes(pattern.expected(512, 512))
    second = bytes(pattern.expected(1024, 512))
    assert first != second
    assert second == b"".join(_reference_block(label, 1024 + i) for i in range(512))


def test_foreign_misplaced_and_damaged_blocks_are_caught() -> None:
    label = new_label(100_000)
    other = new_label(100_000)
    pattern = BlockPattern(label)
    lba = 5000
    good = bytes(pattern.expected(lba, 4))
    foreign = bytes(BlockPattern(other).expected(lba + 1, 1))
    moved = bytes(pattern.expected(lba + 256, 1))  # same fill rotation, other lba
    damaged = bytearray(good[2 * BLOCK_SIZE : 3 * BLOCK_SIZE])
    damaged[-1] ^= 0x80
    bad = good[:BLOCK_SIZE] + foreign + bytes(damaged) + moved
    assert not pattern.matches(bad, lba)
    assert list(pattern.iter_bad_blocks(bad, lba)) == [lba + 1, lba + 2, lba + 3]
    assert "another partition" in pattern.describe_block(foreign, lba + 1)
    assert pattern.describe_block(bytes(damaged), lba + 2) == "pattern fill differs (damaged block)"
    assert (
        pattern.describe_block(moved, lba + 3)
        == f"pattern block of lba {lba + 256} found at lba {lba + 3}"
    )
    assert "no pattern signature" in pattern.describe_block(bytes(BLOCK_SIZE), lba)
    assert pattern.describe_block(good[:BLOCK_SIZE], lba) == "ok"


def test_bad_arguments() -> None:
    pattern = BlockPattern(new_label(10_000), max_blocks=8)
    with pytest.raises(ValueError, match=r"block_count 9 not in 1\.\.8"):
        pattern.expected(0, 9)
    with pytest.raises(ValueError, match="not whole blocks"):
        pattern.matches(b"x" * 100, 0)
    with pytest.raises(ValueError, match=r"not 1\.\.8 blocks"):
        pattern.fill(bytearray(100), 0)
