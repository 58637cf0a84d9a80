# SPDX-License-Identifier: GPL-2.0-or-later
"""ELF note blobs: iteration with bounds checks, packing, NT_PRSTATUS, VMCOREINFO lookup."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskdump.errors import CorruptDataError, TruncatedError
from diskdump.formats.notes import (
    NOTE_HEADER_SIZE,
    PRSTATUS_REGISTERS,
    Note,
    NoteType,
    PrStatus,
    find_vmcoreinfo,
    iter_notes,
    pack_note,
    prstatus_notes,
)

U64 = st.integers(0, 2**64 - 1)
I32 = st.integers(-(2**31), 2**31 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
TIMEVAL = st.tuples(I64, I64)

prstatus_strategy = st.builds(
    PrStatus,
    pr_pid=I32,
    pr_reg=st.tuples(*[U64] * len(PRSTATUS_REGISTERS)),
    si_signo=I32,
    si_code=I32,
    si_errno=I32,
    pr_cursig=st.integers(-(2**15), 2**15 - 1),
    pr_sigpend=U64,
    pr_sighold=U64,
    pr_ppid=I32,
    pr_pgrp=I32,
    pr_sid=I32,
    pr_utime=TIMEVAL,
    pr_stime=TIMEVAL,
    pr_cutime=TIMEVAL,
    pr_cstime=TIMEVAL,
    pr_fpvalid=I32,
)

note_strategy = st.tuples(
    st.text(st.characters(min_codepoint=1, max_codepoint=255), min_size=1, max_size=20),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=300),
)


def kernel_notes(vmcoreinfo: bytes = b"OSRELEASE=6.1.0\nPAGESIZE=4096\n") -> bytes:
    """Two CPUs' PRSTATUS and a VMCOREINFO note, as /proc/vmcore merges them."""
    cpu0 = PrStatus.from_registers(101, rip=0xFFFFFFFF81000010, rsp=0xFFFFC90000003F00)
    cpu1 = PrStatus.from_registers(0, rip=0xFFFFFFFF81000020, rsp=0xFFFFC90000007F00)
    return b"".join(
        (
            pack_note("CORE", NoteType.NT_PRSTATUS, cpu0.pack()),
            pack_note("CORE", NoteType.NT_PRSTATUS, cpu1.pack()),
            pack_note("VMCOREINFO", NoteType.VMCOREINFO, vmcoreinfo),
        )
    )


def test_pack_note_layout_matches_gabi() -> None:
    blob = pack_note("VMCOREINFO", 0, b"abcde")
    namesz, descsz, ntype = struct.unpack_from("<III", blob)
    assert (namesz, descsz, ntype) == (11, 5, 0)
    assert blob[12:24] == b"VMCOREINFO\0\0"
    assert blob[24:29] == b"abcde"
    assert len(blob) == 12 + 12 + 8


@settings(deadline=None)
@given(st.lists(note_strategy, max_size=6))
def test_notes_round_trip(notes: list[tuple[str, int, bytes]]) -> None:
    blob = b"".join(pack_note(name, ntype, desc) for name, ntype, desc in notes)
    got = list(iter_notes(blob))
    assert [(n.name, n.type, n.desc) for n in got] == notes
    for note in got:
        assert blob[note.desc_offset : note.desc_offset + len(note.desc)] == note.desc
    assert b"".join(pack_note(n.name, n.type, n.desc) for n in got) == blob


@settings(deadline=None)
@given(prstatus_strategy)
def test_prstatus_round_trip(prs: PrStatus) -> None:
    raw = prs.pack()
    assert len(raw) == PrStatus.SIZE == 336
    assert PrStatus.unpack(raw) == prs
    assert PrStatus.unpack(raw).pack() == raw


def test_prstatus_field_offsets() -> None:
    prs = PrStatus.from_registers(7, rip=0x1122334455667788, rsp=0x99, gs=0x42, r15=3)
    raw = prs.pack()
    assert struct.unpack_from("<i", raw, 32)[0] == 7
    assert struct.unpack_from("<Q", raw, 112)[0] == 3  # r15 is pr_reg[0]
    assert struct.unpack_from("<Q", raw, 112 + 16 * 8)[0] == 0x1122334455667788
    assert struct.unpack_from("<Q", raw, 112 + 19 * 8)[0] == 0x99
    assert struct.unpack_from("<Q", raw, 112 + 26 * 8)[0] == 0x42
    assert prs.rip == 0x1122334455667788 and prs.rsp == 0x99
    assert prs.registers["gs"] == 0x42


def test_prstatus_rejects_unknown_register() -> None:
    with pytest.raises(ValueError, match="unknown x86_64 registers"):
        PrStatus.from_registers(1, xmm0=1)


def test_prstatus_wrong_size() -> None:
    blob = pack_note("CORE", NoteType.NT_PRSTATUS, b"\0" * 144)  # an i386 descriptor
    with pytest.raises(
        CorruptDataError,
        match=r"NT_PRSTATUS descriptor has the wrong size for x86_64 in field n_descsz "
        r"at offset 0x114: expected 0x150, got 0x90",
    ):
        prstatus_notes(blob, base_offset=0x100)


def test_prstatus_notes_and_vmcoreinfo_lookup() -> None:
    blob = kernel_notes()
    cpus = prstatus_notes(blob)
    assert [c.pr_pid for c in cpus] == [101, 0]
    assert cpus[0].rip == 0xFFFFFFFF81000010
    desc_offset, desc_size = find_vmcoreinfo(blob) or (0, 0)
    assert blob[desc_offset : desc_offset + desc_size] == b"OSRELEASE=6.1.0\nPAGESIZE=4096\n"
    assert desc_offset == 2 * (12 + 8 + 336) + 12 + 12


def test_find_vmcoreinfo_absent() -> None:
    blob = pack_note("CORE", NoteType.NT_PRSTATUS, PrStatus().pack())
    assert find_vmcoreinfo(blob) is None
    assert find_vmcoreinfo(b"") is None


def test_zero_namesz_ends_the_blob_like_crash() -> None:
    # the kernel's per-CPU buffer ends with an all-zero header; whatever follows is ignored
    blob = kernel_notes() + b"\0" * NOTE_HEADER_SIZE + pack_note("CORE", 1, PrStatus().pack())
    assert len(list(iter_notes(blob))) == 3


def test_trailing_zero_padding_is_accepted() -> None:
    assert len(list(iter_notes(kernel_notes() + b"\0" * 7))) == 3


def test_missing_padding_after_last_descriptor_is_accepted() -> None:
    blob = pack_note("VMCOREINFO", 0, b"PAGESIZE=4096\n")  # 14 bytes, padded to 16
    notes = list(iter_notes(blob[:-2]))
    assert notes == [Note("VMCOREINFO", 0, b"PAGESIZE=4096\n", 24)]


def test_descsz_past_end_is_rejected() -> None:
    blob = bytearray(kernel_notes())
    struct.pack_into("<I", blob, 4, 0x7FFFFFF0)  # first note's n_descsz
    with pytest.raises(
        TruncatedError,
        match=r"note descriptor runs past the end of the notes in field n_descsz at offset "
        r"0x1014 on vmcore: expected 'end <= 0x1300', got '0x7ffffff0 bytes ending at 0x80001004'",
    ):
        list(iter_notes(blob, path="vmcore", base_offset=0x1000))


def test_namesz_past_end_is_rejected() -> None:
    blob = bytearray(pack_note("CORE", 1, b""))
    struct.pack_into("<I", blob, 0, 0x1000)
    with pytest.raises(TruncatedError, match=r"note name runs past the end .* field n_namesz"):
        list(iter_notes(blob))


def test_cut_header_is_rejected() -> None:
    blob = kernel_notes() + b"\x05\0\0\0\x10"
    with pytest.raises(TruncatedError, match=r"note header is cut short in field n_namesz"):
        list(iter_notes(blob))


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_escapes_the_error_tree(data: bytes) -> None:
    try:
        for note in iter_notes(data):
            assert len(note.desc) <= len(data)
    except TruncatedError:
        pass
