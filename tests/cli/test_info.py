# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump info``, in-process through ``main(argv)``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from diskdump.cli.main import main
from diskdump.formats.elf_write import write_elf
from tests.builders.kernel import MIB, SyntheticKernel, build_kernel

SMALL = {"ram_size": 32 * MIB, "phys_base": 0x400000, "kernel_offset": 0}


@pytest.fixture(scope="module")
def crash(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticKernel, Path]:
    kernel = build_kernel(**SMALL)
    return kernel, kernel.write_elf(tmp_path_factory.mktemp("info") / "vmcore")


def test_text_summary(crash: tuple[SyntheticKernel, Path], capsys: pytest.CaptureFixture[str]):
    kernel, path = crash
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    rip = kernel.prstatus[1].rip
    assert f"vmcore:       {path} (elf, none compression, complete)\n" in out
    assert "release:      6.1.0-13-amd64\n" in out
    assert "panic:        Kernel panic - not syncing: sysrq triggered crash\n" in out
    assert "crash time:   2025-11-24T16:00:00Z\n" in out
    assert f"crashing cpu: 1 (rip {rip:#018x}, rsp " in out
    assert re.search(r"^memory:       31\.6 MiB \(33157120 bytes\)$", out, re.M)
    assert "warning" not in out


def test_json_summary(crash: tuple[SyntheticKernel, Path], capsys: pytest.CaptureFixture[str]):
    kernel, path = crash
    assert main(["info", "--json", str(path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["release"] == "6.1.0-13-amd64" and doc["machine"] == "x86_64"
    assert doc["panic"] == kernel.panic_line and doc["crash_time"] == "2025-11-24T16:00:00Z"
    assert (doc["cpus"], doc["crashing_cpu"], doc["complete"]) == (2, 1, True)
    assert (doc["format"], doc["compression"], doc["dump_level"]) == ("elf", "none", None)
    assert doc["rip"] == f"{kernel.prstatus[1].rip:#018x}"
    assert doc["memory_bytes"] == 32 * MIB - 0x61000 and doc["warnings"] == []
    assert doc["path"] == str(path)


def test_dmesg(crash: tuple[SyntheticKernel, Path], capsys: pytest.CaptureFixture[str]) -> None:
    kernel, path = crash
    assert main(["info", "--dmesg", str(path)]) == 0
    assert capsys.readouterr().out == kernel.expected_dmesg
    assert main(["info", "--dmesg", "--caller", str(path)]) == 0
    assert "] [   T1234] Kernel panic - not syncing: sysrq triggered crash\n" in (
        capsys.readouterr().out
    )
    assert main(["info", "--dmesg", "--json", str(path)]) == 0
    records = json.loads(capsys.readouterr().out)["records"]
    assert [r["text"] for r in records] == [r.text.decode() for r in kernel.expected]
    assert records[-1]["caller"] == "T1234" and records[-1]["flags"] == []


def test_live_dump_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kernel = build_kernel(**SMALL, with_vmcoreinfo=False)
    path = tmp_path / "vmcore"
    with path.open("wb") as f:
        write_elf(kernel.source, f)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "release:      unknown\n" in out and "panic:        none found\n" in out
    assert re.search(r"^warning:      no VMCOREINFO note: ", out, re.M)
    assert main(["info", "--dmesg", str(path)]) == 1
    err = capsys.readouterr().err
    assert re.search(r"^diskdump: error: no VMCOREINFO note in the notes", err, re.M)
    assert "diskdump: hint: QEMU writes it only with -device vmcoreinfo" in err


def test_not_a_vmcore(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk"
    junk.write_text("hello\n")
    assert main(["info", str(junk)]) == 1
    err = capsys.readouterr().err
    assert re.search(r"error: not a vmcore \(neither ELF, kdump-compressed nor flattened\)", err)
    assert main(["info", str(tmp_path / "missing")]) == 1
    assert "No such file or directory" in capsys.readouterr().err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: diskdump info [-h] [--json] [--dmesg] [--caller] PATH" in out
    assert "makedumpfile --dump-dmesg" in out and "exit status:" in out
