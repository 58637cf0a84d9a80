# SPDX-License-Identifier: GPL-2.0-or-later
"""ELF vmcore reader and writer: layouts seen in the wild, corruption, round trips."""

from __future__ import annotations

import bisect
import io
import random
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diskdump.errors import (
    BadMagicError,
    CorruptDataError,
    ExcludedPageError,
    FormatError,
    NotThisFormatError,
    TruncatedError,
    UnsupportedVersionError,
)
from diskdump.formats.elf import (
    PN_XNUM,
    Elf64Ehdr,
    Elf64Phdr,
    Elf64Shdr,
    ElfVmcore,
    PhdrType,
    is_elf,
)
from diskdump.formats.elf_write import write_elf
from diskdump.formats.filebacking import Backing
from diskdump.formats.memsource import PfnRun, merge_runs
from diskdump.formats.notes import NoteType, PrStatus, iter_notes, pack_note, prstatus_notes
from tests.builders.elfcore import (
    START_KERNEL_MAP,
    Segment,
    build_elfcore,
    kernel_text_segment,
    segments_from,
    write_elfcore,
)
from tests.conftest import need

PAGE = 4096
DIRECT_MAP = 0xFFFF888000000000
#: a PC's e820 map in small: low RAM ends at 0x9fc00 (EBDA), RAM again from 1 MiB
RANGES = [(0x0, 0x9FC00), (0x100000, 0x400000)]


def vmcoreinfo_text(page_size: int = PAGE) -> bytes:
    return (
        f"OSRELEASE=6.1.0-13-amd64\nPAGESIZE={page_size}\n"
        "SYMBOL(swapper_pg_dir)=ffffffff8240a000\nNUMBER(phys_base)=0\n"
    ).encode()


def kernel_notes(page_size: int = PAGE) -> bytes:
    cpus = [PrStatus.from_registers(i + 1, rip=0xFFFFFFFF81000000 + i) for i in range(2)]
    return b"".join(pack_note("CORE", NoteType.NT_PRSTATUS, c.pack()) for c in cpus) + pack_note(
        "VMCOREINFO", 0, vmcoreinfo_text(page_size)
    )


@pytest.fixture(scope="module")
def memory() -> bytes:
    return random.Random(7).randbytes(0x400000)


def check_pages(core: ElfVmcore, memory: bytes, runs: Sequence[PfnRun]) -> int:
    """Every page of ``runs`` read one run at a time equals ``memory``; returns pages checked."""
    pages = 0
    for run in runs:
        got = core.read_pages(run.start_pfn, run.pages)
        assert got == memory[run.start_pfn * PAGE : run.end_pfn * PAGE]
        pages += run.pages
    return pages


def low_page(memory: bytes) -> bytes:
    """pfn 0x9f: RAM up to 0x9fc00, the rest in no PT_LOAD (not RAM) reads as zeros."""
    return memory[0x9F000:0x9FC00] + bytes(0x400)


# -- reading --------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["kexec", "qemu"])
@pytest.mark.parametrize("xnum", [False, True])
def test_read_layouts(memory: bytes, layout: str, xnum: bool) -> None:
    image = build_elfcore(segments_from(memory, RANGES), kernel_notes(), layout=layout, xnum=xnum)
    core = ElfVmcore.from_bytes(image)
    assert core.ram_runs() == [PfnRun(0, 0xA0), PfnRun(0x100, 0x400)]
    assert core.data_runs() == core.ram_runs()
    assert core.max_pfn == 0x400
    assert core.page_size == PAGE
    assert not core.incomplete
    assert core.notes == kernel_notes()
    assert [p.pr_pid for p in prstatus_notes(core.notes)] == [1, 2]
    assert core.vmcoreinfo is not None and core.vmcoreinfo.osrelease == "6.1.0-13-amd64"
    assert [(s.p_paddr, s.p_filesz) for s in core.segments] == [(0, 0x9FC00), (0x100000, 0x300000)]
    assert core.page_offset is None  # QEMU style: p_vaddr = p_paddr
    assert check_pages(core, memory, [PfnRun(0, 0x9F), PfnRun(0x100, 0x400)]) == 0x39F
    assert core.read_pages(0x9F, 1) == low_page(memory)
    assert core.read_pages(0x9E, 2)[:PAGE] == memory[0x9E000:0x9F000]


def test_open_file_mmap_and_pread_agree(memory: bytes, tmp_path: Path) -> None:
    path = write_elfcore(tmp_path / "vmcore", segments_from(memory, RANGES), kernel_notes())
    for use_mmap in (True, False):
        with ElfVmcore.open(path, use_mmap=use_mmap) as core:
            assert core._backing.use_mmap == use_mmap
            assert check_pages(core, memory, [PfnRun(0, 0x9F), PfnRun(0x100, 0x400)]) == 0x39F
            assert core.read_pages(0x9F, 1) == low_page(memory)
        core.close()  # idempotent
        with pytest.raises(ValueError, match="closed vmcore"):
            core.read_pages(0x100, 1)


def test_mmap_refused_falls_back_to_pread() -> None:
    # sysfs refuses mmap (ENODEV) like /proc/vmcore on kernels before 3.11
    path = "/sys/kernel/notes"
    need(Path(path).exists(), f"{path} is missing (no sysfs)")
    backing = Backing.open(path)
    try:
        assert backing.buf is None and backing.size > 0
        blob = backing.read(0, backing.size, "notes")
        assert blob == Path(path).read_bytes()
        assert any(note.name == "GNU" for note in iter_notes(blob))  # the kernel's build-id
    finally:
        backing.close()


def test_kernel_text_duplicate_is_not_double_counted(memory: bytes) -> None:
    # /proc/vmcore: the kernel-text PT_LOAD first, then RAM with direct-map p_vaddr
    ram = [Segment(s, memory[s:e], vaddr=DIRECT_MAP + s) for s, e in RANGES]
    text = kernel_text_segment(ram, 0x200000, 0x100000, START_KERNEL_MAP + 0x1000000)
    poisoned = Segment(text.paddr, b"\xaa" * len(text.data), vaddr=text.vaddr)
    core = ElfVmcore.from_bytes(build_elfcore([poisoned, *ram], kernel_notes()))
    assert len(core.segments) == 3
    assert core.ram_runs() == [PfnRun(0, 0xA0), PfnRun(0x100, 0x400)]
    assert core.data_runs() == core.ram_runs()
    # served from the RAM segment, not the (here deliberately different) text copy
    assert check_pages(core, memory, [PfnRun(0x1FF, 0x301)]) == 0x102
    assert core.page_offset == DIRECT_MAP


def test_partial_overlap_keeps_the_new_part(memory: bytes) -> None:
    segs = [
        Segment(0x100000, memory[0x100000:0x200000]),
        Segment(0x180000, memory[0x180000:0x280000]),
    ]
    core = ElfVmcore.from_bytes(build_elfcore(segs, kernel_notes()))
    assert core.data_runs() == [PfnRun(0x100, 0x280)]
    assert check_pages(core, memory, core.data_runs()) == 0x180


def test_filesz_below_memsz_is_ram_but_excluded(memory: bytes) -> None:
    segs = [
        Segment(0x100000, memory[0x100000:0x180000], memsz=0x100000),
        # data ending mid-page: that page has RAM bytes not held, so it is excluded
        Segment(0x300000, memory[0x300000:0x310800], memsz=0x20000),
    ]
    core = ElfVmcore.from_bytes(build_elfcore(segs, kernel_notes()))
    assert core.ram_runs() == [PfnRun(0x100, 0x200), PfnRun(0x300, 0x320)]
    assert core.data_runs() == [PfnRun(0x100, 0x180), PfnRun(0x300, 0x310)]
    assert check_pages(core, memory, core.data_runs()) == 0x90
    with pytest.raises(
        ExcludedPageError,
        match=r"^pages 0x17f-0x180 are not all held by this vmcore in field pfn on <memory>$",
    ):
        core.read_pages(0x17F, 2)
    with pytest.raises(ExcludedPageError, match=r"pages 0x310-0x310 are not all held"):
        core.read_pages(0x310, 1)
    with pytest.raises(ExcludedPageError, match=r"pages 0x0-0x0 are not all held"):
        core.read_pages(0, 1)


def test_incomplete_flag_and_cut_segment(memory: bytes) -> None:
    segs = segments_from(memory, [(0x100000, 0x200000)])
    image = build_elfcore(segs, kernel_notes(), incomplete=True)
    core = ElfVmcore.from_bytes(image[: len(image) - 0x10000 - 0x800])
    assert core.incomplete
    assert core.ram_runs() == [PfnRun(0x100, 0x200)]
    assert core.data_runs() == [PfnRun(0x100, 0x1EF)]
    assert check_pages(core, memory, core.data_runs()) == 0xEF


def test_several_note_segments_are_concatenated(memory: bytes) -> None:
    # kexec's per-CPU PT_NOTEs end with an empty note (the /proc/vmcore merge drops it)
    cpu = pack_note("CORE", NoteType.NT_PRSTATUS, PrStatus(pr_pid=9).pack())
    image = build_elfcore(
        segments_from(memory, [(0x100000, 0x101000)]),
        cpu + bytes(12) + bytes(20),
        extra_note_segments=[pack_note("VMCOREINFO", 0, vmcoreinfo_text())],
    )
    core = ElfVmcore.from_bytes(image)
    assert core.notes == cpu + pack_note("VMCOREINFO", 0, vmcoreinfo_text())
    assert [p.pr_pid for p in prstatus_notes(core.notes)] == [9]


def test_page_size_from_vmcoreinfo_or_argument(memory: bytes) -> None:
    segs = segments_from(memory, [(0x100000, 0x110000)])
    core = ElfVmcore.from_bytes(build_elfcore(segs, kernel_notes(page_size=16384)))
    assert core.page_size == 16384 and core.data_runs() == [PfnRun(0x40, 0x44)]
    core = ElfVmcore.from_bytes(build_elfcore(segs, b""), page_size=8192)
    assert core.page_size == 8192 and core.data_runs() == [PfnRun(0x80, 0x88)]
    assert core.vmcoreinfo is None


@pytest.mark.parametrize("text", [b"PAGESIZE=3000\n", b"PAGESIZE=512\n", b"PAGESIZE=4k\n"])
def test_odd_vmcoreinfo_page_size_is_ignored(
    memory: bytes, text: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    notes = pack_note("VMCOREINFO", 0, text)
    core = ElfVmcore.from_bytes(build_elfcore(segments_from(memory, RANGES), notes))
    assert core.page_size == PAGE
    assert "assuming 4096" in caplog.text


def test_direct_map_base_needs_agreement(memory: bytes) -> None:
    segs = [
        Segment(0x100000, memory[0x100000:0x101000], vaddr=DIRECT_MAP + 0x100000),
        Segment(0x200000, memory[0x200000:0x201000], vaddr=DIRECT_MAP + 0x201000),
    ]
    assert ElfVmcore.from_bytes(build_elfcore(segs, b"")).page_offset is None


def test_is_elf_never_moves_or_raises(tmp_path: Path, memory: bytes) -> None:
    path = write_elfcore(tmp_path / "vmcore", segments_from(memory, RANGES), kernel_notes())
    with path.open("rb") as f:
        f.seek(100)
        assert is_elf(f)
        assert f.tell() == 100
    stream = io.BytesIO(b"xx\x7fELF")  # no fileno: the seek/restore path
    stream.seek(3)
    assert not is_elf(stream)
    assert stream.tell() == 3
    stream.seek(2)
    assert is_elf(io.BytesIO(b"\x7fELF..."))
    closed = path.open("rb")
    closed.close()
    assert not is_elf(closed)


# -- corruption: each error class with its message -----------------------------------------


def image_with(memory: bytes, **knobs: object) -> bytes:
    return build_elfcore(segments_from(memory, RANGES), kernel_notes(), **knobs)  # type: ignore[arg-type]


def patch(image: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(image)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def test_bad_magic(memory: bytes) -> None:
    with pytest.raises(
        BadMagicError,
        match=r"^not an elf file in field e_ident at offset 0x0 on <memory>: "
        r"expected b'\\x7fELF', got b'\\x7fELX'$",
    ):
        ElfVmcore.from_bytes(image_with(memory, bad_magic=True))


def test_truncated_header() -> None:
    with pytest.raises(
        TruncatedError,
        match=r"^elf header runs past the end of the file at offset 0x0 on <memory>: "
        r"expected 'end <= 0x20', got 'end 0x40'$",
    ):
        ElfVmcore.from_bytes(b"\x7fELF" + bytes(28))


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "error", "pattern"),
    [
        (
            4,
            "<B",
            1,
            UnsupportedVersionError,
            r"elf class is not 64-bit in field EI_CLASS at "
            r"offset 0x4 on <memory>: expected 2, got 1",
        ),
        (5, "<B", 2, UnsupportedVersionError, r"elf data is not little endian in field EI_DATA"),
        (6, "<B", 0, UnsupportedVersionError, r"elf version is not current in field EI_VERSION"),
        (
            18,
            "<H",
            183,
            UnsupportedVersionError,
            r"elf machine is not x86_64 in field e_machine "
            r"at offset 0x12 on <memory>: expected 0x3e, got 0xb7",
        ),
        (16, "<H", 2, NotThisFormatError, r"elf file is not a core dump in field e_type"),
        (
            54,
            "<H",
            32,
            CorruptDataError,
            r"bad program header size in field e_phentsize at "
            r"offset 0x36 on <memory>: expected 0x38, got 0x20",
        ),
        (56, "<H", 0, CorruptDataError, r"elf core has no program headers in field e_phnum"),
        (
            32,
            "<Q",
            0x3A0B80,
            TruncatedError,
            r"program headers run past the end of the file in "
            r"field e_phoff at offset 0x3a0b80 on <memory>: expected 'end <= 0x3a0c00', "
            r"got 'end 0x3a0c28'",
        ),
        (
            56,
            "<H",
            PN_XNUM,
            CorruptDataError,
            r"e_phnum is PN_XNUM but there is no section "
            r"header 0 in field e_shoff",
        ),
        (
            32,
            "<Q",
            0x500000,
            TruncatedError,
            r"program headers run past the end of the file in "
            r"field e_phoff at offset 0x500000",
        ),
    ],
)
def test_bad_header_fields(
    memory: bytes, offset: int, fmt: str, value: int, error: type[FormatError], pattern: str
) -> None:
    with pytest.raises(error, match="^" + pattern):
        ElfVmcore.from_bytes(patch(image_with(memory), offset, fmt, value))


def test_xnum_section_header_past_eof(memory: bytes) -> None:
    image = patch(image_with(memory, xnum=True), 40, "<Q", 0x7FFFFFFF)  # e_shoff
    with pytest.raises(TruncatedError, match=r"^section header 0 runs past the end of the file"):
        ElfVmcore.from_bytes(image)


def test_segment_past_eof(memory: bytes) -> None:
    with pytest.raises(
        TruncatedError,
        match=r"^program header 2 data runs past the end of the file in field p_filesz at offset "
        r"0xb0 on <memory>: expected 'end <= 0x3a0c00', got 'end 0x3a1c00 \(p_offset 0xa1c00\)'$",
    ):
        ElfVmcore.from_bytes(image_with(memory, segment_offset_shift=(1, 0x1000)))


def test_truncated_file_cuts_segment(memory: bytes, tmp_path: Path) -> None:
    path = tmp_path / "cut"
    path.write_bytes(image_with(memory)[:0x200000])
    with pytest.raises(
        TruncatedError, match=r"program header 2 data runs past the end .* on .*/cut"
    ):
        ElfVmcore.open(path)


def test_filesz_above_memsz(memory: bytes) -> None:
    image = patch(image_with(memory), 64 + 2 * 56 + 40, "<Q", 0x1000)  # phdr 2 p_memsz
    with pytest.raises(
        CorruptDataError,
        match=r"program header 2 holds more file data than memory in field p_filesz at offset "
        r"0xb0 on <memory>: expected '<= p_memsz 0x1000', got 0x300000",
    ):
        ElfVmcore.from_bytes(image)


def test_bad_note_size(memory: bytes) -> None:
    with pytest.raises(
        TruncatedError,
        match=r"^note descriptor runs past the end of the notes in field n_descsz at offset 0xfc",
    ):
        ElfVmcore.from_bytes(image_with(memory, note_descsz=0x10000))


def test_note_segment_past_eof(memory: bytes) -> None:
    image = patch(image_with(memory), 64 + 8, "<Q", 0x3FFFFF)  # PT_NOTE p_offset
    with pytest.raises(TruncatedError, match=r"program header 0 data runs past the end"):
        ElfVmcore.from_bytes(image)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_corruption_raises_only_format_errors(data: st.DataObject) -> None:
    base = bytearray(build_elfcore([Segment(0x1000, bytes(range(256)) * 32)], kernel_notes()))
    for _ in range(data.draw(st.integers(1, 4))):
        offset = data.draw(st.integers(0, 0x3FF))
        base[offset] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    try:
        core = ElfVmcore.from_bytes(bytes(base[:cut]))
        for run in core.data_runs():
            assert len(core.read_pages(run.start_pfn, run.pages)) == run.pages * core.page_size
    except FormatError:
        pass


# -- structures -------------------------------------------------------------------------------

U16, U32, U64 = st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)


@settings(deadline=None)
@given(st.builds(Elf64Phdr, U32, U32, U64, U64, U64, U64, U64, U64))
def test_phdr_round_trip(ph: Elf64Phdr) -> None:
    assert Elf64Phdr.unpack(ph.pack()) == ph and len(ph.pack()) == Elf64Phdr.SIZE == 56


@settings(deadline=None)
@given(st.builds(Elf64Shdr, U32, U32, U64, U64, U64, U64, U32, U32, U64, U64))
def test_shdr_round_trip(sh: Elf64Shdr) -> None:
    assert Elf64Shdr.unpack(sh.pack()) == sh and len(sh.pack()) == Elf64Shdr.SIZE == 64


@settings(deadline=None)
@given(
    st.builds(
        Elf64Ehdr,
        st.binary(min_size=16, max_size=16),
        U16,
        U16,
        U32,
        U64,
        U64,
        U64,
        U32,
        U16,
        U16,
        U16,
        U16,
        U16,
        U16,
    )
)
def test_ehdr_round_trip(eh: Elf64Ehdr) -> None:
    assert Elf64Ehdr.unpack(eh.pack()) == eh and len(eh.pack()) == Elf64Ehdr.SIZE == 64


def test_structure_unpack_is_strict() -> None:
    with pytest.raises(
        TruncatedError,
        match=r"^program header is cut short in field size: expected 0x38, got 0x37$",
    ):
        Elf64Phdr.unpack(bytes(55))


# -- writing ------------------------------------------------------------------------------


class PatternSource:
    """A MemorySource whose pages are generated from their pfn (no RAM image needed)."""

    def __init__(
        self,
        ram: Sequence[PfnRun],
        data: Sequence[PfnRun] | None = None,
        *,
        notes: bytes = b"",
        incomplete: bool = False,
        page_size: int = PAGE,
        short: bool = False,
    ) -> None:
        self._ram = merge_runs(ram)
        self._data = merge_runs(data) if data is not None else list(self._ram)
        self._starts = [run.start_pfn for run in self._data]
        self._notes, self._incomplete, self._page_size, self._short = (
            notes,
            incomplete,
            page_size,
            short,
        )

    page_size = property(lambda self: self._page_size)
    max_pfn = property(lambda self: self._ram[-1].end_pfn if self._ram else 0)
    notes = property(lambda self: self._notes)
    incomplete = property(lambda self: self._incomplete)

    def ram_runs(self) -> Sequence[PfnRun]:
        return self._ram

    def data_runs(self) -> Sequence[PfnRun]:
        return self._data

    def page(self, pfn: int) -> bytes:
        return (pfn.to_bytes(8, "little") * (self._page_size // 8))[: self._page_size]

    def read_pages(self, pfn: int, count: int) -> bytes:
        index = bisect.bisect_right(self._starts, pfn) - 1
        if index < 0 or pfn + count > self._data[index].end_pfn:
            raise ExcludedPageError("not held", field="pfn", found=pfn)
        data = b"".join(self.page(p) for p in range(pfn, pfn + count))
        return data[:-1] if self._short else data


@st.composite
def sources(draw: st.DrawFn) -> PatternSource:
    starts = sorted(draw(st.sets(st.integers(0, 400), min_size=1, max_size=8)))
    ram = [PfnRun(s, s + draw(st.integers(1, 40))) for s in starts]
    ram = merge_runs(ram)
    data = []
    for run in ram:
        cut = sorted(draw(st.lists(st.integers(run.start_pfn, run.end_pfn), max_size=4)))
        points = [run.start_pfn, *cut, run.end_pfn]
        data += [PfnRun(a, b) for a, b in zip(points[::2], points[1::2], strict=False) if a < b]
    notes = draw(st.sampled_from([b"", kernel_notes()]))
    return PatternSource(ram, data, notes=notes, incomplete=draw(st.booleans()))


@settings(max_examples=60, deadline=None)
@given(sources(), st.sampled_from([None, DIRECT_MAP]))
def test_write_read_round_trip(source: PatternSource, page_offset: int | None) -> None:
    out = io.BytesIO()
    size = write_elf(source, out, page_offset=page_offset)
    assert size == len(out.getvalue())
    core = ElfVmcore.from_bytes(out.getvalue(), page_size=PAGE)
    assert core.data_runs() == merge_runs(source.data_runs())
    assert core.ram_runs() == core.data_runs()  # excluded pages are gaps, not zero-filled
    assert core.notes == source.notes
    assert core.incomplete == source.incomplete
    assert core.page_offset == (page_offset if core.segments else None)
    for run in core.data_runs():
        expected = b"".join(source.page(p) for p in range(run.start_pfn, run.end_pfn))
        assert core.read_pages(run.start_pfn, run.pages) == expected
    for ph in core.segments:
        assert ph.p_vaddr == ph.p_paddr + (page_offset or 0)


def test_writer_layout_for_crash() -> None:
    source = PatternSource([PfnRun(0, 0x9F), PfnRun(0x100, 0x200)], notes=kernel_notes())
    out = io.BytesIO()
    write_elf(source, out)
    image = out.getvalue()
    core = ElfVmcore.from_bytes(image)
    eh = core.header
    assert (eh.e_phoff, eh.e_phnum, eh.e_flags, eh.e_shoff, eh.e_shnum) == (64, 3, 0, 0, 0)
    note, *loads = core.program_headers
    assert (note.p_type, note.p_align, note.p_offset) == (PhdrType.PT_NOTE, 0, 64 + 3 * 56)
    assert image[note.p_offset : note.p_offset + note.p_filesz] == kernel_notes()
    assert all(ph.p_type == PhdrType.PT_LOAD and ph.p_align == 0 for ph in loads)
    assert all(ph.p_flags == 7 and ph.p_offset % PAGE == 0 for ph in loads)
    assert loads[0].p_offset >= note.p_offset + note.p_filesz  # notes before all data
    assert [(ph.p_paddr, ph.p_memsz) for ph in loads] == [(0, 0x9F000), (0x100000, 0x100000)]


def test_writer_pn_xnum() -> None:
    runs = [PfnRun(2 * i, 2 * i + 1) for i in range(PN_XNUM)]  # 65535 PT_LOADs + PT_NOTE
    source = PatternSource(runs, notes=kernel_notes(page_size=512), page_size=512)
    out = io.BytesIO()
    write_elf(source, out)
    core = ElfVmcore.from_bytes(out.getvalue(), page_size=512)
    assert core.header.e_phnum == PN_XNUM and core.header.e_shnum == 1
    sh = Elf64Shdr.unpack(out.getvalue()[core.header.e_shoff :][: Elf64Shdr.SIZE])
    assert (sh.sh_type, sh.sh_info, sh.sh_size) == (0, PN_XNUM + 1, 1)
    assert len(core.segments) == PN_XNUM
    assert core.data_runs() == runs
    for pfn in (0, 2 * 4000, 2 * (PN_XNUM - 1)):
        assert core.read_pages(pfn, 1) == source.page(pfn)


def test_writer_streams_in_bounded_writes() -> None:
    class Sink:
        """Write-only, like a pipe: no seek, no tell."""

        def __init__(self) -> None:
            self.sizes: list[int] = []
            self.data = bytearray()

        def write(self, chunk: bytes) -> int:
            self.sizes.append(len(chunk))
            self.data += chunk
            return len(chunk)

    source = PatternSource([PfnRun(0, 3000)], notes=kernel_notes())
    sink = Sink()
    calls: list[tuple[int, int]] = []
    write_elf(source, sink, progress=lambda done, total: calls.append((done, total)))  # type: ignore[arg-type]
    assert max(sink.sizes) <= 256 * PAGE
    assert calls[-1] == (3000 * PAGE, 3000 * PAGE)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert ElfVmcore.from_bytes(bytes(sink.data)).read_pages(2999, 1) == source.page(2999)


def test_writer_refuses_bad_notes_and_short_reads() -> None:
    source = PatternSource([PfnRun(0, 4)], notes=kernel_notes())
    out = io.BytesIO()
    with pytest.raises(TruncatedError, match=r"note descriptor runs past the end"):
        write_elf(source, out, notes=kernel_notes()[:-40])
    assert out.getvalue() == b""
    short = PatternSource([PfnRun(0, 4)], short=True)
    with pytest.raises(
        CorruptDataError,
        match=r"memory source returned a short page read in field pfn: expected 0x4000, got 0x3fff",
    ):
        write_elf(short, io.BytesIO())
