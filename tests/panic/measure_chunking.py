# SPDX-License-Identifier: GPL-2.0-or-later
"""Measure: compress each page on its own, or each chunk of pages as one stream?

Not a test: run ``.venv/bin/python -m tests.panic.measure_chunking`` (figures in
docs/panic.md). Two inputs: the synthetic kernel's RAM (what the tests dump)
and 64 MiB of real file contents from /usr (binaries, libraries, text: what a
page cache holds). Zero pages are left out first, as the writer does at
level 1. Prints, per codec and grouping, the stored size as a share of the
raw size and the single-thread compression rate.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from diskdump.formats.codecs import get_codec
from tests.panic.helpers import kernel

PAGE = 4096
CORPUS_SIZE = 64 << 20
GROUPS = (1, 16, 64, 256, 1024)


def _usr_pages() -> bytes:
    out = bytearray()
    for root, _, files in os.walk("/usr/lib"):
        for name in sorted(files):
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            out += data[: len(data) - len(data) % PAGE]
            if len(out) >= CORPUS_SIZE:
                return bytes(out[:CORPUS_SIZE])
    return bytes(out)


def _kernel_pages() -> bytes:
    src = kernel().source
    return b"".join(src.read_pages(r.start_pfn, r.pages) for r in src.data_runs())


def _nonzero(data: bytes) -> list[bytes]:
    zero = bytes(PAGE)
    pages = (data[i : i + PAGE] for i in range(0, len(data), PAGE))
    return [p for p in pages if p != zero]


def _groups(pages: list[bytes], size: int) -> Iterator[bytes]:
    for i in range(0, len(pages), size):
        yield b"".join(pages[i : i + size])


def measure(name: str, data: bytes) -> None:
    pages = _nonzero(data)
    raw = len(pages) * PAGE
    print(f"{name}: {len(data) >> 20} MiB, {len(pages)} non-zero pages")
    for codec_name in ("zlib", "zstd", "lzo", "snappy"):
        codec = get_codec(codec_name)
        cells = []
        for size in GROUPS:
            start = time.perf_counter()
            stored = 0
            for group in _groups(pages, size):
                packed = codec.compress(group)
                stored += len(group) if packed is None else len(packed)
            rate = raw / (time.perf_counter() - start) / (1 << 20)
            cells.append(f"{size:>4}p {100 * stored / raw:5.1f}% {rate:6.0f} MiB/s")
        print(f"  {codec_name:6} " + " | ".join(cells))


if __name__ == "__main__":
    measure("synthetic kernel RAM", _kernel_pages())
    measure("/usr/lib file contents", _usr_pages())
