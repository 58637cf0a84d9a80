# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared shape of bulk transfers (format, verify, re-initialise): chunk size, depth, buffers.

Chunks are cut at absolute multiples of :data:`CHUNK_BLOCKS`, a multiple of
the pattern period, so every full chunk has the same fill and only its lbas
change from one chunk to the next. :data:`IO_DEPTH` chunks are in flight at
once (``os.preadv``/``os.pwritev`` release the GIL), so the device queue stays
busy while Python produces or compares another chunk.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator

from diskdump.formats.partition import BLOCK_SIZE, BlockExtent

__all__ = ["CHUNK_BLOCKS", "IO_DEPTH", "SMALL_CHUNK_BLOCKS", "Progress", "buffers", "chunks"]

#: blocks per bulk transfer: 8 MiB, a multiple of the pattern period (256 blocks)
CHUNK_BLOCKS = 2048
#: blocks per transfer when verifying at panic time: 1 MiB (one pattern period), so the
#: capture kernel holds 4 MiB of read buffers and a 2 MiB pattern, not 32 + 17 MiB
SMALL_CHUNK_BLOCKS = 256
#: chunks in flight at once in bulk transfers (at least 2: one buffer is always being
#: produced or compared while the others are with the device)
IO_DEPTH = 4
assert IO_DEPTH >= 2

#: ``progress(done_bytes, total_bytes)``, as cli._render.Progress accepts
Progress = Callable[[int, int], None]


def chunks(extent: BlockExtent, size: int = CHUNK_BLOCKS) -> Iterator[tuple[int, int]]:
    """(lba, block_count) pieces of ``extent``, cut at absolute multiples of ``size`` blocks."""
    lba = extent.start_lba
    while lba < extent.end_lba:
        stop = min(extent.end_lba, (lba // size + 1) * size)
        yield lba, stop - lba
        lba = stop


def buffers(size: int = CHUNK_BLOCKS) -> list[memoryview]:
    """IO_DEPTH page-aligned (O_DIRECT) buffers of ``size`` blocks, freed by reference counting."""
    return [memoryview(mmap.mmap(-1, size * BLOCK_SIZE)) for _ in range(IO_DEPTH)]
