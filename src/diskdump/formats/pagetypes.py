# SPDX-License-Identifier: GPL-2.0-or-later
"""Dump levels: which pages a level excludes, decided from each page's ``struct page``.

The level is makedumpfile's ``-d`` bit mask (formats.md §4.1)::

    bit  1  zero pages                 (decided from the page contents: filtered.py)
    bit  2  page cache without private data
    bit  4  all page cache
    bit  8  user data: anonymous pages and hugetlbfs pages
    bit 16  free pages (buddy allocator, unaccepted memory)

``struct page`` as this module reads it (offsets and sizes come from VMCOREINFO,
never from a header file; x86_64, little endian, ``SIZE(page)`` is 64 there)::

    +0   flags           u64   PG_* bits (NUMBER(PG_lru) ...), PG_head_mask
    +8   lru / compound_head   u64   bit 0 set: tail page of a compound page
    +24  mapping         u64   bit 0 set: anonymous (PAGE_MAPPING_ANON)
    +40  private         u64   buddy order of a free page
    +48  _mapcount       u32   page type word (page_type shares it)

    the second struct page of a compound page (its first tail) carries
    +0   flags           u64   low byte = folio order (Linux >= 6.6)
    +16  compound_dtor   u8    (<= 6.2: OFFSET(page.compound_dtor))
    +17  compound_order  u8    (<= 6.2: OFFSET(page.compound_order))

Rules, in makedumpfile's order (makedumpfile.c ``__exclude_unnecessary_pages``,
checked against makedumpfile 1.7.2 and its master of 2026; formats.md §4.2):
tail pages are decided by their head; a free buddy page excludes 2^private
pages; unaccepted memory excludes 2^(LENGTH(zone.free_area)-1); page cache
(PG_lru, or PG_swapcache with PG_swapbacked) without PG_private and not
anonymous (bit 2); any page cache not anonymous (bit 4); anonymous, not slab,
or a hugetlb head (bit 8); always: PG_hwpoison, and logically offline pages
(not slab). A compound head that is excluded takes its 2^order pages with it.

Page-type encodings handled, detected by the VMCOREINFO keys a kernel exports:

* Linux 4.16 to 6.11: a page type is a *cleared* bit in an all-ones word
  (``PAGE_BUDDY_MAPCOUNT_VALUE`` = ~0x80 = -129, offline ~0x100), slab is the
  flag ``NUMBER(PG_slab)`` (up to 6.9);
* Linux 6.10+: ``PAGE_SLAB_MAPCOUNT_VALUE``; 6.12+: the type is the top byte
  (PGTY_buddy 0xf0 << 24 = -268435456 ...). The whole 32-bit word is compared
  for equality, as makedumpfile does since its 6.12 fix.

Compound order and hugetlb, in the order this module tries them: 6.9+
``PAGE_HUGETLB_MAPCOUNT_VALUE`` (order in the low byte of the first tail's
flags), 6.6-6.8 ``NUMBER(PG_hugetlb)`` (same order byte), 6.3-6.5
``OFFSET(folio._folio_order)``/``_folio_dtor``, 4.16-6.2
``OFFSET(page.compound_order)``/``compound_dtor`` (one byte each since 4.16,
as makedumpfile reads them). Kernels before 4.16 are refused for the struct-page
bits. Verified on Debian's 6.1.0 and 6.12 kernels (tests/vm/test_levels.py).

Two implementations give identical answers (a property test proves it): one
over NumPy arrays (savecore, convert, estimate) and a pure-Python one for the
panic path, whose capture initramfs carries no NumPy (docs/levels.md).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from diskdump.errors import UnsupportedVersionError
from diskdump.formats.memsource import PfnRun
from diskdump.formats.pagelayout import OrderSource, PageLayout

__all__ = [
    "LEVEL_MAX",
    "BlockResult",
    "DumpLevel",
    "OrderSource",
    "PageClass",
    "PageLayout",
    "Rules",
    "classify_block",
    "level_needs_mem_map",
    "page_fields_struct",
    "validate_level",
]

#: makedumpfile's MAX_DUMP_LEVEL: the five bits of DumpLevel
LEVEL_MAX = 31
#: include/linux/page-flags.h PAGE_MAPPING_ANON: bit 0 of page->mapping
PAGE_MAPPING_ANON = 0x1
#: bit 0 of page->compound_head marks a tail page (include/linux/page-flags.h)
COMPOUND_TAIL_BIT = 0x1
#: folio order in the low byte of the first tail's flags (mm.h folio_order, Linux 6.6+)
FOLIO_ORDER_MASK = 0xFF
#: compound orders at or above the word size are garbage (makedumpfile's "invalid order")
ORDER_LIMIT = 64


class DumpLevel(enum.IntFlag):
    """makedumpfile ``-d`` bits (makedumpfile.h DL_EXCLUDE_*)."""

    ZERO = 1
    CACHE = 2
    CACHE_PRIVATE = 4
    USER = 8
    FREE = 16


class PageClass(enum.IntEnum):
    """Why a page was excluded (the counters makedumpfile reports); KEEP when it was not."""

    KEEP = 0
    ZERO = 1
    CACHE = 2
    CACHE_PRIVATE = 3
    USER = 4
    FREE = 5
    HWPOISON = 6
    OFFLINE = 7
    UNUSED_VMEMMAP = 8  #: struct pages that describe only excluded pages (makedumpfile -e)


#: levels that need struct page at all (bit 1 is decided from page contents)
_STRUCT_PAGE_BITS = DumpLevel.CACHE | DumpLevel.CACHE_PRIVATE | DumpLevel.USER | DumpLevel.FREE


def validate_level(level: int) -> DumpLevel:
    """Check a dump level is within makedumpfile's 0-31.

    :raises ValueError: out of range
    """
    if not 0 <= level <= LEVEL_MAX:
        raise ValueError(f"dump level must be 0-{LEVEL_MAX}, got {level}")
    return DumpLevel(level)


def level_needs_mem_map(level: int) -> bool:
    """True when ``level`` excludes by page type, so mem_map must be walked."""
    return bool(level & _STRUCT_PAGE_BITS)


@dataclass(frozen=True, slots=True)
class Rules:
    """A :class:`PageLayout` combined with a level: what the classifiers evaluate.

    Build it with :meth:`for_level`, which refuses a level this layout cannot honour.
    """

    layout: PageLayout
    level: int

    @classmethod
    def for_level(cls, layout: PageLayout, level: int) -> Rules:
        """Check ``level`` against ``layout``.

        :raises UnsupportedVersionError: bit 16 asked for and the kernel exports no
            ``PAGE_BUDDY_MAPCOUNT_VALUE`` (makedumpfile would walk the free lists instead)
        :raises ValueError: level out of 0-31
        """
        validate_level(level)
        if level & DumpLevel.FREE and layout.buddy_value is None:
            raise UnsupportedVersionError(
                "cannot recognise free pages on this kernel",
                field="NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)",
                found=layout.osrelease,
                hint="use a level without bit 16",
            )
        return cls(layout, level)


@dataclass(slots=True)
class BlockResult:
    """What one block of struct pages excludes.

    :ivar runs: excluded pfn runs, ascending, merged; the last may pass the block's end
    :ivar counts: excluded pages by reason (makedumpfile's pfn_cache, pfn_free, ...)
    :ivar skip_until: pfn below which the next block must not start an exclusion
        (those pages lie inside a range already excluded; makedumpfile skips them)
    """

    runs: list[PfnRun]
    counts: dict[PageClass, int]
    skip_until: int


def page_fields_struct(layout: PageLayout) -> tuple[struct.Struct, tuple[int, ...]]:
    """A Struct unpacking one whole ``struct page`` into its five fields, and their order.

    :return: the Struct (size ``SIZE(page)``) and, for (flags, compound_head,
        mapping, private, _mapcount), the index of each in an unpacked tuple
    :raises UnsupportedVersionError: the fields overlap (not a layout this module knows)
    """
    fields = [
        (layout.off_flags, "Q"),
        (layout.off_compound_head, "Q"),
        (layout.off_mapping, "Q"),
        (layout.off_private, "Q"),
        (layout.off_mapcount, "I"),
    ]
    order = sorted(range(len(fields)), key=lambda i: fields[i][0])
    fmt, pos = "<", 0
    for i in order:
        off, code = fields[i]
        if off < pos:
            raise UnsupportedVersionError(
                "struct page fields overlap", field=f"OFFSET(page) {off}", found=layout.osrelease
            )
        fmt += f"{off - pos}x{code}" if off > pos else code
        pos = off + struct.calcsize("<" + code)
    fmt += f"{layout.struct_size - pos}x"
    return struct.Struct(fmt), tuple(order.index(i) for i in range(len(fields)))


def classify_block(rules: Rules, start_pfn: int, buf: bytes, skip_until: int = 0) -> BlockResult:
    """Classify the pages whose struct pages are ``buf`` (pure Python, no NumPy).

    :param rules: layout and level
    :param start_pfn: pfn described by the first struct page of ``buf``
    :param buf: consecutive struct pages, a whole number of ``SIZE(page)``
    :param skip_until: from the previous block's result (0 for the first)
    :return: the excluded ranges; pages of a block-final compound head count as order 0
    """
    layout = rules.layout
    unpacker, idx = page_fields_struct(layout)
    rows = list(unpacker.iter_unpack(buf))
    i_flags, i_head, i_mapping, i_private, i_mapcount = idx
    masks = _Masks.of(rules)
    spans: list[list[int]] = []
    counts: dict[PageClass, int] = {}
    for i, row in enumerate(rows):
        pfn = start_pfn + i
        if pfn < skip_until or row[i_head] & COMPOUND_TAIL_BIT:
            continue
        flags, mapcount = row[i_flags], row[i_mapcount]
        order, hugetlb = 0, False
        if flags & layout.head_mask and i + 1 < len(rows):
            second = memoryview(buf)[(i + 1) * layout.struct_size : (i + 2) * layout.struct_size]
            order, hugetlb = _compound(layout, pfn, mapcount, second)
        why, pages = _decide(masks, flags, row[i_mapping], row[i_private], mapcount, hugetlb)
        if why is PageClass.KEEP:
            continue
        end = pfn + (pages if pages else 1 << order)
        counts[why] = counts.get(why, 0) + end - pfn
        if spans and spans[-1][1] == pfn:
            spans[-1][1] = end
        else:
            spans.append([pfn, end])
        skip_until = end
    return BlockResult([PfnRun(a, b) for a, b in spans], counts, skip_until)


def _compound(layout: PageLayout, pfn: int, mapcount: int, second: memoryview) -> tuple[int, bool]:
    """Order and hugetlb mark of the compound page headed at ``pfn``."""
    source = layout.order_source
    if source in (OrderSource.MAPCOUNT, OrderSource.FLAG):
        (flags_1,) = _U64.unpack_from(second, layout.off_flags)
        order = flags_1 & FOLIO_ORDER_MASK
        if source is OrderSource.MAPCOUNT:
            hugetlb = mapcount == layout.hugetlb_value
        else:
            assert layout.pg_hugetlb is not None
            hugetlb = bool(flags_1 >> layout.pg_hugetlb & 1)
    else:
        assert layout.off_order is not None
        order = second[layout.off_order]
        hugetlb = (
            layout.off_dtor is not None
            and layout.hugetlb_dtor is not None
            and second[layout.off_dtor] == layout.hugetlb_dtor
        )
    if order >= ORDER_LIMIT or pfn & ((1 << order) - 1):
        order = 0
    return order, hugetlb


def _mask(bit: int | None) -> int:
    return 0 if bit is None else 1 << bit


@dataclass(frozen=True, slots=True)
class _Masks:
    """Rules as plain ints and sets, so the per-page loop does no attribute lookups."""

    level: int
    slab: int
    lru: int
    swapcache: int
    swapbacked: int  #: 0: PG_swapbacked not exported, PG_swapcache alone decides
    private: int
    hwpoison: int
    max_free_order: int
    unaccepted_pages: int  #: 0 when unaccepted memory cannot be recognised
    slab_value: int | None
    buddy_value: int | None
    unaccepted_value: int | None
    offline_value: int | None
    #: a page with none of these flags, no anon bit and another _mapcount is kept at once
    interesting: int
    typed: frozenset[int]

    @classmethod
    def of(cls, rules: Rules) -> _Masks:
        lay = rules.layout
        fal = lay.free_area_length
        lru, swapcache, hwpoison = (
            _mask(lay.pg_lru),
            _mask(lay.pg_swapcache),
            _mask(lay.pg_hwpoison),
        )
        values = (lay.buddy_value, lay.unaccepted_value, lay.offline_value)
        return cls(
            level=rules.level,
            slab=_mask(lay.pg_slab),
            lru=lru,
            swapcache=swapcache,
            swapbacked=_mask(lay.pg_swapbacked),
            private=_mask(lay.pg_private),
            hwpoison=hwpoison,
            max_free_order=fal if fal is not None else ORDER_LIMIT,
            unaccepted_pages=1 << (fal - 1) if fal is not None else 0,
            slab_value=lay.slab_value,
            buddy_value=lay.buddy_value,
            unaccepted_value=lay.unaccepted_value,
            offline_value=lay.offline_value,
            interesting=lru | swapcache | hwpoison | lay.head_mask,
            typed=frozenset(v for v in values if v is not None),
        )


def _decide(
    m: _Masks, flags: int, mapping: int, private: int, mapcount: int, hugetlb: bool
) -> tuple[PageClass, int]:
    """makedumpfile's if-chain for one non-tail page: (class, pages or 0 for 2^order)."""
    if not flags & m.interesting and not mapping & PAGE_MAPPING_ANON and mapcount not in m.typed:
        return PageClass.KEEP, 0  # the common kernel page: nothing below can match
    level = m.level
    slab = bool(flags & m.slab) or mapcount == m.slab_value
    anon = bool(mapping & PAGE_MAPPING_ANON) and not slab
    cache = bool(flags & m.lru) or (
        bool(flags & m.swapcache) and (not m.swapbacked or bool(flags & m.swapbacked))
    )
    private_flag = bool(flags & m.private)
    if level & DumpLevel.FREE and mapcount == m.buddy_value and not slab:
        if private >= m.max_free_order:
            return PageClass.KEEP, 0  # makedumpfile: "invalid free page order", kept
        return PageClass.FREE, 1 << private
    if level & DumpLevel.FREE and mapcount == m.unaccepted_value and m.unaccepted_pages:
        return PageClass.FREE, m.unaccepted_pages
    if level & DumpLevel.CACHE and cache and not private_flag and not anon:
        return PageClass.CACHE, 0
    if level & DumpLevel.CACHE_PRIVATE and cache and not anon:
        return (PageClass.CACHE_PRIVATE if private_flag else PageClass.CACHE), 0
    if level & DumpLevel.USER and (anon or hugetlb):
        return PageClass.USER, 0
    if flags & m.hwpoison:
        return PageClass.HWPOISON, 0
    if mapcount == m.offline_value and not slab:
        return PageClass.OFFLINE, 0
    return PageClass.KEEP, 0


_U64 = struct.Struct("<Q")
