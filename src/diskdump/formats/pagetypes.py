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
panic path, whose capture initramfs carries no NumPy (docs/levels.md). The
pure-Python one reduces every struct page to a code byte with byte operations
that run in C (strided slices, ``bytes.translate``, big-int AND/OR: :class:`_Plan`)
and runs the if-chain in Python only on compound heads and typed pages;
tests/formats/test_pagetypes_fast.py holds it to the row-by-row original.
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import accumulate

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
    "classify_block_spans",
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
    :raises struct.error: ``buf`` is not a whole number of struct pages
    """
    starts, ends, counts, skip_until = classify_block_spans(rules, start_pfn, buf, skip_until)
    return BlockResult(list(map(PfnRun, starts, ends)), counts, skip_until)


def classify_block_spans(
    rules: Rules, start_pfn: int, buf: bytes, skip_until: int = 0
) -> tuple[list[int], list[int], dict[PageClass, int], int]:
    """:func:`classify_block` without a :class:`PfnRun` per run: (starts, ends, counts, skip_until).

    The mem_map walk (filtered.py) packs the runs into arrays at once; making a
    PfnRun of each of them only to take it apart again cost nearly a third of
    the classification of the fragmented 8 GiB bench image.

    Most struct pages need no Python at all. :class:`_Plan` reduces each row, at
    C speed, to a code byte: 0 for a page kept or a compound tail, a
    :class:`PageClass` for a plain one-page exclusion, :data:`_COMPLEX` for a
    row whose answer needs more than its own bits (compound head, buddy,
    unaccepted, offline). Only the complex rows take makedumpfile's if-chain in
    Python, in pfn order. A one-page exclusion never makes makedumpfile skip a
    later page, so only the ranges of complex rows (and the previous block's
    ``skip_until``) hide pages from it: the simple rows outside those ranges are
    excluded as they are, and their counts are ``bytes.count`` of their codes.
    The excluded rows are marked in a byte lane whose runs of ones, found with
    ``re.split``, are the merged runs. The answers of complex rows are memoised
    per block by everything :func:`_decide` reads (the flag bits it tests, the
    anon bit, ``_mapcount``, ``private`` of a buddy, hugetlb): the thousands of
    buddy heads of a free list come in a few orders.
    """
    plan = _plan(rules)
    size = plan.size
    if len(buf) % size:
        raise struct.error(f"iterative unpacking requires a buffer of a multiple of {size} bytes")
    if not isinstance(buf, bytes):
        buf = bytes(buf)
    n = len(buf) // size
    codes = plan.codes(buf, n)
    simple = codes.translate(plan.simple_table)  # 1 for a one-page exclusion, else 0
    excluded = bytearray(simple)
    counts = [0] * len(_CLASSES)
    for code in plan.simple_codes:
        counts[code] = codes.count(code)
    skip = skip_until - start_pfn  # rows below this index are not evaluated
    if skip > 0:
        hidden = min(skip, n)
        _uncount(plan, codes, counts, 0, hidden)
        excluded[:hidden] = bytes(hidden)
    skip = _complex_rows(plan, rules.layout, start_pfn, buf, codes, simple, excluded, counts, skip)
    starts, ends = _spans(excluded, start_pfn)
    if ends:
        if skip > n:
            ends[-1] = start_pfn + skip  # the last range goes on into the next block
        skip_until = ends[-1]
    return starts, ends, {_CLASSES[c]: k for c, k in enumerate(counts) if k}, skip_until


def _complex_rows(
    plan: _Plan,
    layout: PageLayout,
    start_pfn: int,
    buf: bytes,
    codes: bytes,
    simple: bytes,
    excluded: bytearray,
    counts: list[int],
    skip: int,
) -> int:
    """Decide the complex rows in pfn order (makedumpfile's if-chain); mark what they
    exclude in ``excluded`` and ``counts``; return the row index the last one skips to.

    One call per block: the loop binds its lookups to locals once.
    """
    n = len(codes)
    size = plan.size
    masks = plan.masks
    head_mask, unpack_from = layout.head_mask, plan.unpacker.unpack_from
    i_flags, i_mapping, i_private, i_mapcount = plan.field_index
    relevant, buddy = plan.relevant, masks.buddy_value
    memo: dict[tuple[int, int, int, int, bool], tuple[int, int]] = {}
    ones = b"\x01" * n
    i = codes.find(_COMPLEX, max(skip, 0))
    while i >= 0:
        row = unpack_from(buf, i * size)
        flags, mapcount = row[i_flags], row[i_mapcount]
        order, hugetlb = 0, False
        if flags & head_mask and i + 1 < n:
            second = memoryview(buf)[(i + 1) * size : (i + 2) * size]
            order, hugetlb = _compound(layout, start_pfn + i, mapcount, second)
        private = row[i_private] if mapcount == buddy else 0
        key = (flags & relevant, row[i_mapping] & PAGE_MAPPING_ANON, private, mapcount, hugetlb)
        decided = memo.get(key)
        if decided is None:
            decided = memo[key] = _decide(masks, flags, row[i_mapping], private, mapcount, hugetlb)
        why, pages = decided
        if not why:
            i = codes.find(_COMPLEX, i + 1)
            continue
        pages = pages or 1 << order
        counts[why] += pages
        skip = i + pages
        hidden = skip if skip < n else n
        excluded[i:hidden] = ones[: hidden - i]
        if simple.find(1, i + 1, hidden) >= 0:
            _uncount(plan, codes, counts, i + 1, hidden)
        i = codes.find(_COMPLEX, skip)
    return skip


def _spans(excluded: bytearray, start_pfn: int) -> tuple[list[int], list[int]]:
    """The runs of ones in ``excluded`` as (starts, ends) pfn lists, found by ``re.split``."""
    bounds = list(accumulate(map(len, _ONES.split(excluded))))
    starts, ends = bounds[0:-1:2], bounds[1::2]
    if start_pfn:
        starts = list(map(start_pfn.__add__, starts))
        ends = list(map(start_pfn.__add__, ends))
    return starts, ends


def _uncount(plan: _Plan, codes: bytes, counts: list[int], lo: int, hi: int) -> None:
    """Take back the counts of the one-page exclusions among rows ``lo:hi``: a range
    excluded earlier covers them, so makedumpfile never looks at them."""
    for code in plan.simple_codes:
        counts[code] -= codes.count(code, lo, hi)


#: runs of excluded rows in classify_block_spans's lane, kept by re.split
_ONES = re.compile(b"(\x01+)")


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
    """Rules as plain ints, sets and booleans.

    The per-page code tests these, never :class:`DumpLevel` members: ``IntFlag``
    arithmetic builds a new enum member per ``&`` and cost more than the rest of
    the decision together.
    """

    want_cache: bool  #: level bit 2
    want_cache_private: bool  #: level bit 4
    want_user: bool  #: level bit 8
    want_free: bool  #: level bit 16
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
        lay, level = rules.layout, int(rules.level)
        fal = lay.free_area_length
        lru, swapcache, hwpoison = (
            _mask(lay.pg_lru),
            _mask(lay.pg_swapcache),
            _mask(lay.pg_hwpoison),
        )
        values = (lay.buddy_value, lay.unaccepted_value, lay.offline_value)
        return cls(
            want_cache=bool(level & DumpLevel.CACHE.value),
            want_cache_private=bool(level & DumpLevel.CACHE_PRIVATE.value),
            want_user=bool(level & DumpLevel.USER.value),
            want_free=bool(level & DumpLevel.FREE.value),
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


#: _decide's answers as plain ints (PageClass values); counts are keyed by PageClass later
_KEEP = PageClass.KEEP.value
_CACHE = PageClass.CACHE.value
_CACHE_PRIVATE = PageClass.CACHE_PRIVATE.value
_USER = PageClass.USER.value
_FREE = PageClass.FREE.value
_HWPOISON = PageClass.HWPOISON.value
_OFFLINE = PageClass.OFFLINE.value
_CLASSES = tuple(sorted(PageClass))  #: by value: the index of classify_block's counts
_KEPT = (_KEEP, 0)


def _decide(
    m: _Masks, flags: int, mapping: int, private: int, mapcount: int, hugetlb: bool
) -> tuple[int, int]:
    """makedumpfile's if-chain for one non-tail page: (class value, pages or 0 for 2^order)."""
    if not flags & m.interesting and not mapping & PAGE_MAPPING_ANON and mapcount not in m.typed:
        return _KEPT  # the common kernel page: nothing below can match
    slab = bool(flags & m.slab) or mapcount == m.slab_value
    anon = bool(mapping & PAGE_MAPPING_ANON) and not slab
    cache = bool(flags & m.lru) or (
        bool(flags & m.swapcache) and (not m.swapbacked or bool(flags & m.swapbacked))
    )
    private_flag = bool(flags & m.private)
    if m.want_free and mapcount == m.buddy_value and not slab:
        if private >= m.max_free_order:
            return _KEPT  # makedumpfile: "invalid free page order", kept
        return _FREE, 1 << private
    if m.want_free and mapcount == m.unaccepted_value and m.unaccepted_pages:
        return _FREE, m.unaccepted_pages
    if m.want_cache and cache and not private_flag and not anon:
        return _CACHE, 0
    if m.want_cache_private and cache and not anon:
        return (_CACHE_PRIVATE if private_flag else _CACHE), 0
    if m.want_user and (anon or hugetlb):
        return _USER, 0
    if flags & m.hwpoison:
        return _HWPOISON, 0
    if mapcount == m.offline_value and not slab:
        return _OFFLINE, 0
    return _KEPT


# --- the C-speed prefilter -----------------------------------------------------------------

#: a row the byte lanes cannot decide: makedumpfile's if-chain runs on it in Python
_COMPLEX = 0xFF
#: feature bits of the per-row byte the lanes build (_Plan.features)
_F_LRU, _F_SWAPCACHE, _F_SWAPBACKED, _F_PRIVATE = 0x01, 0x02, 0x04, 0x08
_F_SLAB, _F_HWPOISON, _F_ANON, _F_COMPLEX = 0x10, 0x20, 0x40, 0x80
_U32_MAX = 0xFFFFFFFF
_U64_MAX = (1 << 64) - 1

#: (offset in struct page, ``bytes.translate`` table)
_Lane = tuple[int, bytes]


def _any_table(pairs: Iterable[tuple[int, int]]) -> bytes:
    """A ``bytes.translate`` table: byte ``x`` becomes the OR of the ``bit`` of each
    ``(mask, bit)`` pair where ``x & mask`` is not 0."""
    pairs = tuple(pairs)
    return bytes(_bits((bool(x & mask), bit) for mask, bit in pairs) for x in range(256))


def _equal_table(values: list[int], k: int) -> bytes:
    """A ``bytes.translate`` table: byte ``x`` becomes the bit set (bit j: ``values[j]``)
    of the values whose byte ``k`` is ``x``."""
    return bytes(
        _bits((v >> 8 * k & 0xFF == x, 1 << j) for j, v in enumerate(values)) for x in range(256)
    )


#: compound_head byte 0 -> 0x00 for a tail page, 0xFF for any other (an AND mask)
_TAIL_TABLE = bytes(0 if x & COMPOUND_TAIL_BIT else 0xFF for x in range(256))


def _bits(pairs: Iterable[tuple[bool, int]]) -> int:
    """The OR of the bits whose condition holds."""
    out = 0
    for cond, bits in pairs:
        if cond:
            out |= bits
    return out


@dataclass(frozen=True, slots=True)
class _Plan:
    """How :func:`classify_block` reduces each struct page to one code byte, per :class:`Rules`.

    A row's *features* are one byte: the truth of every test makedumpfile's
    if-chain makes on a page that is neither a compound head nor typed (PG_lru,
    PG_swapcache, PG_swapbacked, PG_private, slab, PG_hwpoison, the anon bit),
    and :data:`_F_COMPLEX` for the rows whose answer needs more: a compound
    head (its order and hugetlb mark live in the next struct page) or a
    ``_mapcount`` equal to the buddy, unaccepted or offline type (their page
    counts come from ``private`` and the zone). The features of all rows are
    computed at once with byte operations that run in C::

        buf[off::SIZE(page)]                   one byte of every row: a lane
        lane.translate(table)                  a per-byte test, as feature bits
        int.from_bytes(lane) | & ...           lanes combined, all rows at once

    A ``_mapcount`` equality needs all four of its bytes: each byte lane becomes
    the bit set of the type values whose byte matches, and the AND of the four
    keeps the bit of the value equal in all four. Tail pages are cleared to
    features 0 (kept: their head decides for them). The code of each feature
    byte comes from :func:`_decide` itself, run on a struct page built to have
    exactly those features, so the two paths cannot disagree; a feature byte no
    such page can be built for is complex.
    """

    masks: _Masks
    size: int
    unpacker: struct.Struct
    field_index: tuple[int, int, int, int]  #: flags, mapping, private, _mapcount
    flag_lanes: tuple[_Lane, ...]  #: flags bytes -> feature bits
    anon_lane: _Lane  #: mapping byte 0 -> _F_ANON
    tail_lane: _Lane  #: compound_head byte 0 -> 0x00 for a tail page, 0xFF for any other
    mapcount_lanes: tuple[_Lane, ...]  #: _mapcount bytes -> bit set of matching type values
    value_features: bytes  #: bit set of matching type values -> feature bits
    code_of: bytes  #: feature byte -> 0 (kept), a one-page PageClass, or _COMPLEX
    relevant: int  #: every flags bit _decide tests (the memo key keeps only these)
    simple_codes: tuple[int, ...]  #: the one-page PageClass codes ``code_of`` gives
    simple_table: bytes  #: code -> 1 for a one-page exclusion, 0 for any other

    @classmethod
    def of(cls, rules: Rules) -> _Plan:
        layout, masks = rules.layout, _Masks.of(rules)
        unpacker, idx = page_fields_struct(layout)
        flag_lanes = []
        for k in range(8):
            parts = tuple(
                (mask >> 8 * k & 0xFF, bit) for mask, bit in _flag_features(layout, masks)
            )
            if any(mask for mask, _ in parts):
                flag_lanes.append((layout.off_flags + k, _any_table(parts)))
        # the type values a _mapcount is compared with: the slab type is a feature, the
        # others make the row complex (the hugetlb type matters on heads only: complex)
        slab: set[int] = set() if masks.slab_value is None else {masks.slab_value}
        values = sorted(masks.typed | slab)
        typed = _bits((v in masks.typed, 1 << j) for j, v in enumerate(values))
        slab_bits = _bits((v in slab, 1 << j) for j, v in enumerate(values))
        plan = cls(
            masks=masks,
            size=layout.struct_size,
            unpacker=unpacker,
            field_index=(idx[0], idx[2], idx[3], idx[4]),
            flag_lanes=tuple(flag_lanes),
            anon_lane=(layout.off_mapping, _any_table([(PAGE_MAPPING_ANON, _F_ANON)])),
            tail_lane=(layout.off_compound_head, _TAIL_TABLE),
            mapcount_lanes=tuple(
                (layout.off_mapcount + k, _equal_table(values, k))
                for k in range(4 if values else 0)
            ),
            value_features=_any_table([(typed, _F_COMPLEX), (slab_bits, _F_SLAB)]),
            code_of=bytes(256),
            relevant=masks.interesting | masks.slab | masks.swapbacked | masks.private,
            simple_codes=(),
            simple_table=bytes(256),
        )
        code_of = bytes(plan.code_for(layout, values, f) for f in range(256))
        assert code_of[0] == _KEEP, "a page without features (and a tail) is kept"
        simple = tuple(sorted(set(code_of) - {_KEEP, _COMPLEX}))
        table = bytes(int(c in simple) for c in range(256))
        return replace(plan, code_of=code_of, simple_codes=simple, simple_table=table)

    def features(self, buf: bytes, n: int) -> int:
        """The feature bytes of the ``n`` struct pages of ``buf``, as one little-endian int."""
        size, from_bytes = self.size, int.from_bytes
        off, table = self.anon_lane
        out = from_bytes(buf[off::size].translate(table), "little")
        for off, table in self.flag_lanes:
            out |= from_bytes(buf[off::size].translate(table), "little")
        equal = -1
        for off, table in self.mapcount_lanes:
            equal &= from_bytes(buf[off::size].translate(table), "little")
            if not equal:
                break
        if equal > 0:
            out |= from_bytes(equal.to_bytes(n, "little").translate(self.value_features), "little")
        off, table = self.tail_lane
        return out & from_bytes(buf[off::size].translate(table), "little")

    def codes(self, buf: bytes, n: int) -> bytes:
        """One code byte per struct page of ``buf``: 0, a one-page PageClass, or _COMPLEX."""
        return self.features(buf, n).to_bytes(n, "little").translate(self.code_of)

    def code_for(self, layout: PageLayout, values: list[int], features: int) -> int:
        """The code of a feature byte: what :func:`_decide` says of a page with just those.

        The page is built back from the feature bits and its features computed again
        by the lanes: a feature byte that does not come back (two masks sharing a bit)
        belongs to no real page, and is made complex rather than trusted.
        """
        if features & _F_COMPLEX:
            return _COMPLEX
        m = self.masks
        flags = _bits((bool(features & bit), mask) for mask, bit in _flag_features(layout, m))
        mapping = PAGE_MAPPING_ANON if features & _F_ANON else 0
        taken = {*values, layout.hugetlb_value}
        mapcount = next(v for v in range(_U32_MAX, -1, -1) if v not in taken)
        if features & _F_SLAB and not m.slab and m.slab_value is not None:
            mapcount = m.slab_value
        page = bytearray(self.size)
        _U64.pack_into(page, layout.off_flags, flags)
        _U64.pack_into(page, layout.off_mapping, mapping)
        _U32.pack_into(page, layout.off_mapcount, mapcount)
        if self.features(bytes(page), 1) != features:
            return _COMPLEX  # no struct page has exactly these features (masks that alias)
        why, pages = _decide(m, flags, mapping, 0, mapcount, False)
        return _COMPLEX if pages else why


def _flag_features(layout: PageLayout, m: _Masks) -> tuple[tuple[int, int], ...]:
    """(flags mask, feature bit) pairs; the mask of the complex bit is PG_head's.

    The masks are cut to the 64 bits of ``flags``: a bit beyond them is never set.
    """
    return (
        (m.lru & _U64_MAX, _F_LRU),
        (m.swapcache & _U64_MAX, _F_SWAPCACHE),
        (m.swapbacked & _U64_MAX, _F_SWAPBACKED),
        (m.private & _U64_MAX, _F_PRIVATE),
        (m.slab & _U64_MAX, _F_SLAB),
        (m.hwpoison & _U64_MAX, _F_HWPOISON),
        (layout.head_mask & _U64_MAX, _F_COMPLEX),
    )


@lru_cache(maxsize=32)
def _plan(rules: Rules) -> _Plan:
    """The plan of ``rules``, built once (256 calls of :func:`_decide`) and reused per block."""
    return _Plan.of(rules)


_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
