# SPDX-License-Identifier: GPL-2.0-or-later
"""Dump and savecore benchmarks, side by side with makedumpfile, dd and cp on the same input.

For each input vmcore (the real QEMU vmcores of the VM tier, cached in
``$DISKDUMP_CACHE/vmcores``; makedumpfile reads the ``.phoff64.elf`` copy,
whose program headers follow the ELF header):

* ``diskdump dump --level 31`` (zstd) onto an image file vs
  ``makedumpfile -l -d 31`` and ``makedumpfile -c -d 31`` of the same ELF:
  time and output size;
* ``diskdump dump --level 0 --compress none`` vs ``dd bs=1M`` of the same
  vmcore onto the same image file;
* ``diskdump savecore`` of that dump vs ``cp`` of the same bytes;
* peak RSS of each process (``wait4`` rusage).

Every run starts from a freshly formatted image so no run benefits from
another's cache state more than dd or cp do; the page cache is dropped
(``/proc/sys/vm/drop_caches``) before each timed command when running as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DISKDUMP_CACHE", Path.home() / ".cache" / "diskdump"))
DISKDUMP = [sys.executable, "-m", "diskdump.cli.main"]


def _drop_caches() -> None:
    if os.geteuid() == 0:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def run_measured(cmd: list[str], **kwargs: object) -> tuple[float, int]:
    """Run ``cmd``; return (wall seconds, peak RSS in bytes). Raises on failure."""
    _drop_caches()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode not in (0,):
        raise RuntimeError(f"{cmd[0]} ... exited {proc.returncode}: {err[-2000:]}")
    return elapsed, usage.ru_maxrss * 1024


def _image(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, size)
    subprocess.run(
        [*DISKDUMP, "format", "--force", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return path


def _row(
    name: str, ours: tuple[float, int], ref_name: str, ref: tuple[float, int], **extra: object
) -> dict[str, object]:
    return {
        "name": name,
        "ours_s": ours[0],
        "ours_rss": ours[1],
        "ref_name": ref_name,
        "ref_s": ref[0],
        "ref_rss": ref[1],
        "ratio": ref[0] / ours[0],
        **extra,
    }


def bench_one(elf: Path, work: Path) -> list[dict[str, object]]:
    """All comparisons for one input vmcore."""
    mdf_input = elf.with_suffix(".phoff64.elf") if elf.with_suffix(".phoff64.elf").exists() else elf
    size = elf.stat().st_size
    rows = []
    img = _image(work / "dump.img", size + (64 << 20))
    ours = run_measured(
        [
            *DISKDUMP,
            "dump",
            "--unarmed",
            "--device",
            str(img),
            "--source",
            str(elf),
            "--level",
            "31",
            "--compress",
            "zstd",
        ]
    )
    for flag, label in (("-l", "makedumpfile -l -d 31"), ("-c", "makedumpfile -c -d 31")):
        out = work / f"mdf{flag}"
        ref = run_measured(["makedumpfile", flag, "-d", "31", str(mdf_input), str(out)])
        rows.append(
            _row(f"dump -d 31 zstd ({elf.name})", ours, label, ref, ref_size=out.stat().st_size)
        )
        out.unlink()
    save_dir = work / "crash"
    save_dir.mkdir(mode=0o700)
    saved = run_measured([*DISKDUMP, "savecore", "--device", str(img), "--dir", str(save_dir)])
    vmcore = next(save_dir.glob("*/vmcore"))
    cp_ref = run_measured(["cp", str(vmcore), str(work / "copy")])
    rows.append(
        _row(
            f"savecore ({elf.name})",
            saved,
            "cp of the saved vmcore",
            cp_ref,
            ours_size=vmcore.stat().st_size,
        )
    )
    shutil.rmtree(save_dir)
    (work / "copy").unlink()
    img.unlink()
    img = _image(work / "dump.img", size + (64 << 20))
    raw = run_measured(
        [
            *DISKDUMP,
            "dump",
            "--unarmed",
            "--device",
            str(img),
            "--source",
            str(elf),
            "--level",
            "0",
            "--compress",
            "none",
        ]
    )
    dd = run_measured(
        ["dd", f"if={elf}", f"of={img}", "bs=1M", "conv=notrunc,fsync", "status=none"]
    )
    rows.append(_row(f"dump -d 0 raw ({elf.name})", raw, "dd bs=1M", dd))
    img.unlink()
    return rows


def main() -> dict[str, object]:
    inputs = sorted(p for p in (CACHE / "vmcores").glob("qmp-*.elf") if ".phoff64" not in p.name)
    if not inputs:
        raise RuntimeError("no real vmcores cached yet: run `make test` (the VM tier) first")
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        for elf in inputs:
            rows.extend(bench_one(elf, Path(tmp)))
    for row in rows:
        print(
            f"{row['name']:45} ours {row['ours_s']:7.2f}s  {row['ref_name']:>26} "
            f"{row['ref_s']:7.2f}s  ratio {row['ratio']:5.2f}"
        )
    return {"rows": rows}


if __name__ == "__main__":
    main()
