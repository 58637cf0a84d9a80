# SPDX-License-Identifier: GPL-2.0-or-later
"""How big a dump at a given level will be: from a vmcore, /proc/kcore or /proc/meminfo.

Like makedumpfile ``--mem-usage``, but the figure is a file size. The size
predicted is that of a kdump-compressed file with *uncompressed* pages (an
upper bound: compression only shrinks it)::

    header + sub-header        2 blocks
    1st and 2nd bitmap         2 x ceil(max_pfn / 8) bytes, block aligned
    page descriptors           24 bytes per kept page
    page data                  page_size per kept non-zero page (+ 1 shared zero page)

Three ways to count the kept pages, best first:

``vmcore``/``kcore``
    an ELF with VMCOREINFO (a saved vmcore, or /proc/kcore of the running
    kernel, which carries the note since Linux 4.19): the struct pages are
    classified exactly as the dump would (filtered.py); zero pages are found
    by reading the kept pages (a vmcore), or by sampling every
    :data:`KCORE_ZERO_SAMPLE`-th batch of them (live memory changes anyway).
``meminfo``
    RAM is the sum of the zones' ``present`` pages in /proc/zoneinfo (MemTotal
    lacks the kernel's reserved memory: 54 MB of a 512 MiB guest); excluded
    are the /proc/meminfo counters (kB) MemFree (bit 16), Cached + SwapCached
    (bit 2), + Buffers (bit 4), AnonPages + Hugetlb (bit 8); zero pages are not
    knowable. The counters are approximate and move: a margin of
    :data:`MEMINFO_MARGIN_PERCENT` % of RAM (at least
    :data:`MEMINFO_MARGIN_MIN_SIZE`) is added and stated. Checked against
    the exact size of the same memory in tests/vm/test_levels.py.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from diskdump._binary import align_up
from diskdump.errors import DiskdumpError, UnsupportedVersionError
from diskdump.formats.detect import opened_vmcore
from diskdump.formats.filtered import ZERO_SCAN_PAGES, filter_source, zero_detector
from diskdump.formats.memsource import MemorySource, PfnRun, iter_run_pfns, runs_page_count
from diskdump.formats.pagetypes import DumpLevel, PageClass, validate_level
from diskdump.formats.vmcoreinfo import vmcoreinfo_from_notes

__all__ = [
    "KCORE_PATH",
    "MEMINFO_PATH",
    "SizeEstimate",
    "estimate_meminfo",
    "estimate_running_system",
    "estimate_source",
    "kdump_file_size",
    "parse_meminfo",
    "parse_zoneinfo",
]

log = logging.getLogger(__name__)

KCORE_PATH = "/proc/kcore"
MEMINFO_PATH = "/proc/meminfo"
ZONEINFO_PATH = "/proc/zoneinfo"
#: kdump: disk_dump_header and kdump_sub_header take one block each (formats.md §1.1)
KDUMP_HEADER_BLOCKS = 2
#: sizeof(struct page_desc) (formats.md §1.8)
PAGE_DESC_SIZE = 24
#: margin of the meminfo estimate: MemTotal leaves out reserved memory (kernel image,
#: mem_map, crashkernel) and counters move between reading and crashing
MEMINFO_MARGIN_PERCENT = 5
MEMINFO_MARGIN_MIN_SIZE = 64 << 20
#: /proc/kcore: read one zero-scan batch in this many (the rest is extrapolated)
KCORE_ZERO_SAMPLE = 16
#: page size assumed for meminfo (x86_64)
DEFAULT_PAGE_SIZE = 4096
_KIB = 1024


@dataclass(frozen=True, slots=True)
class SizeEstimate:
    """A predicted dump size and how it was reached.

    :param level: dump level
    :param method: ``"vmcore"``, ``"kcore"`` or ``"meminfo"``
    :param page_size: bytes
    :param max_pfn: highest pfn + 1 (sizes the bitmaps)
    :param ram_pages: RAM pages (1st bitmap)
    :param kept_pages: pages the level keeps (2nd bitmap), zero pages included
    :param zero_pages: kept pages that are all zeros (written once, shared)
    :param excluded_pages: excluded pages by reason (PageClass names, lower case)
    :param margin_size: bytes added for uncertainty (0 when exact)
    :param note: how exact the figure is, in words
    """

    level: int
    method: str
    page_size: int
    max_pfn: int
    ram_pages: int
    kept_pages: int
    zero_pages: int
    excluded_pages: Mapping[str, int] = field(default_factory=dict)
    margin_size: int = 0
    note: str = ""

    @property
    def predicted_size(self) -> int:
        """Bytes of the kdump file with uncompressed pages, margin included."""
        return self.margin_size + kdump_file_size(
            self.page_size, self.max_pfn, self.kept_pages, self.zero_pages
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "level": self.level,
            "method": self.method,
            "page_size": self.page_size,
            "ram_pages": self.ram_pages,
            "kept_pages": self.kept_pages,
            "zero_pages": self.zero_pages,
            "excluded_pages": dict(self.excluded_pages),
            "margin_size": self.margin_size,
            "predicted_size": self.predicted_size,
            "note": self.note,
        }


def kdump_file_size(page_size: int, max_pfn: int, kept_pages: int, zero_pages: int) -> int:
    """Size in bytes of a kdump-compressed file whose pages are stored uncompressed."""
    bitmap = align_up(-(-max_pfn // 8), page_size)
    data_pages = kept_pages - zero_pages + (1 if zero_pages else 0)
    return (
        KDUMP_HEADER_BLOCKS * page_size
        + 2 * bitmap
        + PAGE_DESC_SIZE * kept_pages
        + page_size * data_pages
    )


def estimate_source(
    source: MemorySource, level: int, *, method: str = "vmcore", zero_sample: int = 1
) -> SizeEstimate:
    """Estimate from a vmcore (or /proc/kcore) with VMCOREINFO: exact struct-page classes.

    :param zero_sample: read one zero-scan batch in ``zero_sample`` (1: every page)
    :raises NotThisFormatError: the source has no VMCOREINFO
    :raises UnsupportedVersionError: the kernel's layout cannot honour ``level``
    """
    info = vmcoreinfo_from_notes(source.notes)
    filtered = filter_source(source, level & ~DumpLevel.ZERO, info)
    kept = list(filtered.data_runs())
    zero, exact = 0, True
    if level & DumpLevel.ZERO:
        zero, exact = _count_zero(source, kept, zero_sample), zero_sample == 1
    excluded = {why.name.lower(): n for why, n in filtered.types.counts.items()}
    if zero:
        excluded[PageClass.ZERO.name.lower()] = zero
    note = "exact" if exact else f"zero pages sampled 1 in {zero_sample}"
    return SizeEstimate(
        level=level,
        method=method,
        page_size=source.page_size,
        max_pfn=source.max_pfn,
        ram_pages=runs_page_count(source.ram_runs()),
        kept_pages=runs_page_count(kept),
        zero_pages=zero,
        excluded_pages=excluded,
        note=note,
    )


def _count_zero(source: MemorySource, kept: Sequence[PfnRun], sample: int) -> int:
    is_zero = zero_detector(source.page_size, None)
    zero = seen = 0
    for index, (pfn, count) in enumerate(iter_run_pfns(kept, ZERO_SCAN_PAGES)):
        if index % sample:
            continue
        seen += count
        zero += len(is_zero(source.read_pages(pfn, count), count))
    total = runs_page_count(kept)
    return zero if seen == total else round(zero * total / max(seen, 1))


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` as {name: kB} (lines ``Name:   123 kB``; unit-less counts kept as is)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        words = rest.split()
        if sep and words and words[0].isdigit():
            out[name.strip()] = int(words[0])
    return out


def parse_zoneinfo(text: str) -> int:
    """Sum of the ``present`` pages of every zone in ``/proc/zoneinfo`` text (0 if none)."""
    total = 0
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "present" and words[1].isdigit():
            total += int(words[1])
    return total


def estimate_meminfo(
    meminfo: Mapping[str, int], level: int, *, present_pages: int = 0
) -> SizeEstimate:
    """Estimate from /proc/meminfo counters (kB), with a margin.

    :param present_pages: RAM pages from :func:`parse_zoneinfo`; 0: use MemTotal
    :raises ValueError: level out of range, or MemTotal missing
    """
    validate_level(level)
    if "MemTotal" not in meminfo:
        raise ValueError("/proc/meminfo has no MemTotal")
    pages = {k: v * _KIB // DEFAULT_PAGE_SIZE for k, v in meminfo.items()}
    total = max(present_pages, pages["MemTotal"])
    excluded: dict[str, int] = {}
    if level & DumpLevel.FREE:
        excluded["free"] = pages.get("MemFree", 0)
    if level & (DumpLevel.CACHE | DumpLevel.CACHE_PRIVATE):
        excluded["cache"] = pages.get("Cached", 0) + pages.get("SwapCached", 0)
    if level & DumpLevel.CACHE_PRIVATE:
        excluded["cache_private"] = pages.get("Buffers", 0)
    if level & DumpLevel.USER:
        excluded["user"] = pages.get("AnonPages", 0) + pages.get("Hugetlb", 0)
    kept = max(0, total - sum(excluded.values()))
    margin = max(MEMINFO_MARGIN_MIN_SIZE, total * DEFAULT_PAGE_SIZE * MEMINFO_MARGIN_PERCENT // 100)
    note = (
        f"from /proc/{'zoneinfo and ' if present_pages else ''}meminfo: "
        f"+{MEMINFO_MARGIN_PERCENT}% margin (min {MEMINFO_MARGIN_MIN_SIZE >> 20} MiB)"
    )
    if level & DumpLevel.ZERO:
        note += "; zero pages not counted"
    return SizeEstimate(
        level=level,
        method="meminfo",
        page_size=DEFAULT_PAGE_SIZE,
        max_pfn=total,
        ram_pages=total,
        kept_pages=kept,
        zero_pages=0,
        excluded_pages=excluded,
        margin_size=margin,
        note=note,
    )


def estimate_running_system(
    level: int,
    *,
    kcore_path: str = KCORE_PATH,
    meminfo_path: str = MEMINFO_PATH,
    zoneinfo_path: str = ZONEINFO_PATH,
) -> SizeEstimate:
    """Estimate for the running kernel: /proc/kcore when readable with VMCOREINFO, else meminfo.

    :raises OSError: neither file can be read
    :raises UnsupportedVersionError: kcore works but the kernel cannot honour ``level``
    """
    validate_level(level)
    if os.access(kcore_path, os.R_OK):
        try:
            with opened_vmcore(kcore_path) as source:
                return estimate_source(source, level, method="kcore", zero_sample=KCORE_ZERO_SAMPLE)
        except UnsupportedVersionError:
            raise  # the dump would refuse this level too: say so, do not guess
        except (DiskdumpError, OSError) as err:
            log.info("%s not usable (%s): falling back to %s", kcore_path, err, meminfo_path)
    else:
        log.info("%s not readable: estimating from %s", kcore_path, meminfo_path)
    with open(meminfo_path, encoding="ascii", errors="replace") as f:
        meminfo = parse_meminfo(f.read())
    present = 0
    try:
        with open(zoneinfo_path, encoding="ascii", errors="replace") as f:
            present = parse_zoneinfo(f.read())
    except OSError as err:
        log.info("%s not readable (%s): RAM from MemTotal", zoneinfo_path, err)
    return estimate_meminfo(meminfo, level, present_pages=present)
