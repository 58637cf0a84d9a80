# SPDX-License-Identifier: GPL-2.0-or-later
"""Dump and savecore benchmarks, side by side with makedumpfile, dd and cp on the same input.

Inputs: the real QEMU vmcores of the VM tier (``$DISKDUMP_CACHE/vmcores/qmp-*.elf``;
makedumpfile reads their ``.phoff64.elf`` copy, whose program headers follow the
ELF header) and the 8 GiB synthetic image of bench/genimage.py (fixed seed,
cached in ``$DISKDUMP_CACHE/bench``; makedumpfile reads it as it is). For each,
in one run, on the same input and onto the same filesystem (/var/tmp):

* ``diskdump dump --level 31`` (the default codec, zstd level 1, one worker per
  CPU) onto a formatted image file vs ``makedumpfile -l -d 31`` and
  ``makedumpfile -c -d 31`` of the same ELF: time and output size
  (goal: >= 2x faster than ``-l``, output no larger than ``-c``'s);
* ``diskdump dump --level 0 --compress none`` vs ``dd bs=1M conv=fsync`` of the
  same vmcore onto the same image file (goal: >= 0.9x dd's speed), with the default
  verification (every written block read back first) and with ``--verify sample:4096``;
* ``diskdump savecore`` of the level-31 dump vs ``cp`` (+ ``sync`` of the copy, as
  savecore fsyncs) of the same bytes (goal: within 1.2x);
* ``dump -d 31`` with each codec, with ``--threads 1`` and ``2``, and with the device
  pattern verified as written (the default), in full before the dump, or sampled
  (``--verify full``, ``--verify sample:4096``);
* the peak RSS of every process (``wait4``).

And, in process, the codecs themselves on the pages a ``-d 31`` dump keeps
from the real vmcores: per page (kdump/savecore output) and per 1 MiB chunk
(the panic writer's partition format), throughput and ratio.

Each command is timed alone (the page cache is dropped before it when running
as root); ratios are speed-ups (reference time / our time), so > 1 means faster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DISKDUMP_CACHE", Path.home() / ".cache" / "diskdump"))
WORK_DIR = Path(os.environ.get("DISKDUMP_BENCH_DIR", "/var/tmp"))
DISKDUMP = [sys.executable, "-m", "diskdump.cli.main"]
MIB = 1 << 20
#: seed of the generated image (its cache key)
SEED = int(os.environ.get("DISKDUMP_BENCH_SEED", "1"))
#: skip the 8 GiB generated image (quick runs)
SKIP_GENERATED = os.environ.get("DISKDUMP_BENCH_GENERATED", "1") == "0"
#: codecs measured: (name, zstd level)
CODECS = (("zstd", 1), ("zstd", 3), ("zstd", 6), ("zlib", None), ("lzo", None), ("snappy", None))
#: pages sampled for the codec figures, per vmcore
CODEC_SAMPLE_PAGES = 16384
#: the panic writer's chunk: DEFAULT_CHUNK_PAGES pages compressed as one stream
CHUNK_PAGES = 256
PAGE = 4096

#: fork+exec+wait4 from a small process: a child forked from a large parent (this
#: process after generating the image) inherits the parent's RSS in ru_maxrss
_LAUNCHER = """
import json, os, subprocess, sys, time
out = open(sys.argv[1], "wb") if sys.argv[1] else subprocess.DEVNULL
err = open(sys.argv[2], "wb")
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[3:], stdout=out, stderr=err)
_, status, usage = os.wait4(proc.pid, 0)
elapsed = time.perf_counter() - start
print(json.dumps([elapsed, usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status)]))
"""


@dataclass(frozen=True)
class Measured:
    """One command: wall seconds (process start to exit), peak RSS in bytes, exit code."""

    seconds: float
    peak_rss: int
    exit_code: int
    stderr: str


def _drop_caches() -> None:
    if os.geteuid() == 0:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def run_measured(
    argv: list[str], *, stdout: Path | None = None, drop_caches: bool = True
) -> Measured:
    """Run ``argv`` through the launcher; its stdout goes to ``stdout`` (or nowhere)."""
    if drop_caches:
        _drop_caches()
    with tempfile.NamedTemporaryFile(prefix="bench-stderr-") as err:
        launcher = [sys.executable, "-c", _LAUNCHER, str(stdout or ""), err.name, *argv]
        done = subprocess.run(launcher, capture_output=True, text=True, check=True)
        seconds, rss, code = json.loads(done.stdout.strip().splitlines()[-1])
        return Measured(seconds, rss, code, Path(err.name).read_text(errors="replace"))


def _checked(argv: list[str], **kwargs: object) -> Measured:
    run = run_measured(argv, **kwargs)  # type: ignore[arg-type]
    if run.exit_code != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited {run.exit_code}: {run.stderr[-2000:]}")
    return run


def _image(path: Path, size: int) -> Path:
    """A preallocated, formatted dump image (``diskdump format`` refuses sparse files)."""
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, size)
    subprocess.run(
        [*DISKDUMP, "format", "--force", "--quiet", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return path


def _row(
    name: str, ours: Measured, ref_name: str, ref: Measured, **extra: object
) -> dict[str, object]:
    return {
        "name": name,
        "ours_s": round(ours.seconds, 3),
        "ours_rss_mib": round(ours.peak_rss / MIB, 1),
        "ref_name": ref_name,
        "ref_s": round(ref.seconds, 3),
        "ref_rss_mib": round(ref.peak_rss / MIB, 1),
        "ratio": round(ref.seconds / ours.seconds, 3),
        **extra,
    }


def _dump(elf: Path, img: Path, work: Path, *flags: str) -> tuple[Measured, dict[str, object]]:
    """``diskdump dump`` of ``elf`` onto the freshly formatted ``img``; its --json result."""
    out = work / "dump.json"
    argv = [*DISKDUMP, "dump", "--unarmed", "--json", "--device", str(img), "--source", str(elf)]
    run = _checked([*argv, *flags], stdout=out)
    return run, json.loads(out.read_text())


def bench_one(elf: Path, mdf_input: Path, work: Path) -> list[dict[str, object]]:
    """Every side-by-side comparison for one input vmcore."""
    label = elf.name.removesuffix(".elf")
    size = elf.stat().st_size
    img_size = size + 256 * MIB
    img = _image(work / "dump.img", img_size)
    ours, result = _dump(elf, img, work, "--level", "31")
    ours_size = int(result["bytes_written"])  # type: ignore[call-overload]
    rows: list[dict[str, object]] = []
    for flag in ("-l", "-c"):
        out = work / f"mdf{flag}"
        out.unlink(missing_ok=True)
        ref = _checked(["makedumpfile", flag, "-d", "31", str(mdf_input), str(out)])
        ref_size = out.stat().st_size
        rows.append(
            _row(
                f"dump -d 31 zstd [{label}]",
                ours,
                f"makedumpfile {flag} -d 31",
                ref,
                ours_size=ours_size,
                ref_size=ref_size,
                size_ratio=round(ours_size / ref_size, 3),
            )
        )
        out.unlink()
    rows.append(_savecore(img, label, work))
    img = _image(img, img_size)
    raw, _ = _dump(elf, img, work, "--level", "0", "--compress", "none")
    dd = _checked(["dd", f"if={elf}", f"of={img}", "bs=1M", "conv=notrunc,fsync", "status=none"])
    rows.append(_row(f"dump -d 0 none [{label}]", raw, "dd bs=1M conv=fsync", dd))
    # the same without reading back what is written (--verify sample:4096 checks a sample
    # before the dump): the write path alone against dd
    img = _image(img, img_size)
    sampled, _ = _dump(elf, img, work, "--level", "0", "--compress", "none", "--verify", SAMPLED)
    rows.append(_row(f"dump -d 0 none --verify {SAMPLED} [{label}]", sampled, "dd (same run)", dd))
    # every variant on the real vmcores; on the 8 GiB image only --threads 1 (each variant
    # formats the whole image again)
    rows.extend(_variants(elf, img, label, work, len(VARIANTS) if size < 4 << 30 else 2))
    img.unlink()
    return rows


def _savecore(img: Path, label: str, work: Path) -> dict[str, object]:
    save_dir = work / "crash"
    shutil.rmtree(save_dir, ignore_errors=True)
    save_dir.mkdir(mode=0o700)
    saved = _checked(
        [*DISKDUMP, "savecore", "--keep", "--quiet", "--device", str(img), "--dir", str(save_dir)]
    )
    vmcore = max((p for p in save_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    copy = work / "copy"
    cp = _checked(["sh", "-c", 'cp "$1" "$2" && sync "$2"', "cp", str(vmcore), str(copy)])
    row = _row(
        f"savecore [{label}]",
        saved,
        "cp + sync of the saved vmcore",
        cp,
        ours_size=vmcore.stat().st_size,
    )
    shutil.rmtree(save_dir)
    copy.unlink()
    return row


#: the sampled verification of the variant rows
SAMPLED = "sample:4096"

#: dump -d 31 variants: (codec, threads, verify); the first is the others' reference
VARIANTS = (
    ("zstd", 1, "written"),
    ("zstd", 2, "written"),
    ("lzo", 2, "written"),
    ("zlib", 2, "written"),
    ("snappy", 2, "written"),
    ("zstd", 2, "full"),
    ("zstd", 2, "sample:4096"),
)


def _variants(
    elf: Path, img: Path, label: str, work: Path, count: int
) -> Iterator[dict[str, object]]:
    """dump -d 31 with each codec, thread count and device verification, against the first."""
    base: Measured | None = None
    base_size = 0
    for codec, threads, verify in VARIANTS[:count]:
        img = _image(img, img.stat().st_size)
        run, result = _dump(
            elf,
            img,
            work,
            "--level",
            "31",
            "--compress",
            codec,
            "--threads",
            str(threads),
            "--verify",
            verify,
        )
        size = int(result["bytes_written"])  # type: ignore[call-overload]
        if base is None:
            base, base_size = run, size
        yield _row(
            f"dump -d 31 {codec} --threads {threads} --verify {verify} [{label}]",
            run,
            "dump -d 31 zstd --threads 1",
            base,
            ours_size=size,
            size_ratio=round(size / base_size, 3),
        )


def codec_figures(elf: Path) -> list[dict[str, object]]:
    """Throughput and ratio of each codec on pages a -d 31 dump keeps (in process, one thread)."""
    sys.path.insert(0, str(ROOT / "src"))
    from diskdump.formats.codecs import get_codec
    from diskdump.formats.elf import ElfVmcore
    from diskdump.formats.filtered import filter_source
    from diskdump.formats.memsource import iter_run_pfns
    from diskdump.formats.vmcoreinfo import vmcoreinfo_from_notes

    with ElfVmcore.open(elf) as core:
        kept = filter_source(core, 31, vmcoreinfo_from_notes(core.notes))
        pages = bytearray()
        for pfn, count in iter_run_pfns(kept.data_runs(), CHUNK_PAGES):
            pages += core.read_pages(pfn, count)
            if len(pages) >= CODEC_SAMPLE_PAGES * PAGE:
                break
    data = bytes(pages)
    rows: list[dict[str, object]] = []
    for name, level in CODECS:
        codec = get_codec(name, level=level)
        try:
            codec.check_available()
        except Exception as err:  # an extra not installed: say so in the table
            rows.append({"codec": name, "error": str(err)})
            continue
        for unit, size in (("page", PAGE), ("chunk", CHUNK_PAGES * PAGE)):
            start = time.perf_counter()
            packed = sum(
                len(codec.compress(data[i : i + size]) or data[i : i + size])
                for i in range(0, len(data), size)
            )
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "vmcore": elf.name,
                    "codec": name if level is None else f"zstd-{level}",
                    "unit": unit,
                    "mib_s": round(len(data) / MIB / seconds, 1),
                    "ratio": round(packed / len(data), 4),
                    "sample_mib": len(data) // MIB,
                }
            )
    return rows


def _inputs() -> list[tuple[Path, Path]]:
    """(our input, makedumpfile's input) pairs."""
    found = sorted(p for p in (CACHE / "vmcores").glob("qmp-*.elf") if ".phoff64" not in p.name)
    pairs = [(p, p.with_suffix(".phoff64.elf")) for p in found]
    pairs = [(p, m if m.exists() else p) for p, m in pairs]
    if not SKIP_GENERATED:
        sys.path.insert(0, str(ROOT))
        from bench.genimage import bench_spec, cached_image

        image = cached_image(bench_spec(SEED), CACHE / "bench")
        print(f"generated image: {image.path} ({image.ram_size >> 20} MiB RAM)", flush=True)
        pairs.append((image.path, image.path))
    return pairs


def main() -> dict[str, object]:
    """Run everything; return ``{"rows": [...], "codecs": [...], ...}`` for bench/run.py."""
    inputs = _inputs()
    if not inputs:
        raise RuntimeError("no input: run `make test` (the VM tier caches the real vmcores)")
    rows: list[dict[str, object]] = []
    codecs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(dir=WORK_DIR, prefix="diskdump-bench-") as tmp:
        for elf, mdf_input in inputs:
            print(f"-- {elf.name}", flush=True)
            rows.extend(bench_one(elf, mdf_input, Path(tmp)))
    for elf, _ in inputs:
        if elf.name.startswith("qmp-"):
            codecs.extend(codec_figures(elf))
    _print(rows, codecs)
    return {"rows": rows, "codecs": codecs, "cpus": os.cpu_count()}


def _print(rows: list[dict[str, object]], codecs: list[dict[str, object]]) -> None:
    for row in rows:
        size = f"  size {row['size_ratio']:.2f}x" if "size_ratio" in row else ""
        print(
            f"{row['name']:52} {row['ours_s']:7.2f}s {row['ours_rss_mib']:6.1f}MiB  "
            f"{row['ref_name']:>30} {row['ref_s']:7.2f}s {row['ref_rss_mib']:6.1f}MiB  "
            f"speed-up {row['ratio']:5.2f}{size}"
        )
    for c in codecs:
        if "error" not in c:
            print(
                f"codec {c['codec']:8} per {c['unit']:5} {c['mib_s']:8.1f} MiB/s  "
                f"ratio {c['ratio']:.3f}  ({c['vmcore']})"
            )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    json.dump(main(), sys.stdout, indent=2)
