# SPDX-License-Identifier: GPL-2.0-or-later
"""VMCOREINFO parsing into typed values, the exact text kept, and drgn's validation rules."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskdump.errors import CorruptDataError, NotThisFormatError, TruncatedError
from diskdump.formats.notes import NoteType, PrStatus, pack_note
from diskdump.formats.vmcoreinfo import VmcoreInfo, validate_vmcoreinfo, vmcoreinfo_from_notes

# shaped like a Debian 6.1 kernel's text (values from a KASLR boot under QEMU)
TEXT = (
    "OSRELEASE=6.1.0-13-amd64\n"
    "BUILD-ID=3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d\n"
    "PAGESIZE=4096\n"
    "SYMBOL(init_uts_ns)=ffffffff8f812420\n"
    "OFFSET(uts_namespace.name)=0\n"
    "SYMBOL(swapper_pg_dir)=ffffffff8f40a000\n"
    "SYMBOL(_stext)=ffffffff8e000000\n"
    "SIZE(page)=64\n"
    "OFFSET(page._mapcount)=48\n"
    "LENGTH(mem_section)=2048\n"
    "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\n"
    "NUMBER(VMALLOC_START)=0xffffc90000000000\n"
    "NUMBER(phys_base)=-1862270976\n"
    "NUMBER(pgtable_l5_enabled)=0\n"
    "KERNELOFFSET=e000000\n"
    "CRASHTIME=1700000000\n"
)


def test_typed_values() -> None:
    info = VmcoreInfo(TEXT)
    assert info.osrelease == "6.1.0-13-amd64"
    assert info.build_id == bytes.fromhex("3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d")
    assert info.page_size == 4096
    assert info.symbol("swapper_pg_dir") == 0xFFFFFFFF8F40A000
    assert info.size("page") == 64
    assert info.offset("page._mapcount") == 48
    assert info.offset("uts_namespace.name") == 0
    assert info.length("mem_section") == 2048
    assert info.number("PAGE_BUDDY_MAPCOUNT_VALUE") == -129
    assert info.number("VMALLOC_START") == 0xFFFFC90000000000
    assert info.number("pgtable_l5_enabled") == 0
    assert info.phys_base == -1862270976
    assert info.kerneloffset == 0xE000000
    assert info.crashtime == 1700000000
    assert "SIZE(page)" in info and "SIZE(nope)" not in info
    assert info.get("SYMBOL(_stext)") == "ffffffff8e000000"
    assert info.pack() == TEXT.encode()
    validate_vmcoreinfo(info)


def test_optional_keys() -> None:
    info = VmcoreInfo("OSRELEASE=4.19.0\nPAGESIZE=4096\n")
    assert info.crashtime is None
    assert info.build_id is None


def test_first_occurrence_wins_and_junk_lines_ignored() -> None:
    info = VmcoreInfo("PAGESIZE=4096\nno equals sign\n=x\nPAGESIZE=8192\n\0\0")
    assert info.page_size == 4096
    assert info.pack().endswith(b"\0\0")


def test_missing_key_names_the_key() -> None:
    info = VmcoreInfo("OSRELEASE=6.1\n")
    with pytest.raises(
        CorruptDataError, match=r"^vmcoreinfo lacks a key in field SYMBOL\(prb\): expected"
    ):
        info.symbol("prb")
    with pytest.raises(CorruptDataError, match=r"lacks a key in field NUMBER\(phys_base\)"):
        _ = info.phys_base
    with pytest.raises(CorruptDataError, match=r"lacks a key in field OSRELEASE"):
        _ = VmcoreInfo("PAGESIZE=4096\n").osrelease


@pytest.mark.parametrize(
    ("line", "call"),
    [
        ("PAGESIZE=4k", lambda i: i.page_size),
        ("PAGESIZE=0x1000", lambda i: i.page_size),
        ("SYMBOL(prb)=ffffffffzz", lambda i: i.symbol("prb")),
        ("SIZE(page)=-64", lambda i: i.size("page")),
        ("NUMBER(phys_base)=12ab", lambda i: i.phys_base),
        ("KERNELOFFSET=", lambda i: i.kerneloffset),
        ("CRASHTIME=yesterday", lambda i: i.crashtime),
        ("BUILD-ID=xyz", lambda i: i.build_id),
    ],
)
def test_malformed_value_names_key_and_value(line: str, call: object) -> None:
    key, _, value = line.partition("=")
    info = VmcoreInfo(line + "\n")
    pattern = "vmcoreinfo value is malformed in field " + re.escape(key)
    pattern += r": expected .*, got " + re.escape(repr(value))
    with pytest.raises(CorruptDataError, match=pattern):
        call(info)  # type: ignore[operator]


def test_with_crashtime_replaces_or_appends() -> None:
    info = VmcoreInfo(TEXT).with_crashtime(42)
    assert info.crashtime == 42
    assert info.pack().count(b"CRASHTIME=") == 1
    assert info.pack() == TEXT.replace("1700000000", "42").encode()
    fresh = VmcoreInfo("OSRELEASE=6.1\nPAGESIZE=4096").with_crashtime(7)
    assert fresh.pack() == b"OSRELEASE=6.1\nPAGESIZE=4096\nCRASHTIME=7\n"
    assert fresh.osrelease == "6.1"


def test_validate_like_drgn() -> None:
    with pytest.raises(
        CorruptDataError,
        match=r"page size is not a power of two in field PAGESIZE: expected 'a power of two', "
        r"got 0xbb8",
    ):
        validate_vmcoreinfo(VmcoreInfo("OSRELEASE=6.1\nPAGESIZE=3000\n"))
    with pytest.raises(CorruptDataError, match=r"lacks a key in field SYMBOL\(swapper_pg_dir\)"):
        validate_vmcoreinfo(VmcoreInfo("OSRELEASE=6.1\nPAGESIZE=4096\n"))
    with pytest.raises(CorruptDataError, match=r"lacks a key in field OSRELEASE"):
        validate_vmcoreinfo(VmcoreInfo("OSRELEASE=\nPAGESIZE=4096\n"))


def test_from_notes() -> None:
    blob = pack_note("CORE", NoteType.NT_PRSTATUS, PrStatus().pack()) + pack_note(
        "VMCOREINFO", 0, TEXT.encode()
    )
    assert vmcoreinfo_from_notes(blob).pack() == TEXT.encode()
    with pytest.raises(NotThisFormatError, match=r"no VMCOREINFO note in the notes at offset 0x40"):
        vmcoreinfo_from_notes(blob[:356], base_offset=0x40)
    with pytest.raises(TruncatedError):
        vmcoreinfo_from_notes(blob[:-20])


keys = st.from_regex(r"[A-Z_]{1,8}(\([a-z_.]{1,12}\))?", fullmatch=True)


@settings(deadline=None)
@given(st.dictionaries(keys, st.integers(-(2**63), 2**64 - 1), max_size=12))
def test_entries_round_trip(entries: dict[str, int]) -> None:
    info = VmcoreInfo.from_entries(entries)
    assert VmcoreInfo.unpack(info.pack()) == info
    assert dict(info.entries) == {k: str(v) for k, v in entries.items()}
    for key, value in entries.items():
        if key.startswith("NUMBER(") and key.endswith(")"):
            assert info.number(key[7:-1]) == value


def test_number_with_leading_zero_is_decimal() -> None:
    """Found by fuzzing: int(value, 0) raised a bare ValueError for "0943"."""
    info = VmcoreInfo.unpack(b"OSRELEASE=6.1\nNUMBER(phys_base)=09437184\n")
    assert info.phys_base == 9437184
