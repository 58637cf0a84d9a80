# SPDX-License-Identifier: GPL-2.0-or-later
"""Saved vmcores read by the real tools: crash, makedumpfile, drgn, libkdumpfile.

A 64 MiB synthetic 6.1 kernel (phys_base 0x1200000, KASLR slide) is put on an
image-file dump partition, saved by savecore as kdump (zlib) and as ELF, and
every tool must see the same release, the same kernel log and the same bytes
in every page the dump holds.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from diskdump.config import DeviceSpec
from diskdump.devices import open_device
from diskdump.savecore.save import Outcome, SaveOptions, run_savecore
from tests.builders.kernel import SyntheticKernel, build_kernel
from tests.conftest import need, need_tool
from tests.savecore.conftest import make_image
from tests.savecore.dumpbuilder import Knobs, write_dump

pytestmark = pytest.mark.differential

FORMATS = ("kdump", "elf")
_PAGES_PER_READ = 16

#: libkdumpfile is packaged for the system python only (python3-libkdumpfile)
_LIBKDUMPFILE_DIGEST = """
import hashlib, json, sys, kdumpfile
ctx = kdumpfile.kdumpfile(sys.argv[1])
digest = hashlib.sha256()
for start, end in json.loads(sys.argv[2]):
    for pfn in range(start, end):
        digest.update(ctx.read(kdumpfile.KDUMP_MACHPHYSADDR, pfn * 4096, 4096))
print(digest.hexdigest())
"""


@pytest.fixture(scope="module")
def kernel() -> SyntheticKernel:
    return build_kernel()


@pytest.fixture(scope="module")
def vmcores(kernel: SyntheticKernel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same dump saved once as kdump and once as ELF."""
    base = tmp_path_factory.mktemp("differential")
    image = base / "dev.img"
    label = make_image(image, 96 << 20)
    with open_device(image, writable=True) as device:
        write_dump(
            device,
            label,
            kernel.source,
            kernel_log=kernel.expected_dmesg,
            phys_base=kernel.spec.phys_base,
            knobs=Knobs(codec="zstd"),
        )
    out = {}
    for fmt in FORMATS:
        crash = base / f"crash-{fmt}"
        options = SaveOptions(
            dir=str(crash), format=fmt, compress="zlib", min_free=0, keep=fmt != FORMATS[-1]
        )
        (report,) = run_savecore([DeviceSpec(str(image))], options)
        assert report.outcome is Outcome.SAVED, report
        out[fmt] = crash / report.directory / "vmcore"
    return out


def _source_digest(kernel: SyntheticKernel) -> str:
    digest = hashlib.sha256()
    for run in kernel.source.data_runs():
        digest.update(kernel.source.read_pages(run.start_pfn, run.pages))
    return digest.hexdigest()


@pytest.mark.parametrize("fmt", FORMATS)
def test_crash_reads_the_release(fmt: str, vmcores: dict[str, Path]) -> None:
    crash = need_tool("crash")
    proc = subprocess.run(
        [crash, "--osrelease", str(vmcores[fmt])], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "6.1.0-13-amd64"


@pytest.mark.parametrize("fmt", FORMATS)
def test_dmesg_txt_equals_makedumpfile_dump_dmesg(
    fmt: str, vmcores: dict[str, Path], kernel: SyntheticKernel, tmp_path: Path
) -> None:
    makedumpfile = need_tool("makedumpfile")
    out = tmp_path / "dmesg"
    proc = subprocess.run(
        [makedumpfile, "--dump-dmesg", str(vmcores[fmt]), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    saved = (vmcores[fmt].parent / "dmesg.txt").read_text()
    assert out.read_text() == saved == kernel.expected_dmesg


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_page_equals_the_source_in_drgn(
    fmt: str, vmcores: dict[str, Path], kernel: SyntheticKernel
) -> None:
    drgn = pytest.importorskip("drgn")
    prog = drgn.Program()
    prog.set_core_dump(str(vmcores[fmt]))
    ps = kernel.source.page_size
    pages = 0
    for run in kernel.source.data_runs():
        for pfn in range(run.start_pfn, run.end_pfn, _PAGES_PER_READ):
            count = min(_PAGES_PER_READ, run.end_pfn - pfn)
            assert prog.read(pfn * ps, count * ps, True) == kernel.source.read_pages(pfn, count)
            pages += count
    assert pages == sum(r.pages for r in kernel.source.data_runs()) > 16000


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_page_equals_the_source_in_libkdumpfile(
    fmt: str, vmcores: dict[str, Path], kernel: SyntheticKernel
) -> None:
    probe = subprocess.run(["/usr/bin/python3", "-c", "import kdumpfile"], capture_output=True)
    need(probe.returncode == 0, "python3-libkdumpfile is not installed (make deps installs it)")
    runs = json.dumps([[r.start_pfn, r.end_pfn] for r in kernel.source.data_runs()])
    proc = subprocess.run(
        ["/usr/bin/python3", "-c", _LIBKDUMPFILE_DIGEST, str(vmcores[fmt]), runs],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == _source_digest(kernel)


def test_incomplete_save_opens_in_crash_and_drgn(kernel: SyntheticKernel, tmp_path: Path) -> None:
    crash_tool = need_tool("crash")
    drgn = pytest.importorskip("drgn")
    image = tmp_path / "dev.img"
    label = make_image(image, 96 << 20)
    with open_device(image, writable=True) as device:
        write_dump(
            device,
            label,
            kernel.source,
            kernel_log=kernel.expected_dmesg,
            phys_base=kernel.spec.phys_base,
            knobs=Knobs(cut_after_chunks=20),
        )
    options = SaveOptions(dir=str(tmp_path / "crash"), compress="zlib", min_free=0)
    (report,) = run_savecore([DeviceSpec(str(image))], options)
    assert report.outcome is Outcome.SAVED_INCOMPLETE
    vmcore = tmp_path / "crash" / report.directory / "vmcore"
    proc = subprocess.run(
        [crash_tool, "--osrelease", str(vmcore)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "6.1.0-13-amd64", proc.stderr
    prog = drgn.Program()
    prog.set_core_dump(str(vmcore))
    assert prog.read(0x1000, 4096, True) == kernel.source.read_pages(1, 1)
    with pytest.raises(drgn.FaultError):
        prog.read((kernel.source.max_pfn - 1) * 4096, 4096, True)
