# SPDX-License-Identifier: GPL-2.0-or-later
"""The page classification of :mod:`diskdump.formats.pagetypes`, vectorised with NumPy.

Same rules, same result (tests/formats/test_pagetypes.py proves it on random
struct pages with hypothesis); this one reads each field of a block of struct
pages as one strided array (no copy)::

    buf:  | page 0 (SIZE(page) bytes) | page 1 | page 2 | ...
    flags = ndarray(<u8, offset=OFFSET(page.flags), stride=SIZE(page))
    ...   one such view per field; the first tail's fields are the same views shifted by one

Off the panic path only: NumPy is not in the capture initramfs (docs/levels.md).
Importing this module imports NumPy; :func:`available` tells whether it can.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from diskdump.formats.memsource import PfnRun
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
)

__all__ = ["available", "classify_block_np", "zero_page_indices"]


def available() -> bool:
    """True when NumPy can be imported (the ``fast`` extra)."""
    return importlib.util.find_spec("numpy") is not None


def _np() -> Any:
    import numpy

    return numpy


def _column(np: Any, buf: bytes, layout: PageLayout, offset: int, dtype: str, n: int) -> Any:
    return np.ndarray((n,), dtype=dtype, buffer=buf, offset=offset, strides=(layout.struct_size,))


def _bit(np: Any, flags: Any, bit: int | None) -> Any:
    if bit is None:
        return np.zeros(flags.shape, dtype=bool)
    return (flags >> np.uint64(bit)) & np.uint64(1) != 0


def _equals(np: Any, mapcount: Any, value: int | None) -> Any:
    if value is None:
        return np.zeros(mapcount.shape, dtype=bool)
    return mapcount == np.uint32(value)


def _compound(np: Any, buf: bytes, layout: PageLayout, n: int, cols: dict[str, Any]) -> Any:
    """(order, hugetlb) arrays: order 0 and False except on valid compound heads."""
    order = np.zeros(n, dtype=np.uint64)
    hugetlb = np.zeros(n, dtype=bool)
    if n < 2:
        return order, hugetlb
    head = (cols["flags"][:-1] & np.uint64(layout.head_mask)) != 0
    size = layout.struct_size
    if layout.order_source in (OrderSource.MAPCOUNT, OrderSource.FLAG):
        flags_1 = _column(np, buf, layout, size + layout.off_flags, "<u8", n - 1)
        order[:-1] = np.where(head, flags_1 & np.uint64(FOLIO_ORDER_MASK), 0)
        if layout.order_source is OrderSource.MAPCOUNT:
            hugetlb[:-1] = head & _equals(np, cols["mapcount"][:-1], layout.hugetlb_value)
        else:
            hugetlb[:-1] = head & _bit(np, flags_1, layout.pg_hugetlb)
    else:
        assert layout.off_order is not None
        second = _column(np, buf, layout, size + layout.off_order, "u1", n - 1)
        order[:-1] = np.where(head, second, 0)
        if layout.off_dtor is not None and layout.hugetlb_dtor is not None:
            dtor = _column(np, buf, layout, size + layout.off_dtor, "u1", n - 1)
            hugetlb[:-1] = head & (dtor == layout.hugetlb_dtor)
    pfn = cols["pfn"]
    bad = order >= ORDER_LIMIT
    order[bad] = 0
    mask = (np.uint64(1) << order) - np.uint64(1)
    order[(pfn & mask) != 0] = 0
    return order, hugetlb


def _read_columns(np: Any, rules: Rules, start_pfn: int, buf: bytes) -> dict[str, Any]:
    layout = rules.layout
    n = len(buf) // layout.struct_size
    return {
        "n": n,
        "pfn": np.arange(start_pfn, start_pfn + n, dtype=np.uint64),
        "flags": _column(np, buf, layout, layout.off_flags, "<u8", n),
        "head": _column(np, buf, layout, layout.off_compound_head, "<u8", n),
        "mapping": _column(np, buf, layout, layout.off_mapping, "<u8", n),
        "private": _column(np, buf, layout, layout.off_private, "<u8", n),
        "mapcount": _column(np, buf, layout, layout.off_mapcount, "<u4", n),
    }


def _decide(np: Any, rules: Rules, cols: dict[str, Any], hugetlb: Any) -> tuple[Any, Any]:
    """(class, explicit pages or 0) per page: makedumpfile's if-chain as np.select."""
    layout, level = rules.layout, rules.level
    flags, mapcount, private = cols["flags"], cols["mapcount"], cols["private"]
    slab = _bit(np, flags, layout.pg_slab) | _equals(np, mapcount, layout.slab_value)
    anon = ((cols["mapping"] & np.uint64(PAGE_MAPPING_ANON)) != 0) & ~slab
    swapcache = _bit(np, flags, layout.pg_swapcache)
    if layout.pg_swapbacked is not None:
        swapcache &= _bit(np, flags, layout.pg_swapbacked)
    cache = _bit(np, flags, layout.pg_lru) | swapcache
    priv = _bit(np, flags, layout.pg_private)
    fal = layout.free_area_length
    free_on = bool(level & DumpLevel.FREE)
    buddy = free_on & _equals(np, mapcount, layout.buddy_value) & ~slab
    order_ok = private < np.uint64(fal if fal is not None else ORDER_LIMIT)
    unaccepted = free_on & (fal is not None) & _equals(np, mapcount, layout.unaccepted_value)
    tail = (cols["head"] & np.uint64(COMPOUND_TAIL_BIT)) != 0
    conds = [
        tail,
        buddy & ~order_ok,
        buddy,
        unaccepted,
        bool(level & DumpLevel.CACHE) & cache & ~priv & ~anon,
        bool(level & DumpLevel.CACHE_PRIVATE) & cache & ~anon & priv,
        bool(level & DumpLevel.CACHE_PRIVATE) & cache & ~anon,
        bool(level & DumpLevel.USER) & (anon | hugetlb),
        _bit(np, flags, layout.pg_hwpoison),
        _equals(np, mapcount, layout.offline_value) & ~slab,
    ]
    classes = [
        PageClass.KEEP,
        PageClass.KEEP,
        PageClass.FREE,
        PageClass.FREE,
        PageClass.CACHE,
        PageClass.CACHE_PRIVATE,
        PageClass.CACHE,
        PageClass.USER,
        PageClass.HWPOISON,
        PageClass.OFFLINE,
    ]
    why = np.select(conds, [np.uint8(c) for c in classes], default=np.uint8(PageClass.KEEP))
    safe_private = np.where(buddy & order_ok, private, 0)
    pages = np.where(buddy & order_ok, np.uint64(1) << safe_private, np.uint64(0))
    if fal is not None:
        pages = np.where(~buddy & unaccepted, np.uint64(1 << (fal - 1)), pages)
    return why, pages


def classify_block_np(rules: Rules, start_pfn: int, buf: bytes, skip_until: int = 0) -> BlockResult:
    """Vectorised :func:`diskdump.formats.pagetypes.classify_block`: same parameters and result."""
    if len(buf) < rules.layout.struct_size:
        return BlockResult([], {}, skip_until)
    np = _np()
    cols = _read_columns(np, rules, start_pfn, buf)
    n = cols["n"]
    order, hugetlb = _compound(np, buf, rules.layout, n, cols)
    why, pages = _decide(np, rules, cols, hugetlb)
    idx = np.flatnonzero(why != PageClass.KEEP)
    idx = idx[cols["pfn"][idx] >= np.uint64(skip_until)]
    count = np.where(pages[idx] != 0, pages[idx], np.uint64(1) << order[idx])
    starts = cols["pfn"][idx]
    ends = starts + count
    multi = np.flatnonzero(count > 1)
    keep = np.ones(len(idx), dtype=bool)
    # makedumpfile skips the pages inside a range it has just excluded: a later start
    # inside an earlier multi-page range is not evaluated at all
    until = skip_until
    for j in multi.tolist():
        if int(starts[j]) < until:
            keep[j] = False
        else:
            until = max(until, int(ends[j]))
    kept_multi = multi[keep[multi]]
    if len(kept_multi):
        k_starts, k_ends = starts[kept_multi], ends[kept_multi]
        pos = np.searchsorted(k_starts, starts, side="right") - 1
        inside = (pos >= 0) & (starts < k_ends[np.maximum(pos, 0)]) & (count == 1)
        keep &= ~inside
    starts, ends, classes = starts[keep], ends[keep], why[idx][keep]
    counts = np.bincount(classes, weights=(ends - starts).astype(np.float64), minlength=8)
    result = {PageClass(c): int(v) for c, v in enumerate(counts.tolist()) if v}
    runs = _merge(np, starts, ends)
    last_end = int(ends.max()) if len(ends) else 0
    return BlockResult(runs, result, max(skip_until, last_end))


def _merge(np: Any, starts: Any, ends: Any) -> list[PfnRun]:
    """Merge sorted, disjoint [start, end) ranges that touch."""
    if len(starts) == 0:
        return []
    breaks = np.flatnonzero(starts[1:] != ends[:-1]) + 1
    first = np.concatenate(([0], breaks))
    last = np.concatenate((breaks - 1, [len(starts) - 1]))
    return [PfnRun(a, b) for a, b in zip(starts[first].tolist(), ends[last].tolist(), strict=True)]


def zero_page_indices(buf: bytes, count: int) -> list[int]:
    """Indices of the pages of ``buf`` (``count`` equal pages) whose bytes are all zero."""
    np = _np()
    words = np.frombuffer(buf, dtype="<u8").reshape(count, -1)
    return [int(i) for i in np.flatnonzero(~words.any(axis=1))]
