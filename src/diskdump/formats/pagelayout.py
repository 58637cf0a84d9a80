# SPDX-License-Identifier: GPL-2.0-or-later
"""The layout of one kernel's ``struct page``, read from VMCOREINFO (for formats/pagetypes.py).

Offsets, sizes and page-type values come from VMCOREINFO only, never from a
header file; which keys a kernel exports decides the encoding (formats.md §3.4,
§4.2). x86_64 struct page as Linux 6.1 and 6.12 export it (SIZE(page) 64)::

    +0   flags           u64   PG_* bits (NUMBER(PG_lru) ...), PG_head_mask
    +8   compound_head   u64   bit 0 set: tail page (7.1+: OFFSET(page.compound_info))
    +24  mapping         u64   bit 0 set: anonymous
    +40  private         u64   buddy order of a free page
    +48  _mapcount       u32   page type word (page_type shares it)

    first tail page of a compound page:
    +0   flags           u64   low byte = folio order (6.6+)
    +16  compound_dtor   u8    OFFSET(page.compound_dtor)  (4.16-6.2)
    +17  compound_order  u8    OFFSET(page.compound_order) (4.16-6.2)
                               OFFSET(folio._folio_order/_folio_dtor) - SIZE(page) (6.3-6.5)

A layout this module cannot read without guessing is refused with
:class:`~diskdump.errors.UnsupportedVersionError` naming the missing key.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from diskdump.errors import UnsupportedVersionError
from diskdump.formats.vmcoreinfo import VmcoreInfo

__all__ = ["MIN_KERNEL", "OrderSource", "PageLayout"]

#: the compound order and dtor fields are one byte from Linux 4.16 on (makedumpfile reads
#: them as UCHAR from KERNEL_VERSION(4, 16, 0), USHORT before)
MIN_KERNEL = (4, 16)
_U32 = 0xFFFFFFFF


class OrderSource(enum.Enum):
    """Where the compound order (and the hugetlb mark) of a compound page lives."""

    MAPCOUNT = "flags byte, hugetlb by page type (6.9+)"
    FLAG = "flags byte, hugetlb by PG_hugetlb (6.6-6.8)"
    FOLIO = "folio._folio_order/_folio_dtor (6.3-6.5)"
    PAGE = "page.compound_order/compound_dtor (4.16-6.2)"


@dataclass(frozen=True, slots=True)
class PageLayout:
    """Everything the classification needs about one kernel's ``struct page``.

    Offsets are in bytes within ``struct page``; optional values are None when
    the kernel does not export them. Type values are unsigned 32-bit words.
    """

    osrelease: str
    page_size: int
    struct_size: int
    off_flags: int
    off_mapping: int
    off_mapcount: int
    off_private: int
    off_compound_head: int
    head_mask: int
    pg_lru: int
    pg_private: int
    pg_swapcache: int
    pg_swapbacked: int | None
    pg_slab: int | None
    pg_hwpoison: int | None
    pg_hugetlb: int | None
    buddy_value: int | None
    offline_value: int | None
    slab_value: int | None
    hugetlb_value: int | None
    unaccepted_value: int | None
    order_source: OrderSource
    off_order: int | None  #: offset in the *first tail* page (FOLIO/PAGE sources)
    off_dtor: int | None  #: offset in the first tail page (FOLIO/PAGE sources)
    hugetlb_dtor: int | None
    free_area_length: int | None

    @classmethod
    def from_vmcoreinfo(cls, info: VmcoreInfo) -> PageLayout:
        """Read the layout from VMCOREINFO; refuse what cannot be decided without guessing.

        :raises UnsupportedVersionError: a key the classification needs is missing,
            or the kernel predates the layouts handled (4.16); names the key
        """
        _check_release(info)
        size_page = _need(info, "SIZE(page)", info.size, "page")
        order_source, off_order, off_dtor = _order_source(info, size_page)
        return cls(
            osrelease=info.osrelease,
            page_size=info.page_size,
            struct_size=size_page,
            off_flags=_need(info, "OFFSET(page.flags)", info.offset, "page.flags"),
            off_mapping=_need(info, "OFFSET(page.mapping)", info.offset, "page.mapping"),
            off_mapcount=_need(info, "OFFSET(page._mapcount)", info.offset, "page._mapcount"),
            off_private=_need(info, "OFFSET(page.private)", info.offset, "page.private"),
            off_compound_head=_compound_head_offset(info),
            head_mask=_need(info, "NUMBER(PG_head_mask)", info.number, "PG_head_mask"),
            pg_lru=_need(info, "NUMBER(PG_lru)", info.number, "PG_lru"),
            pg_private=_need(info, "NUMBER(PG_private)", info.number, "PG_private"),
            pg_swapcache=_need(info, "NUMBER(PG_swapcache)", info.number, "PG_swapcache"),
            pg_swapbacked=_opt(info, "PG_swapbacked"),
            pg_slab=_opt(info, "PG_slab"),
            pg_hwpoison=_opt(info, "PG_hwpoison"),
            pg_hugetlb=_opt(info, "PG_hugetlb"),
            buddy_value=_opt_u32(info, "PAGE_BUDDY_MAPCOUNT_VALUE"),
            offline_value=_opt_u32(info, "PAGE_OFFLINE_MAPCOUNT_VALUE"),
            slab_value=_opt_u32(info, "PAGE_SLAB_MAPCOUNT_VALUE"),
            hugetlb_value=_opt_u32(info, "PAGE_HUGETLB_MAPCOUNT_VALUE"),
            unaccepted_value=_opt_u32(info, "PAGE_UNACCEPTED_MAPCOUNT_VALUE"),
            order_source=order_source,
            off_order=off_order,
            off_dtor=off_dtor,
            hugetlb_dtor=_opt(info, "HUGETLB_PAGE_DTOR"),
            free_area_length=(
                info.length("zone.free_area") if "LENGTH(zone.free_area)" in info else None
            ),
        )

    def __post_init__(self) -> None:
        if self.pg_slab is None and self.slab_value is None:
            raise UnsupportedVersionError(
                "cannot tell slab pages on this kernel",
                field="NUMBER(PG_slab)",
                expected="NUMBER(PG_slab) or NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)",
                found=self.osrelease,
            )
        ends = (
            self.off_flags + 8,
            self.off_mapping + 8,
            self.off_mapcount + 4,
            self.off_private + 8,
            self.off_compound_head + 8,
        )
        if max(ends) > self.struct_size:
            raise UnsupportedVersionError(
                "struct page field lies outside SIZE(page)",
                field="SIZE(page)",
                expected=f">= {max(ends)}",
                found=self.struct_size,
            )


def _check_release(info: VmcoreInfo) -> None:
    release = info.osrelease
    match = re.match(r"(\d+)\.(\d+)", release)
    if match is None or (int(match[1]), int(match[2])) < MIN_KERNEL:
        raise UnsupportedVersionError(
            "page classification does not handle this kernel",
            field="OSRELEASE",
            expected=f">= {MIN_KERNEL[0]}.{MIN_KERNEL[1]}",
            found=release,
            hint="use dump level 0 or 1, which need no struct page",
        )


def _need(info: VmcoreInfo, key: str, getter: object, name: str) -> int:
    if key not in info:
        raise UnsupportedVersionError(
            "vmcoreinfo lacks a key the dump level needs",
            field=key,
            found=info.get("OSRELEASE"),
            hint="use dump level 0 or 1, which need no struct page",
        )
    assert callable(getter)
    value = getter(name)
    assert isinstance(value, int)
    return value


def _opt(info: VmcoreInfo, name: str) -> int | None:
    return info.number(name) if f"NUMBER({name})" in info else None


def _u32(value: int) -> int:
    return value & _U32


def _opt_u32(info: VmcoreInfo, name: str) -> int | None:
    value = _opt(info, name)
    return None if value is None else _u32(value)


def _compound_head_offset(info: VmcoreInfo) -> int:
    # Linux 7.1 renamed page.compound_head to page.compound_info (same bit 0 meaning)
    if "OFFSET(page.compound_info)" in info:
        return info.offset("page.compound_info")
    return _need(info, "OFFSET(page.compound_head)", info.offset, "page.compound_head")


def _order_source(info: VmcoreInfo, size_page: int) -> tuple[OrderSource, int | None, int | None]:
    if "NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)" in info:
        return OrderSource.MAPCOUNT, None, None
    if "NUMBER(PG_hugetlb)" in info:
        return OrderSource.FLAG, None, None
    if "OFFSET(folio._folio_order)" in info:
        # the folio fields sit in the folio's second struct page: subtract SIZE(page)
        order = info.offset("folio._folio_order") - size_page
        dtor = (
            info.offset("folio._folio_dtor") - size_page
            if "OFFSET(folio._folio_dtor)" in info
            else None
        )
        return OrderSource.FOLIO, order, dtor
    if "OFFSET(page.compound_order)" in info:
        dtor = info.offset("page.compound_dtor") if "OFFSET(page.compound_dtor)" in info else None
        return OrderSource.PAGE, info.offset("page.compound_order"), dtor
    raise UnsupportedVersionError(
        "cannot find the compound page order on this kernel",
        field="OFFSET(page.compound_order)",
        expected="PAGE_HUGETLB_MAPCOUNT_VALUE, PG_hugetlb, folio._folio_order "
        "or page.compound_order",
        found=info.get("OSRELEASE"),
        hint="use dump level 0 or 1, which need no struct page",
    )
