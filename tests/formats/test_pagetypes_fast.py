# SPDX-License-Identifier: GPL-2.0-or-later
"""The fast pure-Python classifier gives exactly what the row-by-row one gave.

``classify_block`` reduces struct pages to code bytes with C-speed byte lanes
and runs makedumpfile's if-chain in Python only on compound heads and typed
pages (formats/pagetypes.py). The row-by-row implementation it replaced is kept
below, unchanged, as the oracle: every test compares the two exactly (runs,
counts by class, skip_until), on random struct pages for the 6.1 and 6.12
layouts of tests/formats/test_pagetypes.py and on variants that move fields,
alias flag bits or drop optional keys, so that a shortcut the lanes take for one
layout cannot hide behind another.

The mem_map walk's run bookkeeping in formats/filtered.py (collecting, clipping
to RAM, subtracting from the data runs) now slices arrays instead of stepping
run by run; the last tests hold it to the step-by-step code it replaced.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskdump.formats.filtered import (
    PackedRuns,
    _intersect_packed,
    _iter_intersect,
    _iter_subtract,
    _packed,
    _RunCollector,
    _subtract_packed,
)
from diskdump.formats.memsource import PfnRun, merge_runs
from diskdump.formats.pagetypes import (
    COMPOUND_TAIL_BIT,
    FOLIO_ORDER_MASK,
    ORDER_LIMIT,
    PAGE_MAPPING_ANON,
    BlockResult,
    DumpLevel,
    OrderSource,
    PageClass,
    PageLayout,
    Rules,
    classify_block,
    classify_block_spans,
    page_fields_struct,
)
from tests.formats.test_pagetypes import KEYS_61, KEYS_612, U32, UNMAPPED, layout_of

# --- the oracle: the row-by-row classifier as it was before the byte lanes -----------------


def _classify_block_reference(
    rules: Rules, start_pfn: int, buf: bytes, skip_until: int = 0
) -> BlockResult:
    layout = rules.layout
    unpacker, idx = page_fields_struct(layout)
    rows = list(unpacker.iter_unpack(buf))
    i_flags, i_head, i_mapping, i_private, i_mapcount = idx
    masks = _RefMasks.of(rules)
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
            order, hugetlb = _ref_compound(layout, pfn, mapcount, second)
        why, pages = _ref_decide(masks, flags, row[i_mapping], row[i_private], mapcount, hugetlb)
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


def _ref_compound(
    layout: PageLayout, pfn: int, mapcount: int, second: memoryview
) -> tuple[int, bool]:
    source = layout.order_source
    if source in (OrderSource.MAPCOUNT, OrderSource.FLAG):
        (flags_1,) = struct.unpack_from("<Q", second, layout.off_flags)
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


def _ref_mask(bit: int | None) -> int:
    return 0 if bit is None else 1 << bit


@dataclass(frozen=True)
class _RefMasks:
    level: int
    slab: int
    lru: int
    swapcache: int
    swapbacked: int
    private: int
    hwpoison: int
    max_free_order: int
    unaccepted_pages: int
    slab_value: int | None
    buddy_value: int | None
    unaccepted_value: int | None
    offline_value: int | None
    interesting: int
    typed: frozenset[int]

    @classmethod
    def of(cls, rules: Rules) -> _RefMasks:
        lay = rules.layout
        fal = lay.free_area_length
        lru, swapcache, hwpoison = (
            _ref_mask(lay.pg_lru),
            _ref_mask(lay.pg_swapcache),
            _ref_mask(lay.pg_hwpoison),
        )
        values = (lay.buddy_value, lay.unaccepted_value, lay.offline_value)
        return cls(
            level=rules.level,
            slab=_ref_mask(lay.pg_slab),
            lru=lru,
            swapcache=swapcache,
            swapbacked=_ref_mask(lay.pg_swapbacked),
            private=_ref_mask(lay.pg_private),
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


def _ref_decide(
    m: _RefMasks, flags: int, mapping: int, private: int, mapcount: int, hugetlb: bool
) -> tuple[PageClass, int]:
    if not flags & m.interesting and not mapping & PAGE_MAPPING_ANON and mapcount not in m.typed:
        return PageClass.KEEP, 0
    level = DumpLevel(m.level)
    slab = bool(flags & m.slab) or mapcount == m.slab_value
    anon = bool(mapping & PAGE_MAPPING_ANON) and not slab
    cache = bool(flags & m.lru) or (
        bool(flags & m.swapcache) and (not m.swapbacked or bool(flags & m.swapbacked))
    )
    private_flag = bool(flags & m.private)
    if level & DumpLevel.FREE and mapcount == m.buddy_value and not slab:
        if private >= m.max_free_order:
            return PageClass.KEEP, 0
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


# --- layouts: the two Debian kernels, and variants that stress the byte lanes --------------


def _layouts() -> dict[str, PageLayout]:
    old, new = layout_of("6.1"), layout_of("6.12")
    return {
        "6.1": old,
        "6.12": new,
        # 6.6-6.8: hugetlb is PG_hugetlb in the first tail's flags
        "flag": layout_of(
            "6.12", **{"NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)": None, "NUMBER(PG_hugetlb)": 9}
        ),
        # 6.3-6.5: order and dtor in folio fields of the first tail
        "folio": layout_of(
            "6.1",
            **{
                "OFFSET(page.compound_order)": None,
                "OFFSET(page.compound_dtor)": None,
                "OFFSET(folio._folio_order)": 64 + 17,
                "OFFSET(folio._folio_dtor)": 64 + 16,
            },
        ),
        # 6.10-6.11: slab is a page type in the old encoding (a cleared bit), its low
        # bytes unlike the other types' (a false match in three of four lanes shows)
        "6.10": layout_of(
            "6.1", **{"NUMBER(PG_slab)": None, "NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)": -4097}
        ),
        # unaccepted memory recognised (a fourth type value)
        "unaccepted": layout_of("6.12", **{"NUMBER(PAGE_UNACCEPTED_MAPCOUNT_VALUE)": -150994944}),
        # optional keys missing: PG_swapcache alone decides, no hwpoison, no zone order limit
        "sparse": layout_of(
            "6.1",
            **{
                "NUMBER(PG_swapbacked)": None,
                "NUMBER(PG_hwpoison)": None,
                "LENGTH(zone.free_area)": None,
                "NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)": None,
                "NUMBER(HUGETLB_PAGE_DTOR)": None,
            },
        ),
        # bits that alias: PG_private is PG_lru, a two-bit head mask that covers PG_slab,
        # a slab type equal to the offline type, a hwpoison bit beyond the 64 flag bits
        "aliased": replace(
            old,
            pg_private=old.pg_lru,
            head_mask=(1 << 16) | (1 << 9),
            slab_value=old.offline_value,
            pg_hwpoison=70,
        ),
        # another SIZE(page) and other offsets, flags in bytes 56..63
        "moved": replace(
            new,
            struct_size=80,
            off_compound_head=0,
            off_mapcount=8,
            off_mapping=16,
            off_private=32,
            off_flags=56,
            pg_lru=33,
            pg_private=41,
            pg_swapcache=0,
            pg_swapbacked=62,
            pg_hwpoison=7,
            head_mask=1 << 63,
        ),
        # 4.16-6.2 layout with the order bytes right after compound_head
        "moved-old": replace(
            old, struct_size=72, off_flags=16, off_compound_head=0, off_dtor=8, off_order=9
        ),
    }


LAYOUTS = _layouts()


def _rules(name: str, level: int) -> Rules:
    layout = LAYOUTS[name]
    if layout.buddy_value is None:
        level &= ~int(DumpLevel.FREE)
    return Rules.for_level(layout, level)


def _type_values(layout: PageLayout) -> list[int]:
    values = (
        layout.buddy_value,
        layout.offline_value,
        layout.slab_value,
        layout.hugetlb_value,
        layout.unaccepted_value,
    )
    return [v for v in values if v is not None]


def _flag_bits(layout: PageLayout) -> list[int]:
    bits = [
        layout.pg_lru,
        layout.pg_private,
        layout.pg_swapcache,
        layout.pg_swapbacked,
        layout.pg_slab,
        layout.pg_hwpoison,
        layout.pg_hugetlb,
    ]
    masks = [1 << b for b in bits if b is not None and b < 64]
    return [*masks, layout.head_mask & (1 << 64) - 1]


@dataclass
class Row:
    """One struct page's fields, packed at the offsets of a layout."""

    flags: int = 0
    head: int = 0
    mapping: int = 0
    private: int = 0
    mapcount: int = UNMAPPED
    #: bytes written at (offset, value) after the fields: a first tail's order and dtor
    extra: tuple[tuple[int, int], ...] = ()

    def pack(self, layout: PageLayout) -> bytes:
        buf = bytearray(layout.struct_size)
        struct.pack_into("<Q", buf, layout.off_flags, self.flags)
        struct.pack_into("<Q", buf, layout.off_compound_head, self.head)
        struct.pack_into("<Q", buf, layout.off_mapping, self.mapping)
        struct.pack_into("<Q", buf, layout.off_private, self.private)
        struct.pack_into("<I", buf, layout.off_mapcount, self.mapcount & U32)
        for off, value in self.extra:
            buf[off] = value
        return bytes(buf)


def _near(value: int) -> st.SearchStrategy[int]:
    """``value`` with one of its four bytes changed: equal in three lanes, not in the fourth."""
    return st.tuples(st.integers(0, 3), st.integers(1, 255)).map(
        lambda kx: value ^ (kx[1] << 8 * kx[0])
    )


@st.composite
def plain_rows(draw: st.DrawFn, layout: PageLayout) -> list[Row]:
    bits = _flag_bits(layout)
    flags = 0
    for mask in draw(st.lists(st.sampled_from(bits), max_size=4)):
        flags |= mask
    if draw(st.booleans()):
        flags |= draw(st.integers(0, (1 << 64) - 1))
    values = _type_values(layout)
    mapcount = draw(
        st.one_of(
            st.sampled_from([UNMAPPED, 0, 1, *values]),
            st.sampled_from(values).flatmap(_near) if values else st.just(0),
            st.integers(0, U32),
        )
    )
    mapping = draw(
        st.sampled_from([0, 0, 0xFFFF888001234000, 0xFFFF888001235001, 1])
        | st.integers(0, (1 << 64) - 1)
    )
    head = draw(st.sampled_from([0, 0, 0, 0xFFFFEA0000040001]) | st.integers(0, (1 << 64) - 1))
    private = draw(st.integers(0, 12) | st.integers(0, (1 << 64) - 1))
    return [Row(flags, head, mapping, private, mapcount)]


@st.composite
def compound_rows(draw: st.DrawFn, layout: PageLayout) -> list[Row]:
    """A compound page: head, first tail (order, hugetlb) and the other tails."""
    order = draw(st.integers(1, 5) | st.sampled_from([0, 9, 63, 64, 200]))
    hugetlb = draw(st.booleans())
    head = plain_rows(layout).map(lambda rows: rows[0])
    row = draw(head)
    row.flags |= layout.head_mask
    row.head = 0
    if layout.order_source is OrderSource.MAPCOUNT and hugetlb:
        assert layout.hugetlb_value is not None
        row.mapcount = layout.hugetlb_value
    tail = 0xFFFFEA0000040000 | COMPOUND_TAIL_BIT
    first = Row(head=tail)
    if layout.order_source in (OrderSource.MAPCOUNT, OrderSource.FLAG):
        first.flags = order & 0xFF | draw(st.integers(0, 1 << 12)) << 8
        if layout.order_source is OrderSource.FLAG and hugetlb:
            assert layout.pg_hugetlb is not None
            first.flags |= 1 << layout.pg_hugetlb
    else:
        assert layout.off_order is not None
        extra = [(layout.off_order, order & 0xFF)]
        if layout.off_dtor is not None:
            extra.append((layout.off_dtor, 2 if hugetlb else draw(st.integers(0, 4))))
        first.extra = tuple(extra)
    tails = [
        Row(head=tail)
        for _ in range(draw(st.integers(0, max(0, min(40, (1 << min(order, 6)) - 2)))))
    ]
    return [row, first, *tails]


@st.composite
def buddy_rows(draw: st.DrawFn, layout: PageLayout) -> list[Row]:
    """A free buddy head (order in private, sometimes impossible) and free pages after it."""
    assert layout.buddy_value is not None
    order = draw(st.integers(0, 5) | st.sampled_from([10, 11, 12, 63, 64]))
    flags = draw(st.sampled_from([0, 0, *_flag_bits(layout)]))
    head = Row(flags=flags, private=order, mapcount=layout.buddy_value)
    rest = [Row() for _ in range(draw(st.integers(0, min(33, (1 << min(order, 6)) - 1))))]
    return [head, *rest]


def _rows_of(layout: PageLayout) -> st.SearchStrategy[list[Row]]:
    kinds = [plain_rows(layout), compound_rows(layout)]
    if layout.buddy_value is not None:
        kinds.append(buddy_rows(layout))
    # runs of one kind of simple page, as a fragmented page cache gives
    kinds.append(plain_rows(layout).flatmap(lambda r: st.integers(2, 20).map(lambda k: r * k)))
    return st.lists(st.one_of(kinds), max_size=12).map(
        lambda groups: [row for group in groups for row in group]
    )


@st.composite
def blocks(draw: st.DrawFn) -> tuple[Rules, int, bytes, int]:
    """(rules, start_pfn, struct pages, skip_until) for a random block."""
    name = draw(st.sampled_from(sorted(LAYOUTS)))
    layout = LAYOUTS[name]
    rules = _rules(name, draw(st.integers(0, 31)))
    rows = draw(_rows_of(layout))
    start = draw(st.sampled_from([0, 512, 1 << 20]) | st.integers(0, 1 << 24))
    skip = draw(
        st.sampled_from([0, start])
        | st.integers(start - 3, start + len(rows) + 40).map(lambda v: max(v, 0))
    )
    buf = b"".join(row.pack(layout) for row in rows)
    return rules, start, buf, skip


def _assert_same(rules: Rules, start: int, buf: bytes, skip: int) -> BlockResult:
    want = _classify_block_reference(rules, start, buf, skip)
    got = classify_block(rules, start, buf, skip)
    assert got == want
    assert got.runs == want.runs and got.counts == want.counts
    assert got.skip_until == want.skip_until
    assert all(isinstance(k, PageClass) for k in got.counts)
    starts, ends, counts, until = classify_block_spans(rules, start, buf, skip)
    assert [PfnRun(a, b) for a, b in zip(starts, ends, strict=True)] == want.runs
    assert (counts, until) == (want.counts, want.skip_until)
    return got


@settings(max_examples=1500, deadline=None)
@given(block=blocks())
def test_same_result_as_row_by_row(block: tuple[Rules, int, bytes, int]) -> None:
    _assert_same(*block)


@settings(max_examples=300, deadline=None)
@given(block=blocks(), cuts=st.lists(st.integers(0, 400), max_size=4))
def test_same_result_over_consecutive_blocks(
    block: tuple[Rules, int, bytes, int], cuts: list[int]
) -> None:
    """A buffer cut into blocks, ``skip_until`` carried from each to the next as _walk does."""
    rules, start, buf, skip = block
    size = rules.layout.struct_size
    n = len(buf) // size
    edges = sorted({0, n, *(c for c in cuts if c < n)})
    want_skip = got_skip = skip
    for lo, hi in pairwise(edges):
        part = buf[lo * size : hi * size]
        want = _classify_block_reference(rules, start + lo, part, want_skip)
        got = classify_block(rules, start + lo, part, got_skip)
        assert got == want
        want_skip, got_skip = want.skip_until, got.skip_until


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@pytest.mark.parametrize("level", range(32))
def test_every_single_page_feature_combination(name: str, level: int) -> None:
    """Every combination of the flag bits, the anon bit and each type value, once.

    One row per combination, each followed by a plain page (a head's first tail) so
    compound heads take order 0 and every row is decided on its own bits.
    """
    layout = LAYOUTS[name]
    rules = _rules(name, level)
    bits = _flag_bits(layout)
    rows = []
    for combo in range(1 << len(bits)):
        flags = sum(mask for j, mask in enumerate(bits) if combo >> j & 1)
        for mapping in (0, 1):
            for mapcount in (UNMAPPED, 0, *_type_values(layout)):
                rows += [Row(flags, 0, mapping, 3, mapcount), Row()]
    buf = b"".join(row.pack(layout) for row in rows)
    result = _assert_same(rules, 1, buf, 0)
    if level & DumpLevel.CACHE and name == "6.12":
        assert result.counts.get(PageClass.CACHE)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_type_values_need_all_four_bytes(name: str) -> None:
    """A _mapcount one byte off a type value is not that type, whichever byte differs."""
    layout = LAYOUTS[name]
    rows = []
    for value in _type_values(layout):
        for k in range(4):
            for x in (0x01, 0x80, 0xFF):
                for flags in (0, 1 << layout.pg_lru, layout.head_mask):
                    for mapping in (0, 1):
                        rows += [Row(flags, 0, mapping, 2, value ^ x << 8 * k), Row()]
    buf = b"".join(row.pack(layout) for row in rows)
    for level in range(32):
        _assert_same(_rules(name, level), 0, buf, 0)


@pytest.mark.parametrize("name", ["6.1", "6.12"])
def test_every_skip_until_on_a_mixed_block(name: str) -> None:
    """Each possible ``skip_until``, on a block with something of every kind."""
    layout = LAYOUTS[name]
    assert layout.buddy_value is not None and layout.offline_value is not None
    assert layout.pg_hwpoison is not None
    lru, anon = 1 << layout.pg_lru, 0xFFFF888001235001
    tail = Row(flags=lru, head=0xFFFFEA0000040001, mapping=anon)  # a tail's own bits never count
    if layout.order_source is OrderSource.MAPCOUNT:
        first = Row(flags=2, head=tail.head)
    else:
        assert layout.off_order is not None
        first = Row(head=tail.head, extra=((layout.off_order, 2),))
    rows = [Row(flags=lru)] * 3 + [Row(mapping=anon)] * 2 + [Row()]
    rows += [Row(private=2, mapcount=layout.buddy_value), Row(flags=lru), Row(), Row(mapping=anon)]
    rows += [Row(flags=layout.head_mask, mapping=anon), first, tail, tail]  # order 2 at pfn 10
    rows += [Row(flags=1 << layout.pg_hwpoison), Row(mapcount=layout.offline_value)]
    rows += [Row(flags=lru | 1 << layout.pg_private), Row(flags=layout.head_mask, mapping=anon)]
    buf = b"".join(row.pack(layout) for row in rows)
    start = 0x100000
    for level in (31, 30, 8, 2, 16):
        for skip in range(start - 1, start + len(rows) + 3):
            _assert_same(Rules.for_level(layout, level), start, buf, skip)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_heads_alike_but_for_hugetlb(name: str) -> None:
    """Compound heads equal in every field of their own, one of them hugetlb."""
    layout = LAYOUTS[name]
    heads = []
    for hugetlb in (False, True, False, True):
        head = Row(flags=layout.head_mask)
        first = Row(head=0xFFFFEA0000040001)
        if layout.order_source is OrderSource.MAPCOUNT:
            assert layout.hugetlb_value is not None
            head.mapcount = layout.hugetlb_value if hugetlb else UNMAPPED
            first.flags = 1
        elif layout.order_source is OrderSource.FLAG:
            assert layout.pg_hugetlb is not None
            first.flags = 1 | (1 << layout.pg_hugetlb if hugetlb else 0)
        else:
            assert layout.off_order is not None and layout.off_dtor is not None
            first.extra = ((layout.off_order, 1), (layout.off_dtor, 2 if hugetlb else 1))
        heads += [head, first]
    buf = b"".join(row.pack(layout) for row in heads)
    got = _assert_same(Rules.for_level(layout, 8), 0, buf, 0)
    if layout.hugetlb_dtor is not None or layout.order_source is not OrderSource.PAGE:
        assert got.runs == [PfnRun(2, 4), PfnRun(6, 8)]


def test_block_final_head_and_pages_inside_a_free_range() -> None:
    layout = LAYOUTS["6.12"]
    assert layout.buddy_value is not None
    lru = 1 << layout.pg_lru
    rows = [Row(mapping=1)] * 3 + [Row(private=2, mapcount=layout.buddy_value)]
    rows += [Row(flags=lru)] * 5  # the first three lie inside the free range: not looked at
    rows += [Row(flags=layout.head_mask, mapping=1)]  # block-final head: order 0
    buf = b"".join(row.pack(layout) for row in rows)
    got = _assert_same(Rules.for_level(layout, 31), 0x1000, buf, 0x1001)
    assert got.runs == [PfnRun(0x1001, 0x100A)]
    assert got.counts == {PageClass.USER: 3, PageClass.FREE: 4, PageClass.CACHE: 2}
    assert got.skip_until == 0x100A


def test_free_range_spills_into_the_next_block() -> None:
    layout = LAYOUTS["6.1"]
    assert layout.buddy_value is not None
    lru = 1 << layout.pg_lru
    rows = [Row(flags=lru), Row(private=3, mapcount=layout.buddy_value), Row(flags=lru)]
    buf = b"".join(row.pack(layout) for row in rows)
    first = _assert_same(Rules.for_level(layout, 31), 0x1FFE, buf, 0)
    assert first == BlockResult(
        [PfnRun(0x1FFE, 0x2007)], {PageClass.CACHE: 1, PageClass.FREE: 8}, 0x2007
    )
    second = _assert_same(Rules.for_level(layout, 31), 0x2001, buf, first.skip_until)
    assert second == BlockResult([], {}, 0x2007)


def test_whole_block_inside_an_earlier_range() -> None:
    layout = LAYOUTS["6.1"]
    buf = Row(mapping=1).pack(layout) * 8
    got = _assert_same(Rules.for_level(layout, 8), 64, buf, 1 << 40)
    assert got == BlockResult([], {}, 1 << 40)


def test_refuses_a_partial_struct_page() -> None:
    layout = LAYOUTS["6.1"]
    rules = Rules.for_level(layout, 31)
    buf = bytes(layout.struct_size + 1)
    with pytest.raises(struct.error):
        _classify_block_reference(rules, 0, buf)
    with pytest.raises(struct.error):
        classify_block(rules, 0, buf)


def test_accepts_bytearray_and_memoryview() -> None:
    layout = LAYOUTS["6.12"]
    rules = Rules.for_level(layout, 31)
    buf = b"".join(Row(flags=1 << 5 if i % 3 else 0).pack(layout) for i in range(20))
    want = _classify_block_reference(rules, 0, buf)
    assert classify_block(rules, 0, bytearray(buf)) == want  # type: ignore[arg-type]
    assert classify_block(rules, 0, memoryview(buf)) == want  # type: ignore[arg-type]


def test_layout_variants_are_valid() -> None:
    """The variants above stay layouts page_fields_struct accepts (no overlapping fields)."""
    for layout in LAYOUTS.values():
        assert page_fields_struct(layout)[0].size == layout.struct_size
    assert KEYS_61["SIZE(page)"] == KEYS_612["SIZE(page)"] == 64


# --- the mem_map walk's run bookkeeping (filtered.py), array slices instead of a step per run


class _ReferenceCollector:
    """filtered._RunCollector as it was: every run through PackedRuns.add."""

    def __init__(self) -> None:
        self.packed = PackedRuns()
        self.unordered: list[PfnRun] = []

    def extend(self, runs: list[PfnRun]) -> None:
        for run in runs:
            try:
                self.packed.add(run.start_pfn, run.end_pfn)
            except ValueError:
                self.unordered.append(run)

    def runs(self) -> PackedRuns:
        if not self.unordered:
            return self.packed
        return PackedRuns(merge_runs([*self.packed, *self.unordered]))


_pfn_runs = st.lists(
    st.tuples(st.integers(0, 300), st.integers(0, 12)).map(lambda t: PfnRun(t[0], t[0] + t[1])),
    max_size=30,
)
#: ascending runs as a walk or a source gives them: some touching, a few empty
_ascending_runs = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 9)), max_size=25).map(
    lambda steps: _chain(steps)
)


def _chain(steps: list[tuple[int, int]]) -> list[PfnRun]:
    out, pfn = [], 0
    for gap, length in steps:
        out.append(PfnRun(pfn + gap, pfn + gap + length))
        pfn += gap + length
    return out


def _packed_runs(runs: list[PfnRun]) -> PackedRuns:
    packed = PackedRuns()
    for run in runs:
        packed.add(run.start_pfn, run.end_pfn)
    return packed


@settings(max_examples=400, deadline=None)
@given(
    blocks=st.lists(
        st.one_of(_ascending_runs, _pfn_runs, _ascending_runs.map(lambda r: [*r][::-1])),
        max_size=6,
    ),
    offsets=st.lists(st.integers(0, 400), min_size=6, max_size=6),
    as_spans=st.booleans(),
)
def test_run_collector_as_before(
    blocks: list[list[PfnRun]], offsets: list[int], as_spans: bool
) -> None:
    want, got = _ReferenceCollector(), _RunCollector()
    for block, offset in zip(blocks, offsets, strict=False):
        runs = [PfnRun(r.start_pfn + offset, r.end_pfn + offset) for r in block]
        want.extend(runs)
        if as_spans:
            got.extend_spans([r.start_pfn for r in runs], [r.end_pfn for r in runs])
        else:
            got.extend(runs if len(runs) % 2 else iter(runs))
    assert got.runs() == want.runs()
    assert list(got.runs()) == list(want.runs())


@settings(max_examples=400, deadline=None)
@given(holes=_ascending_runs, runs=st.one_of(_ascending_runs, _pfn_runs), packed=st.booleans())
def test_subtract_as_before(holes: list[PfnRun], runs: list[PfnRun], packed: bool) -> None:
    hole_runs = _packed_runs(holes)
    source: list[PfnRun] | PackedRuns = runs
    if packed:
        if not all(a.end_pfn <= b.start_pfn for a, b in pairwise(runs)):
            return
        source = _packed_runs(runs)
    want = _packed(_iter_subtract(source, hole_runs))
    got = _subtract_packed(source, hole_runs)
    assert got == want and list(got) == list(want)


@settings(max_examples=400, deadline=None)
@given(runs=_ascending_runs, within=st.one_of(_ascending_runs, _pfn_runs))
def test_intersect_as_before(runs: list[PfnRun], within: list[PfnRun]) -> None:
    packed = _packed_runs(runs)
    try:
        want = PackedRuns(_iter_intersect(packed, within))
    except ValueError:  # runs ``within`` that overlap: refused before as now
        with pytest.raises(ValueError):
            _intersect_packed(packed, within)
        return
    got = _intersect_packed(packed, within)
    assert got == want and list(got) == list(want)
