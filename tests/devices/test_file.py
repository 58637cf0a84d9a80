# SPDX-License-Identifier: GPL-2.0-or-later
"""The image-file driver and the driver registry."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from diskdump.devices import available_drivers, open_device, resolve_driver
from diskdump.devices.base import BlockIO, Health, Op
from diskdump.devices.file import FileDevice, swap_paths
from diskdump.errors import ConfigError, DeviceIOError, DeviceNotReadyError, DeviceTooSmallError
from tests.conftest import need_root, need_tool
from tests.devices.loop import make_image

BS = 4096


def test_round_trip_aligned_and_unaligned(tmp_path: Path) -> None:
    image = make_image(tmp_path / "d.img", 64 * BS + 100)  # a partial tail block is ignored
    with FileDevice(image, writable=True) as dev:
        assert dev.geometry.block_count == 64
        assert dev.sanity_check().health is Health.SANE
        io = BlockIO(dev)
        data = os.urandom(5 * BS)
        io.write(7, data)  # bytes: read-only buffer, goes through the bounce buffer
        unaligned = bytearray(5 * BS + 1)
        io.read(7, memoryview(unaligned)[1:])
        assert unaligned[1:] == data
        dev.quiesce()
        dev.quiesce()
        dev.flush()
    assert image.read_bytes()[7 * BS : 12 * BS] == data
    dev.shutdown()  # idempotent


def test_refuses_sparse_small_missing_and_non_regular(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse.img"
    sparse.write_bytes(b"")
    os.truncate(sparse, 1 << 20)
    with FileDevice(sparse) as dev:
        verdict = dev.sanity_check()
    assert verdict.health is Health.UNUSABLE
    assert verdict.reason.startswith("sparse file (1048576 bytes not allocated)")
    small = make_image(tmp_path / "small.img", 100)
    too_small = r"image file too small on .*small.img: expected '>= 4096 bytes', got '100 bytes'"
    with pytest.raises(DeviceTooSmallError, match=too_small):
        FileDevice(small)
    with pytest.raises(DeviceNotReadyError, match=r"cannot open: No such file .*missing.img") as e:
        FileDevice(tmp_path / "missing.img")
    assert e.value.hint == "create a preallocated image with fallocate -l SIZE FILE"
    with pytest.raises(DeviceNotReadyError, match=r"not a regular file on /dev/null"):
        FileDevice("/dev/null")


def test_sanity_notices_replaced_file(tmp_path: Path) -> None:
    image = make_image(tmp_path / "r.img", 16 * BS)
    with FileDevice(image) as dev:
        image.unlink()
        make_image(image, 16 * BS)
        verdict = dev.sanity_check()
    assert verdict.health is Health.UNUSABLE
    assert "replaced" in verdict.reason


def test_read_past_end_is_an_io_error(tmp_path: Path) -> None:
    image = make_image(tmp_path / "e.img", 4 * BS)
    # called directly (no BlockIO) to see the driver's own short-read report
    with (
        FileDevice(image) as dev,
        pytest.raises(DeviceIOError, match=r"short read: end of device at offset 0x4000"),
    ):
        dev.rw_block(Op.READ, 4, bytearray(BS))


def test_registry(tmp_path: Path) -> None:
    assert {"block", "file"} <= set(available_drivers())
    assert resolve_driver("file") is FileDevice
    image = make_image(tmp_path / "a.img", 16 * BS)
    with open_device(image) as dev:
        assert isinstance(dev, FileDevice)
    with pytest.raises(ConfigError, match=r"unknown device driver in field driver: .*got 'nfs'"):
        open_device(image, "nfs")
    with pytest.raises(ConfigError, match=r"bad options for driver file"):
        open_device(image, "file", bogus=1)
    with pytest.raises(DeviceNotReadyError, match=r"cannot open: No such file"):
        open_device(tmp_path / "none")
    with pytest.raises(DeviceNotReadyError, match=r"not a block device on .*a.img"):
        open_device(image, "block")


def test_swap_paths_parses_proc_swaps() -> None:
    assert all(p.startswith("/") for p in swap_paths())


def test_file_without_o_direct_falls_back_to_buffered_io(tmp_path: Path) -> None:
    """ramfs has no O_DIRECT (open fails with EINVAL); the driver then uses buffered i/o."""
    need_root()
    mount, umount = need_tool("mount"), need_tool("umount")
    subprocess.run([mount, "-t", "ramfs", "ramfs", str(tmp_path)], check=True)
    try:
        image = make_image(tmp_path / "r.img", 16 * BS)
        with pytest.raises(DeviceNotReadyError, match=r"cannot open: Invalid argument .*EINVAL"):
            FileDevice(image, direct=True)
        with FileDevice(image, writable=True) as dev:
            assert dev.direct is False
            BlockIO(dev).write(2, b"\x5a" * BS)
            reason = dev.sanity_check().reason
        assert image.read_bytes()[2 * BS : 3 * BS] == b"\x5a" * BS
        assert reason == "preallocated image file, buffered (no O_DIRECT on this filesystem) i/o"
    finally:
        subprocess.run([umount, str(tmp_path)], check=False)


def test_exclusive_lock_and_write_errors(tmp_path: Path) -> None:
    image = make_image(tmp_path / "l.img", 16 * BS)
    with FileDevice(image, writable=True) as first, FileDevice(image, writable=True) as second:
        first.quiesce()
        with pytest.raises(
            DeviceNotReadyError, match=r"image file is locked by another process on .*l.img"
        ):
            second.quiesce()
    with (
        FileDevice(image) as read_only,
        pytest.raises(
            DeviceIOError, match=r"write failed: Bad file descriptor at offset 0x2000 .*EBADF"
        ),
    ):
        read_only.rw_block(Op.WRITE, 2, bytearray(BS))
