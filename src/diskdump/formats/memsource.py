# SPDX-License-Identifier: GPL-2.0-or-later
"""The physical-memory view every vmcore reader offers and every writer consumes.

A crashed kernel's memory reaches diskdump from several containers: the ELF
``/proc/vmcore`` (or an ELF file written by makedumpfile or QEMU), a
kdump-compressed file, or an image on a dump partition. Each reader exposes it
as a :class:`MemorySource`; each writer (kdump, ELF, the panic writer) reads from
one. Pages are addressed by pfn (physical address // page_size).

Two sets of pfns matter, as in the kdump format's two bitmaps::

    ram_runs   pfns that are RAM in the crashed machine      (kdump 1st bitmap)
    data_runs  pfns whose contents this source holds; a subset (kdump 2nd bitmap)

A pfn in ``ram_runs`` but not in ``data_runs`` was excluded (filtered, or lost
in an incomplete dump); reading it raises :class:`ExcludedPageError`, it is
never silently zero-filled.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "MemorySource",
    "PfnRun",
    "SourceView",
    "iter_run_pfns",
    "merge_runs",
    "runs_page_count",
]


@dataclass(frozen=True, slots=True, order=True)
class PfnRun:
    """A run of page frame numbers ``[start_pfn, end_pfn)``."""

    start_pfn: int
    end_pfn: int

    def __post_init__(self) -> None:
        if self.start_pfn < 0 or self.end_pfn < self.start_pfn:
            raise ValueError(f"bad pfn run [{self.start_pfn:#x}, {self.end_pfn:#x})")

    @property
    def pages(self) -> int:
        """Number of pfns in the run."""
        return self.end_pfn - self.start_pfn


@runtime_checkable
class MemorySource(Protocol):
    """Read-only physical memory of a crashed kernel, with its ELF notes."""

    @property
    def page_size(self) -> int:
        """Page size of the crashed kernel, in bytes."""
        ...

    @property
    def max_pfn(self) -> int:
        """Highest RAM pfn + 1 (kdump ``max_mapnr``)."""
        ...

    def ram_runs(self) -> Sequence[PfnRun]:
        """Runs of RAM pfns, ascending and non-overlapping."""
        ...

    def data_runs(self) -> Sequence[PfnRun]:
        """Runs of pfns whose contents are held, ascending, non-overlapping, within RAM."""
        ...

    def read_pages(self, pfn: int, count: int) -> bytes:
        """Contents of ``count`` pages starting at ``pfn``; all must lie in one data run.

        :raises ExcludedPageError: a page in the range is not held by this source
        """
        ...

    @property
    def notes(self) -> bytes:
        """The ELF note blob (PRSTATUS per CPU, VMCOREINFO, ...), in kernel order."""
        ...

    @property
    def incomplete(self) -> bool:
        """True when the container says the dump was cut short."""
        ...


def merge_runs(runs: Sequence[PfnRun]) -> list[PfnRun]:
    """Sort runs and merge overlapping or adjacent ones."""
    out: list[PfnRun] = []
    for run in sorted(runs):
        if run.pages == 0:
            continue
        if out and run.start_pfn <= out[-1].end_pfn:
            last = out[-1]
            out[-1] = PfnRun(last.start_pfn, max(last.end_pfn, run.end_pfn))
        else:
            out.append(run)
    return out


def runs_page_count(runs: Sequence[PfnRun]) -> int:
    """Total number of pfns in ``runs``.

    A sequence with its own ``page_count()`` (the filter's packed runs: two sums over
    arrays) answers without building a :class:`PfnRun` per run.
    """
    counter = getattr(runs, "page_count", None)
    if callable(counter):
        return int(counter())
    return sum(run.pages for run in runs)


def iter_run_pfns(runs: Sequence[PfnRun], batch_pages: int) -> Iterator[tuple[int, int]]:
    """Yield ``(pfn, count)`` batches of at most ``batch_pages`` covering ``runs`` in order."""
    for run in runs:
        pfn = run.start_pfn
        while pfn < run.end_pfn:
            count = min(batch_pages, run.end_pfn - pfn)
            yield pfn, count
            pfn += count


class SourceView:
    """A :class:`MemorySource` that forwards everything to ``source``.

    Wrappers that change one aspect of a source (the pages a dump level keeps,
    erased symbols) subclass it and override only what they change.
    """

    def __init__(self, source: MemorySource) -> None:
        self.source = source

    @property
    def page_size(self) -> int:
        """Page size in bytes (the source's)."""
        return self.source.page_size

    @property
    def max_pfn(self) -> int:
        """Highest RAM pfn + 1 (the source's)."""
        return self.source.max_pfn

    @property
    def notes(self) -> bytes:
        """The source's ELF notes."""
        return self.source.notes

    @property
    def incomplete(self) -> bool:
        """The source's incomplete flag."""
        return self.source.incomplete

    def ram_runs(self) -> Sequence[PfnRun]:
        """The source's RAM runs."""
        return self.source.ram_runs()

    def data_runs(self) -> Sequence[PfnRun]:
        """The source's data runs."""
        return self.source.data_runs()

    def read_pages(self, pfn: int, count: int) -> bytes:
        """The source's pages."""
        return self.source.read_pages(pfn, count)
