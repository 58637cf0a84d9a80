# SPDX-License-Identifier: GPL-2.0-or-later
"""A real kernel's memory through the whole cycle: QEMU dump -> diskdump dump -> savecore.

The vmcore is the QMP dump of a 512 MiB Debian 6.1 guest that the VM tier
builds and caches (diskdump.vm.qmp_vmcores). It is written to a dump
partition image by the real panic writer and saved by savecore; the saved
kdump file must hold exactly the source's pages and its dmesg.txt must equal
makedumpfile's. The wall times of dump, savecore and a plain ``cp`` of the
source are recorded (``record_property``), never asserted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diskdump.formats.detect import opened_vmcore
from diskdump.formats.kdump_read import KdumpFile
from tests.conftest import need_tool
from tests.savecore.conftest import info_of, saves

pytestmark = [pytest.mark.vm, pytest.mark.slow]

#: dump partition size for a 512 MiB guest (the dump is about 45 MiB compressed)
IMAGE_SIZE = 700 << 20
#: pages compared per read
_BATCH = 256


def _timed(argv: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1200)
    return proc, time.monotonic() - started


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "diskdump.cli.main", *args]


def test_real_vmcore_cycle(tmp_path: Path, record_property: pytest.RecordProperty) -> None:
    from tests.vm.conftest import need_vm_tools

    need_vm_tools()
    from diskdump.vm import qmp_vmcores

    source = qmp_vmcores("6.1").elf
    image = tmp_path / "dump.img"
    with open(image, "wb") as file:
        os.posix_fallocate(file.fileno(), 0, IMAGE_SIZE)
    fmt, _ = _timed(_cli("format", str(image), "--quiet"))
    assert fmt.returncode == 0, fmt.stderr
    copy, cp_seconds = _timed(["cp", str(source), str(tmp_path / "copy.elf")])
    assert copy.returncode == 0
    (tmp_path / "copy.elf").unlink()
    dump, dump_seconds = _timed(
        _cli("dump", "--unarmed", "--quiet", "--device", str(image), "--source", str(source))
    )
    assert dump.returncode == 0, dump.stderr
    crash = tmp_path / "crash"
    argv = _cli(
        "savecore",
        "--device",
        str(image),
        "--dir",
        str(crash),
        "--min-free",
        "0",
        "--compress",
        "zlib",
        "--quiet",
    )
    save, save_seconds = _timed(argv)
    assert save.returncode == 0, save.stderr
    for name, value in (
        ("cp_s", cp_seconds),
        ("dump_s", dump_seconds),
        ("savecore_s", save_seconds),
    ):
        record_property(name, round(value, 2))
    print(
        f"\n{source.name} ({source.stat().st_size} bytes): cp {cp_seconds:.1f} s, "
        f"dump {dump_seconds:.1f} s, savecore {save_seconds:.1f} s"
    )
    (saved,) = saves(crash)
    assert info_of(saved)["status"] == "COMPLETE"
    assert _compare_pages(source, saved / "vmcore") > 100_000
    makedumpfile = need_tool("makedumpfile")
    out = tmp_path / "dmesg"
    proc = subprocess.run(
        [makedumpfile, "--dump-dmesg", str(saved / "vmcore"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.read_text() == (saved / "dmesg.txt").read_text()
    assert "Linux version 6.1.0" in out.read_text()
    check, _ = _timed(_cli("check", str(image), "--quiet"))
    assert check.returncode == 0, check.stdout + check.stderr
    shutil.rmtree(crash)


def _compare_pages(source: Path, vmcore: Path) -> int:
    """Every page the source holds is in the saved vmcore, byte for byte; return the count."""
    compared = 0
    with opened_vmcore(source) as src, KdumpFile.open(str(vmcore)) as core:
        assert [(r.start_pfn, r.end_pfn) for r in core.ram_runs()] == [
            (r.start_pfn, r.end_pfn) for r in src.ram_runs()
        ]
        held = {(r.start_pfn, r.end_pfn) for r in core.data_runs()}
        for run in src.data_runs():
            for pfn in range(run.start_pfn, run.end_pfn, _BATCH):
                count = min(_BATCH, run.end_pfn - pfn)
                assert core.read_pages(pfn, count) == src.read_pages(pfn, count), hex(pfn)
                compared += count
        assert sum(e - s for s, e in held) == compared
    return compared
