# SPDX-License-Identifier: GPL-2.0-or-later
"""x86_64 kernel virtual memory: phys_base formula and page-table walk on built kernels."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskdump.errors import CorruptDataError, DiskdumpError, ExcludedPageError
from diskdump.formats.detect import opened_vmcore
from diskdump.formats.elf_write import write_elf
from diskdump.formats.notes import prstatus_notes
from diskdump.formats.vmcoreinfo import VmcoreInfo, vmcoreinfo_from_notes
from diskdump.formats.x86_64 import START_KERNEL_MAP, KernelMemory
from tests.builders.kernel import GIB, MIB, PAGE_SIZE, SyntheticKernel, build_kernel
from tests.conftest import need

#: builder configurations covering 4/5-level paging, page sizes and SME
LAYOUTS = {
    "4level-1g": {},
    "4level-2m-4k": {"gbpages": False},
    "5level": {"pgtable_l5": True, "page_offset_base": 0xFF11000000000000},
    "sme": {"sme_mask": 1 << 47, "gbpages": False},
    "phys-base-0": {"phys_base": 0, "kernel_offset": 0x2200000},
    "ram-holes": {
        "gbpages": False,
        "ram_ranges": [(0x1000, 0x9F000), (0x100000, 0x1700000), (0x1900000, 64 * MIB)],
    },
}


def _kmem(kernel: SyntheticKernel, text: str | None = None) -> KernelMemory:
    return KernelMemory(kernel.source, VmcoreInfo(text if text is not None else kernel.vmcoreinfo))


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def kernel(request: pytest.FixtureRequest) -> SyntheticKernel:
    return build_kernel(**LAYOUTS[request.param])


def test_kernel_image_formula_agrees_with_walk(kernel: SyntheticKernel) -> None:
    kmem = _kmem(kernel)
    for name, vaddr in kernel.symbols.items():
        if vaddr >= START_KERNEL_MAP:
            assert kmem.kernel_image_phys(vaddr) == kernel.virt_to_phys(vaddr), name
            assert kmem.walk(vaddr).paddr == kernel.virt_to_phys(vaddr), name


def test_page_sizes_of_each_area(kernel: SyntheticKernel) -> None:
    kmem = _kmem(kernel)
    text = kmem.walk(kernel.symbols["_stext"])
    assert (text.page_size, text.level) == (2 * MIB, "pmd")
    bss = kmem.walk(kernel.symbols["prb"])
    assert (bss.page_size, bss.level) == (PAGE_SIZE, "pte")
    direct = kmem.walk(kernel.spec.page_offset_base + 40 * MIB + 123)
    expected = GIB if kernel.spec.gbpages else 2 * MIB
    assert direct.page_size == expected
    assert direct.paddr == 40 * MIB + 123


def test_read_virt_across_pages_and_mappings(kernel: SyntheticKernel) -> None:
    kmem = _kmem(kernel)
    memory = kernel.source.memory
    # across 4 KiB pages of the image's second half
    vaddr = kernel.symbols["init_top_pgt"] + PAGE_SIZE - 100
    paddr = kernel.virt_to_phys(vaddr)
    assert kmem.read_virt(vaddr, 300) == memory[paddr : paddr + 300]
    # across a 2 MiB boundary of the direct map
    vaddr = kernel.spec.page_offset_base + 6 * MIB - 50
    assert kmem.read_virt(vaddr, 100) == memory[6 * MIB - 50 : 6 * MIB + 50]
    assert kmem.read_u64(kernel.symbols["prb"]) == kernel.symbols["printk_rb_dynamic"]
    assert kmem.read_u32(kernel.symbols["node_online_map"]) == 1


@settings(max_examples=60, deadline=None)
@given(offset=st.integers(min_value=0x100000, max_value=60 * MIB), size=st.integers(1, 9000))
def test_direct_map_reads_match_ram(offset: int, size: int) -> None:
    kernel = _SHARED
    kmem = _kmem(kernel)
    vaddr = kernel.spec.page_offset_base + offset
    assert kmem.read_virt(vaddr, size) == kernel.source.memory[offset : offset + size]


_SHARED = build_kernel(gbpages=False)


def test_vmalloc_range_unmapped_names_level() -> None:
    kernel = _SHARED
    kmem = _kmem(kernel)
    with pytest.raises(CorruptDataError, match=r"cannot translate kernel address 0xffffc9"):
        kmem.virt_to_phys(0xFFFFC90000001000)
    hole = kernel.spec.page_offset_base + 0xA0000  # e820 hole: no pte in the direct map
    message = re.escape(f"cannot translate kernel address {hole:#x}: pte entry not present")
    with pytest.raises(CorruptDataError, match=message + r" in field pte at offset 0x[0-9a-f]+"):
        kmem.read_virt(hole, 8)


def test_ram_hole_is_not_mapped_and_not_held() -> None:
    kernel = build_kernel(**LAYOUTS["ram-holes"])
    kmem = _kmem(kernel)
    assert [(r.start_pfn, r.end_pfn) for r in kernel.source.ram_runs()] == [
        (0x1, 0x9F),
        (0x100, 0x1700),
        (0x1900, 0x4000),
    ]
    with pytest.raises(CorruptDataError, match=r"1700000: pte entry not present in field pte"):
        kmem.read_virt(kernel.spec.page_offset_base + 0x1700000 - 8, 16)
    with pytest.raises(ExcludedPageError):
        kmem.read_phys(0x1800000, 8)


def test_unmapped_1g_region_names_pud() -> None:
    kernel = build_kernel()
    kmem = _kmem(kernel)
    with pytest.raises(CorruptDataError, match=r": pud entry not present in field pud"):
        kmem.walk(kernel.spec.page_offset_base + GIB)


def test_non_canonical_address() -> None:
    kmem = _kmem(_SHARED)
    with pytest.raises(CorruptDataError, match=r"address 0x800000000000 is not canonical for 48"):
        kmem.walk(0x0000800000000000)
    five = build_kernel(pgtable_l5=True, page_offset_base=0xFF11000000000000)
    assert _kmem(five).walk(0xFF11000000000000 + MIB).paddr == MIB


def test_vmcoreinfo_without_phys_base_or_root() -> None:
    text = re.sub(r"NUMBER\(phys_base\)=.*\n", "", _SHARED.vmcoreinfo)
    with pytest.raises(CorruptDataError, match=r"cannot locate the kernel image in field NUMBER"):
        _kmem(_SHARED, text)
    kmem = KernelMemory(_SHARED.source, VmcoreInfo(text), phys_base=_SHARED.spec.phys_base)
    assert kmem.read_u64(_SHARED.symbols["prb"]) == _SHARED.symbols["printk_rb_dynamic"]
    text = re.sub(r"SYMBOL\((init_top_pgt|swapper_pg_dir)\)=.*\n", "", _SHARED.vmcoreinfo)
    with pytest.raises(CorruptDataError, match=r"cannot walk the page tables in field SYMBOL"):
        _kmem(_SHARED, text)


def test_swapper_pg_dir_alone_is_enough() -> None:
    text = re.sub(r"SYMBOL\(init_top_pgt\)=.*\n", "", _SHARED.vmcoreinfo)
    kmem = _kmem(_SHARED, text)
    assert kmem.walk(_SHARED.spec.page_offset_base + MIB).paddr == MIB


def test_sme_bit_is_cleared_only_when_exported() -> None:
    kernel = build_kernel(sme_mask=1 << 47, gbpages=False)
    text = re.sub(r"NUMBER\(sme_mask\)=.*\n", "", kernel.vmcoreinfo)
    with pytest.raises(ExcludedPageError):  # the C-bit makes every table address absurd
        _kmem(kernel, text).walk(kernel.spec.page_offset_base + MIB)


def test_excluded_page_table_page() -> None:
    kernel = build_kernel(gbpages=False)
    kmem = _kmem(kernel)
    vaddr = kernel.spec.page_offset_base + 0x1000  # mapped by a pte table in the pool
    table = kmem.walk(vaddr)
    assert table.level == "pte"
    pool_pfn = (kernel.kernel_start + 0x201000) // PAGE_SIZE
    kernel.source.exclude(pool_pfn, pool_pfn + 64)
    with pytest.raises(ExcludedPageError, match=r"page not in the dump in field pfn"):
        kmem.walk(vaddr)


@settings(max_examples=100, deadline=None)
@given(
    hits=st.lists(
        st.tuples(st.integers(0, 65 * 512 - 1), st.integers(0, 2**64 - 1)), min_size=1, max_size=20
    )
)
def test_corrupt_page_tables_give_errors_not_crashes(hits: list[tuple[int, int]]) -> None:
    """Random entries in init_top_pgt and the table pool: a translation or a DiskdumpError."""
    kernel = _SHARED
    kmem = _kmem(kernel)
    memory = kernel.source.memory
    top = kmem.top_pgt_paddr
    saved = bytes(memory[top : top + 65 * PAGE_SIZE])
    try:
        for slot, value in hits:
            struct.pack_into("<Q", memory, top + slot * 8, value)
        base = kernel.spec.page_offset_base
        for vaddr in (base, base + 40 * MIB, kernel.symbols["prb"], 0xFFFFC90000000000):
            try:
                where = kmem.walk(vaddr)
            except DiskdumpError:
                continue
            assert where.page_size in (PAGE_SIZE, 2 * MIB, GIB)
    finally:
        memory[top : top + 65 * PAGE_SIZE] = saved


def test_kernel_image_phys_rejects_other_addresses() -> None:
    kmem = _kmem(_SHARED)
    with pytest.raises(CorruptDataError, match=r"is not in the kernel image mapping"):
        kmem.kernel_image_phys(_SHARED.spec.page_offset_base)


def test_self_referencing_tables_terminate() -> None:
    """A pgd entry pointing at the pgd itself: the walk ends after four reads."""
    kernel = build_kernel(gbpages=False)
    kmem = _kmem(kernel)
    top = kmem.top_pgt_paddr
    slot = 300  # an unused pgd slot in the kernel half
    struct.pack_into("<Q", kernel.source.memory, top + slot * 8, top | 0x63)
    vaddr = 0xFFFF000000000000 | (slot << 39) | (slot << 30) | (slot << 21) | (slot << 12)
    assert kmem.walk(vaddr).paddr == top


@pytest.mark.vm
@pytest.mark.slow
@pytest.mark.parametrize("series", ["6.1", "6.12"])
def test_real_kernel_reads_equal_drgn(series: str) -> None:
    """On real Debian kernels (QMP dumps of the VM harness), our walk reads what drgn reads.

    The addresses come from the dump itself: every kernel-image SYMBOL() of
    VMCOREINFO (formula and walk must agree), and each CPU's stack (vmalloc,
    4 KiB pages), per-CPU area (gs_base, direct map) and instruction pointer.
    """
    need(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86 is not installed")
    drgn = pytest.importorskip("drgn")
    from diskdump.vm import qmp_vmcores

    path = qmp_vmcores(series).elf
    program = drgn.Program()
    program.set_core_dump(str(path))
    with opened_vmcore(path) as source:
        info = vmcoreinfo_from_notes(source.notes)
        kmem = KernelMemory(source, info)
        symbols = [info.symbol(key[7:-1]) for key in info.entries if key.startswith("SYMBOL(")]
        image = [v for v in symbols if kmem.is_kernel_image(v)]
        assert len(image) > 10
        for vaddr in image:
            assert kmem.walk(vaddr).paddr == kmem.kernel_image_phys(vaddr), hex(vaddr)
        levels = set()
        for note in prstatus_notes(source.notes):
            for register in ("rsp", "gs_base", "rip"):
                page = note.registers[register] & ~0xFFF
                levels.add(kmem.walk(page).level)
                assert kmem.read_virt(page, 4096) == program.read(page, 4096), register
    assert {"pte", "pmd"} <= levels


@pytest.mark.differential
@pytest.mark.parametrize("layout", sorted(set(LAYOUTS) - {"sme"}))
def test_builder_page_tables_read_by_drgn(layout: str, tmp_path: Path) -> None:
    """drgn's own page-table walker (ELF p_vaddr = p_paddr, so it must walk) reads what we read.

    Not for the SME layout: drgn 0.3.0 does not clear NUMBER(sme_mask) from entries.
    """
    drgn = pytest.importorskip("drgn")
    kernel = build_kernel(**LAYOUTS[layout])
    path = tmp_path / "vmcore"
    with path.open("wb") as f:
        write_elf(kernel.source, f)  # no page_offset: no virtual addresses in the segments
    program = drgn.Program()
    program.set_core_dump(str(path))
    kmem = _kmem(kernel)
    base = kernel.spec.page_offset_base
    addresses = [*kernel.symbols.values(), base + 0x1000, base + 40 * MIB + 123]
    addresses += [kernel.spec.vmemmap_base + 0x100, base + 6 * MIB - 50]
    for vaddr in addresses:
        assert kmem.read_virt(vaddr, 256) == program.read(vaddr, 256), hex(vaddr)


#: run by Debian's /usr/bin/python3 (python3-libkdumpfile is not in the venv): read 64 bytes
#: at each kernel virtual address through libkdumpfile's own address translation
_LIBKDUMPFILE_READ = """
import json, sys, kdumpfile
core = kdumpfile.kdumpfile(sys.argv[1])
core.attr["addrxlat.ostype"] = "linux"
print(json.dumps([core.read(kdumpfile.KDUMP_KVADDR, a, 64).hex() for a in json.loads(sys.argv[2])]))
"""


def _have_libkdumpfile() -> bool:
    probe = subprocess.run(["/usr/bin/python3", "-c", "import kdumpfile"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.differential
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_builder_page_tables_read_by_libkdumpfile(layout: str, tmp_path: Path) -> None:
    """libkdumpfile (python3-libkdumpfile, Debian 12: 0.5.1) translates like we do, SME included."""
    need(_have_libkdumpfile(), "python3-libkdumpfile is not installed (make deps installs it)")
    kernel = build_kernel(**LAYOUTS[layout])
    path = tmp_path / "vmcore"
    with path.open("wb") as f:
        write_elf(kernel.source, f)
    kmem = _kmem(kernel)
    base = kernel.spec.page_offset_base
    addresses = [*kernel.symbols.values(), base + 0x1000, base + 40 * MIB + 123]
    addresses.append(kernel.spec.vmemmap_base + 0x100)
    done = subprocess.run(
        ["/usr/bin/python3", "-c", _LIBKDUMPFILE_READ, str(path), json.dumps(addresses)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    theirs = json.loads(done.stdout)
    assert theirs == [kmem.read_virt(vaddr, 64).hex() for vaddr in addresses]
