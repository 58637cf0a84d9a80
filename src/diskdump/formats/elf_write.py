# SPDX-License-Identifier: GPL-2.0-or-later
"""ELF vmcore writer: any :class:`~diskdump.formats.memsource.MemorySource` as an ELF64 core.

Layout written (formats.md §3; the reader and the structures are in
:mod:`diskdump.formats.elf`)::

    0       Elf64_Ehdr (e_phoff 64; e_flags bit 0 = incomplete)
    64      Elf64_Phdr[0] PT_NOTE (p_align 0), then one PT_LOAD per data run (p_align 0)
    ...     Elf64_Shdr[0] only with PN_XNUM (>= 65535 program headers: sh_info = count)
    ...     the note blob (PRSTATUS per CPU, VMCOREINFO), before every segment's data
    page-aligned: segment data, in pfn order; excluded pages are gaps between segments

Streaming, front to back with no seeks (pipes work), in bounded memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from diskdump._binary import align_up
from diskdump.errors import CorruptDataError
from diskdump.formats.elf import (
    PHDR_BATCH,
    PN_XNUM,
    WRITE_BATCH_PAGES,
    Elf64Ehdr,
    Elf64Phdr,
    Elf64Shdr,
    ElfFlag,
    PhdrFlag,
    PhdrType,
)
from diskdump.formats.memsource import MemorySource, PfnRun, iter_run_pfns, runs_page_count
from diskdump.formats.notes import iter_notes

__all__ = ["ProgressCallback", "write_elf"]

#: sh_type of the extended-numbering section header 0
SHT_NULL = 0

#: progress callback: (bytes done, bytes total)
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class _ElfPlan:
    """Where everything goes in the file being written."""

    phnum: int
    shoff: int
    notes_offset: int
    data_offset: int

    @classmethod
    def for_source(cls, runs: int, notes_size: int, page_size: int) -> _ElfPlan:
        phnum = 1 + runs
        table_end = Elf64Ehdr.SIZE + phnum * Elf64Phdr.SIZE
        shoff = table_end if phnum >= PN_XNUM else 0
        notes_offset = table_end + (Elf64Shdr.SIZE if shoff else 0)
        return cls(phnum, shoff, notes_offset, align_up(notes_offset + notes_size, page_size))


def _iter_program_headers(
    plan: _ElfPlan, runs: Sequence[PfnRun], notes_size: int, page_size: int, page_offset: int | None
) -> Iterator[bytes]:
    yield Elf64Phdr(PhdrType.PT_NOTE, 0, plan.notes_offset, 0, 0, notes_size, notes_size, 0).pack()
    flags = PhdrFlag.PF_R | PhdrFlag.PF_W | PhdrFlag.PF_X
    offset = plan.data_offset
    for run in runs:
        paddr = run.start_pfn * page_size
        size = run.pages * page_size
        vaddr = paddr if page_offset is None else page_offset + paddr
        yield Elf64Phdr(PhdrType.PT_LOAD, flags, offset, vaddr, paddr, size, size, 0).pack()
        offset += size


def write_elf(
    source: MemorySource,
    out: BinaryIO,
    *,
    notes: bytes | None = None,
    page_offset: int | None = None,
    progress: ProgressCallback | None = None,
) -> int:
    """Write ``source`` as an ELF vmcore to ``out``, sequentially (pipes work), in bounded memory.

    One PT_NOTE first, then one PT_LOAD per data run (excluded pages split
    segments); e_flags bit 0 when the source is incomplete; extended numbering
    (PN_XNUM) past 65534 PT_LOADs.

    :param source: the memory to write
    :param out: binary stream, written from its current position on
    :param notes: note blob to write instead of ``source.notes``
    :param page_offset: direct-map base: p_vaddr = page_offset + p_paddr; None: p_vaddr = p_paddr
    :param progress: called as ``progress(bytes_done, bytes_total)`` for the page data
    :return: bytes written
    :raises TruncatedError: ``notes`` is not a valid note blob
    :raises CorruptDataError: the source returned a short page read
    """
    page_size = source.page_size
    runs = list(source.data_runs())
    blob = source.notes if notes is None else notes
    for _ in iter_notes(blob):  # refuse a malformed blob before writing anything
        pass
    plan = _ElfPlan.for_source(len(runs), len(blob), page_size)
    flags = ElfFlag.INCOMPLETE if source.incomplete else 0
    phnum = PN_XNUM if plan.shoff else plan.phnum
    out.write(Elf64Ehdr.for_core(phnum=phnum, shoff=plan.shoff, flags=flags).pack())
    batch: list[bytes] = []
    for raw in _iter_program_headers(plan, runs, len(blob), page_size, page_offset):
        batch.append(raw)
        if len(batch) == PHDR_BATCH:
            out.write(b"".join(batch))
            batch.clear()
    out.write(b"".join(batch))
    if plan.shoff:
        out.write(Elf64Shdr(0, SHT_NULL, 0, 0, 0, 1, 0, plan.phnum, 0, 0).pack())
    out.write(blob)
    out.write(bytes(plan.data_offset - plan.notes_offset - len(blob)))
    return plan.data_offset + _write_pages(source, runs, out, progress)


def _write_pages(
    source: MemorySource, runs: Sequence[PfnRun], out: BinaryIO, progress: ProgressCallback | None
) -> int:
    page_size = source.page_size
    total = runs_page_count(runs) * page_size
    done = 0
    for pfn, count in iter_run_pfns(runs, WRITE_BATCH_PAGES):
        data = source.read_pages(pfn, count)
        if len(data) != count * page_size:
            raise CorruptDataError(
                "memory source returned a short page read",
                field="pfn",
                expected=count * page_size,
                found=len(data),
            )
        out.write(data)
        done += len(data)
        if progress is not None:
            progress(done, total)
    return done
