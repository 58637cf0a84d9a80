# SPDX-License-Identifier: GPL-2.0-or-later
"""Drive the real readers: crash, makedumpfile, libkdumpfile (system python3) and drgn.

Every page comparison reads the pages through the external reader and compares
them byte for byte with the source; the functions return the number of pages
compared so the tests can state it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from diskdump.formats.memsource import MemorySource, PfnRun, iter_run_pfns
from tests.conftest import need, need_tool

SYSTEM_PYTHON = "/usr/bin/python3"
#: pages per read through an external reader
CHUNK_PAGES = 256
TOOL_TIMEOUT = 600
#: pages compared per reader in this test session (reported by conftest.py)
COMPARED: dict[str, int] = {"libkdumpfile": 0, "drgn": 0, "diskdump": 0}

# runs in the system interpreter, where Debian's python3-libkdumpfile lives
_LIBKDUMPFILE_SCRIPT = r"""
import json, sys
import kdumpfile
path, runs_path, out_path, page_size, chunk, probe = sys.argv[1:7]
page_size, chunk, probe = int(page_size), int(chunk), int(probe)
k = kdumpfile.kdumpfile(path)
runs = json.load(open(runs_path))
with open(out_path, "wb") as out:
    for start, end in runs:
        pfn = start
        while pfn < end:
            count = min(chunk, end - pfn)
            out.write(k.read(kdumpfile.KDUMP_MACHPHYSADDR, pfn * page_size, count * page_size))
            pfn += count
excluded = None
if probe >= 0:
    try:
        k.read(kdumpfile.KDUMP_MACHPHYSADDR, probe * page_size, page_size)
        excluded = "read"
    except Exception as err:
        excluded = type(err).__name__
print(json.dumps({"arch": k.attr["arch.name"], "release": str(k.attr["linux.uts.release"]),
                  "format": k.attr["file.format"], "excluded": excluded}))
"""


def run_tool(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool with a time-out; the caller checks the exit status and output."""
    return subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False
    )


def crash_osrelease(path: Path) -> str:
    """``crash --osrelease FILE``: the release crash finds in the dump's header/VMCOREINFO."""
    proc = run_tool(need_tool("crash"), "--osrelease", str(path))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout.strip()


def makedumpfile_dmesg(path: Path, tmp: Path) -> str:
    """``makedumpfile --dump-dmesg FILE out``: the log makedumpfile extracts."""
    out = tmp / f"{path.name}.dmesg"
    out.unlink(missing_ok=True)
    proc = run_tool(need_tool("makedumpfile"), "--dump-dmesg", str(path), str(out))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return out.read_text(errors="replace")


def makedumpfile(*args: str) -> None:
    """Run makedumpfile with ``args`` and insist it succeeds."""
    proc = run_tool(need_tool("makedumpfile"), *args)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def have_libkdumpfile() -> None:
    """Skip unless the system python3 imports kdumpfile (python3-libkdumpfile)."""
    proc = run_tool(SYSTEM_PYTHON, "-c", "import kdumpfile")
    need(proc.returncode == 0, "python3-libkdumpfile is not installed (make deps installs it)")


def libkdumpfile_compare(
    path: Path, source: MemorySource, tmp: Path, *, probe_excluded: int = -1
) -> tuple[int, dict[str, object]]:
    """Read every data page of ``source`` from ``path`` with libkdumpfile and compare.

    :return: pages compared and what libkdumpfile said (arch, release, format, excluded)
    """
    have_libkdumpfile()
    runs = [(run.start_pfn, run.end_pfn) for run in source.data_runs()]
    runs_path = tmp / "runs.json"
    runs_path.write_text(json.dumps(runs))
    out = tmp / "libkdumpfile.pages"
    proc = run_tool(
        SYSTEM_PYTHON,
        "-c",
        _LIBKDUMPFILE_SCRIPT,
        str(path),
        str(runs_path),
        str(out),
        str(source.page_size),
        str(CHUNK_PAGES),
        str(probe_excluded),
    )
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    pages = _compare_stream(out, source)
    out.unlink()
    COMPARED["libkdumpfile"] += pages
    return pages, facts


def _compare_stream(pages_path: Path, source: MemorySource) -> int:
    size = source.page_size
    compared = 0
    with pages_path.open("rb") as f:
        for pfn, count in iter_run_pfns(list(source.data_runs()), CHUNK_PAGES):
            got = f.read(count * size)
            assert got == source.read_pages(pfn, count), f"pages differ at pfn {pfn:#x}"
            compared += count
        assert f.read(1) == b""
    return compared


def drgn_compare(path: Path, source: MemorySource, *, probe_excluded: int = -1) -> int:
    """Open ``path`` with drgn (PyPI wheel, bundled libkdumpfile), read every data page, compare.

    :return: pages compared
    """
    try:
        import drgn
    except ImportError:
        need(False, "drgn is not installed (pip install -e '.[test]' installs it)")
    prog = drgn.Program()
    prog.set_core_dump(str(path))
    assert prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL
    size = source.page_size
    compared = 0
    for pfn, count in iter_run_pfns(list(source.data_runs()), CHUNK_PAGES):
        got = prog.read(pfn * size, count * size, True)
        assert got == source.read_pages(pfn, count), f"drgn: pages differ at pfn {pfn:#x}"
        compared += count
    if probe_excluded >= 0:
        try:
            prog.read(probe_excluded * size, size, True)
        except drgn.FaultError:
            pass
        else:
            raise AssertionError(f"drgn read excluded pfn {probe_excluded:#x}")
    COMPARED["drgn"] += compared
    return compared


def first_excluded(source: MemorySource) -> int:
    """A RAM pfn the source does not hold, or -1."""
    held = list(source.data_runs())
    for run in source.ram_runs():
        for pfn in range(run.start_pfn, run.end_pfn):
            if not any(r.start_pfn <= pfn < r.end_pfn for r in held):
                return pfn
    return -1


def runs_equal(a: list[PfnRun], b: list[PfnRun]) -> bool:
    """Same pfn runs."""
    return list(a) == list(b)
