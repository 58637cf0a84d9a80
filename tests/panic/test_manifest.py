# SPDX-License-Identifier: GPL-2.0-or-later
"""The manifest, the layout arithmetic and readiness helpers, as units."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from diskdump.config import Config
from diskdump.errors import ConfigError, DeviceTooSmallError, ManifestError
from diskdump.formats.memsource import PfnRun
from diskdump.panic.arm import arm, capture_kernel_loaded, estimate_dump_size
from diskdump.panic.layout import kernel_image_pfns, plan_layout, plan_windows
from diskdump.panic.manifest import (
    build_manifest,
    read_manifest,
    verify_manifest,
    write_manifest,
    writer_files,
)

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "diskdump"


@pytest.fixture
def package(tmp_path: Path) -> Path:
    copy = tmp_path / "diskdump"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_writer_files_cover_package_interpreter_codec_and_config(
    package: Path, tmp_path: Path
) -> None:
    config = tmp_path / "diskdump.toml"
    config.write_text("")
    files = writer_files(str(config), "zstd", package_dir=package)
    assert str(package / "panic" / "writer.py") in files
    assert str(package / "formats" / "chunk.py") in files
    assert str(Path(sys.executable).resolve()) in files
    assert any("zstandard" in f and f.endswith(".so") for f in files)
    assert str(config) in files


def test_verify_names_every_difference(package: Path, tmp_path: Path) -> None:
    manifest = build_manifest(config=None, codec="zlib", package_dir=package)
    path = tmp_path / "m.json"
    write_manifest(manifest, path)
    again = read_manifest(path)
    assert again.files == manifest.files and again.codec == "zlib"
    assert verify_manifest(again, config=None, package_dir=package) == []
    changed = package / "runtime" / "core.py"
    changed.write_bytes(changed.read_bytes() + b"\n")
    (package / "panic" / "extra.py").write_text("# added after arm\n")
    (package / "panic" / "select.py").unlink()
    problems = verify_manifest(again, config=str(tmp_path / "other.toml"), package_dir=package)
    assert problems[0].startswith("configuration ") and "is not the armed one (None)" in problems[0]
    assert any(p.startswith(f"{changed}: sha256 ") for p in problems)
    assert any(p.startswith(f"{package / 'panic' / 'select.py'}: cannot read") for p in problems)
    assert f"{package / 'panic' / 'extra.py'}: not in the manifest (added after arm)" in problems


def test_manifest_read_errors(tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    with pytest.raises(ManifestError, match=r"^no manifest: the dump writer was never armed on "):
        read_manifest(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ManifestError, match=r"^manifest unreadable: "):
        read_manifest(bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ManifestError, match=r"^not a diskdump manifest in field format"):
        read_manifest(bad)
    bad.write_text(json.dumps({"format": "diskdump-manifest", "version": 9}))
    with pytest.raises(ManifestError, match=r"unsupported manifest version.*expected 1, got 9$"):
        read_manifest(bad)


def test_layout_and_windows() -> None:
    layout = plan_layout(
        reserve_blocks=256,
        block_count=1000,
        block_size=4096,
        meta_size=5000,
        chunk_pages=256,
        page_size=4096,
    )
    assert (layout.header_lba, layout.meta_lba, layout.meta_blocks) == (256, 257, 2)
    assert (layout.data_lba, layout.trailer_lba, layout.max_chunk_blocks) == (259, 999, 257)
    with pytest.raises(
        DeviceTooSmallError,
        match=r"^dump area cannot hold the headers, the "
        r"metadata and one chunk on d: expected '520 blocks', got '262 blocks'$",
    ):
        plan_layout(
            reserve_blocks=256,
            block_count=262,
            block_size=4096,
            meta_size=20000,
            chunk_pages=256,
            page_size=4096,
            device="d",
        )
    runs = [PfnRun(0, 0x9F), PfnRun(0x100, 0x1000)]
    windows = list(plan_windows(runs, 256, PfnRun(0x800, 0x900)))
    assert [w.start_pfn for w in windows] == [
        0x800,
        0x0,
        0x100,
        0x200,
        0x300,
        0x400,
        0x500,
        0x600,
        0x700,
        0x900,
        0xA00,
        0xB00,
        0xC00,
        0xD00,
        0xE00,
        0xF00,
    ]
    assert windows[1].segments == ((0, 0x9F),) and windows[1].data_pages == 0x9F
    assert sum(w.data_pages for w in windows) == 0x9F + 0xF00


def test_kernel_image_pfns_from_vmcoreinfo() -> None:
    text = (
        "OSRELEASE=6.1.0\nSYMBOL(_stext)=ffffffff8b000000\nSYMBOL(init_uts_ns)=ffffffff8c812340\n"
        "SYMBOL(mem_map)=ffff888000000000\nNUMBER(phys_base)=-16777216\n"
    )
    run = kernel_image_pfns(text, 4096)
    phys_base = -16777216
    start = 0xFFFFFFFF8B000000 - 0xFFFFFFFF80000000 + phys_base
    assert run is not None and run.start_pfn == start // 4096
    assert run.end_pfn * 4096 >= 0xFFFFFFFF8C812340 - 0xFFFFFFFF80000000 + phys_base
    assert kernel_image_pfns("OSRELEASE=6.1.0\n", 4096) is None


def test_estimate_and_arm_without_devices(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        1048576 kB\n")
    size = estimate_dump_size(str(meminfo))
    assert size == (1 << 30) + 1024 * 4096 + 2 * 4096 + (32 << 20)
    with pytest.raises(ConfigError, match=r"^no dump device configured in field device"):
        arm(Config(), str(tmp_path / "m.json"), meminfo_path=str(meminfo))
    flag = tmp_path / "kexec_crash_loaded"
    flag.write_text("1\n")
    assert capture_kernel_loaded(str(flag)) and not capture_kernel_loaded(str(tmp_path / "x"))
