# SPDX-License-Identifier: GPL-2.0-or-later
"""Differential tier: real readers open what we write, and we read what makedumpfile writes.

Input: the synthetic 64 MiB x86_64 kernel of tests/builders/kernel.py (page
tables, init_uts_ns, a lockless printk ring, VMCOREINFO, two PRSTATUS notes),
written as an ELF vmcore that makedumpfile 1.7.2 reads too. Readers: crash
8.0.2 (``--osrelease``), makedumpfile 1.7.2 (``--dump-dmesg``, ``-R``, and as
a writer), Debian's python3-libkdumpfile 0.5.1 (system python3) and drgn 0.3.0
(PyPI, bundled libkdumpfile). Every page is compared byte for byte.

Debian 12's makedumpfile and crash are built with zlib and lzo only
(``makedumpfile -v``), so zstd and snappy files are checked with libkdumpfile
and drgn, whose builds have all four codecs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from diskdump.errors import CodecUnavailableError
from diskdump.formats.codecs import CODEC_NAMES, get_codec
from diskdump.formats.detect import opened_vmcore
from diskdump.formats.elf import ElfVmcore
from diskdump.formats.kdump_read import KdumpFile, validate_kdump
from diskdump.savecore.convert import convert
from tests.builders.kernel import SyntheticKernel, build_kernel
from tests.differential.readers import (
    COMPARED,
    crash_osrelease,
    drgn_compare,
    first_excluded,
    libkdumpfile_compare,
    makedumpfile,
    makedumpfile_dmesg,
    run_tool,
)

pytestmark = pytest.mark.differential

AVAILABLE = []
for _name in CODEC_NAMES:
    try:
        get_codec(_name).check_available()
        AVAILABLE.append(_name)
    except CodecUnavailableError:
        pass
#: codecs Debian 12's makedumpfile 1.7.2 and crash 8.0.2 were built with
DEBIAN_TOOL_CODECS = ("none", "zlib", "lzo")
#: makedumpfile's option for each codec it has
MAKEDUMPFILE_FLAG = {"none": None, "zlib": "-c", "lzo": "-l"}
#: pfns the builder excludes from the source, so excluded pages are exercised
EXCLUDED = (0x2000, 0x2010)


@pytest.fixture(scope="module")
def kernel() -> SyntheticKernel:
    built = build_kernel()
    built.source.exclude(*EXCLUDED)
    return built


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, kernel: SyntheticKernel) -> Path:
    directory = tmp_path_factory.mktemp("differential")
    convert(kernel.source, directory / "source.elf", format="elf", level=0)
    return directory


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("codec", ["none", "zlib", "lzo"])
def test_byte_identical_to_makedumpfile(work: Path, codec: str, level: int) -> None:
    ours = work / f"ours-{codec}-{level}.kdump"
    theirs = work / f"mdf-{codec}-{level}.kdump"
    convert(work / "source.elf", ours, compress=codec, level=level, overwrite=True)
    flag = MAKEDUMPFILE_FLAG[codec]
    theirs.unlink(missing_ok=True)
    makedumpfile(*([flag] if flag else []), "-d", str(level), str(work / "source.elf"), str(theirs))
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("codec", AVAILABLE)
def test_readers_open_our_kdump(
    work: Path, kernel: SyntheticKernel, codec: str, level: int
) -> None:
    path = work / f"ours-{codec}-{level}.kdump"
    convert(kernel.source, path, compress=codec, level=level, overwrite=True)
    source = kernel.source
    excluded = first_excluded(source)
    assert crash_osrelease(path) == kernel.spec.release
    if codec in DEBIAN_TOOL_CODECS:
        assert makedumpfile_dmesg(path, work) == kernel.expected_dmesg
    pages, facts = libkdumpfile_compare(path, source, work, probe_excluded=excluded)
    assert facts == {
        "arch": "x86_64",
        "release": kernel.spec.release,
        "format": "diskdump",
        "excluded": "NoDataException",
    }
    assert pages == 16287 - 16
    assert drgn_compare(path, source, probe_excluded=excluded) == pages


def test_readers_open_our_flattened(work: Path, kernel: SyntheticKernel) -> None:
    flat = work / "ours.flat"
    plain = work / "ours-plain.kdump"
    convert(kernel.source, flat, flatten=True, compress="zlib", overwrite=True)
    convert(kernel.source, plain, compress="zlib", overwrite=True)
    assert crash_osrelease(flat) == kernel.spec.release
    rebuilt = work / "ours-R.kdump"
    rebuilt.unlink(missing_ok=True)
    proc = run_tool("sh", "-c", f"makedumpfile -R '{rebuilt}' < '{flat}'")
    assert proc.returncode == 0, proc.stderr
    assert rebuilt.read_bytes() == plain.read_bytes()
    # drgn's libkdumpfile reads flattened files itself (Debian's 0.5.1 does not)
    assert drgn_compare(flat, kernel.source) == 16287 - 16
    assert libkdumpfile_compare(rebuilt, kernel.source, work)[0] == 16287 - 16


def test_readers_open_our_elf(work: Path, kernel: SyntheticKernel) -> None:
    path = work / "ours.elf"
    convert(kernel.source, path, format="elf", level=1, overwrite=True)
    assert crash_osrelease(path) == kernel.spec.release
    assert makedumpfile_dmesg(path, work) == kernel.expected_dmesg
    with ElfVmcore.open(path) as elf:
        pages, facts = libkdumpfile_compare(path, elf, work)
        assert facts["arch"] == "x86_64" and facts["format"] == "elf"
        assert drgn_compare(path, elf) == pages
        assert pages == sum(run.pages for run in elf.data_runs())
        for run in elf.data_runs():  # every page we kept is the source's
            data = elf.read_pages(run.start_pfn, run.pages)
            assert data == kernel.source.read_pages(run.start_pfn, run.pages)


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize(
    ("name", "options"),
    [("zlib", ["-c"]), ("lzo", ["-l"]), ("none", []), ("flat", ["-F", "-c"]), ("elf", ["-E"])],
)
def test_we_read_makedumpfile_output(
    work: Path, kernel: SyntheticKernel, name: str, options: list[str], level: int
) -> None:
    out = work / f"mdf-read-{name}-{level}"
    out.unlink(missing_ok=True)
    args = [*options, "-d", str(level), str(work / "source.elf")]
    if "-F" in options:
        proc = run_tool("sh", "-c", "makedumpfile " + " ".join(args) + f" > '{out}'")
        assert proc.returncode == 0, proc.stderr
    else:
        makedumpfile(*args, str(out))
    compared = 0
    with opened_vmcore(out) as ours:
        if isinstance(ours, KdumpFile):
            assert ours.flattened == (name == "flat")
            assert ours.data_runs() == list(kernel.source.data_runs())
            assert validate_kdump(ours) == 16287 - 16
        for run in ours.data_runs():
            data = ours.read_pages(run.start_pfn, run.pages)
            assert data == kernel.source.read_pages(run.start_pfn, run.pages)
            compared += run.pages
    COMPARED["diskdump"] += compared
    assert compared >= (16287 - 16 if level == 0 or name != "elf" else 1)
