# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump test``: refuses unless ready and forced; then writes 'c' to the sysrq trigger.

Here the trigger is a plain file (a real one would panic the host); the
cycle test (test_cycle.py) runs the command for real inside the guest, where
it panics the kernel.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from diskdump.cli.main import main
from diskdump.errors import DiskdumpError
from diskdump.panic.manifest import build_manifest, write_manifest
from diskdump.vm.sysrq import trigger_crash
from tests.devices.loop import make_image

#: a tiny machine, so that the estimated dump (memory + 32 MiB metadata) fits the image
MEMINFO = "MemTotal:        4096 kB\nMemFree:        1024 kB\n"
IMAGE_SIZE = 48 << 20


@pytest.fixture
def ready(tmp_path: Path) -> list[str]:
    """Arguments under which `diskdump test` finds the machine ready."""
    image = make_image(tmp_path / "dump.img", IMAGE_SIZE)
    assert main(["format", "--quiet", str(image)]) == 0
    manifest = tmp_path / "manifest.json"
    write_manifest(build_manifest(config=None, codec="zstd", devices=[str(image)]), manifest)
    (tmp_path / "meminfo").write_text(MEMINFO)
    (tmp_path / "loaded").write_text("1\n")
    return [
        "test",
        "--device",
        str(image),
        "--manifest",
        str(manifest),
        "--meminfo",
        str(tmp_path / "meminfo"),
        "--kexec-crash-loaded",
        str(tmp_path / "loaded"),
        "--sysrq-trigger",
        str(tmp_path / "trigger"),
    ]


def test_refuses_without_force(
    ready: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(ready) == 64
    assert re.search(r"ready: a crash now would be captured; .*--force", capsys.readouterr().out)
    assert not (tmp_path / "trigger").exists()


def test_force_writes_sysrq_c(
    ready: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*ready, "--force"]) == 1  # the "kernel" did not panic: a plain file
    assert (tmp_path / "trigger").read_bytes() == b"c"
    err = capsys.readouterr().err
    assert re.search(r"error: the kernel did not panic after the sysrq trigger was written", err)


def test_not_ready_is_never_crashed(
    ready: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "loaded").write_text("0\n")
    assert main([*ready, "--force"]) == 5
    assert re.search(r"not crashing: .*\n  - no capture kernel loaded", capsys.readouterr().out)
    assert not (tmp_path / "trigger").exists()


def test_unwritable_trigger(tmp_path: Path) -> None:
    with pytest.raises(DiskdumpError, match=r"cannot write the sysrq trigger: .* on .*/nodir/t"):
        trigger_crash(tmp_path / "nodir" / "t")
