# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark: ``diskdump format`` and ``diskdump check --full`` against dd on one loop device.

On a 4 GiB loop device (an image in /var/tmp, attached with losetup), in the
same run and alternating, ``ROUNDS`` times each::

    dd if=/dev/zero of=DEV bs=1M oflag=direct     vs   diskdump format --force DEV
    dd if=DEV of=/dev/null bs=1M iflag=direct     vs   diskdump check --full DEV

and, for information, dd with bs=8M (diskdump's transfer size; diskdump also
keeps four transfers in flight where dd has one).

Each figure is the best of the rounds (the least disturbed by the other work
on this shared machine); every sample is kept in the JSON. The commands are
timed whole, Python start-up included. Needs root (losetup). Writes
bench/results/partition.json. Goal: both ratios within 1.25.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
#: bytes of the loop device
DEVICE_SIZE = 4 << 30
#: free space kept on /var/tmp beyond the image
FREE_MARGIN = 2 << 30
#: rounds of each measurement
ROUNDS = int(os.environ.get("DISKDUMP_BENCH_ROUNDS", "3"))
#: image location; /var/tmp is disk-backed (not tmpfs) on Debian
IMAGE_DIR = Path(os.environ.get("DISKDUMP_BENCH_DIR", "/var/tmp"))
#: attach the loop device with --direct-io=on (so the backing file's page cache is bypassed)
DIRECT_LOOP = os.environ.get("DISKDUMP_BENCH_DIRECT_LOOP", "1") == "1"
#: the goal ratio of the issue
GOAL = 1.25
MIB = 1 << 20
#: dd's transfer size in the informational rows: ours (CHUNK_BLOCKS * 4096)
BIG_BLOCK = 8 * MIB


def _timed(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed


def _attach(image: Path) -> str:
    argv = ["losetup", "--find", "--show"]
    if DIRECT_LOOP:
        argv.append("--direct-io=on")
    return subprocess.run(
        [*argv, str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()


def _measure(dev: str) -> dict[str, list[float]]:
    diskdump = [sys.executable, "-m", "diskdump.cli.main"]
    count = str(DEVICE_SIZE // MIB)
    big = str(DEVICE_SIZE // BIG_BLOCK)
    runs: dict[str, list[float]] = {
        name: [] for name in ("dd_write", "dd_write_8m", "format", "dd_read", "dd_read_8m", "check")
    }
    for _ in range(ROUNDS):
        runs["dd_write"].append(_dd(f"of={dev}", "if=/dev/zero", "bs=1M", count, "oflag=direct"))
        runs["dd_write_8m"].append(_dd(f"of={dev}", "if=/dev/zero", "bs=8M", big, "oflag=direct"))
        runs["format"].append(_timed([*diskdump, "format", "--quiet", "--force", dev]))
        runs["dd_read"].append(_dd(f"if={dev}", "of=/dev/null", "bs=1M", count, "iflag=direct"))
        runs["dd_read_8m"].append(_dd(f"if={dev}", "of=/dev/null", "bs=8M", big, "iflag=direct"))
        runs["check"].append(_timed([*diskdump, "check", "--quiet", "--full", dev]))
    return runs


def _dd(target: str, source: str, block: str, count: str, flag: str) -> float:
    return _timed(["dd", source, target, block, f"count={count}", flag])


def main() -> dict[str, object]:
    """Run the benchmark; return ``{"rows": [...], ...}`` as bench/run.py expects."""
    if os.geteuid() != 0:
        raise RuntimeError("needs root (losetup)")
    free = shutil.disk_usage(IMAGE_DIR).free
    if free < DEVICE_SIZE + FREE_MARGIN:
        raise RuntimeError(f"{IMAGE_DIR} has {free // MIB} MiB free; need {DEVICE_SIZE // MIB}+")
    image = IMAGE_DIR / f"diskdump-bench-{os.getpid()}.img"
    with open(image, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, DEVICE_SIZE)
    try:
        dev = _attach(image)
        try:
            runs = _measure(dev)
        finally:
            subprocess.run(["losetup", "--detach", dev], check=False)
    finally:
        image.unlink()
    best = {name: min(samples) for name, samples in runs.items()}
    rows = [
        _row("format 4 GiB", best["format"], "dd write bs=1M oflag=direct", best["dd_write"]),
        _row("check --full 4 GiB", best["check"], "dd read bs=1M iflag=direct", best["dd_read"]),
        # for information: dd with our transfer size (we also keep 4 requests in flight)
        _row("format 4 GiB", best["format"], "dd write bs=8M oflag=direct", best["dd_write_8m"]),
        _row("check --full 4 GiB", best["check"], "dd read bs=8M iflag=direct", best["dd_read_8m"]),
    ]
    result: dict[str, object] = {
        "device_size": DEVICE_SIZE,
        "rounds": ROUNDS,
        "loop_direct_io": DIRECT_LOOP,
        "samples_s": runs,
        "rows": rows,
        "goal_ratio": GOAL,
        "goal_met": all(r["ratio"] <= GOAL for r in rows[:2]),  # the 1 MiB dd
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "partition.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _row(name: str, ours: float, ref_name: str, ref: float) -> dict[str, object]:
    return {
        "name": name,
        "ours_s": round(ours, 3),
        "ref_name": ref_name,
        "ref_s": round(ref, 3),
        "ratio": round(ours / ref, 3),
        "ours_mib_s": round(DEVICE_SIZE / MIB / ours, 1),
        "ref_mib_s": round(DEVICE_SIZE / MIB / ref, 1),
    }


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    out = main()
    for row in out["rows"]:  # type: ignore[attr-defined]
        print(
            f"{row['name']:20} {row['ours_s']:6.2f} s  {row['ref_name']:28} {row['ref_s']:6.2f} s"
            f"  ratio {row['ratio']:.2f}"
        )
