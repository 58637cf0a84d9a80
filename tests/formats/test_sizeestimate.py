# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump estimate`` and formats/sizeestimate.py: vmcore, kcore and meminfo estimates."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from diskdump.cli.main import main
from diskdump.errors import UnsupportedVersionError
from diskdump.formats.elf_write import write_elf
from diskdump.formats.notes import VMCOREINFO_NOTE_NAME, pack_note
from diskdump.formats.sizeestimate import (
    MEMINFO_MARGIN_MIN_SIZE,
    estimate_meminfo,
    estimate_running_system,
    estimate_source,
    kdump_file_size,
    parse_meminfo,
    parse_zoneinfo,
)
from tests.formats.test_filtered import RAM, ZERO_PFNS, build_machine

MEMINFO = """\
MemTotal:        4000000 kB
MemFree:         2000000 kB
MemAvailable:    3000000 kB
Buffers:           40000 kB
Cached:           800000 kB
SwapCached:         4000 kB
AnonPages:        400000 kB
Hugetlb:               0 kB
HugePages_Total:       0
"""


def machine_with_notes():  # type: ignore[no-untyped-def]
    """The synthetic machine of test_filtered with its VMCOREINFO in the notes."""
    source, info = build_machine()
    source.notes = pack_note(VMCOREINFO_NOTE_NAME, 0, info.pack())
    return source


def test_kdump_file_size() -> None:
    # 2 header blocks, 2 bitmaps of one block, 10 descriptors, 8 data pages + 1 zero page
    assert kdump_file_size(4096, 1000, 10, 3) == 2 * 4096 + 2 * 4096 + 240 + 8 * 4096
    assert kdump_file_size(4096, 1000, 10, 0) == 4 * 4096 + 240 + 10 * 4096


def test_estimate_from_a_vmcore_is_exact() -> None:
    source = machine_with_notes()
    estimate = estimate_source(source, 31)
    ram = sum(r.pages for r in RAM)
    excluded = 16 + 128 + 10 + 4 + 8
    assert estimate.ram_pages == ram
    assert estimate.kept_pages == ram - excluded  # zero pages stay in the bitmap
    assert estimate.zero_pages == len(ZERO_PFNS)
    assert estimate.excluded_pages == {
        "free": 144,
        "cache": 5,
        "cache_private": 5,
        "user": 12,
        "zero": 4,
    }
    assert estimate.margin_size == 0 and estimate.note == "exact"
    assert estimate.predicted_size == kdump_file_size(4096, 2048, ram - excluded, 4)


def test_estimate_samples_zero_pages() -> None:
    source = machine_with_notes()
    sampled = estimate_source(source, 1, zero_sample=4)
    assert sampled.note == "zero pages sampled 1 in 4"
    assert 0 <= sampled.zero_pages <= 4 * len(ZERO_PFNS)


def test_estimate_from_meminfo_states_its_margin() -> None:
    counters = parse_meminfo(MEMINFO)
    assert counters["MemTotal"] == 4000000 and counters["HugePages_Total"] == 0
    estimate = estimate_meminfo(counters, 31)
    total = 4000000 // 4
    excluded = (2000000 + 804000 + 40000 + 400000) // 4
    assert estimate.kept_pages == total - excluded
    assert estimate.margin_size == max(MEMINFO_MARGIN_MIN_SIZE, total * 4096 * 5 // 100)
    assert "5% margin" in estimate.note and "zero pages not counted" in estimate.note
    assert estimate_meminfo(counters, 0).kept_pages == total
    with pytest.raises(ValueError, match="no MemTotal"):
        estimate_meminfo({}, 1)


ZONEINFO = """\
Node 0, zone      DMA
  per-node stats
      nr_inactive_anon 12
  pages free     3840
        spanned  4095
        present  3998
        managed  3840
Node 0, zone    DMA32
        spanned  126944
        present  1026944
        managed  113202
"""


def test_ram_comes_from_zoneinfo_when_present() -> None:
    present = parse_zoneinfo(ZONEINFO)
    assert present == 3998 + 1026944
    counters = parse_meminfo(MEMINFO)
    with_zones = estimate_meminfo(counters, 16, present_pages=present)
    assert with_zones.ram_pages == present
    assert with_zones.kept_pages == present - 2000000 // 4
    assert with_zones.note.startswith("from /proc/zoneinfo and meminfo")


def test_running_system_falls_back_to_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(MEMINFO)
    zoneinfo = tmp_path / "zoneinfo"
    zoneinfo.write_text(ZONEINFO)
    estimate = estimate_running_system(
        17,
        kcore_path=str(tmp_path / "no-kcore"),
        meminfo_path=str(meminfo),
        zoneinfo_path=str(zoneinfo),
    )
    assert estimate.method == "meminfo" and estimate.ram_pages == parse_zoneinfo(ZONEINFO)
    not_elf = tmp_path / "kcore"
    not_elf.write_bytes(b"\0" * 64)
    again = estimate_running_system(
        17, kcore_path=str(not_elf), meminfo_path=str(meminfo), zoneinfo_path="/nonexistent"
    )
    assert again.method == "meminfo" and again.ram_pages == 1000000


def test_running_system_uses_kcore(tmp_path: Path) -> None:
    kcore = tmp_path / "kcore"
    with open(kcore, "wb") as f:
        write_elf(machine_with_notes(), f)
    estimate = estimate_running_system(31, kcore_path=str(kcore), meminfo_path="/nonexistent")
    assert estimate.method == "kcore"
    assert estimate.kept_pages == estimate_source(machine_with_notes(), 31).kept_pages


def test_kcore_of_an_unsupported_kernel_is_refused(tmp_path: Path) -> None:
    source, info = build_machine()
    text = info.pack().replace(b"OFFSET(page.mapping)=24\n", b"")
    source.notes = pack_note(VMCOREINFO_NOTE_NAME, 0, text)
    kcore = tmp_path / "kcore"
    with open(kcore, "wb") as f:
        write_elf(source, f)
    with pytest.raises(UnsupportedVersionError, match=r"in field OFFSET\(page\.mapping\)"):
        estimate_running_system(8, kcore_path=str(kcore), meminfo_path="/nonexistent")


def test_cli_prints_the_size_last(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vmcore = tmp_path / "vmcore"
    with open(vmcore, "wb") as f:
        write_elf(machine_with_notes(), f)
    assert main(["estimate", "--source", str(vmcore), "--level", "31"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = estimate_source(machine_with_notes(), 31).predicted_size
    assert lines[-1] == str(expected)
    assert "method: vmcore (exact)" in lines and "excluded free: 144 pages" in lines
    assert main(["estimate", "--source", str(vmcore), "--level", "16", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["level"] == 16 and doc["excluded_pages"] == {"free": 144}


def test_cli_level_comes_from_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vmcore = tmp_path / "vmcore"
    with open(vmcore, "wb") as f:
        write_elf(machine_with_notes(), f)
    config = tmp_path / "diskdump.toml"
    config.write_text("[dump]\nlevel = 8\n")
    assert main(["estimate", "--config", str(config), "--source", str(vmcore), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["excluded_pages"] == {"user": 12}


def test_cli_rejects_bad_levels_and_unreadable_sources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["estimate", "--level", "32"]) == 64
    assert re.search(r"dump level must be 0-31, got 32", capsys.readouterr().err)
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a vmcore at all")
    assert main(["estimate", "--source", str(junk)]) == 1
    assert "not a vmcore" in capsys.readouterr().err
