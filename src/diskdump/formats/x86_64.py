# SPDX-License-Identifier: GPL-2.0-or-later
"""x86_64 kernel virtual memory of a crashed kernel: phys_base and the page-table walk.

Spec: the Intel SDM vol. 3A §4.5 (4-level and 5-level paging) and the kernel's
arch/x86/include/asm/page_64_types.h, pgtable_types.h and
arch/x86/kernel/vmcore_info_64.c (which exports NUMBER(phys_base),
SYMBOL(init_top_pgt), NUMBER(pgtable_l5_enabled), NUMBER(sme_mask) and
NUMBER(KERNEL_IMAGE_SIZE)); the same rules makedumpfile (arch/x86_64.c) and
drgn (libdrgn/arch_x86_64.c) follow. Handled: Linux >= 4.13 (init_top_pgt;
``init_level4_pgt`` before that), 4- and 5-level paging, 4 KiB, 2 MiB and
1 GiB pages, AMD SME.

Two kinds of kernel address::

    0xffffffff80000000 + x   kernel image (text, data, bss): phys = x + phys_base
    anything else            direct map, vmalloc, vmemmap, modules: page-table walk

The walk starts at SYMBOL(init_top_pgt) (= swapper_pg_dir), itself a kernel
image address. Each level is a 4 KiB table of 512 little-endian u64 entries::

    virtual address (4-level)   63..48 sign | 47..39 pgd | 38..30 pud | 29..21 pmd |
                                20..12 pte | 11..0 offset     (5-level: 56..48 pgd, then p4d)

    entry   bit 0 present | bit 7 PSE (pud: 1 GiB page, pmd: 2 MiB page) | bit 63 NX
            bits 51..12 next table or page frame, after clearing NUMBER(sme_mask)

A translation does at most five entry reads: bad tables cannot make it loop.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from diskdump.errors import CorruptDataError, ExcludedPageError
from diskdump.formats.memsource import MemorySource
from diskdump.formats.vmcoreinfo import VmcoreInfo

__all__ = ["START_KERNEL_MAP", "KernelMemory", "Translation"]

log = logging.getLogger(__name__)

#: __START_KERNEL_map (arch/x86/include/asm/page_64_types.h)
START_KERNEL_MAP = 0xFFFFFFFF80000000
#: KERNEL_IMAGE_SIZE with CONFIG_RANDOMIZE_BASE, used when VMCOREINFO does not say
DEFAULT_KERNEL_IMAGE_SIZE = 1 << 30
#: entry bits (arch/x86/include/asm/pgtable_types.h): _PAGE_PRESENT, _PAGE_PSE
_PAGE_PRESENT = 1 << 0
_PAGE_PSE = 1 << 7
#: bits 12..51 of an entry: the physical address of the next table or of the page
_PTE_PFN_MASK = 0x000F_FFFF_FFFF_F000
_ENTRY = struct.Struct("<Q")
_PTRS_PER_TABLE = 512
_U64 = (1 << 64) - 1
#: (level name, shift of its index) from the top; 4-level folds p4d into pgd
_LEVELS_4 = (("pgd", 39), ("pud", 30), ("pmd", 21), ("pte", 12))
_LEVELS_5 = (("pgd", 48), ("p4d", 39), ("pud", 30), ("pmd", 21), ("pte", 12))
#: levels whose entries may map a page directly when PSE is set
_LARGE_PAGE_LEVELS = frozenset(("pud", "pmd"))


@dataclass(frozen=True, slots=True)
class Translation:
    """Where a virtual address lives.

    :param paddr: physical address
    :param page_size: size of the mapping page in bytes (4 KiB, 2 MiB or 1 GiB)
    :param level: the level whose entry mapped the page (``"pte"``, ``"pmd"``, ``"pud"``)
    """

    paddr: int
    page_size: int
    level: str


class KernelMemory:
    """Kernel virtual reads over a :class:`MemorySource`, with VMCOREINFO alone.

    :param source: the crashed kernel's physical memory
    :param vmcoreinfo: its VMCOREINFO
    :param phys_base: overrides NUMBER(phys_base) (for kernels before 4.10, pass the
        container's value: the kdump sub-header or the ELF kernel-text PT_LOAD)
    :raises CorruptDataError: VMCOREINFO has neither phys_base nor a page-table root
    """

    def __init__(
        self, source: MemorySource, vmcoreinfo: VmcoreInfo, *, phys_base: int | None = None
    ) -> None:
        self.source = source
        self.vmcoreinfo = vmcoreinfo
        self.page_size = source.page_size
        if phys_base is None:
            if "NUMBER(phys_base)" not in vmcoreinfo:
                raise CorruptDataError(
                    "cannot locate the kernel image",
                    field="NUMBER(phys_base)",
                    expected="a NUMBER(phys_base) line (Linux >= 4.10)",
                    hint="pass the phys_base of the dump header",
                )
            phys_base = vmcoreinfo.phys_base
        self.phys_base = phys_base & _U64
        self.l5 = _optional_number(vmcoreinfo, "pgtable_l5_enabled", 0) == 1
        self.sme_mask = _optional_number(vmcoreinfo, "sme_mask", 0) & _U64
        self.kernel_image_size = _optional_number(
            vmcoreinfo, "KERNEL_IMAGE_SIZE", DEFAULT_KERNEL_IMAGE_SIZE
        )
        self.top_pgt = _page_table_root(vmcoreinfo)
        self.top_pgt_paddr = self.kernel_image_phys(self.top_pgt)

    # --- translation -----------------------------------------------------------------

    def is_kernel_image(self, vaddr: int) -> bool:
        """True for addresses of the kernel image mapping (translated by formula)."""
        return START_KERNEL_MAP <= vaddr < START_KERNEL_MAP + self.kernel_image_size

    def kernel_image_phys(self, vaddr: int) -> int:
        """``vaddr - __START_KERNEL_map + phys_base`` for a kernel-image address.

        :raises CorruptDataError: ``vaddr`` is outside the kernel image mapping
        """
        if not self.is_kernel_image(vaddr):
            raise CorruptDataError(
                f"address {vaddr:#x} is not in the kernel image mapping",
                field="vaddr",
                expected=f"{START_KERNEL_MAP:#x}..{START_KERNEL_MAP + self.kernel_image_size:#x}",
                found=vaddr,
            )
        return (vaddr - START_KERNEL_MAP + self.phys_base) & _U64

    def virt_to_phys(self, vaddr: int) -> int:
        """Physical address of ``vaddr``: the formula for the image, the page tables otherwise.

        :raises CorruptDataError: the address is not canonical or not mapped (names the level)
        :raises ExcludedPageError: a page table lies in a page the dump does not hold
        """
        if self.is_kernel_image(vaddr):
            return self.kernel_image_phys(vaddr)
        return self.walk(vaddr).paddr

    def walk(self, vaddr: int) -> Translation:
        """Translate ``vaddr`` by walking the page tables from init_top_pgt.

        :raises CorruptDataError: non-canonical address, or an entry is not present
            (the message names the vaddr, the level and the entry's physical address)
        :raises ExcludedPageError: a page table lies in a page the dump does not hold
        """
        levels = _LEVELS_5 if self.l5 else _LEVELS_4
        self._check_canonical(vaddr, levels[0][1] + 9)
        table = self.top_pgt_paddr
        for name, shift in levels:
            entry_paddr = table + ((vaddr >> shift) % _PTRS_PER_TABLE) * _ENTRY.size
            entry = _ENTRY.unpack(self.read_phys(entry_paddr, _ENTRY.size))[0]
            if not entry & _PAGE_PRESENT:
                raise CorruptDataError(
                    f"cannot translate kernel address {vaddr:#x}: {name} entry not present",
                    field=name,
                    offset=entry_paddr,
                    found=entry,
                )
            frame = entry & ~self.sme_mask & _PTE_PFN_MASK
            page_size = 1 << shift
            if name == "pte" or (name in _LARGE_PAGE_LEVELS and entry & _PAGE_PSE):
                frame &= ~(page_size - 1)
                return Translation(frame | (vaddr & (page_size - 1)), page_size, name)
            table = frame
        raise AssertionError("unreachable: the pte level always returns")  # pragma: no cover

    def _check_canonical(self, vaddr: int, bits: int) -> None:
        top = vaddr >> (bits - 1)
        if vaddr < 0 or vaddr > _U64 or top not in (0, (1 << (65 - bits)) - 1):
            raise CorruptDataError(
                f"address {vaddr:#x} is not canonical for {bits}-bit virtual addresses",
                field="vaddr",
                found=vaddr,
            )

    # --- reads ---------------------------------------------------------------------

    def read_phys(self, paddr: int, size: int) -> bytes:
        """``size`` bytes of physical memory at ``paddr``, across pages.

        :raises ExcludedPageError: a page in the range is not in the dump
        """
        page = self.page_size
        first, offset = divmod(paddr, page)
        count = -(-(offset + size) // page)
        if count > 1:
            try:  # one call for the common case: the pages lie in one data run
                return self.source.read_pages(first, count)[offset : offset + size]
            except ExcludedPageError:
                pass  # page by page: the error then names the first missing page
        out = bytearray()
        while size > 0:
            pfn, offset = divmod(paddr, page)
            chunk = min(size, page - offset)
            out += self.source.read_pages(pfn, 1)[offset : offset + chunk]
            paddr += chunk
            size -= chunk
        return bytes(out)

    def read_virt(self, vaddr: int, size: int) -> bytes:
        """``size`` bytes of kernel virtual memory at ``vaddr``, across pages and mappings.

        :raises CorruptDataError: part of the range is not mapped
        :raises ExcludedPageError: part of the range is not in the dump
        """
        out = bytearray()
        while size > 0:
            if self.is_kernel_image(vaddr):
                paddr = self.kernel_image_phys(vaddr)
                span = START_KERNEL_MAP + self.kernel_image_size - vaddr
            else:
                where = self.walk(vaddr)
                paddr, span = where.paddr, where.page_size - (vaddr & (where.page_size - 1))
            chunk = min(size, span)
            out += self.read_phys(paddr, chunk)
            vaddr += chunk
            size -= chunk
        return bytes(out)

    def read_u64(self, vaddr: int) -> int:
        """Little-endian u64 at ``vaddr``."""
        value: int = _ENTRY.unpack(self.read_virt(vaddr, 8))[0]
        return value

    def read_u32(self, vaddr: int) -> int:
        """Little-endian u32 at ``vaddr``."""
        value: int = struct.unpack("<I", self.read_virt(vaddr, 4))[0]
        return value


def _optional_number(info: VmcoreInfo, name: str, default: int) -> int:
    return info.number(name) if f"NUMBER({name})" in info else default


def _page_table_root(info: VmcoreInfo) -> int:
    # init_top_pgt since Linux 4.13 ("x86/boot/64: Rename init_level4_pgt and
    # early_level4_pgt"), init_level4_pgt before;
    # swapper_pg_dir is exported by every kernel and names the same table on x86_64
    for name in ("init_top_pgt", "swapper_pg_dir", "init_level4_pgt"):
        if f"SYMBOL({name})" in info:
            return info.symbol(name)
    raise CorruptDataError(
        "cannot walk the page tables",
        field="SYMBOL(init_top_pgt)",
        expected="SYMBOL(init_top_pgt) or SYMBOL(swapper_pg_dir)",
    )
