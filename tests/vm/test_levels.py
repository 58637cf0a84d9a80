# SPDX-License-Identifier: GPL-2.0-or-later
"""Dump levels on real vmcores agree with makedumpfile's, page for page.

Route: QEMU's dump-guest-memory ELF (tests/vm/conftest.py) cannot be read by
makedumpfile 1.7.2 (its program headers sit at offset 192, after a section
header table), so it is rewritten once with :func:`diskdump.formats.elf_write.write_elf`
(program headers at 64, same notes and memory) and cached beside it. Then, for
each level, ``makedumpfile -l -d N`` (lzo: the bitmaps do not depend on the
codec) writes a kdump-compressed file whose 2nd bitmap is read with
:class:`~diskdump.formats.kdump_read.KdumpFile`; zero pages are the pfns
whose descriptors share the one zero-page offset (makedumpfile keeps them in
the bitmap and points them at a single zero page). Our
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
3. Linux 6.12 only: compound pages. makedumpfile 1.7.2 reads the compound
   order from OFFSET(page.compound_order), which 6.12 no longer exports, so it
   takes every compound page for order 0: it drops an excluded head but keeps
   its tail pages, and it recognises no hugetlb page at all (no
   HUGETLB_PAGE_DTOR). We read the order from the first tail's flags and the
   hugetlb page type, as makedumpfile >= 1.7.6 does: the tails we drop belong
   to a head we drop, and the heads are hugetlb pages.

Two guests per kernel: the harness's QMP guest (tmpfs files, a few processes),
and a busier one built here whose memory also holds compound pages of every
kind the rules treat: 8 free hugetlb pages (2 MiB), shmem THPs in a
``huge=always`` tmpfs (page cache, order 9) and anonymous THPs.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from diskdump.formats.elf import ElfVmcore
from diskdump.formats.elf_write import write_elf
from diskdump.formats.filtered import filter_source, intersect_runs, subtract_runs
from diskdump.formats.kdump_read import KdumpFile
from diskdump.formats.memmap import MemMapRange, SparseLayout, iter_mem_map
from diskdump.formats.memsource import PfnRun, merge_runs, runs_page_count
from diskdump.formats.pagetypes import PageLayout
from diskdump.formats.sizeestimate import (
    estimate_meminfo,
    estimate_source,
    parse_meminfo,
    parse_zoneinfo,
)
from diskdump.formats.x86_64 import KernelMemory
from diskdump.vm import QmpVmcores, fetch_busybox, fetch_kernel
from diskdump.vm.assets import cache_dir, cache_lock
from diskdump.vm.initramfs import Initramfs, guest_script
from diskdump.vm.kmod import resolve_modules
from diskdump.vm.qemu import Guest, GuestSpec
from diskdump.vm.vmcores import GUEST_MODULES
from tests.conftest import need_tool
from tests.vm.conftest import KERNELS, need_vm_tools

pytestmark = [pytest.mark.vm, pytest.mark.differential]

log = logging.getLogger(__name__)

LEVELS = (1, 2, 4, 8, 16, 31)
#: /init of the busier guest: the harness's workload plus compound pages of every kind
BUSY_INIT = """#!/bin/sh
. /etc/common.sh
setup_base
run_workload
echo 8 > /proc/sys/vm/nr_hugepages
echo always > /sys/kernel/mm/transparent_hugepage/enabled
echo always > /sys/kernel/mm/transparent_hugepage/shmem_enabled
mkdir -p /mnt/thp && mount -t tmpfs -o huge=always tmpfs /mnt/thp
head -c 16777216 /dev/urandom > /mnt/thp/big
for n in 1 2; do
    sh -c 'blob=$(head -c 8388608 /dev/zero | tr "\\0" "U"); sleep 100000; echo $blob' &
done
sleep 3
sed 's/^/DISKDUMP-MEMINFO: /' /proc/meminfo
sed 's/^/DISKDUMP-ZONEINFO: /' /proc/zoneinfo
say "levels workload ready"
while true; do sleep 60; done
"""
BUSY_READY = r"DISKDUMP-VM: levels workload ready"
#: prefix of the guest's /proc/meminfo lines on its console, printed just before the dump
MEMINFO_PREFIX = "DISKDUMP-MEMINFO: "
ZONEINFO_PREFIX = "DISKDUMP-ZONEINFO: "
#: seconds from QEMU start to the ready marker (about 20 s here under TCG)
BUSY_BOOT_TIMEOUT = 300.0
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
        [tool, "-l", "-d", str(level), *extra, str(elf), str(out)],
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

    def pfn_of_struct_page(self, vaddr: int) -> int:
        size = self.layout.struct_size
        mm = next(
            m for m in self.mem_maps if 0 <= vaddr - m.mem_map < (m.end_pfn - m.start_pfn) * size
        )
        return mm.start_pfn + (vaddr - mm.mem_map) // size

    def compound_kind(self, pfn: int) -> tuple[str, int]:
        """("tail", head pfn), ("hugetlb", pfn) for a hugetlb head, else ("other", pfn)."""
        page = self.struct_page(pfn)
        (flags,) = struct.unpack_from("<Q", page, self.layout.off_flags)
        (head,) = struct.unpack_from("<Q", page, self.layout.off_compound_head)
        (mapcount,) = struct.unpack_from("<I", page, self.layout.off_mapcount)
        if head & 1:
            return "tail", self.pfn_of_struct_page(head - 1)
        if flags & self.layout.head_mask and mapcount == self.layout.hugetlb_value:
            return "hugetlb", pfn
        return "other", pfn

    def is_slab_with_anon_bit(self, pfn: int) -> bool:
        page = self.struct_page(pfn)
        (mapping,) = struct.unpack_from("<Q", page, self.layout.off_mapping)
        (mapcount,) = struct.unpack_from("<I", page, self.layout.off_mapcount)
        return bool(mapping & 1) and mapcount == self.layout.slab_value


def busy_vmcore(series: str) -> QmpVmcores:
    """dump-guest-memory of the busier guest (cached as vmcores/levels-<release>.elf)."""
    assets = fetch_kernel(series)
    out = cache_dir() / "vmcores" / f"levels-{assets.release}.elf"
    console = out.with_suffix(".console.log")
    with cache_lock(f"levels-{assets.release}"):
        if not (out.is_file() and console.is_file()):
            with tempfile.TemporaryDirectory(prefix="diskdump-levels-") as tmp:
                work = Path(tmp)
                image = Initramfs()
                image.add_busybox(fetch_busybox())
                image.add_modules(resolve_modules(assets.modules, list(GUEST_MODULES)))
                image.add_bytes("/etc/common.sh", guest_script("common.sh"))
                image.add_bytes("/init", BUSY_INIT.encode(), 0o755)
                image.write(work / "initrd.img")
                spec = GuestSpec(
                    kernel=assets.vmlinuz,
                    initrd=work / "initrd.img",
                    append="console=ttyS0 panic=-1 quiet loglevel=4",
                )
                with Guest(spec, work) as guest:
                    guest.wait_for(BUSY_READY, BUSY_BOOT_TIMEOUT)
                    guest.dump_memory(work / "dump.elf", "elf")
                shutil.copyfile(work / "console.log", console)
                os.chmod(work / "dump.elf", 0o600)
                shutil.move(work / "dump.elf", out)
    return QmpVmcores(release=assets.release, elf=out, kdump_flat=out, console_log=console)


@pytest.fixture(
    scope="module",
    params=[(k, busy) for busy in (False, True) for k in KERNELS],
    ids=lambda p: f"linux-{p[0]}-{'busy' if p[1] else 'qmp'}",
)
def dumps(request: pytest.FixtureRequest) -> QmpVmcores:
    """The QMP guest's dump and the busier guest's dump of each kernel series."""
    need_vm_tools()
    series, busy = request.param
    if busy:
        return busy_vmcore(series)
    from diskdump.vm import qmp_vmcores

    return qmp_vmcores(series)


@pytest.fixture(scope="module")
def kernel(dumps: QmpVmcores) -> Kernel:
    return Kernel(dumps)


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


def _explain_theirs(kernel: Kernel, level: int, kept: list[PfnRun], only_md: list[PfnRun]) -> int:
    """Pages only makedumpfile keeps must be 6.12 compound pages it cannot size (reason 3)."""
    pfns = [p for r in only_md for p in range(r.start_pfn, r.end_pfn)]
    if not pfns:
        return 0
    assert kernel.layout.hugetlb_value is not None, f"level {level}: we drop {only_md[:10]}"
    for pfn in pfns:
        kind, head = kernel.compound_kind(pfn)
        if kind == "tail":
            assert not intersect_runs([PfnRun(head, head + 1)], kept), (
                f"pfn {pfn:#x}: we drop a tail whose head {head:#x} we keep"
            )
        else:
            assert kind == "hugetlb" and level & 8, f"pfn {pfn:#x} dropped only by us ({kind})"
    return len(pfns)


@pytest.mark.parametrize("level", LEVELS)
def test_level_agrees_with_makedumpfile(
    dumps: QmpVmcores, kernel: Kernel, level: int, tmp_path: Path
) -> None:
    elf = makedumpfile_input(dumps)
    md_runs, md_zero = makedumpfile_kept(elf, level, tmp_path)
    md_kept = subtract_runs(md_runs, md_zero) if level & 1 else md_runs
    started = time.monotonic()
    ours = filter_source(kernel.source, level, kernel.info, kmem=kernel.kmem)
    kept = list(ours.data_runs())
    seconds = time.monotonic() - started
    compound = _explain_theirs(kernel, level, kept, subtract_runs(md_kept, kept))
    reasons = _explain(kernel, level, subtract_runs(kept, md_kept))
    if kernel.layout.slab_value is None:
        assert reasons["slab"] == 0
    log.warning(
        "%s %s level %d: kept ours %d, makedumpfile %d (only ours: no struct page %d, "
        "slab %d; only theirs: compound %d), %.2f s",
        dumps.release,
        dumps.elf.name,
        level,
        runs_page_count(kept),
        runs_page_count(md_kept),
        reasons["no_struct_page"],
        reasons["slab"],
        compound,
        seconds,
    )


def test_unused_mem_map_agrees_with_makedumpfile(
    dumps: QmpVmcores, kernel: Kernel, tmp_path: Path
) -> None:
    elf = makedumpfile_input(dumps)
    plain, _ = makedumpfile_kept(elf, 31, tmp_path)
    trimmed, _ = makedumpfile_kept(elf, 31, tmp_path, unused_vm=True)
    theirs = subtract_runs(plain, trimmed)
    base = filter_source(kernel.source, 30, kernel.info, kmem=kernel.kmem)
    ours_e = filter_source(
        kernel.source, 30, kernel.info, kmem=kernel.kmem, exclude_unused_vmemmap=True
    )
    ours = subtract_runs(list(base.data_runs()), list(ours_e.data_runs()))
    assert runs_page_count(theirs) > 0 and runs_page_count(ours) > 0
    same_bitmap = intersect_runs(plain, kernel.described) == intersect_runs(
        list(base.data_runs()), kernel.described
    )
    if same_bitmap:
        assert ours == theirs
    else:
        # the bitmaps differ (reasons 2 and 3 above), so may the mem_map pages they free
        log.warning(
            "%s: -e drops %d pages, makedumpfile %d (bitmaps differ)",
            dumps.elf.name,
            runs_page_count(ours),
            runs_page_count(theirs),
        )


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
        kernel.info.osrelease,
        pages,
        pages / times[True],
        pages / times[False],
    )


@pytest.mark.parametrize("kernel_series", KERNELS)
def test_meminfo_estimate_covers_the_real_size(kernel_series: str) -> None:
    """The /proc/meminfo estimate plus its margin covers the exact size of the same memory."""
    need_vm_tools()
    dumps = busy_vmcore(kernel_series)
    console = dumps.console_log.read_text(errors="replace").splitlines()

    def lines(prefix: str) -> str:
        return "\n".join(line.split(prefix, 1)[1] for line in console if prefix in line)

    meminfo = parse_meminfo(lines(MEMINFO_PREFIX))
    present = parse_zoneinfo(lines(ZONEINFO_PREFIX))
    assert "MemTotal" in meminfo and present > 0
    with ElfVmcore.open(dumps.elf) as source:
        for level in (0, 2, 8, 16, 30):
            exact = estimate_source(source, level)
            guess = estimate_meminfo(meminfo, level, present_pages=present)
            error = guess.predicted_size - guess.margin_size - exact.predicted_size
            log.warning(
                "%s level %d: exact %d bytes, meminfo %d + margin %d (error %+d)",
                dumps.release,
                level,
                exact.predicted_size,
                guess.predicted_size - guess.margin_size,
                guess.margin_size,
                error,
            )
            assert abs(error) <= guess.margin_size
