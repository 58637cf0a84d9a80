# SPDX-License-Identifier: GPL-2.0-or-later
"""Verifying the pattern of a dump partition: every block, or every N-th and the last."""

from __future__ import annotations

import itertools
import mmap
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from diskdump.devices.base import BlockIO, DumpDevice
from diskdump.formats.partition import BLOCK_SIZE, BlockExtent, BlockPattern, PartitionLabel
from diskdump.partition._bulk import CHUNK_BLOCKS, IO_DEPTH, Progress, buffers, chunks
from diskdump.partition.label import read_label

__all__ = ["MAX_REPORTED_BAD", "VerifyResult", "verify_device"]

#: how many bad lbas a verification reports by number
MAX_REPORTED_BAD = 8


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of :func:`verify_device`.

    :param checked_blocks: blocks of the dump area that were read and compared
    :param data_blocks: blocks of the dump area in total
    :param sample_every: 1 for a full check, N when every N-th block (plus the last) was read
    :param bad_block_count: blocks whose pattern failed
    :param first_bad_lbas: the first few of them (at most MAX_REPORTED_BAD)
    :param first_bad_reasons: why each of those failed, in words
    """

    device: str
    label: PartitionLabel
    checked_blocks: int
    data_blocks: int
    sample_every: int
    bad_block_count: int
    first_bad_lbas: tuple[int, ...]
    first_bad_reasons: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True if every checked block holds its pattern."""
        return self.bad_block_count == 0


def verify_device(
    device: DumpDevice,
    sample_every: int = 1,
    progress: Progress | None = None,
    *,
    label: PartitionLabel | None = None,
    chunk_blocks: int = CHUNK_BLOCKS,
) -> VerifyResult:
    """Read the dump area and compare every (or every N-th) block with its pattern.

    :param sample_every: 1 reads every block; N reads every N-th block of
        the dump area plus its last block
    :param progress: called as ``progress(done_bytes, total_bytes)``
    :param label: the label, if already read
    :param chunk_blocks: blocks per read (a multiple of the pattern period); the panic
        path passes SMALL_CHUNK_BLOCKS to bound its memory, format/check the default
    :raises NotThisFormatError: no label (see :func:`read_label`)
    :raises DeviceIOError: a read failed
    """
    if sample_every < 1:
        raise ValueError(f"sample_every must be >= 1, got {sample_every}")
    label = label if label is not None else read_label(device)
    io = BlockIO(device, label.reserve_blocks, label.block_count)
    pattern = BlockPattern(label, chunk_blocks if sample_every == 1 else 1)
    tally = _Tally(pattern)
    if sample_every == 1:
        _verify_full(io, label.data_extent, tally, progress, chunk_blocks)
    else:
        _verify_sampled(io, label, sample_every, tally, progress)
    return VerifyResult(
        device=device.name,
        label=label,
        checked_blocks=tally.checked,
        data_blocks=label.data_blocks,
        sample_every=sample_every,
        bad_block_count=tally.bad,
        first_bad_lbas=tuple(tally.first_lbas),
        first_bad_reasons=tuple(tally.first_reasons),
    )


class _Tally:
    """Counts checked and bad blocks; keeps the first few bad ones with a reason."""

    def __init__(self, pattern: BlockPattern) -> None:
        self.pattern = pattern
        self.checked = 0
        self.bad = 0
        self.first_lbas: list[int] = []
        self.first_reasons: list[str] = []

    def check(self, view: memoryview, lba: int) -> None:
        bs = self.pattern.block_size
        self.checked += len(view) // bs
        for bad in self.pattern.iter_bad_blocks(view, lba):
            self.bad += 1
            if len(self.first_lbas) < MAX_REPORTED_BAD:
                offset = (bad - lba) * bs
                self.first_lbas.append(bad)
                self.first_reasons.append(
                    self.pattern.describe_block(view[offset : offset + bs], bad)
                )


def _verify_full(
    io: BlockIO, extent: BlockExtent, tally: _Tally, progress: Progress | None, size: int
) -> None:
    views = buffers(size)
    pieces = enumerate(chunks(extent, size))  # lazily: memory stays O(IO_DEPTH), not O(device)
    total = extent.block_count * BLOCK_SIZE
    done = 0

    def read(slot: int, lba: int, count: int) -> memoryview:
        view = views[slot][: count * BLOCK_SIZE]
        io.read(lba, view)
        return view

    with ThreadPoolExecutor(max_workers=IO_DEPTH, thread_name_prefix="diskdump-read") as pool:
        ahead: deque[tuple[int, Future[memoryview]]] = deque()

        def submit_next() -> None:
            piece = next(pieces, None)
            if piece is not None:
                index, (lba, count) = piece
                ahead.append((lba, pool.submit(read, index % IO_DEPTH, lba, count)))

        for _ in range(IO_DEPTH - 1):
            submit_next()
        while ahead:
            lba, future = ahead.popleft()
            view = future.result()
            submit_next()  # into the buffer compared in the previous step
            tally.check(view, lba)
            done += len(view)
            if progress is not None:
                progress(done, total)


def _verify_sampled(
    io: BlockIO, label: PartitionLabel, every: int, tally: _Tally, progress: Progress | None
) -> None:
    last = label.block_count - 1
    sampled = range(label.reserve_blocks, label.block_count, every)  # a range: no list
    extra = [] if sampled[-1] == last else [last]
    total = (len(sampled) + len(extra)) * BLOCK_SIZE
    view = memoryview(mmap.mmap(-1, BLOCK_SIZE))
    for index, lba in enumerate(itertools.chain(sampled, extra)):
        io.read(lba, view)
        tally.check(view, lba)
        if progress is not None:
            progress((index + 1) * BLOCK_SIZE, total)
