# SPDX-License-Identifier: GPL-2.0-or-later
"""A small in-memory :class:`MemorySource` for the kdump, flattened and convert tests.

Pages are generated from a seed: a mix of zero pages, compressible text-like
pages and random pages, so every storage path of the writer (shared zero page,
compressed, raw because incompressible) is taken. Holes in RAM and excluded
pages are knobs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from diskdump.errors import ExcludedPageError
from diskdump.formats.memsource import PfnRun
from diskdump.formats.notes import NoteType, PrStatus, pack_note

PAGE_SIZE = 4096


def make_vmcoreinfo(release: str = "6.1.0-test-amd64", *, crashtime: int = 1764158400) -> bytes:
    """A VMCOREINFO text with the keys writers and readers look for."""
    lines = [
        f"OSRELEASE={release}",
        f"PAGESIZE={PAGE_SIZE}",
        "SYMBOL(init_uts_ns)=ffffffff82a1b440",
        "SYMBOL(swapper_pg_dir)=ffffffff82a0a000",
        "SYMBOL(_stext)=ffffffff81000000",
        "NUMBER(phys_base)=0",
        "KERNELOFFSET=0",
        f"CRASHTIME={crashtime}",
    ]
    return ("\n".join(lines) + "\n").encode()


def make_notes(cpus: int = 2, vmcoreinfo: bytes | None = None) -> bytes:
    """PRSTATUS per CPU (pr_pid = cpu + 1, QEMU's convention) and a VMCOREINFO note."""
    blob = b"".join(
        pack_note(
            "CORE",
            NoteType.NT_PRSTATUS,
            PrStatus.from_registers(cpu + 1, rip=0xFFFFFFFF81000000 + cpu, rsp=0x1000).pack(),
        )
        for cpu in range(cpus)
    )
    return blob + pack_note("VMCOREINFO", 0, vmcoreinfo or make_vmcoreinfo())


def make_page(rng: random.Random, kind: int) -> bytes:
    """kind 0: zeros; 1: compressible text; 2: random (incompressible); 3: one byte set."""
    if kind == 0:
        return bytes(PAGE_SIZE)
    if kind == 1:
        word = bytes(rng.randrange(32, 127) for _ in range(rng.randrange(4, 40)))
        return (word * (PAGE_SIZE // len(word) + 1))[:PAGE_SIZE]
    if kind == 2:
        return rng.randbytes(PAGE_SIZE)
    page = bytearray(PAGE_SIZE)
    page[rng.randrange(PAGE_SIZE)] = rng.randrange(1, 256)
    return bytes(page)


@dataclass
class MemSource:
    """Memory held in a dict pfn -> page; RAM and data runs given explicitly."""

    max_pfn: int
    ram: list[PfnRun]
    data: list[PfnRun]
    pages: dict[int, bytes]
    notes: bytes = field(default_factory=make_notes)
    incomplete: bool = False
    page_size: int = PAGE_SIZE

    def ram_runs(self) -> Sequence[PfnRun]:
        return list(self.ram)

    def data_runs(self) -> Sequence[PfnRun]:
        return list(self.data)

    def read_pages(self, pfn: int, count: int) -> bytes:
        out = []
        for p in range(pfn, pfn + count):
            if p not in self.pages:
                raise ExcludedPageError("page not held", field="pfn", found=p)
            out.append(self.pages[p])
        return b"".join(out)


def build_source(
    seed: int = 1,
    *,
    ram: Sequence[tuple[int, int]] = ((0, 0x9F), (0x100, 0x700)),
    excluded: Sequence[tuple[int, int]] = (),
    cpus: int = 2,
    incomplete: bool = False,
) -> MemSource:
    """A source whose RAM is ``ram`` and whose data are RAM minus ``excluded``."""
    rng = random.Random(seed)
    ram_runs = [PfnRun(a, b) for a, b in ram]
    cut = {p for a, b in excluded for p in range(a, b)}
    pages = {}
    for run in ram_runs:
        for pfn in range(run.start_pfn, run.end_pfn):
            if pfn not in cut:
                pages[pfn] = make_page(rng, rng.choice((0, 0, 1, 1, 1, 2, 3)))
    data = runs_of(sorted(pages))
    return MemSource(
        max_pfn=ram_runs[-1].end_pfn,
        ram=ram_runs,
        data=data,
        pages=pages,
        notes=make_notes(cpus),
        incomplete=incomplete,
    )


def runs_of(pfns: Sequence[int]) -> list[PfnRun]:
    """Ascending pfns -> runs."""
    runs: list[PfnRun] = []
    for pfn in pfns:
        if runs and runs[-1].end_pfn == pfn:
            runs[-1] = PfnRun(runs[-1].start_pfn, pfn + 1)
        else:
            runs.append(PfnRun(pfn, pfn + 1))
    return runs
