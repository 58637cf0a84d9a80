# SPDX-License-Identifier: GPL-2.0-or-later
"""Build ELF vmcores for tests, in memory or on disk, with knobs to break them.

Independent of :func:`diskdump.formats.elf_write.write_elf` (packs its own headers
with :mod:`struct`), so reader tests do not just check the writer against
itself. Shapes it can take::

    layout "kexec" (default)     Ehdr | Phdr[] | notes | page-aligned segment data
    layout "qemu"                Ehdr | Shdr[2] at 64 | Phdr[] at 192 | notes | data
                                 (QEMU 7.2's dump-guest-memory)
    xnum=True                    e_phnum = 0xffff, the count in section 0's sh_info
    Segment(vaddr=text address)  a kernel-text PT_LOAD repeating RAM, as /proc/vmcore has
    Segment(memsz > len(data))   p_filesz < p_memsz (makedumpfile -E excluded tail)

Corruption knobs: ``bad_magic``, ``truncate_to`` (cut the file), ``phoff``
(point the program headers anywhere, e.g. past EOF), ``segment_offset_shift``
(move one segment's data past EOF), ``note_descsz`` (overwrite the first
note's n_descsz), ``phnum`` (override e_phnum).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from diskdump.formats.memsource import MemorySource

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
SHDR = struct.Struct("<IIQQQQIIQQ")
PAGE_SIZE = 4096
PT_LOAD, PT_NOTE = 1, 4
PN_XNUM = 0xFFFF
#: QEMU 7.2 puts two section headers at 64 and the program headers at 64 + 2 * 64
QEMU_PHOFF = 192
START_KERNEL_MAP = 0xFFFFFFFF80000000


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD: ``data`` at physical ``paddr``; ``memsz`` > len(data) makes an excluded tail."""

    paddr: int
    data: bytes
    memsz: int | None = None
    vaddr: int | None = None  # None: p_vaddr = p_paddr (QEMU style)


def segments_from(memory: bytes | bytearray, ranges: Sequence[tuple[int, int]]) -> list[Segment]:
    """One segment per physical ``[start, end)`` range of ``memory``."""
    return [Segment(start, bytes(memory[start:end])) for start, end in ranges]


def segments_from_source(source: MemorySource) -> list[Segment]:
    """One segment per data run of a MemorySource (filesz = memsz)."""
    size = source.page_size
    return [
        Segment(run.start_pfn * size, source.read_pages(run.start_pfn, run.pages))
        for run in source.data_runs()
    ]


def kernel_text_segment(segments: Sequence[Segment], paddr: int, size: int, vaddr: int) -> Segment:
    """The duplicate kernel-text PT_LOAD of /proc/vmcore: a copy of RAM at ``paddr``."""
    for seg in segments:
        if seg.paddr <= paddr and paddr + size <= seg.paddr + len(seg.data):
            start = paddr - seg.paddr
            return Segment(paddr, seg.data[start : start + size], vaddr=vaddr)
    raise ValueError(f"no segment holds {paddr:#x}+{size:#x}")


def build_elfcore(
    segments: Sequence[Segment],
    notes: bytes,
    *,
    layout: str = "kexec",
    xnum: bool = False,
    incomplete: bool = False,
    bad_magic: bool = False,
    phoff: int | None = None,
    phnum: int | None = None,
    truncate_to: int | None = None,
    segment_offset_shift: tuple[int, int] | None = None,
    note_descsz: int | None = None,
    extra_note_segments: Sequence[bytes] = (),
) -> bytes:
    """An ELF vmcore image: PT_NOTE(s) first, then one PT_LOAD per segment in the given order."""
    note_blobs = [notes, *extra_note_segments]
    count = len(note_blobs) + len(segments)
    qemu = layout == "qemu"
    sh_count = 2 if qemu else (1 if xnum else 0)
    table_off = QEMU_PHOFF if qemu else EHDR.size
    table_end = table_off + count * PHDR.size
    shoff = EHDR.size if qemu else (table_end if xnum else 0)
    notes_off = table_end + (SHDR.size if xnum and not qemu else 0)
    phdrs: list[bytes] = []
    offset = notes_off
    for blob in note_blobs:
        phdrs.append(PHDR.pack(PT_NOTE, 0, offset, 0, 0, len(blob), len(blob), 0))
        offset += len(blob)
    data_off = -(-offset // PAGE_SIZE) * PAGE_SIZE
    offset = data_off
    for index, seg in enumerate(segments):
        memsz = seg.memsz if seg.memsz is not None else len(seg.data)
        vaddr = seg.vaddr if seg.vaddr is not None else seg.paddr
        p_offset = offset
        if segment_offset_shift is not None and segment_offset_shift[0] == index:
            p_offset += segment_offset_shift[1]
        phdrs.append(PHDR.pack(PT_LOAD, 7, p_offset, vaddr, seg.paddr, len(seg.data), memsz, 0))
        offset += len(seg.data)
    e_phnum = PN_XNUM if xnum else count
    ident = (b"\x7fELX" if bad_magic else b"\x7fELF") + bytes((2, 1, 1)) + bytes(9)
    ehdr = EHDR.pack(
        ident,
        4,
        62,
        1,
        0,
        table_off if phoff is None else phoff,
        shoff,
        1 if incomplete else 0,
        EHDR.size,
        PHDR.size,
        e_phnum if phnum is None else phnum,
        SHDR.size if sh_count else 0,
        sh_count,
        0,
    )
    image = bytearray(ehdr)
    if qemu:
        # QEMU: section 0 carries the extended count (sh_info), section 1 is a
        # zero-length placeholder; the program headers follow at 192
        image += SHDR.pack(0, 0, 0, 0, 0, 0, 0, count if xnum else 0, 0, 0) + bytes(SHDR.size)
    image += b"".join(phdrs)
    if xnum and not qemu:
        image += SHDR.pack(0, 0, 0, 0, 0, 1, 0, count, 0, 0)
    for blob in note_blobs:
        image += blob
    image += bytes(data_off - len(image))
    for seg in segments:
        image += seg.data
    if note_descsz is not None:
        struct.pack_into("<I", image, notes_off + 4, note_descsz)
    return bytes(image if truncate_to is None else image[:truncate_to])


def write_elfcore(path: Path, segments: Sequence[Segment], notes: bytes, **knobs: object) -> Path:
    """:func:`build_elfcore` written to ``path``; returns ``path``."""
    path.write_bytes(build_elfcore(segments, notes, **knobs))  # type: ignore[arg-type]
    return path
