# SPDX-License-Identifier: GPL-2.0-or-later
"""mem_map walk and filter_source on a small synthetic machine built here.

The machine: 8 MiB of RAM (2048 pfns) with SPARSEMEM_EXTREME sections of 256
pfns (SECTION_SIZE_BITS 20), section 5 a hole, and its mem_section root,
section block and vmemmap (struct pages) in RAM, reached through a direct map
(the page-table walk itself is tests/formats/test_x86_64.py's business)::

    pfn    0 ..  255   kernel pages (non-zero), a few zero pages
    pfn  256 ..  271   free buddy block, order 4
    pfn  300 ..  309   page cache (10 pages, 300..304 with PG_private)
    pfn  400 ..  403   anonymous pages
    pfn  512 ..  519   anonymous compound page, order 3
    pfn 1024 .. 1151   free buddy block, order 7 (two whole mem_map pages)
    pfn 1280 .. 1535   section 5: not RAM, no mem_map
    pfn 1890 .. 1892   page tables (pgd = init_top_pgt, pud, pmd): the direct map
                       DIRECT + p -> p for the 8 MiB, in 2 MiB pages; phys_base 0
    pfn 1900           mem_section root array;  1901: section block
    pfn 1920 .. 1951   vmemmap: struct page of pfn p at VMEMMAP + 64 p

Kernel-virtual reads go through the real page-table walk (formats/x86_64.py).
"""

from __future__ import annotations

import logging
import re
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskdump.errors import ExcludedPageError, UnsupportedVersionError
from diskdump.formats.filtered import (
    filter_source,
    find_type_exclusions,
    intersect_runs,
    subtract_runs,
)
from diskdump.formats.memmap import SparseLayout, iter_mem_map
from diskdump.formats.memsource import PfnRun, merge_runs, runs_page_count
from diskdump.formats.pagetypes import PageClass, PageLayout
from diskdump.formats.vmcoreinfo import VmcoreInfo
from diskdump.formats.x86_64 import KernelMemory
from tests.formats.test_pagetypes import KEYS_61, KEYS_612, Page, compound

PAGE = 4096
RAM_PAGES = 2048
PER_SECTION = 256
HOLE_SECTION = 5
DIRECT = 0xFFFF888000000000
ROOT_PFN, BLOCK_PFN, VMEMMAP_PFN = 1900, 1901, 1920
PGD_PFN, PUD_PFN, PMD_PFN = 1890, 1891, 1892
START_KERNEL_MAP = 0xFFFFFFFF80000000
#: _PAGE_PRESENT | _PAGE_RW, and _PAGE_PSE for a 2 MiB page at the pmd level
PTE_TABLE, PTE_PSE = 0x3, 0x80
HUGE = 2 << 20
VMEMMAP = DIRECT + VMEMMAP_PFN * PAGE
SIZE_MEM_SECTION = 32
#: SECTION_MARKED_PRESENT | HAS_MEM_MAP | IS_ONLINE | IS_EARLY
SECTION_FLAGS = 0xF


class RamSource:
    """A MemorySource over a bytearray: ``ram`` is RAM, ``data`` (default: all RAM) is held."""

    def __init__(self, memory: bytearray, ram: list[PfnRun], data: list[PfnRun] | None) -> None:
        self.memory = memory
        self._ram = merge_runs(ram)
        self._data = merge_runs(data) if data is not None else list(self._ram)
        self.page_size = PAGE
        self.notes = b""
        self.incomplete = False

    @property
    def max_pfn(self) -> int:
        return self._ram[-1].end_pfn

    def ram_runs(self) -> list[PfnRun]:
        return self._ram

    def data_runs(self) -> list[PfnRun]:
        return self._data

    def read_pages(self, pfn: int, count: int) -> bytes:
        if runs_page_count(intersect_runs([PfnRun(pfn, pfn + count)], self._data)) != count:
            raise ExcludedPageError("page not held", field="pfn", found=pfn)
        return bytes(self.memory[pfn * PAGE : (pfn + count) * PAGE])


def vmcoreinfo(kernel: str = "6.1", *, extreme: bool = True, **extra: object) -> VmcoreInfo:
    keys = dict(KEYS_61 if kernel == "6.1" else KEYS_612)
    keys.update(
        {
            "SYMBOL(mem_section)": f"{DIRECT + ROOT_PFN * PAGE:x}",
            "LENGTH(mem_section)": 8 if extreme else 1024,
            "SIZE(mem_section)": SIZE_MEM_SECTION,
            "OFFSET(mem_section.section_mem_map)": 0,
            "NUMBER(SECTION_SIZE_BITS)": 20,
            "NUMBER(MAX_PHYSMEM_BITS)": 30,
            "SYMBOL(init_top_pgt)": f"{START_KERNEL_MAP + PGD_PFN * PAGE:x}",
            "NUMBER(phys_base)": 0,
        }
    )
    for key, value in extra.items():
        if value is None:
            keys.pop(key)
        else:
            keys[key] = value
    return VmcoreInfo.from_entries(keys)  # type: ignore[arg-type]


def page_kinds(layout: PageLayout) -> dict[int, Page]:
    """Struct pages that are not plain kernel pages, by pfn."""
    assert layout.buddy_value is not None
    lru, private = 1 << layout.pg_lru, 1 << layout.pg_private
    pages = {256: Page(mapcount=layout.buddy_value, private=4)}
    pages[1024] = Page(mapcount=layout.buddy_value, private=7)
    for pfn in range(300, 310):
        pages[pfn] = Page(flags=lru | (private if pfn < 305 else 0), mapping=DIRECT + 0x5000)
    for pfn in range(400, 404):
        pages[pfn] = Page(flags=lru, mapping=DIRECT + 0x7001)
    for index, page in enumerate(compound(layout, 3, mapping=DIRECT + 0x7001, head_pfn=512)):
        pages[512 + index] = page
    return pages


ZERO_PFNS = (7, 8, 9, 200)


def build_machine(
    kernel: str = "6.1", *, extreme: bool = True, data: list[PfnRun] | None = None
) -> tuple[RamSource, VmcoreInfo]:
    info = vmcoreinfo(kernel, extreme=extreme)
    layout = PageLayout.from_vmcoreinfo(info)
    memory = bytearray(RAM_PAGES * PAGE)
    for pfn in range(RAM_PAGES):
        if pfn not in ZERO_PFNS:
            memory[pfn * PAGE : pfn * PAGE + 8] = struct.pack("<Q", 0xD15CD00D00000000 | pfn)
    kinds = page_kinds(layout)
    for pfn in range(RAM_PAGES):
        at = VMEMMAP_PFN * PAGE + pfn * layout.struct_size
        memory[at : at + layout.struct_size] = kinds.get(pfn, Page(flags=1 << 10)).pack(layout)
    sections = bytearray(128 * SIZE_MEM_SECTION)
    for nr in range(RAM_PAGES // PER_SECTION):
        if nr != HOLE_SECTION:
            # the kernel stores mem_map - start_pfn * sizeof(struct page), plus flags
            struct.pack_into("<Q", sections, nr * SIZE_MEM_SECTION, VMEMMAP | SECTION_FLAGS)
    if extreme:
        memory[BLOCK_PFN * PAGE : BLOCK_PFN * PAGE + len(sections)] = sections
        struct.pack_into("<Q", memory, ROOT_PFN * PAGE, DIRECT + BLOCK_PFN * PAGE)
    else:
        memory[ROOT_PFN * PAGE : ROOT_PFN * PAGE + len(sections)] = sections
    _map_direct(memory)
    hole = PfnRun(HOLE_SECTION * PER_SECTION, (HOLE_SECTION + 1) * PER_SECTION)
    ram = [PfnRun(0, hole.start_pfn), PfnRun(hole.end_pfn, RAM_PAGES)]
    return RamSource(memory, ram, data), info


def _map_direct(memory: bytearray) -> None:
    """4-level page tables mapping DIRECT + p -> p for all of RAM with 2 MiB pages."""
    struct.pack_into(
        "<Q", memory, PGD_PFN * PAGE + (DIRECT >> 39) % 512 * 8, PUD_PFN * PAGE | PTE_TABLE
    )
    struct.pack_into(
        "<Q", memory, PUD_PFN * PAGE + (DIRECT >> 30) % 512 * 8, PMD_PFN * PAGE | PTE_TABLE
    )
    for index in range(RAM_PAGES * PAGE // HUGE):
        struct.pack_into(
            "<Q", memory, PMD_PFN * PAGE + index * 8, index * HUGE | PTE_TABLE | PTE_PSE
        )


def kept(level: int, kernel: str = "6.1", **kw: object) -> list[PfnRun]:
    source, info = build_machine(kernel)
    filtered = filter_source(source, level, info, **kw)  # type: ignore[arg-type]
    return list(filtered.data_runs())


def runs(*pairs: tuple[int, int]) -> list[PfnRun]:
    return [PfnRun(a, b) for a, b in pairs]


RAM = runs((0, 1280), (1536, 2048))


@pytest.mark.parametrize("extreme", [True, False], ids=["extreme", "flat"])
def test_mem_map_walk(extreme: bool) -> None:
    source, info = build_machine(extreme=extreme)
    sparse = SparseLayout.from_vmcoreinfo(info)
    assert sparse.extreme is extreme and sparse.pages_per_section == PER_SECTION
    ranges = list(iter_mem_map(KernelMemory(source, info), sparse, source.max_pfn))
    assert [(r.start_pfn, r.end_pfn) for r in ranges] == [
        (nr * 256, nr * 256 + 256) for nr in range(8) if nr != HOLE_SECTION
    ]
    assert all(r.mem_map == VMEMMAP + r.start_pfn * 64 for r in ranges)


def test_mem_map_walk_refuses_without_section_keys() -> None:
    info = vmcoreinfo(**{"NUMBER(SECTION_SIZE_BITS)": None})
    with pytest.raises(
        UnsupportedVersionError,
        match=r"^vmcoreinfo lacks a key needed to walk mem_map "
        r"in field NUMBER\(SECTION_SIZE_BITS\)",
    ):
        SparseLayout.from_vmcoreinfo(info)


@pytest.mark.parametrize("kernel", ["6.1", "6.12"])
@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (0, RAM),
        (1, subtract_runs(RAM, runs((7, 10), (200, 201)))),
        (2, subtract_runs(RAM, runs((305, 310)))),
        (4, subtract_runs(RAM, runs((300, 310)))),
        (8, subtract_runs(RAM, runs((400, 404), (512, 520)))),
        (16, subtract_runs(RAM, runs((256, 272), (1024, 1152)))),
        (
            31,
            subtract_runs(
                RAM,
                runs(
                    (7, 10),
                    (200, 201),
                    (256, 272),
                    (300, 310),
                    (400, 404),
                    (512, 520),
                    (1024, 1152),
                ),
            ),
        ),
    ],
)
def test_levels_keep_what_they_should(kernel: str, level: int, expected: list[PfnRun]) -> None:
    assert kept(level, kernel) == expected
    assert kept(level, kernel, use_numpy=False) == expected


def test_counts_and_zero_pages() -> None:
    source, info = build_machine()
    filtered = filter_source(source, 31, info)
    assert filtered.types.counts == {
        PageClass.FREE: 16 + 128,
        PageClass.CACHE: 5,
        PageClass.CACHE_PRIVATE: 5,
        PageClass.USER: 12,
    }
    assert filtered.types.classified_pages == runs_page_count(RAM)
    filtered.data_runs()
    assert filtered.zero_pages == len(ZERO_PFNS)
    assert filtered.ram_runs() == source.ram_runs()
    assert filtered.max_pfn == RAM_PAGES and filtered.page_size == PAGE
    assert not filtered.incomplete and filtered.notes == b""


def test_unused_mem_map_pages_are_excluded_on_request() -> None:
    base = kept(16)
    trimmed = kept(16, exclude_unused_vmemmap=True)
    # pfns 1024..1151 are free: their 128 struct pages fill mem_map pages 1936 and 1937
    assert subtract_runs(base, trimmed) == runs((1936, 1938))
    # the order-4 block at 256 fills only a quarter of a mem_map page: kept
    assert intersect_runs(trimmed, runs((VMEMMAP_PFN + 4, VMEMMAP_PFN + 5))) != []


def test_unused_mem_map_needs_translation() -> None:
    source, info = build_machine()

    class ReadOnly:
        def read_virt(self, vaddr: int, size: int) -> bytes:
            return KernelMemory(source, info).read_virt(vaddr, size)

    with pytest.raises(TypeError, match="virt_to_phys"):
        find_type_exclusions(source, info, 16, ReadOnly(), exclude_unused_vmemmap=True)


def test_reading_an_excluded_page_raises() -> None:
    source, info = build_machine()
    filtered = filter_source(source, 31, info)
    assert filtered.read_pages(10, 2) == source.read_pages(10, 2)
    with pytest.raises(
        ExcludedPageError,
        match=re.escape(
            "pages excluded by dump level 31 in field pfn at offset 0x100000: got 0x100"
        ),
    ):
        filtered.read_pages(256, 1)
    with pytest.raises(ExcludedPageError, match="excluded by dump level"):
        filtered.read_pages(250, 8)  # runs into the free block


def test_unreadable_struct_pages_keep_their_pages(caplog: pytest.LogCaptureFixture) -> None:
    # the dump lacks the mem_map page describing pfns 256..319
    data = subtract_runs(RAM, runs((VMEMMAP_PFN + 4, VMEMMAP_PFN + 5)))
    source, info = build_machine(data=data)
    with caplog.at_level(logging.WARNING):
        filtered = filter_source(source, 30, info)
    # struct pages are read a section (256 pfns) at a time: section 1 is kept whole
    assert filtered.types.unreadable_pages == PER_SECTION
    assert re.search(r"struct pages of pfns 0x100\+256 unreadable, kept", caplog.text)
    assert filtered.data_runs() == subtract_runs(data, runs((512, 520), (1024, 1152)))


def test_level_0_and_1_need_no_mem_map() -> None:
    source, info = build_machine()
    bare = VmcoreInfo.from_entries({"OSRELEASE": "6.1.0-56-amd64", "PAGESIZE": 4096})
    assert list(filter_source(source, 0, bare).data_runs()) == RAM
    assert runs_page_count(filter_source(source, 1, bare).data_runs()) == runs_page_count(RAM) - 4
    with pytest.raises(ValueError, match="dump level must be 0-31"):
        filter_source(source, 32, info)


def test_pure_python_zero_scan_agrees() -> None:
    source, info = build_machine()
    a = filter_source(source, 1, info, use_numpy=False)
    b = filter_source(source, 1, info, use_numpy=True)
    assert a.data_runs() == b.data_runs() and a.zero_pages == b.zero_pages == 4


_runs = st.lists(st.tuples(st.integers(0, 200), st.integers(1, 20)), max_size=12).map(
    lambda pairs: merge_runs([PfnRun(a, a + n) for a, n in pairs])
)


def _pfns(rs: list[PfnRun]) -> set[int]:
    return {p for r in rs for p in range(r.start_pfn, r.end_pfn)}


@given(a=_runs, b=_runs)
def test_run_arithmetic_matches_sets(a: list[PfnRun], b: list[PfnRun]) -> None:
    assert _pfns(subtract_runs(a, b)) == _pfns(a) - _pfns(b)
    assert _pfns(intersect_runs(a, b)) == _pfns(a) & _pfns(b)
    assert merge_runs(subtract_runs(a, b)) == subtract_runs(a, b)


class BlobReader:
    """Kernel-virtual reads from one bytes blob mapped at ``base``."""

    def __init__(self, base: int, blob: bytes) -> None:
        self.base, self.blob = base, blob

    def read_virt(self, vaddr: int, size: int) -> bytes:
        offset = vaddr - self.base
        assert offset >= 0 and offset + size <= len(self.blob)
        return self.blob[offset : offset + size]


@given(
    mem_map=st.integers(1 << 20, 1 << 40).map(lambda n: DIRECT + n * 64),
    flags=st.lists(st.integers(0, 0x3F), min_size=8, max_size=8),
)
def test_section_mem_map_round_trip(mem_map: int, flags: list[int]) -> None:
    """Encoding as sparse_encode_mem_map does, then decoding, gives back each section's mem_map."""
    info = vmcoreinfo()
    sparse = SparseLayout.from_vmcoreinfo(info)
    block = bytearray(128 * SIZE_MEM_SECTION)
    for nr, bits in enumerate(flags):
        coded = (mem_map - nr * PER_SECTION * 64) & ((1 << 64) - 1)
        struct.pack_into("<Q", block, nr * SIZE_MEM_SECTION, coded | bits)
    root = DIRECT + ROOT_PFN * PAGE
    blob = bytearray((BLOCK_PFN - ROOT_PFN) * PAGE + len(block))
    struct.pack_into("<Q", blob, 0, DIRECT + BLOCK_PFN * PAGE)
    blob[(BLOCK_PFN - ROOT_PFN) * PAGE :] = block
    got = list(iter_mem_map(BlobReader(root, bytes(blob)), sparse, 8 * PER_SECTION))
    valid = [nr for nr, bits in enumerate(flags) if bits & 3 == 3]
    assert [r.start_pfn // PER_SECTION for r in got] == valid
    assert all(r.mem_map == mem_map for r in got)
