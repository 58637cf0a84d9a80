# SPDX-License-Identifier: GPL-2.0-or-later
"""Erase rules (formats/erase.py): parsing, symbol resolution, the erased view of memory."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from diskdump.errors import ConfigError, ExcludedPageError
from diskdump.formats.erase import (
    ERASE_FILLER,
    ErasedSource,
    EraseRange,
    EraseRule,
    eraseinfo_text,
    parse_rules,
    resolve_rules,
)
from diskdump.formats.memsource import PfnRun
from tests.conftest import need

PAGE = 4096
KASLR = 0x1E00_0000  # runtime slide added to link-time addresses
PHYS_BASE = 0x0300_0000


class _Pages:
    """Eight pages of distinct bytes; pfn 5 excluded."""

    page_size = PAGE
    max_pfn = 8
    notes = b""
    incomplete = False

    def ram_runs(self) -> Sequence[PfnRun]:
        return [PfnRun(0, 8)]

    def data_runs(self) -> Sequence[PfnRun]:
        return [PfnRun(0, 5), PfnRun(6, 8)]

    def read_pages(self, pfn: int, count: int) -> bytes:
        if pfn <= 5 < pfn + count:
            raise ExcludedPageError("page excluded", found=5)
        return b"".join(bytes([p + 1]) * PAGE for p in range(pfn, pfn + count))


def test_parse_rules() -> None:
    assert parse_rules(["a", "b:64", " c :0x10"]) == [
        EraseRule("a"),
        EraseRule("b", 64),
        EraseRule("c", 16),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [(":8", "no symbol name"), ("x:many", "not a number"), ("x:0", "out of range")],
)
def test_bad_rules(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"erase .*{message}.*field erase\.symbols"):
        parse_rules([text])


def test_erased_source_overlays_filler_across_pages() -> None:
    rng = EraseRange("key", 0, PAGE * 2 - 10, 20)  # straddles pfn 1 and 2
    view = ErasedSource(_Pages(), [rng])
    data = view.read_pages(0, 4)
    assert data[PAGE * 2 - 10 : PAGE * 2 + 10] == bytes([ERASE_FILLER]) * 20
    assert data[PAGE * 2 - 11] == 2 and data[PAGE * 2 + 10] == 3
    assert view.read_pages(3, 2) == _Pages().read_pages(3, 2)  # untouched elsewhere
    with pytest.raises(ExcludedPageError):
        view.read_pages(4, 2)
    assert eraseinfo_text([rng]) == "erase key size 20\n"


def test_resolve_from_vmcoreinfo_needs_a_size() -> None:
    table = {"init_net": 0xFFFF_FFFF_8A00_0000}
    got = resolve_rules(
        [EraseRule("init_net", 64)], symbols=table.get, kernel_offset=KASLR, phys_base=PHYS_BASE
    )
    assert got == [EraseRange("init_net", 0xFFFF_FFFF_8A00_0000, 0x0A00_0000 + PHYS_BASE, 64)]
    with pytest.raises(ConfigError, match="cannot size symbol init_net"):
        resolve_rules(
            [EraseRule("init_net")], symbols=table.get, kernel_offset=KASLR, phys_base=PHYS_BASE
        )


def test_resolve_from_system_map_sizes_by_next_symbol(tmp_path: Path) -> None:
    smap = tmp_path / "System.map"
    smap.write_text("ffffffff81002000 D secret_key\nffffffff81002030 D other_var\n")
    (got,) = resolve_rules(
        [EraseRule("secret_key")],
        symbols=lambda _: None,
        kernel_offset=KASLR,
        phys_base=PHYS_BASE,
        system_map=smap,
    )
    assert got.vaddr == 0xFFFF_FFFF_8100_2000 + KASLR
    assert got.paddr == got.vaddr - 0xFFFF_FFFF_8000_0000 + PHYS_BASE
    assert got.size == 0x30


def test_resolve_from_a_real_elf_symbol_table(tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    need(gcc is not None, "gcc is not installed")
    src = tmp_path / "sym.c"
    src.write_text(
        'char secret_key[48] = "k";\nint other_var = 1;\nvoid _start(void) { for (;;) ; }\n'
    )
    elf = tmp_path / "vmlinux"
    subprocess.run(
        [
            str(gcc),
            "-nostdlib",
            "-static",
            "-fno-pic",
            "-mcmodel=kernel",
            "-Wl,-Ttext=0xffffffff81000000",
            "-o",
            str(elf),
            str(src),
        ],
        check=True,
    )
    (got,) = resolve_rules(
        [EraseRule("secret_key")],
        symbols=lambda _: None,
        kernel_offset=KASLR,
        phys_base=PHYS_BASE,
        vmlinux=elf,
    )
    assert got.size == 48
    assert got.vaddr & 0xFFFF_FFFF_FF00_0000 == 0xFFFF_FFFF_8100_0000 + KASLR


def test_unknown_symbol_and_untranslatable_address(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="erase symbol nope not found"):
        resolve_rules([EraseRule("nope", 8)], symbols=lambda _: None, kernel_offset=0, phys_base=0)
    direct = {"buf": 0xFFFF_8880_0000_1000}
    with pytest.raises(ConfigError, match="outside the kernel image"):
        resolve_rules([EraseRule("buf", 8)], symbols=direct.get, kernel_offset=0, phys_base=0)
    got = resolve_rules(
        [EraseRule("buf", 8)],
        symbols=direct.get,
        kernel_offset=0,
        phys_base=0,
        virt_to_phys=lambda v: v - 0xFFFF_8880_0000_0000,
    )
    assert got[0].paddr == 0x1000


def test_not_an_elf(tmp_path: Path) -> None:
    bad = tmp_path / "vmlinux"
    bad.write_bytes(b"not an elf at all" * 10)
    with pytest.raises(ConfigError, match="vmlinux is not a readable ELF"):
        resolve_rules(
            [EraseRule("x", 8)], symbols=lambda _: None, kernel_offset=0, phys_base=0, vmlinux=bad
        )
