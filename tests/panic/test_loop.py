# SPDX-License-Identifier: GPL-2.0-or-later
"""The panic writer on real block devices (loop devices over image files; needs root)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from diskdump.cli.exitcodes import ExitCode
from diskdump.cli.main import main
from diskdump.devices import open_device
from diskdump.devices.base import BlockIO, Op
from diskdump.devices.fault import FaultDevice, FaultPlan
from diskdump.formats.dumpheader import DumpFlag
from diskdump.formats.dumpimage import open_dump, validate_dump
from diskdump.panic.writer import write_dump
from diskdump.partition.ops import format_device, read_label
from tests.conftest import need, need_root, need_tool
from tests.panic.helpers import assert_pages_match, kernel, settings, state, write_vmcore

pytestmark = pytest.mark.root
MIB = 1 << 20


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[list[str]]:
    need_root()
    losetup = need_tool("losetup")
    made: list[str] = []
    try:
        for i in range(2):
            img = tmp_path / f"loop{i}.img"
            with open(img, "wb") as f:
                os.posix_fallocate(f.fileno(), 0, 48 * MIB)
            out = subprocess.run(
                [losetup, "-f", "--show", str(img)], capture_output=True, text=True, check=False
            )
            need(out.returncode == 0, f"losetup failed: {out.stderr.strip()}")
            made.append(out.stdout.strip())
        yield made
    finally:
        for dev in made:
            subprocess.run([losetup, "-d", dev], check=False)


def _read_back(path: str):  # type: ignore[no-untyped-def]
    dev = open_device(path)
    label = read_label(dev)
    image = open_dump(BlockIO(dev), label.reserve_blocks, name=path)
    validate_dump(image)
    return image


def test_cli_dump_to_second_loop_device_when_first_is_unformatted(
    loops: list[str], tmp_path: Path
) -> None:
    vmcore = write_vmcore(tmp_path / "vmcore")
    with open_device(loops[1], writable=True) as dev:
        format_device(dev, check=False)
    rc = main(
        [
            "dump",
            "--unarmed",
            "--device",
            loops[0],
            "--device",
            loops[1],
            "--source",
            str(vmcore),
            "--no-mlock",
            "-q",
        ]
    )
    assert rc == ExitCode.OK
    image = _read_back(loops[1])
    assert not image.incomplete
    assert_pages_match(image, kernel().source)


def test_io_error_on_real_block_device_falls_back(loops: list[str]) -> None:
    devices = []
    for path in loops:
        with open_device(path, writable=True) as dev:
            format_device(dev, check=False)
        devices.append(open_device(path, writable=True))
    label = read_label(devices[0])
    first = FaultDevice(
        devices[0], FaultPlan(fail_at_lba=label.reserve_blocks + 200, fail_op=Op.WRITE)
    )
    result = write_dump(kernel().source, state(), [first, devices[1]], settings())
    assert result.device == loops[1] and result.complete
    assert result.header.flags & DumpFlag.FALLBACK
    assert_pages_match(_read_back(loops[1]), kernel().source)
    partial = _read_back(loops[0])
    assert partial.incomplete and partial.header.dump_id == result.header.dump_id
