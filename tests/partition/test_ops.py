# SPDX-License-Identifier: GPL-2.0-or-later
"""format / read_label / verify / find_dump / reinit / check on memory devices and image files."""

from __future__ import annotations

import itertools
import subprocess
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskdump.devices.base import Health, Op, SanityResult
from diskdump.devices.fault import FaultDevice, FaultPlan
from diskdump.devices.file import FileDevice
from diskdump.devices.memory import MemoryDevice
from diskdump.errors import (
    ChecksumError,
    DeviceIOError,
    DeviceRefusedError,
    DeviceTooSmallError,
    HeaderMismatchError,
    NotThisFormatError,
    OutOfBoundsError,
)
from diskdump.formats.dumpheader import DUMP_HEADER_MAGIC
from diskdump.formats.partition import BACKUP_LABEL_LBA, BLOCK_SIZE, BlockExtent, BlockPattern
from diskdump.partition._bulk import chunks
from diskdump.partition.check import CheckStatus, check_device
from diskdump.partition.ops import (
    CHUNK_BLOCKS,
    check_formattable,
    find_dump,
    format_device,
    read_label,
    reinit_blocks,
    verify_device,
)
from diskdump.partition.probe import parse_wipefs_json, probe_signatures
from tests.conftest import need_tool
from tests.devices.loop import make_image

BS = BLOCK_SIZE
#: a little over two bulk chunks, so chunk boundaries and the partial tail are exercised
BLOCKS = 256 + 2 * CHUNK_BLOCKS + 77


@pytest.fixture
def formatted() -> MemoryDevice:
    dev = MemoryDevice(BLOCKS, name="mem")
    seen: list[tuple[int, int]] = []
    format_device(dev, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (BLOCKS * BS, BLOCKS * BS)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(seen))
    return dev


def test_format_then_everything_verifies(formatted: MemoryDevice) -> None:
    label = read_label(formatted)
    assert label.block_count == BLOCKS and label.reserve_blocks == 256
    assert formatted.data[BS : BACKUP_LABEL_LBA * BS] == bytes((BACKUP_LABEL_LBA - 1) * BS)
    result = verify_device(formatted)
    assert result.ok and result.checked_blocks == label.data_blocks == BLOCKS - 256
    assert not find_dump(formatted, label).present
    assert check_device(formatted).status is CheckStatus.READY


def _flip(dev: MemoryDevice, lba: int, byte: int = 2000) -> None:
    dev.data[lba * BS + byte] ^= 0x01


@pytest.mark.parametrize("where", ["first", "middle", "chunk-edge", "last"])
def test_one_corrupt_block_is_found_by_lba(formatted: MemoryDevice, where: str) -> None:
    lba = {"first": 256, "middle": BLOCKS // 2, "chunk-edge": CHUNK_BLOCKS, "last": BLOCKS - 1}[
        where
    ]
    _flip(formatted, lba)
    result = verify_device(formatted)
    assert (result.bad_block_count, result.first_bad_lbas) == (1, (lba,))
    assert result.first_bad_reasons == ("pattern fill differs (damaged block)",)
    check = check_device(formatted)
    assert check.status is CheckStatus.NEEDS_FORMAT
    assert (
        f"1 of {BLOCKS - 256} checked blocks fail the pattern (first lbas: {lba};" in check.reason
    )


def test_foreign_and_misplaced_blocks_are_caught(formatted: MemoryDevice) -> None:
    other = MemoryDevice(BLOCKS, name="other")
    format_device(other)
    formatted.data[1000 * BS : 1001 * BS] = other.data[1000 * BS : 1001 * BS]  # other uuid
    formatted.data[3000 * BS : 3001 * BS] = formatted.data[3256 * BS : 3257 * BS]  # other lba
    result = verify_device(formatted)
    assert result.first_bad_lbas == (1000, 3000)
    assert "another partition" in result.first_bad_reasons[0]
    assert result.first_bad_reasons[1] == "pattern block of lba 3256 found at lba 3000"


def test_sampled_verification_counts_and_finds_sampled_damage(formatted: MemoryDevice) -> None:
    _flip(formatted, 256 + 100)  # sampled (every 50th from 256)
    _flip(formatted, 256 + 101)  # not sampled
    result = verify_device(formatted, sample_every=50)
    data = BLOCKS - 256
    assert result.checked_blocks == -(-data // 50) + 1  # every 50th plus the last
    assert result.first_bad_lbas == (356,)
    with pytest.raises(ValueError, match="sample_every"):
        verify_device(formatted, sample_every=0)


def test_many_bad_blocks_report_the_first_few(formatted: MemoryDevice) -> None:
    for lba in range(500, 530):
        _flip(formatted, lba)
    result = verify_device(formatted)
    assert result.bad_block_count == 30
    assert result.first_bad_lbas == tuple(range(500, 508))


def test_label_backup_and_damage(formatted: MemoryDevice) -> None:
    label = read_label(formatted)
    formatted.data[0:BS] = bytes(BS)  # primary gone: the backup is used
    assert read_label(formatted) == label.as_copy(label.copy.BACKUP)
    formatted.data[BACKUP_LABEL_LBA * BS : BACKUP_LABEL_LBA * BS + 8] = b"XXXXXXXX"
    with pytest.raises(
        NotThisFormatError, match=r"no diskdump partition label at offset 0x0 on mem"
    ):
        read_label(formatted)
    assert check_device(formatted).status is CheckStatus.NEEDS_FORMAT
    fresh = MemoryDevice(BLOCKS, name="mem2")
    format_device(fresh)
    fresh.data[40] ^= 1
    fresh.data[BACKUP_LABEL_LBA * BS + 40] ^= 1
    with pytest.raises(ChecksumError, match=r"label checksum mismatch .* on mem2"):
        read_label(fresh)
    assert "damaged label" in check_device(fresh).reason


def test_label_of_another_size_is_a_mismatch(formatted: MemoryDevice) -> None:
    bigger = MemoryDevice(BLOCKS + 8, name="big", data=bytes(formatted.data) + bytes(8 * BS))
    want = (
        rf"not describe this device .*block_count on big: expected {BLOCKS + 8:#x}, got {BLOCKS:#x}"
    )
    with pytest.raises(HeaderMismatchError, match=want):
        read_label(bigger)


def test_dump_headers_are_detected_and_protect_the_device(formatted: MemoryDevice) -> None:
    label = read_label(formatted)
    formatted.data[(BLOCKS - 1) * BS : (BLOCKS - 1) * BS + 8] = DUMP_HEADER_MAGIC
    presence = find_dump(formatted, label)
    assert (presence.leading, presence.trailing) == (False, True)
    result = check_device(formatted)
    assert result.status is CheckStatus.HOLDS_DUMP
    assert "trailing header" in result.reason
    with pytest.raises(DeviceRefusedError, match=r"holds a dump savecore has not saved"):
        format_device(formatted)
    assert check_formattable(formatted, force=True) == ["it holds a dump savecore has not saved"]


def test_reinit_rewrites_only_the_extents(formatted: MemoryDevice) -> None:
    label = read_label(formatted)
    dumped = [BlockExtent(256, 10), BlockExtent(CHUNK_BLOCKS - 3, 7), BlockExtent(BLOCKS - 1, 1)]
    for ext in dumped:
        formatted.data[ext.start_lba * BS : ext.end_lba * BS] = b"D" * (ext.block_count * BS)
    assert verify_device(formatted).bad_block_count == 18
    formatted.calls.clear()
    assert reinit_blocks(formatted, label, dumped) == 18
    assert sum(c.block_count for c in formatted.calls) == 18
    assert verify_device(formatted).ok


def test_reinit_never_touches_the_reserve(formatted: MemoryDevice) -> None:
    label = read_label(formatted)
    formatted.calls.clear()
    with pytest.raises(OutOfBoundsError, match=r"outside the allowed range .*\(lba 250\) on mem"):
        reinit_blocks(formatted, label, [BlockExtent(300, 5), BlockExtent(250, 10)])
    assert formatted.calls == []  # checked before any write


def test_too_small_and_unusable_devices_are_refused() -> None:
    with pytest.raises(DeviceTooSmallError, match=r"too small for a dump partition on tiny"):
        format_device(MemoryDevice(100, name="tiny"))
    with pytest.raises(DeviceTooSmallError, match=r"too small for the reserve"):
        format_device(MemoryDevice(400, name="m"), reserve_blocks=390)
    with pytest.raises(ValueError, match=r"reserve_blocks must be >= 256, got 10"):
        format_device(MemoryDevice(400, name="m"), reserve_blocks=10)

    class Mounted(MemoryDevice):
        def sanity_check(self) -> SanityResult:
            return SanityResult(Health.UNUSABLE, "mounted on /mnt")

    class Maybe(MemoryDevice):
        def sanity_check(self) -> SanityResult:
            return SanityResult(Health.MAYBE, "removable medium")

    mounted = Mounted(BLOCKS, name="m0")
    with pytest.raises(DeviceRefusedError, match=r"refusing to format: mounted on /mnt on m0"):
        format_device(mounted, force=True)
    assert mounted.calls == []  # not even read
    maybe = Maybe(BLOCKS, name="m1")
    with pytest.raises(DeviceRefusedError, match=r"sanity check says maybe: removable medium"):
        format_device(maybe)
    assert all(c.op is Op.READ for c in maybe.calls)
    format_device(maybe, force=True)
    assert verify_device(maybe).ok
    verdict = check_device(maybe, sample_every=7)
    assert verdict.status is CheckStatus.READY
    assert verdict.reason.endswith(
        "(every 7th block); but sanity check says maybe: removable medium"
    )
    assert check_device(mounted).status is CheckStatus.UNSUITABLE


def test_uuid_is_kept(formatted: MemoryDevice) -> None:
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert format_device(formatted, u, force=True).uuid == u
    assert read_label(formatted).uuid == u


def test_interrupted_format_leaves_no_label() -> None:
    inner = MemoryDevice(BLOCKS, name="mem")
    format_device(inner)
    dev = FaultDevice(inner, FaultPlan(fail_at_block=1000))
    with pytest.raises(DeviceIOError, match="injected i/o error at block 1000"):
        format_device(dev, force=True)
    with pytest.raises(NotThisFormatError):
        read_label(inner)


def test_read_errors_surface_with_the_lba(formatted: MemoryDevice) -> None:
    dev = FaultDevice(formatted, FaultPlan(fail_at_lba=3000, fail_op=None))
    with pytest.raises(DeviceIOError, match=r"injected i/o error at lba 3000 \(read\)"):
        verify_device(dev)


def test_image_file_refusals_write_nothing(tmp_path: Path) -> None:
    mkfs = need_tool("mkfs.ext4")
    image = make_image(tmp_path / "fs.img", 8 << 20)
    subprocess.run([mkfs, "-q", "-F", "-E", "nodiscard", str(image)], check=True)
    before = image.read_bytes()
    with (
        FileDevice(image, writable=True) as dev,
        pytest.raises(DeviceRefusedError, match=r"foreign signatures: ext4 at 0x438 on .*fs"),
    ):
        format_device(dev)
    assert image.read_bytes() == before
    with FileDevice(image, writable=True) as dev:
        format_device(dev, force=True)
        assert verify_device(dev).ok


def test_parse_wipefs_json() -> None:
    text = '{"signatures": [{"device": "x", "offset": "0x1fe", "type": "PMBR", "uuid": null}]}'
    (sig,) = parse_wipefs_json(text, path="x")
    assert (sig.type, sig.offset, str(sig)) == ("PMBR", 0x1FE, "PMBR at 0x1fe")
    assert parse_wipefs_json("", path="x") == []
    with pytest.raises(DeviceRefusedError, match=r"cannot understand the signature probe's output"):
        parse_wipefs_json("{", path="x")


def test_pattern_of_a_formatted_device_matches_the_codec(formatted: MemoryDevice) -> None:
    label = read_label(formatted)
    pattern = BlockPattern(label)
    assert pattern.matches(formatted.data[256 * BS : 300 * BS], 256)


def test_probe_failure_is_a_refusal() -> None:
    need_tool("wipefs")
    with pytest.raises(
        DeviceRefusedError,
        match=r"cannot probe for foreign signatures on /nonexistent/x: got .*No such file",
    ):
        probe_signatures("/nonexistent/x")


@given(st.integers(0, 10 * CHUNK_BLOCKS), st.integers(0, 5 * CHUNK_BLOCKS))
def test_chunks_tile_the_extent_at_chunk_boundaries(start: int, count: int) -> None:
    pieces = list(chunks(BlockExtent(start, count)))
    assert sum(n for _, n in pieces) == count
    lba = start
    for first, n in pieces:
        assert first == lba and 0 < n <= CHUNK_BLOCKS
        assert (first + n) % CHUNK_BLOCKS == 0 or first + n == start + count
        lba += n
