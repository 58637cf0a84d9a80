# SPDX-License-Identifier: GPL-2.0-or-later
"""Our ELF vmcores read by crash, makedumpfile, drgn and libkdumpfile; theirs read by us.

The memory is a synthetic x86_64 kernel (tests/builders/kernel.py): page
tables, init_uts_ns, a printk ring, VMCOREINFO, PRSTATUS notes. Every page a
reader returns is compared byte for byte with the source; the module-level
count is printed after the module for the record.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from diskdump.formats.elf import PN_XNUM, ElfVmcore
from diskdump.formats.elf_write import write_elf
from diskdump.formats.memsource import MemorySource, PfnRun, runs_page_count
from tests.builders.elfcore import (
    START_KERNEL_MAP,
    Segment,
    build_elfcore,
    kernel_text_segment,
    segments_from_source,
)
from tests.builders.kernel import SyntheticKernel, build_kernel
from tests.conftest import need, need_tool
from tests.formats.test_elf import PatternSource, kernel_notes

pytestmark = pytest.mark.differential

SYSTEM_PYTHON = "/usr/bin/python3"
PAGES_COMPARED = {"count": 0}

#: reads every page of the runs given as JSON through libkdumpfile, in order, into a file
LIBKDUMPFILE_DUMP = """
import json, sys, kdumpfile
path, runs, page_size, out = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
k = kdumpfile.kdumpfile(path)
k.attr["addrxlat.ostype"] = "linux"
with open(out, "wb") as f:
    for start, end in runs:
        f.write(k.read(kdumpfile.KDUMP_MACHPHYSADDR, start * page_size, (end - start) * page_size))
print(k.attr["file.format"], k.attr["linux.uts.release"])
"""


def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def compare_pages(source: MemorySource, runs: list[PfnRun], got: Iterator[bytes]) -> int:
    """Compare each run's bytes from a reader with the source; count the pages."""
    pages = 0
    for one_run, data in zip(runs, got, strict=True):
        assert data == source.read_pages(one_run.start_pfn, one_run.pages), one_run
        pages += one_run.pages
    PAGES_COMPARED["count"] += pages
    return pages


@pytest.fixture(scope="module", autouse=True)
def report_pages(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the module: print how many pages were compared, for the record."""
    yield
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nELF differential: {PAGES_COMPARED['count']} pages compared byte for byte")


@pytest.fixture(scope="module")
def kernel() -> SyntheticKernel:
    return build_kernel()


@pytest.fixture(scope="module")
def cores(kernel: SyntheticKernel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Our ELF output: with direct-map p_vaddr, with p_vaddr = p_paddr, and with holes."""
    top = tmp_path_factory.mktemp("elf")
    out = {}
    for name, page_offset in (("direct", kernel.spec.page_offset_base), ("plain", None)):
        out[name] = top / f"{name}.elf"
        with out[name].open("wb") as f:
            write_elf(kernel.source, f, page_offset=page_offset)
    return out


@pytest.fixture(scope="module")
def holed(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticKernel, Path]:
    """A dump with excluded pages (free RAM near the top, away from the kernel and the ring)."""
    kernel = build_kernel()
    kernel.source.exclude(0x2000, 0x2800)
    kernel.source.exclude(0x3000, 0x3001)
    path = tmp_path_factory.mktemp("holed") / "holed.elf"
    with path.open("wb") as f:
        write_elf(kernel.source, f, page_offset=kernel.spec.page_offset_base)
    return kernel, path


@pytest.mark.parametrize("name", ["direct", "plain"])
def test_crash_osrelease(cores: dict[str, Path], kernel: SyntheticKernel, name: str) -> None:
    crash = need_tool("crash")
    result = run(crash, "--osrelease", str(cores[name]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == kernel.spec.release


def test_crash_osrelease_with_holes(holed: tuple[SyntheticKernel, Path]) -> None:
    result = run(need_tool("crash"), "--osrelease", str(holed[1]))
    assert result.stdout.strip() == holed[0].spec.release, result.stderr


@pytest.mark.parametrize("name", ["direct", "plain"])
def test_makedumpfile_dump_dmesg(
    cores: dict[str, Path], kernel: SyntheticKernel, name: str, tmp_path: Path
) -> None:
    makedumpfile = need_tool("makedumpfile")
    out = tmp_path / "dmesg.txt"
    result = run(makedumpfile, "--dump-dmesg", str(cores[name]), str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_text() == kernel.expected_dmesg
    assert kernel.panic_line is not None and kernel.panic_line in out.read_text()


@pytest.mark.parametrize("name", ["direct", "plain"])
def test_drgn_reads_every_page(cores: dict[str, Path], kernel: SyntheticKernel, name: str) -> None:
    drgn = pytest.importorskip("drgn", reason="drgn is not installed (make venv installs it)")
    prog = drgn.Program()
    prog.set_core_dump(str(cores[name]))
    assert prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL
    size = kernel.source.page_size
    runs = list(kernel.source.data_runs())
    got = (prog.read(r.start_pfn * size, r.pages * size, True) for r in runs)
    assert compare_pages(kernel.source, runs, got) == runs_page_count(runs)
    # kernel-virtual reads: through the page tables (plain) or the direct-map p_vaddr (direct)
    release = prog.read(kernel.symbols["init_uts_ns"] + kernel.spec.uts_name_offset + 2 * 65, 65)
    assert release.rstrip(b"\0").decode() == kernel.spec.release
    vaddr = kernel.spec.page_offset_base + 0x100000
    assert prog.read(vaddr, size) == kernel.source.read_pages(0x100, 1)


def test_drgn_sees_holes_as_faults(holed: tuple[SyntheticKernel, Path]) -> None:
    drgn = pytest.importorskip("drgn", reason="drgn is not installed (make venv installs it)")
    kernel, path = holed
    prog = drgn.Program()
    prog.set_core_dump(str(path))
    runs = list(kernel.source.data_runs())
    got = (prog.read(r.start_pfn * 4096, r.pages * 4096, True) for r in runs)
    compare_pages(kernel.source, runs, got)
    with pytest.raises(drgn.FaultError):
        prog.read(0x2000 * 4096, 4096, True)  # excluded: a gap, never zeros


@pytest.mark.parametrize("name", ["direct", "plain", "holed"])
def test_libkdumpfile_reads_every_page(
    cores: dict[str, Path],
    holed: tuple[SyntheticKernel, Path],
    kernel: SyntheticKernel,
    name: str,
    tmp_path: Path,
) -> None:
    need(Path(SYSTEM_PYTHON).exists(), f"{SYSTEM_PYTHON} is missing")
    probe = run(SYSTEM_PYTHON, "-c", "import kdumpfile")
    need(probe.returncode == 0, "python3-libkdumpfile is not installed (make deps installs it)")
    source, path = (holed[0].source, holed[1]) if name == "holed" else (kernel.source, cores[name])
    runs = list(source.data_runs())
    out = tmp_path / "pages.bin"
    spec = json.dumps([[r.start_pfn, r.end_pfn] for r in runs])
    result = run(SYSTEM_PYTHON, "-c", LIBKDUMPFILE_DUMP, str(path), spec, "4096", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["elf", kernel.spec.release]
    data = out.read_bytes()
    offsets = [0]
    for r in runs:
        offsets.append(offsets[-1] + r.pages * 4096)
    assert len(data) == offsets[-1]
    chunks = (data[a:b] for a, b in itertools.pairwise(offsets))
    assert compare_pages(source, runs, chunks) == runs_page_count(runs)


def test_we_read_makedumpfile_elf_output(
    cores: dict[str, Path], kernel: SyntheticKernel, tmp_path: Path
) -> None:
    makedumpfile = need_tool("makedumpfile")
    out = tmp_path / "filtered.elf"
    result = run(makedumpfile, "-E", "-d", "1", str(cores["direct"]), str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    with ElfVmcore.open(out) as core:
        assert core.ram_runs() == list(kernel.source.ram_runs())
        data = list(core.data_runs())
        assert 0 < runs_page_count(data) < runs_page_count(core.ram_runs())
        assert core.page_offset == kernel.spec.page_offset_base
        assert core.notes == kernel.notes
        compare_pages(kernel.source, data, (core.read_pages(r.start_pfn, r.pages) for r in data))
        # what makedumpfile left out at dump level 1 is zero pages only
        zero = bytes(core.page_size)
        held = {pfn for r in data for pfn in range(r.start_pfn, r.end_pfn)}
        for ram in core.ram_runs():
            for pfn in range(ram.start_pfn, ram.end_pfn):
                if pfn not in held:
                    assert kernel.source.read_pages(pfn, 1) == zero, hex(pfn)


def test_makedumpfile_kdump_from_our_elf(
    cores: dict[str, Path], kernel: SyntheticKernel, tmp_path: Path
) -> None:
    makedumpfile = need_tool("makedumpfile")
    drgn = pytest.importorskip("drgn", reason="drgn is not installed (make venv installs it)")
    out = tmp_path / "vmcore.kdump"
    result = run(makedumpfile, "-c", "-d", "0", str(cores["plain"]), str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    prog = drgn.Program()
    prog.set_core_dump(str(out))
    runs = list(kernel.source.data_runs())
    got = (prog.read(r.start_pfn * 4096, r.pages * 4096, True) for r in runs)
    compare_pages(kernel.source, runs, got)


def test_qemu_layout_and_kernel_text_duplicate_agree_with_readers(
    kernel: SyntheticKernel, tmp_path: Path
) -> None:
    """The builder's QEMU (phoff 192) and /proc/vmcore (text duplicate) shapes are real."""
    drgn = pytest.importorskip("drgn", reason="drgn is not installed (make venv installs it)")
    crash = need_tool("crash")
    ram = [
        Segment(s.paddr, s.data, vaddr=kernel.spec.page_offset_base + s.paddr)
        for s in segments_from_source(kernel.source)
    ]
    text_vaddr = kernel.symbols["_stext"]
    text = kernel_text_segment(ram, kernel.kernel_start, 0x400000, text_vaddr)
    assert text_vaddr - START_KERNEL_MAP + kernel.spec.phys_base == kernel.kernel_start
    shapes = {
        "qemu": build_elfcore(segments_from_source(kernel.source), kernel.notes, layout="qemu"),
        "procvmcore": build_elfcore([text, *ram], kernel.notes),
    }
    for name, image in shapes.items():
        path = tmp_path / f"{name}.elf"
        path.write_bytes(image)
        assert run(crash, "--osrelease", str(path)).stdout.strip() == kernel.spec.release, name
        prog = drgn.Program()
        prog.set_core_dump(str(path))
        with ElfVmcore.open(path) as core:
            assert core.data_runs() == list(kernel.source.data_runs())
            runs = list(core.data_runs())
            ours = [core.read_pages(r.start_pfn, r.pages) for r in runs]
            theirs = (prog.read(r.start_pfn * 4096, r.pages * 4096, True) for r in runs)
            assert compare_pages(kernel.source, runs, iter(ours)) > 0
            compare_pages(kernel.source, runs, theirs)


def test_pn_xnum_output_opens_in_readers(tmp_path: Path) -> None:
    drgn = pytest.importorskip("drgn", reason="drgn is not installed (make venv installs it)")
    crash = need_tool("crash")
    runs = [PfnRun(2 * i, 2 * i + 1) for i in range(PN_XNUM)]  # 65535 PT_LOADs + PT_NOTE
    source = PatternSource(runs, notes=kernel_notes())
    path = tmp_path / "xnum.elf"
    with path.open("wb") as f:
        write_elf(source, f)
    assert run(crash, "--osrelease", str(path)).stdout.strip() == "6.1.0-13-amd64"
    prog = drgn.Program()
    prog.set_core_dump(str(path))
    got = (prog.read(r.start_pfn * 4096, 4096, True) for r in runs)
    assert compare_pages(source, runs, got) == PN_XNUM
    libkdump = run(
        SYSTEM_PYTHON,
        "-c",
        "import kdumpfile, sys; k = kdumpfile.kdumpfile(sys.argv[1]); "
        "sys.stdout.write(k.read(kdumpfile.KDUMP_MACHPHYSADDR, int(sys.argv[2]), 4096).hex())",
        str(path),
        str(2 * 40000 * 4096),
    )
    assert bytes.fromhex(libkdump.stdout) == source.page(2 * 40000), libkdump.stderr
