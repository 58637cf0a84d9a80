# SPDX-License-Identifier: GPL-2.0-or-later
"""A :class:`MemorySource` that holds only what a dump level keeps.

``filter_source(source, level, vmcoreinfo)`` wraps any source (ELF vmcore,
kdump file, dump partition image): its ``data_runs`` lose the pages the level
excludes, and reading one of those raises :class:`ExcludedPageError`. It is
what makedumpfile's 2nd bitmap is to its 1st::

    source.ram_runs    ################ ####  ######       (unchanged: 1st bitmap)
    source.data_runs   ################ ####  ######
    type exclusions        ---   --          -            struct page walk (pagetypes)
    zero pages           -          -              -      page contents (bit 1)
    data_runs          #  #   ##  ## # ####  # #### #     (2nd bitmap)

The struct-page walk runs at once (so an unsupported kernel is refused when
the filter is made); the zero-page scan, which reads every kept page, runs on
the first call of ``data_runs`` and its result is kept.

Deliberate differences from makedumpfile (docs/levels.md, tests/vm/test_levels.py):

* levels 0 and 1 do not read struct pages, so hwpoisoned and offline pages are
  excluded only when a type bit (2, 4, 8, 16) is set: a damaged mem_map never
  stops a level 0/1 dump;
* a block of struct pages that cannot be read keeps its pages (and is logged),
  where makedumpfile gives up;
* pfns no mem_map section describes (QEMU's VGA and BIOS regions) are kept;
  makedumpfile cuts max_mapnr at the last section with a mem_map and drops them.

A kdump writer that stores zero pages as one shared zero page (makedumpfile
keeps them in its 2nd bitmap) can filter with ``level & ~1`` and spare the
zero-page scan its second read of every page.
"""

from __future__ import annotations

import logging
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from operator import lt
from typing import overload

from diskdump._binary import align_down, align_up
from diskdump.errors import DiskdumpError, ExcludedPageError
from diskdump.formats.memmap import (
    MemMapRange,
    SparseLayout,
    VirtualReader,
    VirtualTranslator,
    iter_mem_map,
)
from diskdump.formats.memsource import (
    MemorySource,
    PfnRun,
    SourceView,
    iter_run_pfns,
    merge_runs,
    runs_page_count,
)
from diskdump.formats.pagetypes import (
    BlockResult,
    DumpLevel,
    PageClass,
    PageLayout,
    Rules,
    classify_block,
    classify_block_spans,
    level_needs_mem_map,
    validate_level,
)
from diskdump.formats.vmcoreinfo import VmcoreInfo

__all__ = [
    "BLOCK_PAGES",
    "FilteredSource",
    "PackedRuns",
    "TypeExclusions",
    "filter_source",
    "find_type_exclusions",
    "intersect_runs",
    "subtract_runs",
    "zero_detector",
]

log = logging.getLogger(__name__)

#: pfns classified per read of struct pages (512 KiB of 64-byte struct pages); a multiple
#: of makedumpfile's PGMM_CACHED (512) so compound heads never straddle two blocks
BLOCK_PAGES = 8192
#: makedumpfile drops unused mem_map only in runs of two 64-pfn bitmap words or more
MIN_UNUSED_VMEMMAP_RUN = 2
#: pages read per batch by the zero-page scan (1 MiB of 4 KiB pages)
ZERO_SCAN_PAGES = 256

Classifier = Callable[[Rules, int, bytes, int], BlockResult]
Progress = Callable[[int, int], None]


class PackedRuns(Sequence[PfnRun]):
    """Ascending, non-overlapping pfn runs held in two arrays: 16 bytes a run.

    A list of :class:`PfnRun` costs about 94 bytes a run (object, two ints, the
    list slot). Filtering the 8 GiB bench image at -d 31 gives 334,588 excluded
    runs and as many kept ones: 63 MiB as lists, 10 MiB packed. Runs are
    appended in ascending order and merged with the previous one when they
    touch; items are :class:`PfnRun` objects made on access.
    """

    __slots__ = ("_ends", "_starts")

    def __init__(self, runs: Iterable[PfnRun] = ()) -> None:
        self._starts = array("Q")
        self._ends = array("Q")
        for run in runs:
            self.add(run.start_pfn, run.end_pfn)

    def add(self, start_pfn: int, end_pfn: int) -> None:
        """Append ``[start_pfn, end_pfn)``; it must not start before the last run's end.

        :raises ValueError: the run is out of order
        """
        if end_pfn <= start_pfn:
            return
        if self._ends and start_pfn <= self._ends[-1]:
            if start_pfn < self._ends[-1]:
                raise ValueError(f"pfn run {start_pfn:#x} added out of order")
            self._ends[-1] = max(self._ends[-1], end_pfn)
            return
        self._starts.append(start_pfn)
        self._ends.append(end_pfn)

    @property
    def starts(self) -> Sequence[int]:
        """The runs' start pfns (for bisect)."""
        return self._starts

    def page_count(self) -> int:
        """Pages in all runs (:func:`~diskdump.formats.memsource.runs_page_count` uses it)."""
        return sum(self._ends) - sum(self._starts)

    def __len__(self) -> int:
        return len(self._starts)

    @overload
    def __getitem__(self, index: int) -> PfnRun: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[PfnRun]: ...
    def __getitem__(self, index: int | slice) -> PfnRun | Sequence[PfnRun]:
        if isinstance(index, slice):
            return [
                PfnRun(s, e) for s, e in zip(self._starts[index], self._ends[index], strict=True)
            ]
        return PfnRun(self._starts[index], self._ends[index])

    def __iter__(self) -> Iterator[PfnRun]:
        for start, end in zip(self._starts, self._ends, strict=True):
            yield PfnRun(start, end)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedRuns):
            return self._starts == other._starts and self._ends == other._ends
        if isinstance(other, Sequence):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PackedRuns({len(self)} runs)"


def _packed(runs: Iterable[PfnRun]) -> PackedRuns:
    """``runs`` packed; sorted and merged first when they are not ascending."""
    collector = _RunCollector()
    collector.extend(runs)
    return collector.runs()


def _adopt(starts: array[int], ends: array[int]) -> PackedRuns:
    """A :class:`PackedRuns` holding ``starts`` and ``ends`` as they are, with no call per run.

    The arrays must be what :meth:`PackedRuns.add` would have built: ascending,
    every run non-empty, each ending before the next starts (touching runs merged).
    The helpers below build them with slices and bisects of arrays, where adding
    the runs one by one cost a second on a machine with a million runs.
    """
    runs = PackedRuns()
    runs._starts, runs._ends = starts, ends
    return runs


def _separate(starts: Sequence[int], ends: Sequence[int]) -> bool:
    """True when the runs are non-empty, ascending and none touches the next."""
    return all(map(lt, starts, ends)) and all(map(lt, ends[:-1], starts[1:]))


def _ascending(runs: Sequence[PfnRun]) -> bool:
    """True when ``runs`` are non-empty, ascending and disjoint (touching allowed)."""
    return all(r.start_pfn < r.end_pfn for r in runs) and all(
        a.end_pfn <= b.start_pfn for a, b in pairwise(runs)
    )


def _append(
    out_starts: array[int], out_ends: array[int], starts: array[int], ends: array[int]
) -> None:
    """Append separate runs (see :func:`_separate`) after ``out``'s, merging the first
    into ``out``'s last when they touch, as :meth:`PackedRuns.add` does."""
    if not starts:
        return
    if out_ends and starts[0] == out_ends[-1]:
        out_ends[-1] = ends[0]
        starts, ends = starts[1:], ends[1:]
    out_starts.extend(starts)
    out_ends.extend(ends)


def _subtract_packed(runs: Sequence[PfnRun], holes: PackedRuns) -> PackedRuns:
    """``_packed(_iter_subtract(runs, holes))``, a few array slices per run of ``runs``.

    Made for few ``runs`` (a source's data runs) and many ``holes`` (the type
    exclusions): each run takes the holes inside it by bisection, and the pieces
    between them are the holes' ends and starts, sliced.
    """
    if not isinstance(runs, PackedRuns) and not _ascending(runs):
        return _packed(_iter_subtract(runs, holes))
    h_starts, h_ends = holes._starts, holes._ends
    out_starts, out_ends = array("Q"), array("Q")
    for run in runs:
        start, end = run.start_pfn, run.end_pfn
        i = bisect_right(h_ends, start)  # first hole ending after the run starts
        j = bisect_left(h_starts, end)  # first hole starting at or after its end
        starts = array("Q", [start])
        starts.extend(h_ends[i:j])
        ends = h_starts[i:j]
        ends.append(end)
        if ends[0] <= starts[0]:  # a hole at the run's start
            starts, ends = starts[1:], ends[1:]
        if ends and ends[-1] <= starts[-1]:  # a hole past the run's end
            starts, ends = starts[:-1], ends[:-1]
        _append(out_starts, out_ends, starts, ends)
    return _adopt(out_starts, out_ends)


def _intersect_packed(runs: PackedRuns, within: Sequence[PfnRun]) -> PackedRuns:
    """``PackedRuns(_iter_intersect(runs, within))``, a few array slices per run of ``within``.

    Made for many ``runs`` (the type exclusions) and few ``within`` (RAM runs):
    the runs inside each RAM run are found by bisection and clipped at its ends.
    """
    if not _ascending(within):
        return PackedRuns(_iter_intersect(runs, within))
    r_starts, r_ends = runs._starts, runs._ends
    out_starts, out_ends = array("Q"), array("Q")
    for run in within:
        i = bisect_right(r_ends, run.start_pfn)
        j = bisect_left(r_starts, run.end_pfn)
        if i < j:
            starts, ends = r_starts[i:j], r_ends[i:j]
            starts[0] = max(starts[0], run.start_pfn)
            ends[-1] = min(ends[-1], run.end_pfn)
            _append(out_starts, out_ends, starts, ends)
    return _adopt(out_starts, out_ends)


@dataclass(slots=True)
class TypeExclusions:
    """What the struct-page walk excluded.

    :ivar runs: excluded pfn runs, ascending, merged, within RAM
    :ivar counts: excluded pages by reason
    :ivar classified_pages: RAM pages whose struct page was examined
    :ivar unreadable_pages: RAM pages whose struct page could not be read (kept)
    """

    runs: Sequence[PfnRun] = field(default_factory=PackedRuns)
    counts: dict[PageClass, int] = field(default_factory=dict)
    classified_pages: int = 0
    unreadable_pages: int = 0


def subtract_runs(runs: Sequence[PfnRun], holes: Sequence[PfnRun]) -> list[PfnRun]:
    """``runs`` minus ``holes``; both ascending and non-overlapping."""
    return list(_iter_subtract(runs, holes))


def _iter_subtract(runs: Iterable[PfnRun], holes: Sequence[PfnRun]) -> Iterator[PfnRun]:
    j = 0
    for run in runs:
        start = run.start_pfn
        while j < len(holes) and holes[j].end_pfn <= start:
            j += 1
        k = j
        while k < len(holes) and holes[k].start_pfn < run.end_pfn:
            hole = holes[k]
            if hole.start_pfn > start:
                yield PfnRun(start, hole.start_pfn)
            start = max(start, hole.end_pfn)
            k += 1
        if start < run.end_pfn:
            yield PfnRun(start, run.end_pfn)


def intersect_runs(a: Sequence[PfnRun], b: Sequence[PfnRun]) -> list[PfnRun]:
    """Pfns in both ``a`` and ``b`` (each ascending and non-overlapping)."""
    return list(_iter_intersect(a, b))


def _iter_intersect(a: Sequence[PfnRun], b: Sequence[PfnRun]) -> Iterator[PfnRun]:
    i = j = 0
    while i < len(a) and j < len(b):
        run_a, run_b = a[i], b[j]
        start = max(run_a.start_pfn, run_b.start_pfn)
        end = min(run_a.end_pfn, run_b.end_pfn)
        if start < end:
            yield PfnRun(start, end)
        if run_a.end_pfn <= run_b.end_pfn:
            i += 1
        else:
            j += 1


def pick_classifier(use_numpy: bool | None) -> Classifier:
    """The NumPy classifier when asked for (or, with None, when NumPy imports), else pure Python."""
    if use_numpy is False:
        return classify_block
    from diskdump.formats import pagetypes_np

    if use_numpy is None and not pagetypes_np.available():
        return classify_block
    return pagetypes_np.classify_block_np


def _iter_blocks(mm: MemMapRange, ram: Sequence[PfnRun]) -> Iterator[tuple[int, int]]:
    """(pfn, count) blocks of RAM inside ``mm``, split at multiples of BLOCK_PAGES."""
    for run in intersect_runs([PfnRun(mm.start_pfn, mm.end_pfn)], ram):
        pfn = run.start_pfn
        while pfn < run.end_pfn:
            end = min(run.end_pfn, (pfn // BLOCK_PAGES + 1) * BLOCK_PAGES)
            yield pfn, end - pfn
            pfn = end


def find_type_exclusions(
    source: MemorySource,
    info: VmcoreInfo,
    level: int,
    kmem: VirtualReader,
    *,
    use_numpy: bool | None = None,
    exclude_unused_vmemmap: bool = False,
    progress: Progress | None = None,
) -> TypeExclusions:
    """Walk mem_map and classify every RAM page's struct page for ``level``.

    :param source: the crashed kernel's memory (its ``ram_runs`` bound the walk)
    :param info: the kernel's VMCOREINFO
    :param level: dump level (0-31); bit 1 is not decided here
    :param kmem: kernel-virtual reader over ``source``
    :param use_numpy: force (True) or forbid (False) the NumPy classifier; None: if importable
    :param exclude_unused_vmemmap: also exclude the pages of struct pages that describe
        only excluded pages (makedumpfile ``-e``); ``kmem`` must offer ``virt_to_phys``
    :param progress: called with (pfns done, pfns total)
    :raises UnsupportedVersionError: the kernel's layout cannot honour ``level``
    """
    rules = Rules.for_level(PageLayout.from_vmcoreinfo(info), level)
    sparse = SparseLayout.from_vmcoreinfo(info)
    ram = list(source.ram_runs())
    mem_maps = list(iter_mem_map(kmem, sparse, source.max_pfn))
    out = _walk(kmem, rules, mem_maps, ram, pick_classifier(use_numpy), progress)
    if exclude_unused_vmemmap:
        if not isinstance(kmem, VirtualTranslator):
            raise TypeError("exclude_unused_vmemmap needs a reader with virt_to_phys")
        size = rules.layout.struct_size
        unused = _unused_vmemmap(kmem, mem_maps, out.runs, source.page_size, size)
        out.counts[PageClass.UNUSED_VMEMMAP] = runs_page_count(unused)
        out.runs = PackedRuns(merge_runs([*out.runs, *unused]))
    return out


def _walk(
    kmem: VirtualReader,
    rules: Rules,
    mem_maps: Sequence[MemMapRange],
    ram: Sequence[PfnRun],
    classify: Classifier,
    progress: Progress | None,
) -> TypeExclusions:
    """Classify the struct pages of every RAM pfn, block by block, in pfn order."""
    out = TypeExclusions()
    found = _RunCollector()
    total = runs_page_count(ram)
    skip_until = 0
    size = rules.layout.struct_size
    # the pure-Python classifier hands its runs over as lists, not as PfnRun objects
    spans = classify_block_spans if classify is classify_block else None
    for mm in mem_maps:
        for pfn, count in _iter_blocks(mm, ram):
            try:
                buf = kmem.read_virt(mm.mem_map + (pfn - mm.start_pfn) * size, count * size)
            except DiskdumpError as err:
                log.warning("struct pages of pfns %#x+%d unreadable, kept: %s", pfn, count, err)
                out.unreadable_pages += count
                continue
            if spans is not None:
                starts, ends, counts, skip_until = spans(rules, pfn, buf, skip_until)
                found.extend_spans(starts, ends)
            else:
                result = classify(rules, pfn, buf, skip_until)
                skip_until, counts = result.skip_until, result.counts
                found.extend(result.runs)
            for why, pages in counts.items():
                out.counts[why] = out.counts.get(why, 0) + pages
            out.classified_pages += count
            if progress is not None:
                progress(out.classified_pages + out.unreadable_pages, total)
    out.runs = _intersect_packed(found.runs(), ram)
    return out


class _RunCollector:
    """Runs arriving in (mostly) ascending order, packed as they come.

    A block's runs are appended as whole arrays when they are separate and
    follow the runs before them (every block of a pfn walk); otherwise run by
    run, as :meth:`PackedRuns.add` would, the ones out of order set aside.
    """

    def __init__(self) -> None:
        self.starts = array("Q")
        self.ends = array("Q")
        self.unordered: list[PfnRun] = []  # runs that came out of order (none in pfn walks)

    def extend(self, runs: Iterable[PfnRun]) -> None:
        """Add ``runs``: a list (a block's) at once, any other iterable run by run."""
        if isinstance(runs, list):
            self.extend_spans([r.start_pfn for r in runs], [r.end_pfn for r in runs])
            return
        for run in runs:
            self._add(run.start_pfn, run.end_pfn)

    def extend_spans(self, starts: list[int], ends: list[int]) -> None:
        """Add the runs ``[starts[i], ends[i])``."""
        if not starts:
            return
        if _separate(starts, ends) and (not self.ends or starts[0] >= self.ends[-1]):
            _append(self.starts, self.ends, array("Q", starts), array("Q", ends))
            return
        for start, end in zip(starts, ends, strict=True):
            self._add(start, end)

    def _add(self, start: int, end: int) -> None:
        if end <= start:
            return
        if self.ends and start <= self.ends[-1]:
            if start < self.ends[-1]:
                self.unordered.append(PfnRun(start, end))
            else:
                self.ends[-1] = max(self.ends[-1], end)
            return
        self.starts.append(start)
        self.ends.append(end)

    def runs(self) -> PackedRuns:
        packed = _adopt(self.starts, self.ends)
        if not self.unordered:
            return packed
        return PackedRuns(merge_runs([*packed, *self.unordered]))


def _unused_vmemmap(
    kmem: VirtualTranslator,
    mem_maps: Sequence[MemMapRange],
    excluded: Sequence[PfnRun],
    page_size: int,
    struct_size: int,
) -> list[PfnRun]:
    """Physical pages of mem_map whose every struct page describes an excluded pfn.

    As makedumpfile ``--exclude-unused-vm`` (find_unused_vmemmap_pages): only
    runs of at least :data:`MIN_UNUSED_VMEMMAP_RUN` such pages within a section
    are dropped (a lone page saves 4 KiB and keeps the agreement exact).
    """
    out: list[PfnRun] = []
    starts = [r.start_pfn for r in excluded]  # once: a bisect per mem_map page, not a scan
    for mm in mem_maps:
        first = align_up(mm.mem_map, page_size)
        last = align_down(mm.mem_map + (mm.end_pfn - mm.start_pfn) * struct_size, page_size)
        run: list[int] = []
        for vpage in [*range(first, last, page_size), None]:
            if vpage is not None and _describes_only(
                vpage, mm, excluded, starts, page_size, struct_size
            ):
                run.append(vpage)
                continue
            if len(run) >= MIN_UNUSED_VMEMMAP_RUN:
                out.extend(_phys_pages(kmem, run, page_size))
            run = []
    return merge_runs(out)


def _describes_only(
    vpage: int,
    mm: MemMapRange,
    excluded: Sequence[PfnRun],
    starts: Sequence[int],
    page_size: int,
    struct_size: int,
) -> bool:
    """True when every struct page overlapping mem_map page ``vpage`` is of an excluded pfn.

    ``excluded`` is ascending and merged, so a covered range lies inside one run: the
    one starting at or before its first pfn (found by bisecting ``starts``). Scanning
    every run for every mem_map page cost pages x runs (the 8 GiB bench image did not
    finish in a minute).
    """
    lo = mm.start_pfn + (vpage - mm.mem_map) // struct_size
    hi = mm.start_pfn + -(-(vpage + page_size - mm.mem_map) // struct_size)
    i = bisect_right(starts, lo) - 1
    return i >= 0 and excluded[i].end_pfn >= hi


def _phys_pages(kmem: VirtualTranslator, vpages: Sequence[int], page_size: int) -> list[PfnRun]:
    out: list[PfnRun] = []
    for vpage in vpages:
        try:
            pfn = kmem.virt_to_phys(vpage) // page_size
        except DiskdumpError as err:
            log.debug("mem_map page %#x not translated, kept: %s", vpage, err)
            continue
        out.append(PfnRun(pfn, pfn + 1))
    return out


class FilteredSource(SourceView):
    """``source`` seen through a dump level; a :class:`MemorySource`.

    Build it with :func:`filter_source`.
    """

    def __init__(
        self,
        source: MemorySource,
        level: int,
        types: TypeExclusions,
        *,
        zero_scan_numpy: bool | None = None,
    ) -> None:
        super().__init__(source)
        self.level = level
        self.types = types
        self._zero_numpy = zero_scan_numpy
        self._data: PackedRuns | None = None
        self.zero_pages = 0

    def data_runs(self) -> Sequence[PfnRun]:
        """Pfns the level keeps (the first call scans for zero pages when bit 1 is set)."""
        if self._data is None:
            types = self.types.runs
            if isinstance(types, PackedRuns):
                data = _subtract_packed(self.source.data_runs(), types)
            else:
                data = _packed(_iter_subtract(self.source.data_runs(), types))
            if self.level & DumpLevel.ZERO:
                zero = self._find_zero_pages(data)
                self.zero_pages = runs_page_count(zero)
                data = _subtract_packed(data, zero)
            self._data = data
        return self._data

    def drop_excluded_runs(self) -> None:
        """Compute the kept runs, then forget the excluded ones (the counts stay).

        The panic path needs only the kept runs; the excluded ones cost as much again
        (16 bytes a run: 5.4 MiB for the 8 GiB bench image at -d 31).
        """
        self.data_runs()
        self.types.runs = PackedRuns()

    def read_pages(self, pfn: int, count: int) -> bytes:
        """Contents of ``count`` pages from ``pfn``, all kept by the level.

        :raises ExcludedPageError: a page in the range is excluded
        """
        runs = self.data_runs()
        assert self._data is not None
        i = bisect_right(self._data.starts, pfn) - 1
        if i < 0 or pfn + count > runs[i].end_pfn or count < 0:
            raise ExcludedPageError(
                f"pages excluded by dump level {self.level}",
                offset=pfn * self.page_size,
                field="pfn",
                found=pfn,
            )
        return self.source.read_pages(pfn, count)

    def _find_zero_pages(self, data: Sequence[PfnRun]) -> PackedRuns:
        is_zero = zero_detector(self.page_size, self._zero_numpy)
        zero = PackedRuns()
        for pfn, count in iter_run_pfns(data, ZERO_SCAN_PAGES):
            buf = self.source.read_pages(pfn, count)
            for index in is_zero(buf, count):
                zero.add(pfn + index, pfn + index + 1)
        return zero


def zero_detector(page_size: int, use_numpy: bool | None) -> Callable[[bytes, int], list[int]]:
    """A function giving the indices of the all-zero pages of a buffer of ``count`` pages."""
    if use_numpy is not False:
        from diskdump.formats import pagetypes_np

        if use_numpy or pagetypes_np.available():
            return pagetypes_np.zero_page_indices
    zero_page = bytes(page_size)

    def scan(buf: bytes, count: int) -> list[int]:
        view = memoryview(buf)
        return [i for i in range(count) if view[i * page_size : (i + 1) * page_size] == zero_page]

    return scan


def filter_source(
    source: MemorySource,
    level: int,
    vmcoreinfo: VmcoreInfo,
    *,
    kmem: VirtualReader | None = None,
    use_numpy: bool | None = None,
    exclude_unused_vmemmap: bool = False,
    progress: Progress | None = None,
) -> FilteredSource:
    """``source`` with the pages ``level`` excludes left out of its data runs.

    :param source: the memory to filter
    :param level: makedumpfile ``-d`` bits, 0-31
    :param vmcoreinfo: the crashed kernel's VMCOREINFO
    :param kmem: kernel-virtual reader over ``source``; default: a page-table walker
        (:class:`diskdump.formats.x86_64.KernelMemory`)
    :param use_numpy: force or forbid NumPy (None: use it when it imports)
    :param exclude_unused_vmemmap: also drop mem_map pages describing only excluded
        pages (makedumpfile ``-e``/``--exclude-unused-vm``); needs a type bit in ``level``
    :param progress: called with (pfns done, pfns total) during the struct-page walk
    :raises UnsupportedVersionError: the kernel's layout cannot honour ``level``
    :raises ValueError: level outside 0-31
    """
    validate_level(level)
    types = TypeExclusions()
    if level_needs_mem_map(level):
        if kmem is None:
            from diskdump.formats.x86_64 import KernelMemory

            kmem = KernelMemory(source, vmcoreinfo)
        types = find_type_exclusions(
            source,
            vmcoreinfo,
            level,
            kmem,
            use_numpy=use_numpy,
            exclude_unused_vmemmap=exclude_unused_vmemmap,
            progress=progress,
        )
    return FilteredSource(source, level, types, zero_scan_numpy=use_numpy)
