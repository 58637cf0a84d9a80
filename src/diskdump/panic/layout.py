# SPDX-License-Identifier: GPL-2.0-or-later
"""Pure arithmetic of the panic writer: where things go on the device, and in which order.

Device (blocks; R = label.reserve_blocks, N = label.block_count)::

    0 .. R-1           reserved (label): outside the writer's BlockIO range
    R                  leading header                 (formats/dumpheader.py)
    R+1 .. R+M         metadata, M = ceil(meta_size / bs)
    R+1+M .. N-2       chunks, in write order (formats/chunk.py)
    N-1                trailing header

Pages are grouped in *windows*: pfn ranges ``[k*W, (k+1)*W)`` (W = chunk_pages).
A window holding at least one pfn of the source's data becomes one chunk.
Order of the windows (the most valuable data first, so that a device that
fills up keeps what matters):

1. the kernel image: every window between the lowest and highest physical
   address of the VMCOREINFO symbols in the kernel mapping (``_stext``,
   ``init_top_pgt``/``swapper_pg_dir``, ``init_uts_ns``, ``prb``, ...),
   widened to 2 MiB boundaries. It holds the kernel's code and static data,
   the root page table and the kernel-mapping page tables, the printk
   control structures and the uts name, which is what crash and drgn need
   to start at all;
2. every other window, ascending pfn.

The kernel log text itself is already in the metadata.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from diskdump.errors import DeviceTooSmallError
from diskdump.formats.chunk import MAX_CHUNK_PAGES, chunk_blocks
from diskdump.formats.memsource import PfnRun

__all__ = [
    "DEFAULT_CHUNK_PAGES",
    "DumpLayout",
    "Window",
    "kernel_image_pfns",
    "plan_layout",
    "plan_windows",
]

#: pages per chunk: 256 x 4 KiB = 1 MiB of raw memory per chunk (measured: docs/panic.md)
DEFAULT_CHUNK_PAGES = 256
#: __START_KERNEL_map (arch/x86/include/asm/page_64_types.h): the kernel image mapping
START_KERNEL_MAP = 0xFFFFFFFF80000000
#: the kernel image is mapped and aligned in 2 MiB pages (CONFIG_PHYSICAL_ALIGN default)
KERNEL_ALIGN = 2 << 20
#: sanity cap on the prioritised range: larger means the symbols are not what we think
MAX_KERNEL_IMAGE_SIZE = 1 << 30
_SYMBOL = re.compile(r"^SYMBOL\([^)]*\)=([0-9a-fA-F]+)$", re.MULTILINE)
_PHYS_BASE = re.compile(r"^NUMBER\(phys_base\)=(-?(?:0x)?[0-9a-fA-F]+)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class DumpLayout:
    """Where the writer puts each part on one device (all in blocks).

    :param max_chunk_blocks: blocks of the largest possible chunk (raw pages + header)
    """

    header_lba: int
    meta_lba: int
    meta_blocks: int
    data_lba: int
    trailer_lba: int
    max_chunk_blocks: int

    @property
    def data_blocks(self) -> int:
        """Blocks available for chunks."""
        return self.trailer_lba - self.data_lba


def plan_layout(
    *,
    reserve_blocks: int,
    block_count: int,
    block_size: int,
    meta_size: int,
    chunk_pages: int,
    page_size: int,
    device: str | None = None,
) -> DumpLayout:
    """Place header, metadata and chunk area on a device of ``block_count`` blocks.

    :param meta_size: bytes of packed metadata
    :raises DeviceTooSmallError: the headers, the metadata and one full chunk do not fit
    """
    if not 0 < chunk_pages <= MAX_CHUNK_PAGES:
        raise ValueError(f"chunk_pages must be in 1..{MAX_CHUNK_PAGES}, got {chunk_pages}")
    meta_blocks = -(-meta_size // block_size)
    header_lba = reserve_blocks
    data_lba = header_lba + 1 + meta_blocks
    trailer_lba = block_count - 1
    max_chunk_blocks = chunk_blocks(chunk_pages * page_size, block_size)
    # a device that cannot take even one whole chunk is left for the next one: a dump
    # without a single page is worth less than the next device's complete dump
    needed = data_lba + max_chunk_blocks + 1
    if needed > block_count:
        raise DeviceTooSmallError(
            "dump area cannot hold the headers, the metadata and one chunk",
            device=device,
            expected=f"{needed} blocks",
            found=f"{block_count} blocks",
        )
    return DumpLayout(
        header_lba=header_lba,
        meta_lba=header_lba + 1,
        meta_blocks=meta_blocks,
        data_lba=data_lba,
        trailer_lba=trailer_lba,
        max_chunk_blocks=max_chunk_blocks,
    )


@dataclass(frozen=True, slots=True)
class Window:
    """One future chunk: ``page_count`` pfns from ``start_pfn`` and the data segments in it.

    :param segments: ``(pfn, count)`` pieces that lie inside one data run each
    """

    start_pfn: int
    page_count: int
    segments: tuple[tuple[int, int], ...]

    @property
    def data_pages(self) -> int:
        """Pages of the window the source holds."""
        return sum(count for _, count in self.segments)


def kernel_image_pfns(vmcoreinfo: str, page_size: int) -> PfnRun | None:
    """The pfn range of the kernel image, from VMCOREINFO symbols and phys_base.

    :return: None when VMCOREINFO names no symbol in the kernel mapping
    """
    match = _PHYS_BASE.search(vmcoreinfo)
    phys_base = int(match.group(1), 0) if match else 0
    phys = [
        int(value, 16) - START_KERNEL_MAP + phys_base
        for value in _SYMBOL.findall(vmcoreinfo)
        if int(value, 16) >= START_KERNEL_MAP
    ]
    phys = [p for p in phys if p >= 0]
    if not phys:
        return None
    start = min(phys) // KERNEL_ALIGN * KERNEL_ALIGN
    end = -(-(max(phys) + 1) // KERNEL_ALIGN) * KERNEL_ALIGN
    if end - start > MAX_KERNEL_IMAGE_SIZE:
        return None
    return PfnRun(start // page_size, end // page_size)


def plan_windows(
    data_runs: Sequence[PfnRun], chunk_pages: int, priority: PfnRun | None = None
) -> Iterator[Window]:
    """Windows in write order: those meeting ``priority`` first, then the rest ascending.

    Memory use is independent of the memory size: windows are generated, not listed.
    """
    first = last = -1
    if priority is not None and priority.pages:
        first = priority.start_pfn // chunk_pages
        last = (priority.end_pfn - 1) // chunk_pages
        stop = (last + 1) * chunk_pages
        yield from _windows(data_runs, chunk_pages, lambda k: first <= k <= last, stop)
    yield from _windows(data_runs, chunk_pages, lambda k: not first <= k <= last)


def _windows(
    data_runs: Sequence[PfnRun],
    chunk_pages: int,
    wanted: Callable[[int], bool],
    stop_pfn: int | None = None,
) -> Iterator[Window]:
    current = -1
    segments: list[tuple[int, int]] = []
    for run in data_runs:
        if stop_pfn is not None and run.start_pfn >= stop_pfn:
            break  # the kernel image's windows are done: no pass over the rest of memory
        pfn = run.start_pfn
        while pfn < run.end_pfn:
            k = pfn // chunk_pages
            end = min(run.end_pfn, (k + 1) * chunk_pages)
            if k != current:
                if segments:
                    yield Window(current * chunk_pages, chunk_pages, tuple(segments))
                current, segments = k, []
            if wanted(k):
                segments.append((pfn, end - pfn))
            pfn = end
    if segments:
        yield Window(current * chunk_pages, chunk_pages, tuple(segments))
