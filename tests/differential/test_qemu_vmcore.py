# SPDX-License-Identifier: GPL-2.0-or-later
"""A real kernel's memory: QEMU's dump-guest-memory of Debian's kernels, converted and re-read.

The dumps come from the VM tier's cache (``diskdump.vm.qmp_vmcores``: a
512 MiB TCG guest running Debian's 6.1 or 6.12 kernel, dumped over QMP; built
on first use, about a minute). We convert the ELF dump to kdump-compressed
and check that crash, makedumpfile, libkdumpfile and drgn open the result,
that makedumpfile extracts the same log as our own printk reader, and that
every page read back through libkdumpfile and drgn equals the ELF's. We also
read QEMU's own flattened kdump-zlib output (wrong sub-header phys_base and
all) and decompress every page of it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from diskdump.formats.elf import ElfVmcore
from diskdump.formats.kdump_read import KdumpFile, validate_kdump
from diskdump.formats.memsource import runs_page_count
from diskdump.formats.printk import format_dmesg
from diskdump.formats.summary import read_kernel_log
from diskdump.savecore.convert import convert
from diskdump.vm import QmpVmcores, qmp_vmcores
from tests.conftest import need
from tests.differential.readers import (
    crash_osrelease,
    drgn_compare,
    libkdumpfile_compare,
    makedumpfile_dmesg,
)

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.differential]


@pytest.fixture(scope="module", params=["6.1", "6.12"], ids=lambda k: f"linux-{k}")
def dumps(request: pytest.FixtureRequest) -> QmpVmcores:
    need(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86_64 is not installed")
    need(shutil.which("apt-get") is not None, "apt-get is needed to fetch the Debian kernels")
    return qmp_vmcores(request.param)


def test_converted_qemu_vmcore_opens_everywhere(dumps: QmpVmcores, tmp_path: Path) -> None:
    out = tmp_path / "vmcore"
    result = convert(dumps.elf, out, compress="zlib", level=1, threads=2)
    assert result.pages > 100_000  # a 512 MiB guest
    assert crash_osrelease(out) == dumps.release
    with ElfVmcore.open(dumps.elf) as elf:
        ours = format_dmesg(read_kernel_log(elf))
        assert "ready for dump-guest-memory" in ours
        assert makedumpfile_dmesg(out, tmp_path) == ours
        with KdumpFile.open(out) as kfile:
            assert kfile.data_runs() == list(elf.data_runs())
            assert kfile.header.uts.release == dumps.release
        pages, facts = libkdumpfile_compare(out, elf, tmp_path)
        assert facts["arch"] == "x86_64" and facts["release"] == dumps.release
        assert pages == runs_page_count(elf.data_runs()) == result.pages
        assert drgn_compare(out, elf) == pages


def test_we_read_qemu_flattened_kdump(dumps: QmpVmcores) -> None:
    with KdumpFile.open(dumps.kdump_flat) as kfile:
        assert kfile.flattened and kfile.header.header_version == 6
        assert kfile.data_runs() == kfile.ram_runs()  # QEMU dumps every RAM page
        assert validate_kdump(kfile) == runs_page_count(kfile.data_runs())
