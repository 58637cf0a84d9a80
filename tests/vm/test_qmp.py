# SPDX-License-Identifier: GPL-2.0-or-later
"""Issue 2's real-kernel test: QEMU dumps of running Debian kernels read by diskdump and others.

Each Debian kernel (6.1 and 6.12) boots under TCG with ``-device vmcoreinfo``
and runs a small workload; ``dump-guest-memory`` writes an ELF and a flattened
kdump-zlib file of the same memory (tests/vm/conftest.py, cached by release).

makedumpfile 1.7.2 cannot read either QEMU file directly: the ELF has its
program headers at offset 192 (after a section header table) and the
flattened kdump carries a phys_base QEMU parsed as hex from a decimal string.
The route to makedumpfile is therefore our converter: the ELF converted to
kdump-compressed by ``diskdump convert`` is what makedumpfile, crash and drgn
read. Both quirks are asserted below, so the day QEMU or makedumpfile change,
these tests say so.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from diskdump.cli.main import main
from diskdump.formats.detect import opened_vmcore
from diskdump.formats.kdump import DiskDumpHeader, KdumpSubHeader
from diskdump.vm import QmpVmcores
from tests.conftest import need_tool
from tests.differential.readers import (
    crash_osrelease,
    drgn_compare,
    libkdumpfile_compare,
    makedumpfile_dmesg,
    run_tool,
)

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(900)]

#: the line the guest's workload writes to /dev/kmsg before the dump (qmp-init.sh)
READY_LINE = "diskdump-vm: ready for dump-guest-memory on {release}"
#: phys_base is an unsigned long in the sub-header, printed signed in VMCOREINFO
_U64 = (1 << 64) - 1


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


@pytest.fixture(scope="module")
def converted(qmp_dumps: QmpVmcores, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The QMP ELF converted to kdump-compressed (zlib, level 1) by diskdump convert."""
    out = tmp_path_factory.mktemp("qmp") / f"{qmp_dumps.release}.kdump"
    argv = ["convert", str(qmp_dumps.elf), str(out), "--format", "kdump"]
    code = main([*argv, "--compress", "zlib", "--level", "1", "--quiet"])
    assert code == 0
    return out


def test_info_reads_qemu_elf(qmp_dumps: QmpVmcores, capsys: pytest.CaptureFixture[str]) -> None:
    info = json.loads(_cli(capsys, "info", "--json", str(qmp_dumps.elf)))
    assert info["format"] == "elf"
    assert info["release"] == qmp_dumps.release
    assert info["machine"] == "x86_64"
    assert info["cpus"] == 2  # -smp 2: one NT_PRSTATUS per CPU
    assert info["complete"] is True


def test_makedumpfile_cannot_read_qemu_elf(qmp_dumps: QmpVmcores, tmp_path: Path) -> None:
    # QEMU 7.2 puts the program headers at 192, makedumpfile assumes 64 (vm-notes.md)
    proc = run_tool(
        need_tool("makedumpfile"), "--dump-dmesg", str(qmp_dumps.elf), str(tmp_path / "d")
    )
    assert proc.returncode != 0
    assert re.search(r"Can't get the number of PT_LOAD", proc.stdout + proc.stderr)


def test_dmesg_equals_makedumpfile(
    qmp_dumps: QmpVmcores, converted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ours = _cli(capsys, "info", "--dmesg", str(qmp_dumps.elf))
    theirs = makedumpfile_dmesg(converted, tmp_path)
    assert READY_LINE.format(release=qmp_dumps.release) in ours
    assert ours.count("\n") > 200
    assert ours == theirs


def test_flattened_phys_base_quirk(
    qmp_dumps: QmpVmcores, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reassembled = tmp_path / "qemu.kdump"
    with qmp_dumps.kdump_flat.open("rb") as stream:
        proc = subprocess.run(
            [need_tool("makedumpfile"), "-R", str(reassembled)],
            stdin=stream,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with reassembled.open("rb") as f:
        header = DiskDumpHeader.unpack(f.read(DiskDumpHeader.SIZE))
        f.seek(header.block_size)
        sub = KdumpSubHeader.unpack(f.read(KdumpSubHeader.SIZE))
    stored = sub.phys_base & _U64
    with opened_vmcore(qmp_dumps.elf) as source:
        info = source.vmcoreinfo
        assert info is not None
        text = info.get("NUMBER(phys_base)")
    assert text is not None
    true_phys_base = int(text) & _U64
    misparsed = int(text, 16) & _U64  # what QEMU's strtoull(..., 16) gives
    assert stored == misparsed != true_phys_base
    # makedumpfile trusts the field and fails; our reader uses VMCOREINFO
    failed = run_tool(
        need_tool("makedumpfile"), "--dump-dmesg", str(reassembled), str(tmp_path / "x")
    )
    assert failed.returncode != 0
    summary = json.loads(_cli(capsys, "info", "--json", str(qmp_dumps.kdump_flat)))
    assert any(re.search(r"phys_base .* disagrees with VMCOREINFO", w) for w in summary["warnings"])
    ours_flat = _cli(capsys, "info", "--dmesg", str(qmp_dumps.kdump_flat))
    ours_elf = _cli(capsys, "info", "--dmesg", str(qmp_dumps.elf))
    assert ours_flat == ours_elf


def test_converted_opens_in_crash(qmp_dumps: QmpVmcores, converted: Path) -> None:
    assert crash_osrelease(converted) == qmp_dumps.release


def test_converted_pages_match_source(qmp_dumps: QmpVmcores, converted: Path) -> None:
    """Every page our kdump holds equals the QEMU ELF's page, and no non-zero page was dropped."""
    with opened_vmcore(qmp_dumps.elf) as elf, opened_vmcore(converted) as kdump:
        size = elf.page_size
        zero = bytes(size)
        held = [(r.start_pfn, r.end_pfn) for r in kdump.data_runs()]
        compared = dropped_nonzero = 0
        for run in elf.data_runs():
            for pfn in range(run.start_pfn, run.end_pfn):
                page = elf.read_pages(pfn, 1)
                if any(start <= pfn < end for start, end in held):
                    assert kdump.read_pages(pfn, 1) == page, f"pfn {pfn:#x}"
                    compared += 1
                elif page != zero:
                    dropped_nonzero += 1
    assert dropped_nonzero == 0
    assert compared > 10_000


def test_converted_read_by_drgn_and_libkdumpfile(
    qmp_dumps: QmpVmcores, converted: Path, tmp_path: Path
) -> None:
    with opened_vmcore(converted) as ours:
        drgn_pages = drgn_compare(converted, ours)
        lkf_pages, facts = libkdumpfile_compare(converted, ours, tmp_path)
    assert drgn_pages == lkf_pages > 10_000
    assert facts["release"] == qmp_dumps.release
    assert facts["arch"] == "x86_64"
