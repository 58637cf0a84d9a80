# SPDX-License-Identifier: GPL-2.0-or-later
"""The block driver on real loop devices (root tier; CI runs it as root)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from diskdump.devices import open_device
from diskdump.devices.base import BlockIO, Health
from diskdump.devices.block import BlockDevice
from diskdump.devices.file import FileDevice
from diskdump.errors import DeviceNotReadyError
from tests.conftest import need_tool
from tests.devices.loop import loop_device, make_image, run

pytestmark = pytest.mark.root
BS = 4096
SIZE = 16 << 20


def test_geometry_io_quiesce_shutdown(tmp_path: Path) -> None:
    with loop_device(make_image(tmp_path / "b.img", SIZE)) as dev:
        device = open_device(dev, writable=True)
        assert isinstance(device, BlockDevice)
        assert device.geometry.block_count == SIZE // BS
        assert device.geometry.logical_block_size in (512, 4096)
        verdict = device.sanity_check()
        assert verdict.health is Health.SANE, verdict.reason
        assert "O_DIRECT" in verdict.reason
        io = BlockIO(device)
        data = os.urandom(3 * BS)
        io.write(5, data)  # read-only bytes: bounced into an aligned buffer
        back = bytearray(3 * BS + 7)
        io.read(5, memoryview(back)[7:])  # unaligned destination
        assert back[7:] == data
        device.quiesce()
        device.quiesce()
        with pytest.raises(OSError) as busy:
            os.close(os.open(dev, os.O_RDONLY | os.O_EXCL))
        assert busy.value.errno == errno.EBUSY
        assert device.sanity_check().health is Health.SANE  # our own exclusive open is fine
        device.flush()
        device.shutdown()
        device.shutdown()
        os.close(os.open(dev, os.O_RDONLY | os.O_EXCL))  # released
        with open(dev, "rb") as f:
            f.seek(5 * BS)
            assert f.read(3 * BS) == data


def test_read_only_and_busy_devices_are_unusable(tmp_path: Path) -> None:
    image = make_image(tmp_path / "ro.img", SIZE)
    losetup = need_tool("losetup")
    ro_dev = run(losetup, "--find", "--show", "--read-only", str(image)).stdout.strip()
    try:
        with BlockDevice(ro_dev) as device:
            verdict = device.sanity_check()
        assert (verdict.health, verdict.reason) == (Health.UNUSABLE, "device is read-only")
        with BlockDevice(ro_dev, writable=True) as device:  # root may open it O_RDWR...
            assert device.sanity_check().reason == "device is read-only"  # ...but not use it
    finally:
        run(losetup, "--detach", ro_dev, check=False)
    with loop_device(make_image(tmp_path / "busy.img", SIZE)) as dev:
        holder = os.open(dev, os.O_RDONLY | os.O_EXCL)
        try:
            with BlockDevice(dev) as device:
                verdict = device.sanity_check()
                assert verdict.health is Health.UNUSABLE
                assert verdict.reason.startswith("in use: exclusive open failed")
                with pytest.raises(DeviceNotReadyError, match=r"in use \(exclusive open failed\)"):
                    device.quiesce()
        finally:
            os.close(holder)


def test_block_driver_refuses_a_file(tmp_path: Path) -> None:
    with pytest.raises(DeviceNotReadyError, match=r"not a block device on .*v.img"):
        BlockDevice(make_image(tmp_path / "v.img", SIZE))


def test_polled_io_round_trip(tmp_path: Path) -> None:
    """RWF_HIPRI forced on (loop queues do not poll; the kernel then completes normally)."""
    with loop_device(make_image(tmp_path / "p.img", SIZE)) as dev:
        with BlockDevice(dev, writable=True, polled=True) as device:
            assert device.polled
            io = BlockIO(device)
            data = os.urandom(2 * BS)
            io.write(9, data)
            back = bytearray(2 * BS)
            io.read(9, back)
        assert back == data
        with BlockDevice(dev) as device:
            poll = Path(f"/sys/block/{Path(dev).name}/queue/io_poll").read_text().strip()
            assert device.polled is (poll == "1")


def test_image_file_in_use_as_swap_or_loop_is_unusable(tmp_path: Path) -> None:
    image = make_image(tmp_path / "swap.img", SIZE)
    image.chmod(0o600)
    run(need_tool("mkswap"), str(image))
    swapon, swapoff = need_tool("swapon"), need_tool("swapoff")
    run(swapon, str(image))
    try:
        with FileDevice(image) as device:
            assert device.sanity_check().reason == "file is an active swap area"
    finally:
        run(swapoff, str(image), check=False)
    with loop_device(image) as dev, FileDevice(image) as device:
        verdict = device.sanity_check()
        assert verdict.health is Health.UNUSABLE
        assert verdict.reason == f"file is attached to {dev}; use that device"


def test_empty_resized_and_ram_backed_devices_are_unusable(tmp_path: Path) -> None:
    empty = tmp_path / "empty.img"
    empty.touch()
    with loop_device(empty) as dev, BlockDevice(dev) as device:
        assert device.sanity_check().reason == "device has no capacity (no medium, not set up)"
    image = make_image(tmp_path / "grow.img", SIZE)
    with loop_device(image) as dev, BlockDevice(dev) as device:
        assert device.sanity_check().health is Health.SANE
        with open(image, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, 2 * SIZE)
        run(need_tool("losetup"), "--set-capacity", dev)
        assert device.sanity_check().reason == (
            f"device size changed since it was opened (now {2 * SIZE} bytes)"
        )
    zram = Path("/dev/zram0")
    if not zram.is_block_device():
        pytest.skip("no zram device on this machine (the kernel has no zram driver)")
    with BlockDevice(zram) as device:
        verdict = device.sanity_check()
    assert verdict.health is Health.UNUSABLE
    assert verdict.reason == "memory-backed device (zram0): its contents do not survive a reboot"
