# SPDX-License-Identifier: GPL-2.0-or-later
"""`diskdump dump --level N` on a real vmcore: the dump holds exactly what the filter keeps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from diskdump.cli.main import main
from diskdump.devices import open_device
from diskdump.devices.base import BlockIO
from diskdump.formats.dumpimage import open_dump
from diskdump.formats.elf import ElfVmcore
from diskdump.formats.filtered import filter_source
from diskdump.formats.kdump_read import KdumpFile
from diskdump.formats.memsource import runs_page_count
from diskdump.formats.vmcoreinfo import vmcoreinfo_from_notes
from diskdump.partition.ops import read_label
from diskdump.vm.vmcores import QmpVmcores


@pytest.mark.vm
@pytest.mark.parametrize("level", [17, 31])
def test_dump_level_matches_the_filter(
    qmp_dumps_61: QmpVmcores, tmp_path: Path, level: int
) -> None:
    img = tmp_path / "dump.img"
    with img.open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, 640 << 20)
    assert main(["format", "--force", str(img)]) == 0
    args = ["dump", "--unarmed", "--device", str(img), "--source", str(qmp_dumps_61.elf)]
    assert main([*args, "--level", str(level), "--compress", "zstd"]) == 0

    with ElfVmcore.open(str(qmp_dumps_61.elf)) as core:
        info = vmcoreinfo_from_notes(core.notes)
        expected = filter_source(core, level & ~1, info)
        dev = open_device(str(img), writable=False)
        try:
            label = read_label(dev)
            image = open_dump(BlockIO(dev), label.reserve_blocks, name=str(img))
            assert image.header.applied_level == level
            held = {p for r in image.data_runs() for p in range(r.start_pfn, r.end_pfn)}
            kept = {p for r in expected.data_runs() for p in range(r.start_pfn, r.end_pfn)}
            assert held == kept  # zero pages are held as ZERO states, so the sets agree
            assert runs_page_count(expected.data_runs()) < runs_page_count(core.data_runs()) // 2
            for run in image.data_runs():  # every page, not a sample
                assert image.read_pages(run.start_pfn, run.pages) == core.read_pages(
                    run.start_pfn, run.pages
                )
        finally:
            dev.shutdown()


@pytest.mark.vm
def test_convert_level_31_matches_the_filter(qmp_dumps_61: QmpVmcores, tmp_path: Path) -> None:
    out = tmp_path / "vmcore"
    assert main(["convert", str(qmp_dumps_61.elf), str(out), "--level", "31"]) == 0
    with ElfVmcore.open(str(qmp_dumps_61.elf)) as core:
        info = vmcoreinfo_from_notes(core.notes)
        expected = filter_source(core, 30, info)
        with KdumpFile.open(out) as kfile:
            assert kfile.sub_header.dump_level == 31
            assert list(kfile.data_runs()) == list(expected.data_runs())
