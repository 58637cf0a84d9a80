# SPDX-License-Identifier: GPL-2.0-or-later
"""kdump-compressed structures, writer and reader, tested as a pair; every error class raised."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskdump.errors import (
    BadMagicError,
    CodecUnavailableError,
    ConfigError,
    CorruptDataError,
    ExcludedPageError,
    TruncatedError,
    UnsupportedVersionError,
)
from diskdump.formats.codecs import CODEC_NAMES, get_codec
from diskdump.formats.kdump import (
    DiskDumpHeader,
    DumpStatus,
    KdumpSubHeader,
    NewUtsname,
    PageDesc,
    bitmap_to_runs,
    is_kdump,
    runs_to_bitmap,
)
from diskdump.formats.kdump_read import KdumpFile, validate_kdump
from diskdump.formats.kdump_write import write_kdump
from diskdump.formats.memsource import MemorySource, PfnRun
from diskdump.formats.notes import find_vmcoreinfo
from tests.differential.synthetic import PAGE_SIZE, MemSource, build_source, make_notes
from tests.panic.helpers import SubsetSource

AVAILABLE = []
for _name in CODEC_NAMES:
    try:
        get_codec(_name).check_available()
        AVAILABLE.append(_name)
    except CodecUnavailableError:
        pass

HEADER_VERSION_OFFSET = 8
STATUS_OFFSET = 424
BLOCK_SIZE_OFFSET = 428
BITMAP_BLOCKS_OFFSET = 436


def write(source: MemorySource, path: Path, **kw: object) -> Path:
    with path.open("wb") as f:
        write_kdump(source, f, **kw)  # type: ignore[arg-type]
    return path


def all_pages(kfile: KdumpFile, source: MemorySource) -> int:
    compared = 0
    for run in source.data_runs():
        assert kfile.read_pages(run.start_pfn, run.pages) == source.read_pages(
            run.start_pfn, run.pages
        )
        compared += run.pages
    return compared


def patch(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


# -- structures ----------------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
u64 = st.integers(0, 2**64 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
uts_field = st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=64)


@given(st.builds(NewUtsname, uts_field, uts_field, uts_field, uts_field, uts_field, uts_field))
def test_utsname_round_trip(uts: NewUtsname) -> None:
    raw = uts.pack()
    assert len(raw) == NewUtsname.SIZE
    assert NewUtsname.unpack(raw) == uts
    assert NewUtsname.unpack(raw).pack() == raw


HEADER_FIELDS = (
    st.binary(min_size=8, max_size=8),
    i32,
    st.binary(min_size=390, max_size=390),
    i64,
    i64,
    u32,
    i32,
    i32,
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
    i32,
)
SUB_HEADER_FIELDS = (u64, i32, i32, u64, u64, i64, u64, i64, u64, i64, u64, u64, u64, u64)


@given(st.builds(DiskDumpHeader, *HEADER_FIELDS))
def test_main_header_round_trip(header: DiskDumpHeader) -> None:
    raw = header.pack()
    assert len(raw) == DiskDumpHeader.SIZE == 464
    assert DiskDumpHeader.unpack(raw) == header
    assert DiskDumpHeader.unpack(raw).pack() == raw


@given(st.builds(KdumpSubHeader, *SUB_HEADER_FIELDS))
def test_sub_header_round_trip(sub: KdumpSubHeader) -> None:
    raw = sub.pack()
    assert len(raw) == KdumpSubHeader.SIZE == 104
    assert KdumpSubHeader.unpack(raw) == sub
    assert KdumpSubHeader.unpack(raw).pack() == raw


def test_sub_header_older_versions_zero_later_fields() -> None:
    full = KdumpSubHeader(*range(1, 15))
    v3 = KdumpSubHeader.unpack(full.pack(), header_version=3)
    assert (v3.offset_vmcoreinfo, v3.size_vmcoreinfo) == (6, 7)
    assert (v3.offset_note, v3.max_mapnr_64) == (0, 0)
    assert KdumpSubHeader.unpack(full.pack(), header_version=1).split == 0


@given(st.builds(PageDesc, i64, u32, u32, u64))
def test_page_desc_round_trip(desc: PageDesc) -> None:
    raw = desc.pack()
    assert len(raw) == PageDesc.SIZE == 24
    assert PageDesc.unpack(raw) == desc


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 300)), max_size=12))
def test_bitmap_runs_round_trip(spans: list[tuple[int, int]]) -> None:
    pfns = sorted({p for start, length in spans for p in range(start, start + length)})
    runs: list[PfnRun] = []
    for pfn in pfns:
        if runs and runs[-1].end_pfn == pfn:
            runs[-1] = PfnRun(runs[-1].start_pfn, pfn + 1)
        else:
            runs.append(PfnRun(pfn, pfn + 1))
    bitmap = runs_to_bitmap(runs, 0, 2400)
    assert bitmap_to_runs(bitmap, 2400) == runs
    # windows joined give the same bitmap
    assert runs_to_bitmap(runs, 0, 1024) + runs_to_bitmap(runs, 1024, 2400) == bitmap
    assert bitmap_to_runs(bitmap, 700) == [
        PfnRun(r.start_pfn, min(r.end_pfn, 700)) for r in runs if r.start_pfn < 700
    ]


# -- writer and reader as a pair ----------------------------------------------------------


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("codec", AVAILABLE)
def test_round_trip_every_codec(tmp_path: Path, codec: str, level: int) -> None:
    source = build_source(excluded=[(0x200, 0x214), (0x3FF, 0x401)])
    path = write(source, tmp_path / "vmcore", compress=codec, level=level)
    with KdumpFile.open(path) as kfile:
        assert not kfile.flattened and isinstance(kfile, MemorySource)
        assert kfile.ram_runs() == list(source.ram_runs())
        assert kfile.data_runs() == list(source.data_runs())
        assert kfile.max_pfn == source.max_pfn and kfile.page_size == PAGE_SIZE
        assert kfile.notes == source.notes
        assert kfile.dump_level == level
        assert kfile.compression == get_codec(codec).flag
        assert all_pages(kfile, source) == 1673
        assert validate_kdump(kfile) == 1673
        with pytest.raises(ExcludedPageError, match=r"not in the dump .*field pfn.*got 0x200"):
            kfile.read_pages(0x1FF, 2)
        with pytest.raises(ExcludedPageError, match=r"not in the dump"):
            kfile.read_pages(0xA0, 1)  # a memory hole
        with pytest.raises(ExcludedPageError, match=r"beyond max_mapnr"):
            kfile.read_pages(0x6FF, 2)


def test_layout_follows_makedumpfile(tmp_path: Path) -> None:
    source = build_source(cpus=3)
    path = write(source, tmp_path / "vmcore", compress="zlib", level=1)
    raw = path.read_bytes()
    header = DiskDumpHeader.unpack(raw)
    assert header.signature == b"KDUMP   " and header.header_version == 6
    assert header.tv_usec == 0 and header.tv_sec == 1764158400
    assert header.nr_cpus == 3 and header.block_size == PAGE_SIZE
    assert header.status == DumpStatus.COMPRESSED_ZLIB
    assert header.uts == NewUtsname(release="6.1.0-test-amd64", version="unknown")
    # 104 + notes fit one block; 0x700 pfns need 224 bytes: one block per bitmap
    assert (header.sub_hdr_size, header.bitmap_blocks, header.max_mapnr) == (1, 2, 0x700)
    sub = KdumpSubHeader.unpack(raw[PAGE_SIZE : PAGE_SIZE + 104])
    assert sub.offset_note == PAGE_SIZE + 104 and sub.size_note == len(source.notes)
    assert raw[sub.offset_note : sub.offset_note + sub.size_note] == source.notes
    found = find_vmcoreinfo(source.notes)
    assert found is not None
    text = raw[sub.offset_vmcoreinfo : sub.offset_vmcoreinfo + sub.size_vmcoreinfo]
    assert text == source.notes[found[0] : found[0] + found[1]] and text.startswith(b"OSRELEASE=")
    assert sub.max_mapnr_64 == 0x700 and sub.dump_level == 1
    # descriptors after the bitmaps; the shared zero page is the first data item
    desc_offset = 4 * PAGE_SIZE
    data_offset = desc_offset + 24 * 1695
    first = PageDesc.unpack(raw[desc_offset : desc_offset + 24])
    assert raw[data_offset : data_offset + PAGE_SIZE] == bytes(PAGE_SIZE)
    zero_descs = [
        PageDesc.unpack(raw[desc_offset + 24 * i : desc_offset + 24 * (i + 1)]) for i in range(1695)
    ]
    assert all(d.offset >= data_offset for d in zero_descs)
    shared = [d for d in zero_descs if d.offset == data_offset]
    assert shared and all(d.size == PAGE_SIZE and d.flags == 0 for d in shared)
    assert first.offset >= data_offset


def test_level_0_has_no_shared_zero_page(tmp_path: Path) -> None:
    source = build_source()
    with (tmp_path / "v").open("wb") as f:
        result = write_kdump(source, f, compress="zlib", level=0)
    assert result.pages_zero == 0
    with (tmp_path / "w").open("wb") as f:
        result1 = write_kdump(source, f, compress="zlib", level=1)
    assert result1.pages_zero > 0 and result1.file_size < result.file_size


def test_levels_outside_0_31_are_refused_and_31_is_recorded(tmp_path: Path) -> None:
    with (tmp_path / "v").open("wb") as f, pytest.raises(ConfigError, match=r"out of range"):
        write_kdump(build_source(), f, level=32)
    path = tmp_path / "v31"
    with path.open("wb") as f:
        write_kdump(build_source(), f, level=31)
    with KdumpFile.open(path) as kfile:
        assert kfile.sub_header.dump_level == 31


def test_incomplete_source_sets_status(tmp_path: Path) -> None:
    source = build_source(excluded=[(0x400, 0x700)], incomplete=True)
    path = write(source, tmp_path / "vmcore")
    with KdumpFile.open(path) as kfile:
        assert kfile.incomplete
        assert kfile.header.status & DumpStatus.INCOMPLETE
        assert kfile.data_runs() == list(source.data_runs())
        all_pages(kfile, source)


def test_unwritten_descriptors_are_excluded_not_zero(tmp_path: Path) -> None:
    """An interrupted makedumpfile leaves offset-0 descriptors; they are holes, never zeros."""
    source = build_source()
    path = write(source, tmp_path / "vmcore", level=0)
    desc_offset = 4 * PAGE_SIZE
    # pages 0x600.. lose their descriptors (index = pfn - 0x100 + 0x9f) and the status says so
    first_lost = 0x600 - 0x100 + 0x9F
    patch(path, desc_offset + 24 * first_lost, bytes(24 * (1695 - first_lost)))
    patch(path, STATUS_OFFSET, struct.pack("<I", 1 | DumpStatus.INCOMPLETE))
    with KdumpFile.open(path) as kfile:
        assert kfile.data_runs() == [PfnRun(0, 0x9F), PfnRun(0x100, 0x600)]
        assert kfile.ram_runs() == list(source.ram_runs())
        with pytest.raises(ExcludedPageError, match=r"never written \(incomplete dump\)"):
            kfile.read_pages(0x600, 1)
        assert validate_kdump(kfile) == first_lost


def test_truncated_descriptor_table_of_incomplete_dump(tmp_path: Path) -> None:
    source = build_source()
    path = write(source, tmp_path / "vmcore", level=0)
    patch(path, STATUS_OFFSET, struct.pack("<I", 1 | DumpStatus.INCOMPLETE))
    os.truncate(path, 4 * PAGE_SIZE + 24 * 100 + 5)
    with KdumpFile.open(path) as kfile:
        # the 100 surviving descriptors point past the end: nothing is held
        assert kfile.data_runs() == []
        with pytest.raises(ExcludedPageError, match=r"never written"):
            kfile.read_pages(0, 1)


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6])
def test_header_versions(tmp_path: Path, version: int) -> None:
    source = build_source()
    path = write(source, tmp_path / "vmcore")
    patch(path, HEADER_VERSION_OFFSET, struct.pack("<i", version))
    with KdumpFile.open(path) as kfile:
        assert kfile.header.header_version == version
        assert kfile.max_pfn == 0x700
        assert kfile.notes == (source.notes if version >= 4 else b"")
        assert kfile.vmcoreinfo.startswith(b"OSRELEASE=") == (version >= 3)
        assert kfile.dump_level == 1
        all_pages(kfile, source)


def test_erase_info(tmp_path: Path) -> None:
    text = b"erase init_net size 64\n"
    path = write(build_source(), tmp_path / "vmcore", erase_info=text)
    with KdumpFile.open(path) as kfile:
        assert kfile.erase_info == text
        assert kfile.sub_header.offset_eraseinfo + len(text) == path.stat().st_size


def test_sparse_terabyte_address_space_bounded_memory(tmp_path: Path) -> None:
    top = 1 << 28  # 1 TiB of 4 KiB pages
    source = build_source(ram=((0, 64), (top - 64, top)))
    tracemalloc.start()
    try:
        with (tmp_path / "vmcore").open("wb") as f:
            result = write_kdump(source, f, compress="zlib")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.pages == 128
    assert peak < 4 << 20  # the two 32 MiB bitmaps are never held whole
    with KdumpFile.open(tmp_path / "vmcore") as kfile:
        assert kfile.header.bitmap_blocks == 2 * 8192
        assert kfile.ram_runs() == [PfnRun(0, 64), PfnRun(top - 64, top)]
        assert kfile.desc_index(top - 1) == 127
        all_pages(kfile, source)


def test_threads_give_the_same_file(tmp_path: Path) -> None:
    source = build_source()
    one = write(source, tmp_path / "a", compress="zlib")
    two = write(source, tmp_path / "b", compress="zlib", threads=3)
    assert one.read_bytes() == two.read_bytes()


def test_threads_on_fragmented_runs_give_the_same_file(tmp_path: Path) -> None:
    """One or two pages per run (a -d 31 dump): pages are batched across runs for the workers."""
    source = build_source()
    keep = [
        PfnRun(pfn, pfn + 1 + pfn % 2)
        for run in source.data_runs()
        for pfn in range(run.start_pfn, run.end_pfn - 2, 5)
    ]
    fragmented = SubsetSource(source, keep)
    assert len(fragmented.data_runs()) > 300
    one = write(fragmented, tmp_path / "a", compress="zlib")
    two = write(fragmented, tmp_path / "b", compress="zlib", threads=2)
    assert one.read_bytes() == two.read_bytes()
    with KdumpFile.open(two) as kfile:
        assert kfile.data_runs() == list(fragmented.data_runs())


def test_progress_reports_bytes(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    write(build_source(), tmp_path / "v", progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (1695 * PAGE_SIZE, 1695 * PAGE_SIZE)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_no_vmcoreinfo_and_no_notes(tmp_path: Path) -> None:
    source = build_source()
    bare = MemSource(source.max_pfn, source.ram, source.data, source.pages, notes=b"")
    path = write(bare, tmp_path / "v")
    with KdumpFile.open(path) as kfile:
        assert kfile.notes == b"" and kfile.vmcoreinfo == b""
        assert kfile.header.nr_cpus == 0 and kfile.header.tv_sec == 0
        all_pages(kfile, bare)


# -- probes and errors --------------------------------------------------------------------


def test_is_kdump(tmp_path: Path) -> None:
    path = write(build_source(), tmp_path / "v")
    with path.open("rb") as f:
        f.seek(100)
        assert is_kdump(f) and f.tell() == 100
    buf = io.BytesIO(path.read_bytes()[:16])
    buf.seek(3)
    assert is_kdump(buf) and buf.tell() == 3
    assert not is_kdump(io.BytesIO(b"\x7fELF" + bytes(60)))
    assert not is_kdump(io.BytesIO(b""))
    closed = path.open("rb")
    closed.close()
    assert not is_kdump(closed)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return write(build_source(), tmp_path / "vmcore", compress="zlib")


def test_bad_magic(good: Path) -> None:
    patch(good, 0, b"ELFELFEL")
    with pytest.raises(BadMagicError, match=r"not a kdump-compressed file in field signature"):
        KdumpFile.open(good)
    patch(good, 0, b"DISKDUMP")
    with pytest.raises(BadMagicError, match=r"legacy diskdump files are not read"):
        KdumpFile.open(good)


@pytest.mark.parametrize("version", [0, 7, -1])
def test_unsupported_version(good: Path, version: int) -> None:
    patch(good, HEADER_VERSION_OFFSET, struct.pack("<i", version))
    with pytest.raises(
        UnsupportedVersionError, match=r"version not supported in field header_version.*1..6"
    ):
        KdumpFile.open(good)


def test_bad_block_size(good: Path) -> None:
    patch(good, BLOCK_SIZE_OFFSET, struct.pack("<i", 5000))
    with pytest.raises(CorruptDataError, match=r"block size .* field block_size at offset 0x1ac"):
        KdumpFile.open(good)


def test_bitmaps_too_small(good: Path) -> None:
    patch(good, BITMAP_BLOCKS_OFFSET, struct.pack("<I", 0))
    with pytest.raises(CorruptDataError, match=r"not two equal bitmaps"):
        KdumpFile.open(good)
    patch(good, BITMAP_BLOCKS_OFFSET, struct.pack("<I", 2))
    patch(good, PAGE_SIZE + 96, struct.pack("<Q", 1 << 20))  # max_mapnr_64 too large
    with pytest.raises(CorruptDataError, match=r"bitmaps are too small for max_mapnr"):
        KdumpFile.open(good)


@pytest.mark.parametrize("size", [0, 100, 5000, 3 * PAGE_SIZE + 10])
def test_truncated_file(good: Path, size: int) -> None:
    os.truncate(good, size)
    with pytest.raises(TruncatedError, match=r"(cut short|extends past the end)"):
        KdumpFile.open(good)


def test_truncated_page_data(good: Path) -> None:
    os.truncate(good, good.stat().st_size - 10)
    with KdumpFile.open(good) as kfile, pytest.raises(CorruptDataError, match=r"outside the"):
        validate_kdump(kfile, decompress=False)


def test_note_area_past_the_end(good: Path) -> None:
    patch(good, PAGE_SIZE + 48, struct.pack("<qQ", PAGE_SIZE + 104, 1 << 40))
    with pytest.raises(TruncatedError, match=r"kdump note area extends past the end"):
        KdumpFile.open(good)


def _first_desc(path: Path) -> tuple[int, PageDesc]:
    raw = path.read_bytes()
    offset = 4 * PAGE_SIZE + 24  # the 2nd descriptor (pfn 1): not the shared zero page
    return offset, PageDesc.unpack(raw[offset : offset + 24])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"flags": 3}, r"unknown compression flags.* field flags"),
        ({"size": PAGE_SIZE + 1}, r"bad size.* field size"),
        ({"flags": 0, "size": 100}, r"bad size"),
        ({"offset": 1 << 40}, r"outside the file.* field offset"),
        ({"offset": 8}, r"outside the file"),
    ],
)
def test_bad_descriptor(good: Path, change: dict[str, int], message: str) -> None:
    offset, desc = _first_desc(good)
    fields = {"offset": desc.offset, "size": desc.size, "flags": desc.flags}
    fields.update(change)
    patch(good, offset, PageDesc(**fields).pack())
    with KdumpFile.open(good) as kfile:
        with pytest.raises(CorruptDataError, match=rf"page 0x1: .*{message}"):
            kfile.read_pages(0, 2)
        with pytest.raises(CorruptDataError, match=message):
            validate_kdump(kfile, decompress=False)


def test_corrupt_compressed_page(tmp_path: Path) -> None:
    source = build_source()
    path = write(source, tmp_path / "v", compress="zlib", level=0)
    with KdumpFile.open(path) as kfile:
        pfn = next(
            p for p in range(0x100, 0x700) if kfile.read_descs(kfile.desc_index(p), 1)[0].flags == 1
        )
        desc = kfile.read_descs(kfile.desc_index(pfn), 1)[0]
    patch(path, desc.offset + 2, b"\xff" * 8)
    with KdumpFile.open(path) as kfile:
        with pytest.raises(CorruptDataError, match=rf"page {pfn:#x}: zlib page data do not"):
            kfile.read_pages(pfn, 1)
        with pytest.raises(CorruptDataError, match=r"zlib page data"):
            validate_kdump(kfile)


def test_validate_second_bitmap_outside_first(good: Path) -> None:
    # pfn 0x9f..0xff is a hole: set pfn 0xa0 in the 2nd bitmap only
    bitmap2 = 3 * PAGE_SIZE
    raw = good.read_bytes()
    patch(good, bitmap2 + 0xA0 // 8, bytes([raw[bitmap2 + 0xA0 // 8] | 1]))
    with KdumpFile.open(good) as kfile, pytest.raises(CorruptDataError, match=r"2nd bitmap"):
        validate_kdump(kfile, decompress=False)


def test_notes_helper_matches() -> None:
    assert make_notes(1) != make_notes(2)


def test_empty_source(tmp_path: Path) -> None:
    empty = MemSource(max_pfn=0, ram=[], data=[], pages={})
    path = write(empty, tmp_path / "v")
    with KdumpFile.open(path) as kfile:
        assert kfile.ram_runs() == [] and kfile.data_runs() == []
        assert validate_kdump(kfile) == 0
        # crash maps both bitmaps: the file reaches the end of the 2nd one
        assert path.stat().st_size >= 4 * PAGE_SIZE


def test_reading_a_page_whose_codec_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(build_source(), tmp_path / "v", compress="lzo", level=0)
    monkeypatch.setitem(__import__("sys").modules, "lzo", None)
    with KdumpFile.open(path) as kfile, pytest.raises(CodecUnavailableError, match=r"lzo"):
        kfile.read_pages(0x100, 0x600)


def test_bitmap_runs_across_scan_blocks() -> None:
    # 4096 bitmap bytes = 32768 pfns per scan block; runs straddle the block boundaries
    runs = [
        PfnRun(32700, 32900),
        PfnRun(65535, 65537),
        PfnRun(98303, 98305),
        PfnRun(131071, 131072),
    ]
    bitmap = runs_to_bitmap(runs, 0, 131072)
    assert len(bitmap) == 16384
    assert bitmap_to_runs(bitmap, 131072) == runs
    assert bitmap_to_runs(bytes(16384), 131072) == []
    assert bitmap_to_runs(b"\xff" * 16384, 131072) == [PfnRun(0, 131072)]


def test_utsname_field_without_nul_is_read() -> None:
    raw = b"L" * 65 + NewUtsname(release="6.1").pack()[65:]
    uts = NewUtsname.unpack(raw)
    assert uts.sysname == "L" * 65 and uts.release == "6.1"
    assert uts.pack() == raw
    with pytest.raises(ValueError, match=r"longer than 65 bytes"):
        NewUtsname(sysname="x" * 66)
