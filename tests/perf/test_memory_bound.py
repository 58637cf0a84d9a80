# SPDX-License-Identifier: GPL-2.0-or-later
"""Peak RSS of ``diskdump convert`` and ``diskdump dump`` stays under 64 MiB (issue 6, item 4).

Inputs:

* a sparse synthetic ELF vmcore spanning 1 TiB of physical address space
  (bench/genimage.py ``sparse_spec``: the synthetic kernel's 64 MiB and 16
  memory sections of 128 MiB scattered up to 1 TiB, each with its struct
  pages; mostly zero and free pages; VMCOREINFO from the synthetic kernel,
  so level 31 walks mem_map), written with holes so it costs little disk;
* the largest real QEMU vmcore of the VM tier (``$DISKDUMP_CACHE/vmcores``).

Each command runs in its own process; its peak RSS is ``ru_maxrss`` from
``os.wait4``. ``dump`` runs as in the capture kernel (memory locked with
mlockall, so every page it touches counts), onto a formatted image file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench.dump import run_measured
from bench.genimage import GeneratedImage, generate, sparse_spec

from tests.conftest import CACHE, need

pytestmark = pytest.mark.slow

#: the bound of the issue, bytes
RSS_LIMIT = 64 << 20
MIB = 1 << 20
#: dump image: room for the non-zero pages of either input, compressed
IMAGE_SIZE = 768 * MIB
DISKDUMP = [sys.executable, "-m", "diskdump.cli.main"]


def run_peak(argv: list[str], tmp_path: Path) -> tuple[int, str]:
    """Run ``argv``; return (peak RSS in bytes, stdout). Fails the test on exit != 0.

    Through :func:`bench.dump.run_measured`: a small launcher process forks the
    command, because a child forked from this (large) pytest process would
    inherit its peak RSS in ``ru_maxrss``.
    """
    run = run_measured(argv, stdout=tmp_path / "stdout", drop_caches=False)
    assert run.exit_code == 0, f"{argv[3]} exited {run.exit_code}: {run.stderr[-1500:]}"
    print(f"peak RSS {run.peak_rss / MIB:.1f} MiB: {' '.join(argv[3:])}")  # shown with -s
    return run.peak_rss, (tmp_path / "stdout").read_text()


@pytest.fixture(scope="module")
def sparse_vmcore(tmp_path_factory: pytest.TempPathFactory) -> GeneratedImage:
    return generate(sparse_spec(seed=7), tmp_path_factory.mktemp("sparse") / "sparse.elf")


def _largest_real_vmcore() -> Path:
    found = [
        p for p in (CACHE / "vmcores").glob("qmp-*.elf") if not p.name.endswith(".phoff64.elf")
    ]
    need(bool(found), f"no real vmcore in {CACHE / 'vmcores'} (the VM tier caches them)")
    return max(found, key=lambda p: p.stat().st_size)


def _source(which: str, sparse: GeneratedImage) -> Path:
    return sparse.path if which == "sparse" else _largest_real_vmcore()


def test_sparse_vmcore_spans_1tib_and_costs_little_disk(sparse_vmcore: GeneratedImage) -> None:
    assert sparse_vmcore.max_pfn * 4096 == 1 << 40
    assert sparse_vmcore.ram_size == 64 * MIB + 16 * 128 * MIB - 0x61000  # e820 hole below 1 MiB
    assert sparse_vmcore.counts["zero"] > sparse_vmcore.ram_size // 4096 // 2
    # holes: the file is mostly not allocated
    assert sparse_vmcore.disk_size < sparse_vmcore.path.stat().st_size // 8


@pytest.mark.parametrize("which", ["sparse", "real"])
@pytest.mark.parametrize("level", [31, 1])
def test_convert_peak_rss(
    which: str, level: int, sparse_vmcore: GeneratedImage, tmp_path: Path
) -> None:
    source = _source(which, sparse_vmcore)
    out = tmp_path / "vmcore.kdump"
    argv = [*DISKDUMP, "convert", "--compress", "zstd", "--level", str(level), "--json"]
    rss, stdout = run_peak([*argv, str(source), str(out)], tmp_path)
    assert rss < RSS_LIMIT, f"convert -d {level} of {source.name}: peak RSS {rss / MIB:.1f} MiB"
    pages = json.loads(stdout)["pages"]
    if which == "sparse":
        # the kdump 2nd bitmap keeps zero pages (shared zero page); level 31 drops exactly
        # the generated free, page-cache and anonymous pages
        counts = sparse_vmcore.counts
        ram_pages = sparse_vmcore.ram_size // 4096
        dropped = counts["free"] + counts["cache"] + counts["anon"] if level & 30 else 0
        assert pages == ram_pages - dropped


@pytest.mark.parametrize("which", ["sparse", "real"])
@pytest.mark.parametrize("level", [31, 1])
def test_dump_peak_rss(
    which: str, level: int, sparse_vmcore: GeneratedImage, tmp_path: Path
) -> None:
    source = _source(which, sparse_vmcore)
    image = tmp_path / "dump.img"
    with image.open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, IMAGE_SIZE)
    subprocess.run([*DISKDUMP, "format", "--force", "--quiet", str(image)], check=True)
    argv = [*DISKDUMP, "dump", "--unarmed", "--device", str(image), "--source", str(source)]
    rss, stdout = run_peak([*argv, "--level", str(level), "--compress", "zstd", "--json"], tmp_path)
    assert json.loads(stdout)["complete"] is True
    assert rss < RSS_LIMIT, f"dump -d {level} of {source.name}: peak RSS {rss / MIB:.1f} MiB"
