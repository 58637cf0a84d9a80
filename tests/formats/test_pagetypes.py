# SPDX-License-Identifier: GPL-2.0-or-later
"""Page classification by dump level, on struct pages built here for 6.1 and 6.12 layouts.

The VMCOREINFO values below are those of Debian's 6.1.0-56 and 6.12.117 kernels
(read from the QEMU dumps of tests/vm); the struct pages are packed the way
those kernels lay them out (include/linux/mm_types.h).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskdump.errors import UnsupportedVersionError
from diskdump.formats.memsource import PfnRun
from diskdump.formats.pagetypes import (
    BlockResult,
    DumpLevel,
    OrderSource,
    PageClass,
    PageLayout,
    Rules,
    classify_block,
    level_needs_mem_map,
    page_fields_struct,
    validate_level,
)
from diskdump.formats.pagetypes_np import classify_block_np
from diskdump.formats.vmcoreinfo import VmcoreInfo

COMMON = {
    "PAGESIZE": 4096,
    "SIZE(page)": 64,
    "OFFSET(page.flags)": 0,
    "OFFSET(page._refcount)": 52,
    "OFFSET(page.mapping)": 24,
    "OFFSET(page.lru)": 8,
    "OFFSET(page._mapcount)": 48,
    "OFFSET(page.private)": 40,
    "OFFSET(page.compound_head)": 8,
    "LENGTH(zone.free_area)": 11,
    "NUMBER(PG_swapcache)": 10,
}
KEYS_61 = {
    "OSRELEASE": "6.1.0-56-amd64",
    **COMMON,
    "OFFSET(page.compound_dtor)": 16,
    "OFFSET(page.compound_order)": 17,
    "NUMBER(PG_lru)": 4,
    "NUMBER(PG_private)": 13,
    "NUMBER(PG_swapbacked)": 19,
    "NUMBER(PG_slab)": 9,
    "NUMBER(PG_hwpoison)": 23,
    "NUMBER(PG_head_mask)": 1 << 16,
    "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)": -129,
    "NUMBER(HUGETLB_PAGE_DTOR)": 2,
    "NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)": -257,
}
KEYS_612 = {
    "OSRELEASE": "6.12.117+deb12-amd64",
    **COMMON,
    "NUMBER(PG_lru)": 5,
    "NUMBER(PG_private)": 14,
    "NUMBER(PG_swapbacked)": 17,
    "NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)": -184549376,
    "NUMBER(PG_hwpoison)": 20,
    "NUMBER(PG_head_mask)": 1 << 6,
    "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)": -268435456,
    "NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)": -201326592,
    "NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)": -251658240,
}
KERNELS = {"6.1": KEYS_61, "6.12": KEYS_612}
U32 = 0xFFFFFFFF
#: _mapcount of a page nobody maps (atomic -1)
UNMAPPED = U32


def layout_of(kernel: str, **changes: object) -> PageLayout:
    keys: dict[str, object] = {**KERNELS[kernel]}
    for key, value in changes.items():
        if value is None:
            keys.pop(key, None)
        else:
            keys[key] = value
    return PageLayout.from_vmcoreinfo(VmcoreInfo.from_entries(keys))  # type: ignore[arg-type]


@dataclass
class Page:
    """One struct page's fields; ``second`` fields matter on the first tail of a compound."""

    flags: int = 0
    head: int = 0  # compound_head (bit 0 = tail)
    mapping: int = 0
    private: int = 0
    mapcount: int = UNMAPPED
    byte16: int = 0  # 6.1 compound_dtor of a first tail
    byte17: int = 0  # 6.1 compound_order of a first tail

    def pack(self, layout: PageLayout) -> bytes:
        buf = bytearray(layout.struct_size)
        struct.pack_into("<Q", buf, layout.off_flags, self.flags)
        struct.pack_into("<Q", buf, layout.off_compound_head, self.head)
        struct.pack_into("<Q", buf, layout.off_mapping, self.mapping)
        struct.pack_into("<Q", buf, layout.off_private, self.private)
        struct.pack_into("<I", buf, layout.off_mapcount, self.mapcount & U32)
        if layout.order_source is OrderSource.PAGE:
            buf[16], buf[17] = self.byte16, self.byte17
        return bytes(buf)


def pack_pages(layout: PageLayout, pages: list[Page]) -> bytes:
    return b"".join(p.pack(layout) for p in pages)


def bit(layout: PageLayout, name: str) -> int:
    value = getattr(layout, name)
    assert value is not None
    return int(1 << value)


def compound(
    layout: PageLayout,
    order: int,
    *,
    head_flags: int = 0,
    mapping: int = 0,
    hugetlb: bool = False,
    head_pfn: int = 0,
) -> list[Page]:
    """A compound page of 2^order struct pages as the kernel lays it out."""
    head = Page(flags=layout.head_mask | head_flags, mapping=mapping)
    first = Page(head=(0xFFFF888000000000 + head_pfn * 64) | 1)
    if layout.order_source is OrderSource.MAPCOUNT:
        first.flags = order  # folio order in the low byte of _flags_1
        if hugetlb:
            assert layout.hugetlb_value is not None
            head.mapcount = layout.hugetlb_value
    else:
        first.byte17 = order
        first.byte16 = 2 if hugetlb else 1  # HUGETLB_PAGE_DTOR = 2, COMPOUND_PAGE_DTOR = 1
    tails = [Page(head=first.head) for _ in range((1 << order) - 2)]
    return [head, first, *tails]


def excluded(result: BlockResult) -> list[tuple[int, int]]:
    return [(r.start_pfn, r.end_pfn) for r in result.runs]


CLASSIFIERS = {"python": classify_block, "numpy": classify_block_np}


@pytest.fixture(params=sorted(KERNELS))
def kernel(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=sorted(CLASSIFIERS))
def classify(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return CLASSIFIERS[request.param]


def test_layouts_read_from_vmcoreinfo() -> None:
    old, new = layout_of("6.1"), layout_of("6.12")
    assert old.order_source is OrderSource.PAGE
    assert (old.off_order, old.off_dtor, old.hugetlb_dtor) == (17, 16, 2)
    assert old.buddy_value == 0xFFFFFF7F and old.pg_slab == 9 and old.slab_value is None
    assert new.order_source is OrderSource.MAPCOUNT
    assert new.buddy_value == 0xF0000000 and new.slab_value == 0xF5000000
    assert new.pg_slab is None and new.hugetlb_value == 0xF4000000


def test_free_buddy_pages_by_order(kernel: str, classify) -> None:  # type: ignore[no-untyped-def]
    layout = layout_of(kernel)
    assert layout.buddy_value is not None
    pages = [Page() for _ in range(16)]
    pages[8] = Page(mapcount=layout.buddy_value, private=3)  # order 3: pfns 8..15
    pages[2] = Page(mapcount=layout.buddy_value, private=0)
    buf = pack_pages(layout, pages)
    result = classify(Rules.for_level(layout, DumpLevel.FREE), 0x1000, buf)
    assert excluded(result) == [(0x1002, 0x1003), (0x1008, 0x1010)]
    assert result.counts == {PageClass.FREE: 9}
    assert excluded(classify(Rules.for_level(layout, 15), 0x1000, buf)) == []


def test_free_page_with_impossible_order_is_kept(kernel: str, classify) -> None:  # type: ignore[no-untyped-def]
    layout = layout_of(kernel)
    assert layout.buddy_value is not None
    pages = [Page(mapcount=layout.buddy_value, private=11), Page()]
    result = classify(Rules.for_level(layout, 31), 0, pack_pages(layout, pages))
    assert excluded(result) == []


def test_page_cache_bits_2_and_4(kernel: str, classify) -> None:  # type: ignore[no-untyped-def]
    layout = layout_of(kernel)
    lru, private = bit(layout, "pg_lru"), bit(layout, "pg_private")
    swap = bit(layout, "pg_swapcache") | bit(layout, "pg_swapbacked")
    pages = [
        Page(flags=lru, mapping=0xFFFF888001234000),  # 0 cache
        Page(flags=lru | private, mapping=0xFFFF888001234000),  # 1 cache with buffers
        Page(flags=swap),  # 2 swap cache
        Page(flags=bit(layout, "pg_swapcache")),  # 3 PG_swapcache alone: owner_priv_1
        Page(flags=lru, mapping=0xFFFF888001235001),  # 4 anonymous on the LRU
        Page(),  # 5 kernel page
    ]
    buf = pack_pages(layout, pages)
    two = classify(Rules.for_level(layout, DumpLevel.CACHE), 0, buf)
    assert excluded(two) == [(0, 1), (2, 3)]
    four = classify(Rules.for_level(layout, DumpLevel.CACHE_PRIVATE), 0, buf)
    assert excluded(four) == [(0, 3)]
    assert four.counts == {PageClass.CACHE: 2, PageClass.CACHE_PRIVATE: 1}
    user = classify(Rules.for_level(layout, DumpLevel.USER), 0, buf)
    assert excluded(user) == [(4, 5)]


def test_slab_page_is_never_user_data(kernel: str, classify) -> None:  # type: ignore[no-untyped-def]
    layout = layout_of(kernel)
    if layout.slab_value is not None:  # 6.10+: a page type
        slab = Page(mapping=0xFFFF888001235001, mapcount=layout.slab_value)
    else:  # PG_slab; the mapping word holds slab data whose bit 0 may be set
        slab = Page(flags=bit(layout, "pg_slab"), mapping=0xFFFF888001235001)
    result = classify(Rules.for_level(layout, 31), 0, pack_pages(layout, [slab, Page()]))
    assert excluded(result) == []


def test_compound_anonymous_page_goes_as_a_whole(kernel: str, classify) -> None:  # type: ignore[no-untyped-def]
    layout = layout_of(kernel)
    pages = [Page() for _ in range(4)]
    pages += compound(layout, 2, mapping=0xFFFF888001235001, head_pfn=4)
    pages += [Page() for _ in range(8)]
    result = classify(Rules.for_level(layout, DumpLevel.USER), 0, pack_pages(layout, pages))
    assert excluded(result) == [(4, 8)]
    assert result.counts == {PageClass.USER: 4}


def test_hugetlb_head_excludes_its_pages(kernel: str, classify) -> None:  # type: ignore[no-untyped-def]
    layout = layout_of(kernel)
    pages = compound(layout, 3, hugetlb=True) + compound(layout, 3, hugetlb=False, head_pfn=8)
    buf = pack_pages(layout, pages)
    assert excluded(classify(Rules.for_level(layout, DumpLevel.USER), 0, buf)) == [(0, 8)]
    assert excluded(classify(Rules.for_level(layout, 23), 0, buf)) == []


def test_misaligned_compound_order_counts_as_zero(kernel: str, classify) -> None:  # type: ignore[no-untyped-def]
    layout = layout_of(kernel)
    pages = [Page(), *compound(layout, 2, mapping=0x1001, head_pfn=1), Page(), Page(), Page()]
    result = classify(Rules.for_level(layout, DumpLevel.USER), 0, pack_pages(layout, pages))
    assert excluded(result) == [(1, 2)]  # head at pfn 1 cannot be order 2: only the head


def test_block_final_head_is_order_zero(kernel: str, classify) -> None:  # type: ignore[no-untyped-def]
    layout = layout_of(kernel)
    pages = [Page(), Page(flags=layout.head_mask, mapping=0x1001)]
    result = classify(Rules.for_level(layout, DumpLevel.USER), 0, pack_pages(layout, pages))
    assert excluded(result) == [(1, 2)]


def test_hwpoison_and_offline_pages_go_at_every_type_level(kernel: str, classify) -> None:  # type: ignore[no-untyped-def]
    layout = layout_of(kernel)
    assert layout.offline_value is not None
    pages = [Page(flags=bit(layout, "pg_hwpoison")), Page(mapcount=layout.offline_value), Page()]
    result = classify(Rules.for_level(layout, DumpLevel.CACHE), 0, pack_pages(layout, pages))
    assert excluded(result) == [(0, 2)]
    assert result.counts == {PageClass.HWPOISON: 1, PageClass.OFFLINE: 1}


def test_exclusion_spills_into_the_next_block(kernel: str, classify) -> None:  # type: ignore[no-untyped-def]
    layout = layout_of(kernel)
    assert layout.buddy_value is not None
    rules = Rules.for_level(layout, DumpLevel.FREE)
    first = [Page() for _ in range(4)]
    first[2] = Page(mapcount=layout.buddy_value, private=2)  # 4 pages, 2 beyond the block
    r1 = classify(rules, 0, pack_pages(layout, first))
    assert excluded(r1) == [(2, 6)] and r1.skip_until == 6
    # pfn 4 lies inside that range: makedumpfile does not even look at it
    second = [Page(mapcount=layout.buddy_value, private=3), Page(), Page(), Page()]
    r2 = classify(rules, 4, pack_pages(layout, second), r1.skip_until)
    assert excluded(r2) == []


def test_levels() -> None:
    assert validate_level(31) == DumpLevel(31)
    with pytest.raises(ValueError, match=r"dump level must be 0-31, got 32"):
        validate_level(32)
    assert not level_needs_mem_map(1) and level_needs_mem_map(2) and level_needs_mem_map(17)


def test_refuses_a_kernel_without_a_needed_key() -> None:
    with pytest.raises(
        UnsupportedVersionError,
        match=r"^vmcoreinfo lacks a key the dump level needs in field OFFSET\(page\.mapping\)",
    ):
        layout_of("6.1", **{"OFFSET(page.mapping)": None})


def test_refuses_unknown_compound_layout() -> None:
    keys = {"OFFSET(page.compound_order)": None, "OFFSET(page.compound_dtor)": None}
    with pytest.raises(UnsupportedVersionError, match=r"cannot find the compound page order"):
        layout_of("6.1", **keys)


def test_refuses_old_kernels_and_unknown_slab_encoding() -> None:
    with pytest.raises(UnsupportedVersionError, match=r"OSRELEASE: expected '>= 4.16'"):
        layout_of("6.1", OSRELEASE="4.15.0-1-amd64")
    with pytest.raises(UnsupportedVersionError, match=r"cannot tell slab pages"):
        layout_of("6.1", **{"NUMBER(PG_slab)": None})
    with pytest.raises(UnsupportedVersionError, match=r"outside SIZE\(page\)"):
        layout_of("6.1", **{"SIZE(page)": 48})


def test_refuses_free_pages_without_buddy_value() -> None:
    layout = layout_of("6.12", **{"NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)": None})
    Rules.for_level(layout, 15)  # everything else still works
    with pytest.raises(UnsupportedVersionError, match=r"cannot recognise free pages"):
        Rules.for_level(layout, 31)


def test_refuses_overlapping_fields() -> None:
    layout = layout_of("6.1", **{"OFFSET(page.private)": 20})
    with pytest.raises(UnsupportedVersionError, match=r"struct page fields overlap"):
        page_fields_struct(layout)


def test_newer_layouts_detected_by_keys() -> None:
    flag = layout_of(
        "6.12", **{"NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)": None, "NUMBER(PG_hugetlb)": 7}
    )
    assert flag.order_source is OrderSource.FLAG
    folio = layout_of(
        "6.1",
        **{
            "OFFSET(page.compound_order)": None,
            "OFFSET(folio._folio_order)": 64 + 17,
            "OFFSET(folio._folio_dtor)": 64 + 16,
        },
    )
    assert (folio.order_source, folio.off_order, folio.off_dtor) == (OrderSource.FOLIO, 17, 16)
    renamed = layout_of(
        "6.12", **{"OFFSET(page.compound_head)": None, "OFFSET(page.compound_info)": 8}
    )
    assert renamed.off_compound_head == 8


# --- the two implementations agree, on anything ------------------------------------------

_page = st.builds(
    Page,
    flags=st.one_of(
        st.integers(0, (1 << 64) - 1), st.sampled_from([0, 1 << 4, 1 << 5, 1 << 16, 64])
    ),
    head=st.one_of(st.just(0), st.integers(0, (1 << 64) - 1)),
    mapping=st.one_of(st.just(0), st.just(1), st.integers(0, (1 << 64) - 1)),
    private=st.one_of(st.integers(0, 12), st.integers(0, (1 << 64) - 1)),
    mapcount=st.one_of(
        st.sampled_from(
            [UNMAPPED, 0xFFFFFF7F, 0xFFFFFEFF, 0xF0000000, 0xF5000000, 0xF4000000, 0xF1000000, 0]
        ),
        st.integers(0, U32),
    ),
    byte16=st.integers(0, 255),
    byte17=st.integers(0, 70),
)


@settings(max_examples=300, deadline=None)
@given(
    kernel=st.sampled_from(sorted(KERNELS)),
    level=st.integers(0, 31),
    start=st.integers(0, 1 << 20).map(lambda n: n * 8),
    skip=st.integers(0, 16),
    pages=st.lists(_page, min_size=0, max_size=40),
)
def test_numpy_and_python_agree(kernel: str, level: int, start: int, skip: int, pages) -> None:  # type: ignore[no-untyped-def]
    layout = layout_of(kernel)
    rules = Rules.for_level(layout, level)
    buf = pack_pages(layout, pages)
    assert classify_block_np(rules, start, buf, start + skip) == classify_block(
        rules, start, buf, start + skip
    )


@given(kernel=st.sampled_from(sorted(KERNELS)), page=_page)
def test_struct_page_round_trip(kernel: str, page: Page) -> None:
    layout = layout_of(kernel)
    unpacker, order = page_fields_struct(layout)
    packed = page.pack(layout)
    assert unpacker.size == layout.struct_size == len(packed)
    fields = unpacker.unpack(packed)
    got = [fields[i] for i in order]
    assert got == [page.flags, page.head, page.mapping, page.private, page.mapcount & U32]
    again = Page(*got, byte16=page.byte16, byte17=page.byte17).pack(layout)
    assert again == packed


def test_runs_are_pfn_runs(kernel: str) -> None:
    layout = layout_of(kernel)
    result = classify_block(Rules.for_level(layout, 8), 0, pack_pages(layout, [Page(mapping=1)]))
    assert result.runs == [PfnRun(0, 1)]
