# SPDX-License-Identifier: GPL-2.0-or-later
"""Dump levels on real vmcores agree with makedumpfile's, page for page.

Route: QEMU's dump-guest-memory ELF (tests/vm/conftest.py) cannot be read by
makedumpfile 1.7.2 (its program headers sit at offset 192, after a section
header table), so it is rewritten once with :func:`diskdump.formats.elf.write_elf`
(program headers at 64, same notes and memory) and cached beside it. Then, for
each level, ``makedumpfile -d N`` writes a kdump-compressed file whose 2nd bitmap
is read with :class:`~diskdump.formats.kdump_read.KdumpFile`; zero pages are
the pfns whose descriptors share the one zero-page offset (makedumpfile keeps
them in the bitmap and points them at a single zero page). Our
:func:`~diskdump.formats.filtered.filter_source` must keep exactly the same
pages, except for these deliberate differences, each checked page by page:

1. pfns with no struct page (QEMU's VGA and BIOS regions at 0xfd000000 and
   0xfffc0000 are PT_LOADs of the dump but lie in no mem_map section):
   makedumpfile cuts max_mapnr to the end of the last section with a mem_map
   and drops them; we keep what the source holds unless the level excludes it.
2. Linux 6.12 only, levels with bit 8: slab pages whose mapping word has bit 0
   set. makedumpfile 1.7.2 calls them anonymous and drops them; 1.7.6 fixed it
   (commit bad2a7c, "Fix wrong exclusion of Slab pages on Linux 6.10-rc1 and
   later"), and we follow the fix: kernel slab memory is what a crash needs.
"""

from __future__ import annotations

import collections
import logging
import os
import struct
import subprocess
import time
from pathlib import Path

import pytest

from diskdump.formats.elf import ElfVmcore, write_elf
from diskdump.formats.filtered import filter_source, intersect_runs, subtract_runs
from diskdump.formats.kdump_read import KdumpFile
from diskdump.formats.memmap import MemMapRange, SparseLayout, iter_mem_map
from diskdump.formats.memsource import PfnRun, merge_runs, runs_page_count
from diskdump.formats.pagetypes import PageLayout
from diskdump.formats.x86_64 import KernelMemory
from diskdump.vm import QmpVmcores
from tests.conftest import need_tool

pytestmark = [pytest.mark.vm, pytest.mark.differential]

log = logging.getLogger(__name__)

LEVELS = (1, 2, 4, 8, 16, 31)
#: makedumpfile keeps a zero page's bit and points its descriptor at one shared page
ZERO_DESC_MIN_SHARERS = 2


def makedumpfile_input(dumps: QmpVmcores) -> Path:
    """The QMP ELF rewritten with program headers at offset 64 (cached beside it)."""
    out = dumps.elf.with_name(f"{dumps.elf.stem}.phoff64.elf")
    source_mtime = dumps.elf.stat().st_mtime
    if not out.is_file() or out.stat().st_mtime < source_mtime:
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it is guest memory
        with ElfVmcore.open(dumps.elf) as source, os.fdopen(fd, "wb") as f:
            write_elf(source, f)
        tmp.rename(out)
    return out


def makedumpfile_kept(elf: Path, level: int, workdir: Path, *, unused_vm: bool = False):  # type: ignore[no-untyped-def]
    """(2nd-bitmap runs, zero pfns) of ``makedumpfile -d level`` on ``elf``."""
    tool = need_tool("makedumpfile")
    out = workdir / f"d{level}{'e' if unused_vm else ''}.kdump"
    extra = ["-e", "--work-dir", str(workdir)] if unused_vm else []
    run = subprocess.run(
        [tool, "-d", str(level), *extra, str(elf), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    with KdumpFile.open(out) as kfile:
        runs = list(kfile.data_runs())
        offsets: list[tuple[int, int]] = []
        for r in runs:
            descs = kfile.read_descs(kfile.desc_index(r.start_pfn), r.pages)
            offsets.extend((r.start_pfn + i, d.offset) for i, d in enumerate(descs))
    sharers = collections.Counter(offset for _, offset in offsets)
    zero = [pfn for pfn, offset in offsets if sharers[offset] >= ZERO_DESC_MIN_SHARERS]
    return runs, merge_runs([PfnRun(p, p + 1) for p in zero])


class Kernel:
    """One real vmcore opened for our side of the comparison."""

    def __init__(self, dumps: QmpVmcores) -> None:
        self.source = ElfVmcore.open(dumps.elf)
        info = self.source.vmcoreinfo
        assert info is not None, "the QMP dump lacks VMCOREINFO"
        self.info = info
        self.kmem = KernelMemory(self.source, info)
        self.layout = PageLayout.from_vmcoreinfo(info)
        sparse = SparseLayout.from_vmcoreinfo(info)
        self.mem_maps = list(iter_mem_map(self.kmem, sparse, self.source.max_pfn))
        self.described = merge_runs([PfnRun(m.start_pfn, m.end_pfn) for m in self.mem_maps])

    def struct_page(self, pfn: int) -> bytes:
        mm: MemMapRange = next(m for m in self.mem_maps if m.start_pfn <= pfn < m.end_pfn)
        size = self.layout.struct_size
        return self.kmem.read_virt(mm.mem_map + (pfn - mm.start_pfn) * size, size)

    def is_slab_with_anon_bit(self, pfn: int) -> bool:
        page = self.struct_page(pfn)
        (mapping,) = struct.unpack_from("<Q", page, self.layout.off_mapping)
        (mapcount,) = struct.unpack_from("<I", page, self.layout.off_mapcount)
        return bool(mapping & 1) and mapcount == self.layout.slab_value


@pytest.fixture(scope="module")
def kernel(qmp_dumps: QmpVmcores) -> Kernel:
    return Kernel(qmp_dumps)


def _explain(kernel: Kernel, level: int, only_ours: list[PfnRun]) -> dict[str, int]:
    """Sort the pages only we keep into the documented reasons; fail on anything else."""
    no_struct_page = subtract_runs(only_ours, kernel.described)
    rest = intersect_runs(only_ours, kernel.described)
    slab = [p for r in rest for p in range(r.start_pfn, r.end_pfn)]
    if slab:
        assert kernel.layout.slab_value is not None, f"6.1 level {level}: unexplained {rest}"
        assert level & 8, f"level {level}: unexplained {rest}"
        odd = [hex(p) for p in slab if not kernel.is_slab_with_anon_bit(p)]
        assert not odd, f"pages kept only by us that are not slab: {odd[:20]}"
    return {"no_struct_page": runs_page_count(no_struct_page), "slab": len(slab)}


@pytest.mark.parametrize("level", LEVELS)
def test_level_agrees_with_makedumpfile(
    qmp_dumps: QmpVmcores, kernel: Kernel, level: int, tmp_path: Path
) -> None:
    elf = makedumpfile_input(qmp_dumps)
    md_runs, md_zero = makedumpfile_kept(elf, level, tmp_path)
    md_kept = subtract_runs(md_runs, md_zero) if level & 1 else md_runs
    started = time.monotonic()
    ours = filter_source(kernel.source, level, kernel.info, kmem=kernel.kmem)
    kept = list(ours.data_runs())
    seconds = time.monotonic() - started
    assert subtract_runs(md_kept, kept) == [], "makedumpfile keeps pages we exclude"
    reasons = _explain(kernel, level, subtract_runs(kept, md_kept))
    if kernel.layout.slab_value is None:
        assert reasons["slab"] == 0
    log.warning(
        "%s level %d: kept ours %d, makedumpfile %d (no struct page %d, slab %d), %.2f s",
        qmp_dumps.release, level, runs_page_count(kept), runs_page_count(md_kept),
        reasons["no_struct_page"], reasons["slab"], seconds,
    )  # fmt: skip


def test_unused_mem_map_agrees_with_makedumpfile(
    qmp_dumps: QmpVmcores, kernel: Kernel, tmp_path: Path
) -> None:
    elf = makedumpfile_input(qmp_dumps)
    plain, _ = makedumpfile_kept(elf, 31, tmp_path)
    trimmed, _ = makedumpfile_kept(elf, 31, tmp_path, unused_vm=True)
    theirs = subtract_runs(plain, trimmed)
    base = filter_source(kernel.source, 30, kernel.info, kmem=kernel.kmem)
    ours_e = filter_source(
        kernel.source, 30, kernel.info, kmem=kernel.kmem, exclude_unused_vmemmap=True
    )
    ours = subtract_runs(list(base.data_runs()), list(ours_e.data_runs()))
    assert runs_page_count(theirs) > 0
    assert ours == theirs


def test_numpy_and_python_walks_agree(kernel: Kernel) -> None:
    times = {}
    results = {}
    for use_numpy in (True, False):
        started = time.monotonic()
        filtered = filter_source(
            kernel.source, 30, kernel.info, kmem=kernel.kmem, use_numpy=use_numpy
        )
        times[use_numpy] = time.monotonic() - started
        results[use_numpy] = (filtered.types.runs, filtered.types.counts)
    assert results[True] == results[False]
    pages = filtered.types.classified_pages
    log.warning(
        "%s: %d struct pages classified: numpy %.0f pages/s, python %.0f pages/s",
        kernel.info.osrelease, pages, pages / times[True], pages / times[False],
    )  # fmt: skip
