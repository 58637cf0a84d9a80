# SPDX-License-Identifier: GPL-2.0-or-later
"""Cost of encryption on the dump path, on the real QEMU vmcore (not a test: a measurement).

Run: ``.venv/bin/python -m tests.crypt.measure_overhead [VMCORE] [--repeat N]``

Two figures, both on the same vmcore (default: the cached QMP dump of the
Debian 6.1 guest, ~/.cache/diskdump/vmcores/qmp-6.1.0-56-amd64.elf):

1. **CPU per page, in process**: every chunk of the dump is built with
   :func:`diskdump.formats.chunk.build_chunk` exactly as the compression
   workers build it (zero pages out, 256-page windows, zstd), once clear and
   once sealed, on one thread; the difference over the pages is the cost of
   sealing per page (ChaCha20-Poly1305 over the compressed payload).
2. **Wall time of ``diskdump dump``**: the real command onto a freshly
   formatted image file, clear and ``--encrypt-to`` alternately, ``N`` times
   each; the difference of the medians over the pages written. On this
   shared 2-core machine the wall figure is noisy; the CPU figure is not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from diskdump.formats.chunk import PageState, build_chunk
from diskdump.formats.codecs import get_codec
from diskdump.formats.detect import opened_vmcore
from diskdump.formats.encrypted import DumpSealer
from diskdump.panic.layout import DEFAULT_CHUNK_PAGES, plan_windows

DEFAULT_VMCORE = (
    Path(os.environ.get("DISKDUMP_CACHE", Path.home() / ".cache" / "diskdump"))
    / "vmcores"
    / "qmp-6.1.0-56-amd64.elf"
)
#: dump partition image: the 512 MiB guest's dump is about 45 MiB with zstd
IMAGE_SIZE = 700 << 20
_US = 1e6
_BLOCK = 4096


def _windows(path: Path) -> list[tuple[int, bytes, bytes]]:
    """(start_pfn, states, raw present pages) of every window, as the writer builds them."""
    out = []
    with opened_vmcore(path) as src:
        ps = src.page_size
        zero = bytes(ps)
        for window in plan_windows(src.data_runs(), DEFAULT_CHUNK_PAGES, None):
            states = bytearray(window.page_count)
            parts = []
            for pfn, count in window.segments:
                data = src.read_pages(pfn, count)
                for i in range(count):
                    page = data[i * ps : (i + 1) * ps]
                    present = page != zero
                    states[pfn - window.start_pfn + i] = (
                        PageState.PRESENT if present else PageState.ZERO
                    )
                    if present:
                        parts.append(page)
            out.append((window.start_pfn, bytes(states), b"".join(parts)))
    return out


def cpu_per_page(path: Path, codec_name: str, repeat: int) -> dict[str, float]:
    """Single-thread build_chunk time per present page, clear and sealed (best of ``repeat``)."""
    windows = _windows(path)
    codec = get_codec(codec_name)
    sealer = DumpSealer.fresh(x25519.X25519PrivateKey.generate().public_key())
    pages = sum(len(raw) // _BLOCK for _, _, raw in windows)
    best: dict[str, float] = {}
    for label, cipher in (("clear", None), ("sealed", sealer.cipher)) * repeat:
        started = time.process_time()
        for seq, (start, states, raw) in enumerate(windows):
            build_chunk(
                sequence=seq,
                dump_id=bytes(16),
                start_pfn=start,
                states=states,
                raw=raw,
                codec=codec,
                block_size=_BLOCK,
                cipher=cipher,
            )
        spent = time.process_time() - started
        best[label] = min(best.get(label, spent), spent)
    return {
        "present_pages": pages,
        "clear_us_per_page": best["clear"] / pages * _US,
        "sealed_us_per_page": best["sealed"] / pages * _US,
        "overhead_us_per_page": (best["sealed"] - best["clear"]) / pages * _US,
    }


def _dump(vmcore: Path, work: Path, key: Path | None, codec: str) -> tuple[float, int]:
    image = work / "dump.img"
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, IMAGE_SIZE)
    cli = [sys.executable, "-m", "diskdump.cli.main"]
    subprocess.run([*cli, "format", str(image), "--quiet"], check=True, stdout=subprocess.DEVNULL)
    argv = [
        *cli,
        "dump",
        "--unarmed",
        "--no-mlock",
        "--json",
        "--device",
        str(image),
        "--source",
        str(vmcore),
        "--compress",
        codec,
    ]
    if key is not None:
        argv += ["--encrypt-to", str(key)]
    proc = subprocess.run(argv, check=True, capture_output=True, text=True)
    result = json.loads(proc.stdout)
    return float(result["seconds"]), int(result["pages_written"])


def wall_per_page(vmcore: Path, repeat: int, codec: str) -> dict[str, float]:
    """Median wall time of ``diskdump dump`` clear and encrypted, and the difference per page."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        work = Path(tmp)
        key = work / "pub.pem"
        public = x25519.X25519PrivateKey.generate().public_key()
        pem = serialization.Encoding.PEM
        key.write_bytes(public.public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo))
        times: dict[str, list[float]] = {"clear": [], "encrypted": []}
        pages = 0
        for _ in range(repeat):
            for label, k in (("clear", None), ("encrypted", key)):
                seconds, pages = _dump(vmcore, work, k, codec)
                times[label].append(seconds)
    clear, enc = statistics.median(times["clear"]), statistics.median(times["encrypted"])
    return {
        "pages_written": pages,
        "clear_s": clear,
        "encrypted_s": enc,
        "clear_runs": times["clear"],
        "encrypted_runs": times["encrypted"],
        "overhead_us_per_page": (enc - clear) / pages * _US,
    }  # type: ignore[dict-item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("vmcore", nargs="?", type=Path, default=DEFAULT_VMCORE)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--codec", default="zstd")
    args = parser.parse_args()
    print(
        json.dumps(
            {
                "vmcore": str(args.vmcore),
                "codec": args.codec,
                "cpu": cpu_per_page(args.vmcore, args.codec, args.repeat),
                "wall": wall_per_page(args.vmcore, args.repeat, args.codec),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
