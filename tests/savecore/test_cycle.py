# SPDX-License-Identifier: GPL-2.0-or-later
"""The whole cycle with the real panic writer: format, dump, check, savecore, check.

``diskdump dump --unarmed --source FILE`` (run in a subprocess: it blocks
signals and locks memory like the capture kernel does) writes a synthetic
6.1 kernel, stored as an ELF vmcore, onto image files and loop devices;
``diskdump savecore`` saves it; ``diskdump check`` must then say "ready".
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from diskdump.cli.main import main
from diskdump.formats.elf_write import write_elf
from diskdump.formats.kdump_read import KdumpFile
from tests.builders.kernel import SyntheticKernel, build_kernel
from tests.conftest import need_root, need_tool
from tests.savecore.conftest import info_of, saves

MIB = 1 << 20
#: `diskdump dump` exit status for a dump written but cut short (cli/exitcodes.py)
DUMP_INCOMPLETE = 4


@pytest.fixture(scope="module")
def kernel() -> SyntheticKernel:
    return build_kernel()


@pytest.fixture(scope="module")
def source_elf(kernel: SyntheticKernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("source") / "vmcore.elf"
    with open(path, "wb") as out:
        write_elf(kernel.source, out)
    return path


def _image(path: Path, size: int) -> Path:
    with open(path, "wb") as file:
        os.posix_fallocate(file.fileno(), 0, size)
    assert main(["format", str(path), "--quiet"]) == 0
    return path


def _dump(source: Path, *devices: str) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable,
        "-m",
        "diskdump.cli.main",
        "dump",
        "--unarmed",
        "--no-mlock",
        "--quiet",
        "--compress",
        "zstd",
        "--source",
        str(source),
    ]
    for device in devices:
        argv += ["--device", device]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


def _savecore(crash: Path, *devices: str, extra: tuple[str, ...] = ()) -> int:
    argv = ["savecore", "--dir", str(crash), "--min-free", "0", "--compress", "zlib", "--quiet"]
    for device in devices:
        argv += ["--device", device]
    return main(argv + list(extra))


def _check_pages(vmcore: Path, kernel: SyntheticKernel) -> int:
    with KdumpFile.open(str(vmcore)) as core:
        held = 0
        for run in core.data_runs():
            assert core.read_pages(run.start_pfn, run.pages) == kernel.source.read_pages(
                run.start_pfn, run.pages
            )
            held += run.pages
    return held


def test_cycle_on_an_image_file(
    kernel: SyntheticKernel, source_elf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = str(_image(tmp_path / "dump.img", 96 * MIB))
    dumped = _dump(source_elf, image)
    assert dumped.returncode == 0, dumped.stderr
    assert main(["check", image, "--quiet"]) == 1  # holds a dump
    crash = tmp_path / "crash"
    assert _savecore(crash, image) == 0
    assert main(["check", image, "--quiet"]) == 0  # ready again
    (save,) = saves(crash)
    assert info_of(save)["status"] == "COMPLETE"
    assert _check_pages(save / "vmcore", kernel) == sum(r.pages for r in kernel.source.data_runs())
    assert (save / "dmesg.txt").read_text() == kernel.expected_dmesg
    makedumpfile = need_tool("makedumpfile")
    out = tmp_path / "dmesg"
    proc = subprocess.run(
        [makedumpfile, "--dump-dmesg", str(save / "vmcore"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and out.read_text() == (save / "dmesg.txt").read_text()
    capsys.readouterr()
    assert _savecore(crash, image) == 0 and len(saves(crash)) == 1
    assert "no dump (no dump header)" in capsys.readouterr().out


def test_device_too_small_gives_an_incomplete_save_that_crash_opens(
    kernel: SyntheticKernel, source_elf: Path, tmp_path: Path
) -> None:
    image = str(_image(tmp_path / "small.img", 8 * MIB))
    dumped = _dump(source_elf, image)
    assert dumped.returncode == DUMP_INCOMPLETE, dumped.stderr
    crash = tmp_path / "crash"
    assert _savecore(crash, image) == 6
    (save,) = saves(crash)
    info = info_of(save)
    assert info["incomplete"] is True and "TRUNCATED" in info["flags"]
    assert any("planned pages missing" in m for m in info["missing"])
    held = _check_pages(save / "vmcore", kernel)
    assert 0 < held < sum(r.pages for r in kernel.source.data_runs())
    crash_tool = need_tool("crash")
    proc = subprocess.run(
        [crash_tool, "--osrelease", str(save / "vmcore")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "6.1.0-13-amd64"
    assert main(["check", image, "--quiet"]) == 0


@contextlib.contextmanager
def _loop(image: Path) -> Iterator[str]:
    proc = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    device = proc.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", device], check=True)


@pytest.mark.root
def test_cycle_on_loop_devices_first_one_unformatted(
    kernel: SyntheticKernel, source_elf: Path, tmp_path: Path
) -> None:
    need_root()
    need_tool("losetup")
    blank = tmp_path / "blank.img"
    with open(blank, "wb") as file:
        os.posix_fallocate(file.fileno(), 0, 96 * MIB)
    formatted = tmp_path / "formatted.img"
    with open(formatted, "wb") as file:
        os.posix_fallocate(file.fileno(), 0, 96 * MIB)
    with _loop(blank) as first, _loop(formatted) as second:
        assert main(["format", second, "--quiet"]) == 0
        dumped = _dump(source_elf, first, second)
        assert dumped.returncode == 0, dumped.stderr
        crash = tmp_path / "crash"
        # the unformatted device holds no dump: reported, not a failure; the dump is saved
        assert _savecore(crash, first, second) == 0
        (save,) = saves(crash)
        assert info_of(save)["device"] == second
        assert _check_pages(save / "vmcore", kernel) > 16000
        assert main(["check", second, "--quiet"]) == 0
        assert _savecore(crash, second) == 0 and len(saves(crash)) == 1
