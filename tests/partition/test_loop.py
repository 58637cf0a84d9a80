# SPDX-License-Identifier: GPL-2.0-or-later
"""Format refusals and pattern checks on real loop devices (root tier; CI runs it as root).

Every refusal is shown to write nothing: the device is hashed before and after.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from diskdump.cli.main import main
from tests.conftest import need_tool
from tests.devices.loop import device_hash, loop_device, make_image, run

pytestmark = pytest.mark.root
SIZE = 32 << 20
BS = 4096


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[str]:
    with loop_device(make_image(tmp_path / "loop.img", SIZE)) as dev:
        yield dev


def _refused(dev: str, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    """Run format (also with --force when asked); assert it refused and wrote nothing."""
    before = device_hash(dev)
    code = main(["format", "--quiet", *extra, dev])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "nothing was written to any device" in err
    assert device_hash(dev) == before
    return err


@contextlib.contextmanager
def _mounted(dev: str, where: Path) -> Iterator[None]:
    where.mkdir()
    run(need_tool("mount"), dev, str(where))
    try:
        yield
    finally:
        run(need_tool("umount"), str(where), check=False)


def test_mounted_ext4_is_refused_even_with_force(
    loop: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # no lazy init: ext4lazyinit would write to the device while it is mounted (and hashed)
    run(need_tool("mkfs.ext4"), "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", loop)
    with _mounted(loop, tmp_path / "mnt"):
        err = _refused(loop, capsys, "--force")
        assert re.search(rf"refusing to format: mounted on {tmp_path}/mnt .* on {loop}", err)
        assert main(["check", "--quiet", loop]) == 3
        assert "mounted on" in capsys.readouterr().out
    # unmounted, the ext4 signature still stops it (without --force)
    err = _refused(loop, capsys)
    assert re.search(rf"foreign signatures: ext4 at 0x438 on {loop}", err)


def test_mounted_partition_of_the_disk_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = make_image(tmp_path / "disk.img", SIZE)
    run(need_tool("sgdisk"), "-o", "-n", "1:2048:0", str(image))
    losetup = need_tool("losetup")
    dev = run(losetup, "--find", "--show", "--partscan", str(image)).stdout.strip()
    try:
        part = _partition_node(dev, tmp_path)
        run(need_tool("mkfs.ext4"), "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", part)
        with _mounted(part, tmp_path / "mnt"):
            err = _refused(dev, capsys, "--force")
            assert f"refusing to format: mounted on {tmp_path}/mnt" in err
    finally:
        run(losetup, "--detach", dev, check=False)


def _partition_node(dev: str, tmp_path: Path) -> str:
    """The node of partition 1 of ``dev``; made by hand where no udev runs (containers)."""
    sysfs = Path("/sys/block") / Path(dev).name / f"{Path(dev).name}p1" / "dev"
    if not sysfs.exists():
        run(need_tool("partx"), "--add", dev, check=False)
    major, minor = (int(x) for x in sysfs.read_text().split(":"))
    node = Path(f"{dev}p1")
    if not node.exists():
        node = tmp_path / "part1"
        os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
    return str(node)


def test_active_swap_is_refused(loop: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(need_tool("mkswap"), loop)
    run(need_tool("swapon"), loop)
    try:
        err = _refused(loop, capsys, "--force")
        assert f"refusing to format: active swap ({loop}) on {loop}" in err
    finally:
        run(need_tool("swapoff"), loop, check=False)
    assert "foreign signatures: swap at 0xff6" in _refused(loop, capsys)


def _need_kernel(driver: str, word: str, listing: Path) -> None:
    """Skip (even under DISKDUMP_REQUIRE_ALL) when the running kernel lacks a driver.

    A missing tool is an installation fault and fails CI; a kernel built
    without device-mapper or md (as some VM hosts are) cannot be fixed by
    the test setup, so it stays a skip that names the reason.
    """
    lines = listing.read_text().split("\n")
    if not any(line.split()[-1:] == [driver if word == "misc" else word] for line in lines):
        pytest.skip(f"the running kernel has no {driver} driver (not in {listing})")


def test_device_mapper_holder_is_refused(loop: str, capsys: pytest.CaptureFixture[str]) -> None:
    dmsetup = need_tool("dmsetup")
    _need_kernel("device-mapper", "misc", Path("/proc/misc"))
    name = f"diskdump-test-{os.getpid()}"
    run(dmsetup, "create", name, "--table", f"0 {SIZE // 512} linear {loop} 0")
    try:
        err = _refused(loop, capsys, "--force")
        assert re.search(rf"refusing to format: {Path(loop).name} is held by dm-\d+ \(dm/md\)", err)
        assert main(["check", "--quiet", loop]) == 3
    finally:
        run(dmsetup, "remove", name, check=False)


def test_gpt_is_refused_unless_forced(loop: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(need_tool("sgdisk"), "-o", loop)
    err = _refused(loop, capsys)
    assert re.search(r"foreign signatures: gpt at 0x200, gpt at 0x1fffe00, PMBR at 0x1fe", err)
    assert main(["format", "--quiet", "--force", loop]) == 0
    assert main(["check", "--quiet", loop]) == 0
    out = run(need_tool("wipefs"), "--no-act", "--json", loop).stdout
    assert out.strip() == "" or json.loads(out)["signatures"] == []


def test_lvm_pv_is_refused(loop: str, capsys: pytest.CaptureFixture[str]) -> None:
    pvcreate = need_tool("pvcreate")
    run(pvcreate, "--quiet", "--yes", "--devices", loop, loop)
    try:
        assert "foreign signatures: LVM2_member at 0x218" in _refused(loop, capsys)
    finally:
        run(need_tool("pvremove"), "--quiet", "--devices", loop, loop, check=False)


def test_md_member_is_refused(
    tmp_path: Path, loop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    mdadm = need_tool("mdadm")
    _need_kernel("md", "md", Path("/proc/devices"))
    md = f"/dev/md/diskdump-test-{os.getpid()}"
    run(
        mdadm,
        "--create",
        md,
        "--run",
        "--force",
        "--level=1",
        "--raid-devices=1",
        "--metadata=1.2",
        "--homehost=any",
        loop,
    )
    try:
        err = _refused(loop, capsys, "--force")
        assert re.search(r"is held by md\d+ \(dm/md\)", err)
    finally:
        run(mdadm, "--stop", md, check=False)
    try:
        assert "foreign signatures: linux_raid_member at 0x1000" in _refused(loop, capsys)
    finally:
        run(mdadm, "--zero-superblock", loop, check=False)


def test_exclusive_holder_is_refused(loop: str, capsys: pytest.CaptureFixture[str]) -> None:
    holder = os.open(loop, os.O_RDONLY | os.O_EXCL)
    try:
        assert "in use: exclusive open failed" in _refused(loop, capsys, "--force")
    finally:
        os.close(holder)


def _corrupt(dev: str, lba: int, data: bytes) -> None:
    fd = os.open(dev, os.O_WRONLY)
    try:
        os.pwrite(fd, data, lba * BS)
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_full_check_finds_one_corrupt_block(
    loop: str, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["format", "--quiet", loop]) == 0
    blocks = SIZE // BS
    lba = {"first": 256, "middle": blocks // 2 + 3, "last": blocks - 1}[where]
    with open(loop, "rb") as f:
        f.seek(lba * BS)
        block = bytearray(f.read(BS))
    block[1234] ^= 0x40
    _corrupt(loop, lba, bytes(block))
    capsys.readouterr()
    assert main(["check", "--json", loop]) == 2
    report = json.loads(capsys.readouterr().out)["devices"][0]
    assert report["status"] == "needs_format"
    assert report["verify"]["bad_blocks"] == 1
    assert report["verify"]["first_bad_lbas"] == [lba]


def test_foreign_and_misplaced_blocks_on_loop(
    tmp_path: Path, loop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with loop_device(make_image(tmp_path / "other.img", SIZE)) as other:
        assert main(["format", "--quiet", loop, other]) == 0
        with open(other, "rb") as f:
            f.seek(700 * BS)
            foreign = f.read(BS)
    with open(loop, "rb") as f:
        f.seek(900 * BS)
        misplaced = f.read(BS)
    _corrupt(loop, 700, foreign)
    _corrupt(loop, 2000, misplaced)
    capsys.readouterr()
    assert main(["check", "--json", loop]) == 2
    verify = json.loads(capsys.readouterr().out)["devices"][0]["verify"]
    assert verify["first_bad_lbas"] == [700, 2000]
    assert "another partition" in verify["first_bad_reasons"][0]
    assert verify["first_bad_reasons"][1] == "pattern block of lba 900 found at lba 2000"
