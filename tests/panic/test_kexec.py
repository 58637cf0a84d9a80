# SPDX-License-Identifier: GPL-2.0-or-later
"""Loading the capture kernel (panic/kexec.py): checks before kexec, the command line.

The real `kexec -p` is exercised by the VM tier: the guest's `diskdump arm`
loads the capture kernel that then captures the crash (tests/vm/test_cycle.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from diskdump.cli.exitcodes import ExitCode
from diskdump.cli.main import main
from diskdump.config import CaptureOptions
from diskdump.errors import DumpError
from diskdump.panic.kexec import (
    MIN_CRASHKERNEL_SIZE,
    CapturePaths,
    capture_command_line,
    kexec_command,
    load_capture,
)


def test_command_line_drops_first_boot_options_and_appends() -> None:
    running = "BOOT_IMAGE=/vmlinuz-6.1 root=/dev/sda1 ro crashkernel=192M quiet initrd=/x.img"
    got = capture_command_line(running, "irqpoll nr_cpus=1 reset_devices quiet")
    assert got == "root=/dev/sda1 ro quiet irqpoll nr_cpus=1 reset_devices"


def test_kexec_uses_file_load_only_under_lockdown() -> None:
    plain = kexec_command("/boot/vmlinuz", "/cap.img", "a b", file_load=False)
    assert plain[1:] == ["-p", "/boot/vmlinuz", "--initrd=/cap.img", "--append=a b"]
    assert kexec_command("/k", "/i", "", file_load=True)[1:3] == ["-p", "-s"]


def _paths(tmp_path: Path, reserved: int | None) -> CapturePaths:
    size = tmp_path / "kexec_crash_size"
    if reserved is not None:
        size.write_text(f"{reserved}\n")
    (tmp_path / "cmdline").write_text("console=ttyS0 crashkernel=192M\n")
    return CapturePaths(
        crash_size=str(size),
        crash_loaded=str(tmp_path / "loaded"),
        cmdline=str(tmp_path / "cmdline"),
        lockdown=str(tmp_path / "lockdown"),
    )


@pytest.mark.parametrize(
    ("reserved", "message"),
    [
        (None, r"this kernel cannot load a capture kernel on .*kexec_crash_size"),
        (0, r"too little memory reserved .*expected '>= 160 MiB', got '0 MiB'"),
        (144 << 20, r"too little memory reserved .*got '144 MiB'"),
    ],
)
def test_reservation_is_checked(tmp_path: Path, reserved: int | None, message: str) -> None:
    with pytest.raises(DumpError, match=message):
        load_capture(CaptureOptions(kernel="/nonexistent"), _paths(tmp_path, reserved))


def test_missing_and_oversized_files(tmp_path: Path) -> None:
    paths = _paths(tmp_path, MIN_CRASHKERNEL_SIZE)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k" * 4096)
    with pytest.raises(DumpError, match=r"capture initramfs does not exist on /nope.img"):
        load_capture(CaptureOptions(kernel=str(kernel), initrd="/nope.img"), paths)
    big = tmp_path / "capture.img"
    with big.open("wb") as f:
        f.truncate(MIN_CRASHKERNEL_SIZE)
    with pytest.raises(DumpError, match=r"do not fit the reserved memory"):
        load_capture(CaptureOptions(kernel=str(kernel), initrd=str(big)), paths)


@pytest.mark.skipif(
    os.path.exists("/sys/kernel/kexec_crash_size"), reason="this host's kernel supports kexec"
)
def test_arm_is_not_ready_when_the_capture_kernel_cannot_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a kernel without crash kexec (this kind of machine) arm says why and exits 5."""
    from tests.panic.test_cli import _image

    img = _image(tmp_path / "dump.img", 64 << 20)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384 kB\n")
    args = [
        "arm",
        "--device",
        str(img),
        "--manifest",
        str(tmp_path / "m.json"),
        "--meminfo",
        str(meminfo),
    ]
    assert main(args) == ExitCode.NOT_READY
    out = capsys.readouterr().out
    assert "not ready: the capture kernel is not loaded: this kernel cannot load" in out
