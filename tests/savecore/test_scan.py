# SPDX-License-Identifier: GPL-2.0-or-later
"""The ordered header checks of scan.py, on in-memory devices, and the save-name rule."""

from __future__ import annotations

import dataclasses
import re
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskdump.devices.base import BlockIO
from diskdump.devices.memory import MemoryDevice
from diskdump.errors import (
    ChecksumError,
    CorruptDataError,
    DeviceTooSmallError,
    HeaderMismatchError,
    OutOfBoundsError,
)
from diskdump.formats.partition import PartitionLabel
from diskdump.partition.ops import format_device
from diskdump.savecore.save import save_name
from diskdump.savecore.scan import scan_device
from tests.builders.kernel import MIB, SyntheticKernel
from tests.savecore.dumpbuilder import Knobs, write_dump

BLOCKS = (40 * MIB) // 4096


def _dumped(
    kernel: SyntheticKernel, knobs: Knobs | None = None
) -> tuple[MemoryDevice, PartitionLabel]:
    device = MemoryDevice(BLOCKS, name="mem0")
    label = format_device(device)
    write_dump(device, label, kernel.source, knobs=knobs or Knobs())
    return device, label


def test_complete_dump_found(small_kernel: SyntheticKernel) -> None:
    device, label = _dumped(small_kernel, Knobs(codec="none"))
    result = scan_device(device, label)
    assert result.dump is not None and result.dump.complete and result.dump.has_trailer
    assert result.dump.problems == () and len(result.dump.dump_id) == 32


def test_formatted_device_has_no_dump(small_kernel: SyntheticKernel) -> None:
    device = MemoryDevice(BLOCKS, name="mem0")
    label = format_device(device)
    result = scan_device(device, label)
    assert result.dump is None and result.reason == "no dump header"


def test_block_size_smaller_than_a_header(small_kernel: SyntheticKernel) -> None:
    device = MemoryDevice(64, block_size=512, name="tiny")
    label = PartitionLabel(uuid=uuid.uuid4(), block_count=64)
    with pytest.raises(
        DeviceTooSmallError,
        match=r"block size cannot hold a dump header in field block_size on "
        r"tiny: expected '>= 1024', got 0x200",
    ):
        scan_device(device, label)


def test_block_size_other_than_the_labels(small_kernel: SyntheticKernel) -> None:
    device = MemoryDevice(64, block_size=8192, name="big")
    label = PartitionLabel(uuid=uuid.uuid4(), block_count=64)
    with pytest.raises(
        CorruptDataError,
        match=r"device block size differs from the label's "
        r"in field block_size on big: expected 0x1000, got 0x2000",
    ):
        scan_device(device, label)


def test_leading_header_outside_the_device() -> None:
    device = MemoryDevice(300, name="short")
    label = PartitionLabel(uuid=uuid.uuid4(), block_count=300, reserve_blocks=299)
    with pytest.raises(
        OutOfBoundsError,
        match=r"leading dump header lies outside the device "
        r"\(lba 299\) on short: expected 'lba < 299', got 0x12b",
    ):
        scan_device(device, label)


def test_header_of_another_partition(small_kernel: SyntheticKernel) -> None:
    device, label = _dumped(small_kernel, Knobs(codec="none"))
    other = dataclasses.replace(label, uuid=uuid.uuid4())
    with pytest.raises(
        CorruptDataError,
        match=r"dump header does not match the device in "
        r"field partition_uuid on mem0",
    ):
        scan_device(device, other)


def test_trailer_without_a_leading_header(small_kernel: SyntheticKernel) -> None:
    device, label = _dumped(small_kernel, Knobs(codec="none"))
    BlockIO(device).write(label.reserve_blocks, bytes(4096))
    with pytest.raises(
        HeaderMismatchError,
        match=r"leading dump header is missing but the "
        r"trailer is valid in field magic at offset 0x100000 on mem0",
    ):
        scan_device(device, label)


def test_trailer_checksum_is_checked_first(small_kernel: SyntheticKernel) -> None:
    device, label = _dumped(small_kernel, Knobs(codec="none", corrupt_trailer_crc=True))
    BlockIO(device).write(label.reserve_blocks, bytes(4096))  # the leading one is bad too
    trailer = (BLOCKS - 1) * 4096
    with pytest.raises(
        ChecksumError,
        match=rf"dump header checksum mismatch in field header_crc "
        rf"at offset {trailer + 1020:#x} on mem0",
    ):
        scan_device(device, label)


def test_cut_short_dump_is_found_incomplete(small_kernel: SyntheticKernel) -> None:
    device, label = _dumped(small_kernel, Knobs(codec="none", cut_after_chunks=2))
    result = scan_device(device, label)
    assert result.dump is not None and not result.dump.complete
    assert result.dump.problems == ("no trailing header: the dump was cut short at panic time",)


_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}-\d{8}-\d{6}$")


@given(nodename=st.text(max_size=80), crash_time=st.integers(0, 2**33))
@settings(max_examples=200, deadline=None)
def test_save_name_is_always_one_safe_component(nodename: str, crash_time: int) -> None:
    name = save_name(nodename, crash_time, "fallback")
    assert _NAME.match(name), name
    assert "/" not in name and not name.startswith(".") and name not in (".", "..")
