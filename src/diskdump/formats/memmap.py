# SPDX-License-Identifier: GPL-2.0-or-later
"""Walking mem_map: where the ``struct page`` of each pfn is, from VMCOREINFO alone.

Spec: include/linux/mmzone.h (struct mem_section, SECTION_* flags,
sparse_decode_mem_map in mm/sparse.c), as makedumpfile (``get_mm_sparsemem``)
and crash (``sparse_mem_init``) read it; formats.md §4.3. Handled: SPARSEMEM,
SPARSEMEM_EXTREME and SPARSEMEM_VMEMMAP (every x86_64 kernel since 2.6.24);
FLATMEM and DISCONTIGMEM are refused.

SPARSEMEM_EXTREME (x86_64; detected as makedumpfile does, from
LENGTH(mem_section) = NR_MEM_SECTIONS / SECTIONS_PER_ROOT)::

    SYMBOL(mem_section) -> root[0 .. LENGTH(mem_section))      8-byte pointers, 0 = none
    root[r]             -> struct mem_section[SECTIONS_PER_ROOT] SIZE(mem_section) each
                           SECTIONS_PER_ROOT = PAGESIZE / SIZE(mem_section)
    section nr = r * SECTIONS_PER_ROOT + i, pfns [nr << PFN_SECTION_SHIFT, +PAGES_PER_SECTION)

    struct mem_section
    +OFFSET(mem_section.section_mem_map)  u64  encoded mem_map | flags
        bit 0 PRESENT, bit 1 HAS_MEM_MAP, bit 2 ONLINE, bit 3 EARLY,
        bit 4 TAINT_ZONE_DEVICE, bit 5 VMEMMAP_PREINIT (6.12+)
    mem_map of the section = (value & ~0x3f) + start_pfn * SIZE(page)
    struct page of pfn p   = mem_map + (p - start_pfn) * SIZE(page)

Without EXTREME, ``SYMBOL(mem_section)`` is the flat array of
NR_MEM_SECTIONS structs itself. With SPARSEMEM_VMEMMAP the decoded mem_map is
``vmemmap + start_pfn * SIZE(page)`` (SYMBOL(vmemmap) on 6.12+); it is read
through the page tables either way, so nothing here depends on it.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from diskdump.errors import UnsupportedVersionError
from diskdump.formats.vmcoreinfo import VmcoreInfo

__all__ = ["MemMapRange", "SparseLayout", "VirtualReader", "VirtualTranslator", "iter_mem_map"]

log = logging.getLogger(__name__)

#: SECTION_MARKED_PRESENT and SECTION_HAS_MEM_MAP (include/linux/mmzone.h): valid_section()
SECTION_MARKED_PRESENT = 1 << 0
SECTION_HAS_MEM_MAP = 1 << 1
#: flag bits below the encoded mem_map: SECTION_MAP_LAST_BIT is 1 << 5 up to 6.11 and
#: 1 << 6 with SECTION_IS_VMEMMAP_PREINIT (6.12+); the pointer is far more aligned
SECTION_MAP_FLAG_BITS = 6
_U64_MASK = (1 << 64) - 1
SECTION_MAP_MASK = ~((1 << SECTION_MAP_FLAG_BITS) - 1) & _U64_MASK
#: size of a root pointer of SPARSEMEM_EXTREME (x86_64 unsigned long)
POINTER_SIZE = 8
_POINTER = struct.Struct("<Q")
_VALID = SECTION_MARKED_PRESENT | SECTION_HAS_MEM_MAP


@runtime_checkable
class VirtualReader(Protocol):
    """Kernel-virtual reads (page-table walk): what formats/x86_64.py's KernelMemory offers."""

    def read_virt(self, vaddr: int, size: int) -> bytes:
        """``size`` bytes at kernel virtual address ``vaddr``."""
        ...


@runtime_checkable
class VirtualTranslator(VirtualReader, Protocol):
    """A :class:`VirtualReader` that also translates (for excluding mem_map pages)."""

    def virt_to_phys(self, vaddr: int) -> int:
        """Physical address of kernel virtual address ``vaddr``."""
        ...


@dataclass(frozen=True, slots=True)
class MemMapRange:
    """The struct pages of pfns ``[start_pfn, end_pfn)`` start at virtual address ``mem_map``."""

    start_pfn: int
    end_pfn: int
    mem_map: int


@dataclass(frozen=True, slots=True)
class SparseLayout:
    """SPARSEMEM parameters from VMCOREINFO."""

    page_size: int
    struct_page_size: int
    section_size_bits: int
    max_physmem_bits: int
    mem_section: int  #: address of the root array (EXTREME) or of the section array
    roots: int  #: LENGTH(mem_section)
    mem_section_size: int
    off_section_mem_map: int
    extreme: bool

    @classmethod
    def from_vmcoreinfo(cls, info: VmcoreInfo) -> SparseLayout:
        """Read the SPARSEMEM keys.

        :raises UnsupportedVersionError: a key is missing (FLATMEM, or a kernel
            older than 5.x that does not export SECTION_SIZE_BITS); names the key
        """
        for key in (
            "SYMBOL(mem_section)",
            "LENGTH(mem_section)",
            "SIZE(mem_section)",
            "OFFSET(mem_section.section_mem_map)",
            "NUMBER(SECTION_SIZE_BITS)",
            "NUMBER(MAX_PHYSMEM_BITS)",
            "SIZE(page)",
        ):
            if key not in info:
                raise UnsupportedVersionError(
                    "vmcoreinfo lacks a key needed to walk mem_map",
                    field=key,
                    found=info.get("OSRELEASE"),
                    hint="only SPARSEMEM kernels that export it are handled; use level 0 or 1",
                )
        page_size = info.page_size
        size = info.size("mem_section")
        bits = info.number("SECTION_SIZE_BITS")
        physmem = info.number("MAX_PHYSMEM_BITS")
        roots = info.length("mem_section")
        nr_sections = 1 << (physmem - bits)
        per_root = page_size // size
        return cls(
            page_size=page_size,
            struct_page_size=info.size("page"),
            section_size_bits=bits,
            max_physmem_bits=physmem,
            mem_section=info.symbol("mem_section"),
            roots=roots,
            mem_section_size=size,
            off_section_mem_map=info.offset("mem_section.section_mem_map"),
            extreme=roots == -(-nr_sections // per_root),
        )

    @property
    def pages_per_section(self) -> int:
        """pfns per section (32768 on x86_64: 128 MiB)."""
        return (1 << self.section_size_bits) // self.page_size

    @property
    def sections_per_root(self) -> int:
        """Sections per root block: PAGESIZE / SIZE(mem_section) with EXTREME, else 1."""
        return self.page_size // self.mem_section_size if self.extreme else 1


def iter_mem_map(kmem: VirtualReader, layout: SparseLayout, max_pfn: int) -> Iterator[MemMapRange]:
    """Yield the struct-page location of every valid section below ``max_pfn``, ascending.

    :param kmem: reads kernel-virtual memory
    :param layout: from :meth:`SparseLayout.from_vmcoreinfo`
    :param max_pfn: highest pfn + 1 worth describing (the source's ``max_pfn``)
    :raises DiskdumpError: the root array or a section block cannot be read
        (whatever ``kmem`` raises)
    """
    per_section = layout.pages_per_section
    nr_sections = -(-max_pfn // per_section)
    for first, base, count in _iter_blocks(kmem, layout, nr_sections):
        block = kmem.read_virt(base, count * layout.mem_section_size)
        for i in range(count):
            (value,) = _POINTER.unpack_from(
                block, i * layout.mem_section_size + layout.off_section_mem_map
            )
            if value & _VALID != _VALID:
                continue  # a hole, or hot-removed (valid_section() in mmzone.h)
            start = (first + i) * per_section
            mem_map = (value & SECTION_MAP_MASK) + start * layout.struct_page_size
            yield MemMapRange(start, min(start + per_section, max_pfn), mem_map & _U64_MASK)


def _iter_blocks(
    kmem: VirtualReader, layout: SparseLayout, nr_sections: int
) -> Iterator[tuple[int, int, int]]:
    """(first section nr, address, section count) of each block of struct mem_section."""
    if not layout.extreme:
        # one flat array of NR_MEM_SECTIONS structs
        yield 0, layout.mem_section, min(nr_sections, layout.roots)
        return
    per_root = layout.sections_per_root
    needed = min(layout.roots, -(-nr_sections // per_root))
    table = kmem.read_virt(layout.mem_section, needed * POINTER_SIZE)
    for root in range(needed):
        (address,) = _POINTER.unpack_from(table, root * POINTER_SIZE)
        if address:
            first = root * per_root
            yield first, address, min(per_root, nr_sections - first)
