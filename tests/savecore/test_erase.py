# SPDX-License-Identifier: GPL-2.0-or-later
"""Erase rules applied by convert: the filler replaces exactly the symbol, the output records it,
and the real readers still open the file."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from diskdump.cli.main import main
from diskdump.errors import ConfigError
from diskdump.formats.erase import ERASE_FILLER
from diskdump.formats.kdump_read import KdumpFile
from diskdump.savecore.convert import EraseOptions, convert
from tests.builders.kernel import SyntheticKernel, build_kernel
from tests.conftest import need_tool

ERASE_SIZE = 100  # bytes; deliberately not page-aligned and crossing no page boundary


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticKernel, Path, Path, int]:
    """A synthetic kernel as ELF, a System.map naming a secret, and the secret's paddr."""
    k = build_kernel()
    tmp = tmp_path_factory.mktemp("erase")
    elf = k.write_elf(tmp / "vmcore.elf")
    runtime = k.symbols["_stext"] + 0x10_0000 + 0x123  # 1 MiB into the image: RAM, kept
    link = runtime - k.spec.kernel_offset
    smap = tmp / "System.map"
    smap.write_text(f"{link:016x} D secret_key\n{link + ERASE_SIZE:016x} D after_secret\n")
    return k, elf, smap, k.virt_to_phys(runtime)


def test_convert_erases_exactly_the_symbol(
    kernel: tuple[SyntheticKernel, Path, Path, int], tmp_path: Path
) -> None:
    k, elf, smap, paddr = kernel
    out = tmp_path / "vmcore"
    result = convert(elf, out, level=0, erase=EraseOptions(("secret_key",), system_map=smap))
    assert result.erased == (f"erase secret_key size {ERASE_SIZE}",)
    page = paddr // 4096 * 4096
    with KdumpFile.open(out) as kfile:
        assert kfile.erase_info == f"erase secret_key size {ERASE_SIZE}\n".encode()
        got = kfile.read_pages(page // 4096, 1)
    want = bytearray(k.source.read_pages(page // 4096, 1))
    assert bytes(want[paddr - page : paddr - page + ERASE_SIZE]) != bytes([ERASE_FILLER]) * 100
    want[paddr - page : paddr - page + ERASE_SIZE] = bytes([ERASE_FILLER]) * ERASE_SIZE
    assert got == bytes(want)


def test_erased_output_opens_in_crash_and_makedumpfile(
    kernel: tuple[SyntheticKernel, Path, Path, int], tmp_path: Path
) -> None:
    k, elf, smap, _ = kernel
    out = tmp_path / "vmcore"
    args = ["convert", str(elf), str(out), "--erase", "secret_key", "--system-map", str(smap)]
    assert main([*args, "--json"]) == 0
    crash = need_tool("crash")
    assert (
        k.spec.release
        in subprocess.run(
            [crash, "--osrelease", str(out)], capture_output=True, text=True, check=True
        ).stdout
    )
    mdf = need_tool("makedumpfile")
    dmesg = tmp_path / "dmesg"
    subprocess.run([mdf, "--dump-dmesg", str(out), str(dmesg)], capture_output=True, check=True)
    assert dmesg.read_text() == k.expected_dmesg


def test_config_erase_section_is_used(
    kernel: tuple[SyntheticKernel, Path, Path, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, elf, smap, _ = kernel
    conf = tmp_path / "diskdump.toml"
    conf.write_text(f'[erase]\nsymbols = ["secret_key:16"]\nsystem_map = "{smap}"\n')
    out = tmp_path / "vmcore"
    assert main(["convert", str(elf), str(out), "--config", str(conf), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["erased"] == ["erase secret_key size 16"]


def test_unknown_symbol_is_a_clear_error(
    kernel: tuple[SyntheticKernel, Path, Path, int], tmp_path: Path
) -> None:
    _, elf, smap, _ = kernel
    with pytest.raises(ConfigError, match=r"erase symbol no_such_symbol not found"):
        convert(elf, tmp_path / "out", erase=EraseOptions(("no_such_symbol",), system_map=smap))
    assert not (tmp_path / "out").exists()


def test_savecore_erases_and_records_it(
    kernel: tuple[SyntheticKernel, Path, Path, int], tmp_path: Path
) -> None:
    """dump -> savecore --erase: the saved vmcore has the filler, info.json and info.txt say so."""
    _, elf, smap, paddr = kernel
    img = tmp_path / "dump.img"
    with img.open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, 96 << 20)
    assert main(["format", "--force", "--quiet", str(img)]) == 0
    assert main(["dump", "--unarmed", "--quiet", "--device", str(img), "--source", str(elf)]) == 0
    crash = tmp_path / "crash"
    crash.mkdir(mode=0o700)
    args = ["savecore", "--quiet", "--device", str(img), "--dir", str(crash)]
    assert main([*args, "--erase", "secret_key", "--system-map", str(smap)]) == 0
    (saved,) = [
        p for p in crash.iterdir() if p.is_dir() and not p.is_symlink() and p.name[0] != "."
    ]
    info = json.loads((saved / "info.json").read_text())
    assert info["erased"] == [f"erase secret_key size {ERASE_SIZE}"]
    assert "erased:         erase secret_key" in (saved / "info.txt").read_text()
    with KdumpFile.open(saved / "vmcore") as kfile:
        page = kfile.read_pages(paddr // 4096, 1)
    at = paddr % 4096
    assert page[at : at + ERASE_SIZE] == bytes([ERASE_FILLER]) * ERASE_SIZE


def test_savecore_passes_over_an_unformatted_device(tmp_path: Path) -> None:
    """A never-formatted device in the list is reported, not a failure (exit 0)."""
    blank = tmp_path / "blank.img"
    with blank.open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, 8 << 20)
    crash = tmp_path / "crash"
    crash.mkdir(mode=0o700)
    assert main(["savecore", "--quiet", "--device", str(blank), "--dir", str(crash)]) == 0
