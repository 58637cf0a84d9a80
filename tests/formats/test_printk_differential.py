# SPDX-License-Identifier: GPL-2.0-or-later
"""Our dmesg equals ``makedumpfile --dump-dmesg`` (Debian 12: 1.7.2) on the same vmcores.

Synthetic kernels are written as ELF (formats/elf.py), then converted by
makedumpfile itself to kdump-compressed (``-c -d 1``) and flattened (``-F``);
makedumpfile's log of each is compared with ours byte for byte. Real Debian
6.1 and 6.12 kernels dumped by the VM harness (diskdump.vm.qmp_vmcores, cached
in ~/.cache/diskdump/vmcores) are compared too.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from diskdump.formats.detect import opened_vmcore
from diskdump.formats.elf_write import write_elf
from diskdump.formats.printk import format_dmesg
from diskdump.formats.summary import read_kernel_log
from tests.builders.kernel import MIB, LogRecord, build_kernel
from tests.conftest import need, need_tool

pytestmark = pytest.mark.differential

SMALL = {"ram_size": 32 * MIB, "phys_base": 0x400000, "kernel_offset": 0}

ODD_RECORDS = [
    LogRecord(b"plain", 1_000),
    LogRecord(b"tab\there, cr\rthere, vt\v ff\f, bell\x07, esc\x1b[0m", 2_000),
    LogRecord("UTF-8: résumé ✓".encode(), 3_000),
    LogRecord(b"\xff\x80\x00 raw bytes", 4_000),
    LogRecord(b"", 5_000),
    LogRecord(b"text lost", 6_000, lost=True),
    LogRecord(b"0123456789abcdefghij", 7_000, truncate_to=9),
    LogRecord(b"multi\nline\n\nrecord\n", 8_000),
    LogRecord(b"late", 123_456_789_012_345_678),
]

CASES = {
    "default-64m": {},
    "no-caller-offset": {"with_caller_offset": False, **SMALL},
    "large-ring-no-wrap": {"desc_count_bits": 8, "text_size_bits": 15, **SMALL},
    "torn-head": {"torn_head": True, "gbpages": False, **SMALL},
    "reserved-head-5level": {
        "reserved_head": True,
        "pgtable_l5": True,
        "page_offset_base": 0xFF11000000000000,
        **SMALL,
    },
    "sme": {"sme_mask": 1 << 47, **SMALL},
    "odd-records": {"records": ODD_RECORDS, "desc_count_bits": 4, **SMALL},
    "many-small-rings": {"boot_records": 300, "desc_count_bits": 6, "text_size_bits": 11, **SMALL},
    "legacy-5.4": {"legacy_printk": True, "release": "5.4.0-200-generic", **SMALL},
    "ram-holes": {
        "gbpages": False,
        "ram_ranges": [(0x1000, 0x9F000), (0x100000, 0x1700000), (0x1900000, 64 * MIB)],
    },
}


def _makedumpfile_dmesg(vmcore: Path, out: Path) -> str:
    tool = need_tool("makedumpfile")
    out.unlink(missing_ok=True)
    done = subprocess.run(
        [tool, "--dump-dmesg", str(vmcore), str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out.read_bytes().decode("ascii")


def _ours(vmcore: Path, *, show_caller: bool = False) -> str:
    with opened_vmcore(vmcore) as source:
        return format_dmesg(read_kernel_log(source), show_caller=show_caller)


@pytest.mark.parametrize("case", sorted(CASES))
def test_dmesg_equals_makedumpfile(case: str, tmp_path: Path) -> None:
    kernel = build_kernel(**CASES[case])
    elf = kernel.write_elf(tmp_path / "vmcore.elf")
    theirs = _makedumpfile_dmesg(elf, tmp_path / "dmesg.elf")
    assert theirs.count("\n") >= len([r for r in kernel.expected if not r.dataless])
    assert _ours(elf) == theirs
    tool = need_tool("makedumpfile")
    kdump = tmp_path / "vmcore.kdump"
    subprocess.run(
        [tool, "-c", "-d", "1", str(elf), str(kdump)], check=True, capture_output=True, timeout=300
    )
    assert _makedumpfile_dmesg(kdump, tmp_path / "dmesg.kdump") == theirs
    assert _ours(kdump) == theirs
    flat = tmp_path / "vmcore.flat"
    with flat.open("wb") as out:
        subprocess.run(
            [tool, "-F", "-c", "-d", "1", str(elf)],
            check=True,
            stdout=out,
            stderr=subprocess.PIPE,
            timeout=300,
        )
    assert _ours(flat) == theirs


def test_known_divergence_block_ending_at_ring_end(tmp_path: Path) -> None:
    """formats.md §3.6: makedumpfile reads such a block (2025 kernels) as wrapped; we do not."""
    records = [LogRecord(b"a" * 56, 1), LogRecord(b"b" * 56, 2), LogRecord(b"c" * 8, 3)]
    kernel = build_kernel(records=records, text_size_bits=7, perfect_fit_fix=True, **SMALL)
    elf = kernel.write_elf(tmp_path / "vmcore.elf")
    ours = _ours(elf)
    assert ours == kernel.expected_dmesg and "b" * 56 in ours
    assert "b" * 56 not in _makedumpfile_dmesg(elf, tmp_path / "dmesg")


@pytest.mark.vm
@pytest.mark.slow
@pytest.mark.parametrize("series", ["6.1", "6.12"])
def test_real_qemu_vmcores(series: str, tmp_path: Path) -> None:
    """Real Debian kernels dumped over QMP by the VM harness: our log equals makedumpfile's.

    QEMU's ELF files put the program headers at offset 192, which makedumpfile
    1.7.2 cannot read; the memory is copied unchanged by our ELF writer and
    makedumpfile reads that copy. The flattened kdump-zlib dump of the same idle
    guest must give the same log (makedumpfile cannot read it: QEMU's phys_base).
    """
    need(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86 is not installed")
    from diskdump.vm import qmp_vmcores

    dumps = qmp_vmcores(series)
    with opened_vmcore(dumps.elf) as source:
        ours = format_dmesg(read_kernel_log(source))
        copy = tmp_path / "copy.elf"
        with copy.open("wb") as f:
            write_elf(source, f)
    assert "Linux version " + dumps.release in ours
    assert _makedumpfile_dmesg(copy, tmp_path / "dmesg") == ours
    copy.unlink()
    assert _ours(dumps.kdump_flat) == ours
