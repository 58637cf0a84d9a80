# SPDX-License-Identifier: GPL-2.0-or-later
"""Dump-partition operations: format, read the label, verify, find a dump, re-initialise.

The on-disk layout is :mod:`diskdump.formats.partition`; the I/O goes through
:class:`~diskdump.devices.base.BlockIO` (the one bounds-checked path). Bulk
work (format, full verification) moves :data:`CHUNK_BLOCKS` blocks per call
in page-aligned buffers, chunks aligned to absolute lbas so the expected
pattern of a chunk is one cached buffer plus a strided lba store, and a
second thread keeps the device busy with the next chunk while this one is
compared or produced (``os.preadv``/``os.pwritev`` release the GIL).

Order of a format: refuse (see :func:`check_formattable`), take the device
(quiesce), wipe both label copies, write the pattern over the dump area,
zero the reserve, flush, then write the labels and flush again, so a format
cut short leaves no valid label and ``check`` says "needs format".
"""

from __future__ import annotations

import logging
import mmap
import uuid as uuid_mod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from diskdump.devices.base import BlockIO, DumpDevice, Health
from diskdump.errors import (
    BadMagicError,
    CorruptDataError,
    DeviceRefusedError,
    DeviceTooSmallError,
    FormatError,
    HeaderMismatchError,
    NotThisFormatError,
)
from diskdump.formats.dumpheader import is_dump_header
from diskdump.formats.partition import (
    BACKUP_LABEL_LBA,
    BLOCK_SIZE,
    DEFAULT_RESERVE_BLOCKS,
    MIN_DATA_BLOCKS,
    BlockExtent,
    BlockPattern,
    LabelCopy,
    PartitionLabel,
    new_label,
)
from diskdump.partition.probe import describe_signatures, probe_signatures

__all__ = [
    "CHUNK_BLOCKS",
    "DumpPresence",
    "Progress",
    "VerifyResult",
    "check_formattable",
    "find_dump",
    "format_device",
    "read_label",
    "reinit_blocks",
    "verify_device",
]

log = logging.getLogger(__name__)

#: blocks per bulk transfer: 8 MiB, a multiple of the pattern period (256 blocks)
CHUNK_BLOCKS = 2048
#: chunks in flight at once in bulk transfers: keeps the device queue busy while
#: Python produces or compares another chunk (os.preadv/os.pwritev release the GIL)
IO_DEPTH = 4
#: how many bad lbas a verification reports by number
MAX_REPORTED_BAD = 8

#: ``progress(done_bytes, total_bytes)``, as cli._render.Progress accepts
Progress = Callable[[int, int], None]


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


@dataclass(frozen=True, slots=True)
class DumpPresence:
    """Which copies of a dump header the device holds (leading first, trailing last)."""

    leading: bool
    trailing: bool

    @property
    def present(self) -> bool:
        """True if either copy is there: the partition holds a dump savecore has not cleared."""
        return self.leading or self.trailing


def read_label(device: DumpDevice) -> PartitionLabel:
    """Read the partition label, falling back to the backup copy.

    :raises NotThisFormatError: neither copy is a diskdump label (the device needs a format)
    :raises FormatError: a label is there but damaged, or does not fit the device
    """
    io = BlockIO(device)
    geo = device.geometry
    buf = bytearray(BLOCK_SIZE)
    errors: list[FormatError] = []
    for lba in (0, BACKUP_LABEL_LBA):
        if lba >= geo.block_count:
            break
        io.read(lba, buf)
        try:
            label = PartitionLabel.unpack(buf, device=device.name, offset=lba * BLOCK_SIZE)
        except FormatError as err:
            errors.append(err)
            continue
        if lba != 0:
            log.warning("%s: primary label damaged (%s); using the backup", device.name, errors[0])
        _check_label_fits(device, label)
        return label
    if all(isinstance(e, BadMagicError) for e in errors):
        raise NotThisFormatError(
            "no diskdump partition label", device=device.name, offset=0, hint="diskdump format"
        )
    raise errors[0]


def _check_label_fits(device: DumpDevice, label: PartitionLabel) -> None:
    geo = device.geometry
    if geo.block_size != label.block_size or geo.block_count != label.block_count:
        raise HeaderMismatchError(
            "partition label does not describe this device (resized or copied?)",
            device=device.name,
            field="block_count",
            expected=geo.block_count,
            found=label.block_count,
            hint="diskdump format",
        )


def find_dump(device: DumpDevice, label: PartitionLabel) -> DumpPresence:
    """Look for the leading (lba reserve_blocks) and trailing (last lba) dump headers."""
    io = BlockIO(device, label.reserve_blocks, label.block_count)
    buf = bytearray(label.block_size)
    io.read(label.reserve_blocks, buf)
    leading = is_dump_header(buf)
    io.read(label.block_count - 1, buf)
    return DumpPresence(leading=leading, trailing=is_dump_header(buf))


def check_formattable(device: DumpDevice, *, force: bool = False) -> list[str]:
    """Decide whether ``device`` may be formatted; return the warnings ``force`` overrode.

    Refused always: a device sanity_check calls UNUSABLE (mounted, active swap,
    held by dm/md, read-only, busy); ``force`` does not change that, because
    writing under a mounted filesystem corrupts it for certain. Refused unless
    ``force``: a MAYBE verdict, foreign signatures found by libblkid
    (``wipefs``: filesystem, swap, LVM2/RAID member, partition table), and a
    dump savecore has not cleared yet.

    :raises DeviceRefusedError: naming the device and what was found
    :raises DeviceTooSmallError: too small for the reserve plus MIN_DATA_BLOCKS
    """
    geo = device.geometry
    need = DEFAULT_RESERVE_BLOCKS + MIN_DATA_BLOCKS
    if geo.block_size != BLOCK_SIZE or geo.block_count < need:
        raise DeviceTooSmallError(
            "device too small for a dump partition",
            device=device.name,
            expected=f">= {need * BLOCK_SIZE} bytes",
            found=f"{geo.size} bytes",
        )
    sanity = device.sanity_check()
    if sanity.health is Health.UNUSABLE:
        raise DeviceRefusedError(
            f"refusing to format: {sanity.reason}", device=device.name, hint="not even with --force"
        )
    findings: list[str] = []
    if sanity.health is Health.MAYBE:
        findings.append(f"sanity check says maybe: {sanity.reason}")
    findings.extend(_foreign_signatures(device))
    findings.extend(_unsaved_dump(device))
    if findings and not force:
        raise DeviceRefusedError(
            "refusing to format: " + "; ".join(findings),
            device=device.name,
            hint="check the device name; --force overwrites it",
        )
    for finding in findings:
        log.warning("%s: formatting anyway (--force): %s", device.name, finding)
    return findings


def _foreign_signatures(device: DumpDevice) -> list[str]:
    # drivers backed by a path (file, block) expose it as .path; a memory device has none
    path = getattr(device, "path", None)
    if not isinstance(path, str):
        return []
    try:
        signatures = probe_signatures(path)
    except DeviceRefusedError as err:
        return [str(err)]
    return [f"it carries {describe_signatures(signatures)}"] if signatures else []


def _unsaved_dump(device: DumpDevice) -> list[str]:
    try:
        label = read_label(device)
    except FormatError:
        return []
    if find_dump(device, label).present:
        return ["it holds a dump savecore has not saved"]
    return []


def format_device(
    device: DumpDevice,
    uuid: uuid_mod.UUID | None = None,
    force: bool = False,
    progress: Progress | None = None,
    *,
    reserve_blocks: int = DEFAULT_RESERVE_BLOCKS,
    check: bool = True,
) -> PartitionLabel:
    """Initialise ``device`` as a dump partition: label, backup label, every block's pattern.

    :param uuid: partition UUID; random when ``None``
    :param force: override the refusals :func:`check_formattable` allows to override
    :param progress: called as ``progress(done_bytes, total_bytes)``
    :param reserve_blocks: reserved area at the start, in blocks (>= 256)
    :param check: run :func:`check_formattable` first (a caller that just did may skip it)
    :return: the label written
    :raises DeviceRefusedError: see :func:`check_formattable`; nothing was written
    :raises DeviceTooSmallError: the device cannot hold the reserve plus MIN_DATA_BLOCKS
    :raises DeviceIOError: a write or flush failed (the device has no valid label then)
    :raises ValueError: ``reserve_blocks`` below 256
    """
    if reserve_blocks < DEFAULT_RESERVE_BLOCKS:
        raise ValueError(
            f"reserve_blocks must be >= {DEFAULT_RESERVE_BLOCKS}, got {reserve_blocks}"
        )
    if check:
        check_formattable(device, force=force)
    label = _label_for(device, uuid, reserve_blocks)
    device.quiesce()
    _write_partition(device, label, progress)
    log.info("%s: formatted, uuid %s, %d data blocks", device.name, label.uuid, label.data_blocks)
    return label


def _label_for(
    device: DumpDevice, uuid: uuid_mod.UUID | None, reserve_blocks: int
) -> PartitionLabel:
    geo = device.geometry
    try:
        return new_label(geo.block_count, uuid=uuid, reserve_blocks=reserve_blocks)
    except CorruptDataError as err:
        raise DeviceTooSmallError(
            "device too small for the reserve it was asked for",
            device=device.name,
            expected=f">= {reserve_blocks + MIN_DATA_BLOCKS} blocks",
            found=f"{geo.block_count} blocks",
        ) from err


def _write_partition(device: DumpDevice, label: PartitionLabel, progress: Progress | None) -> None:
    # labels go first to zero and last to their contents: a format cut short has none
    io = BlockIO(device)
    zero = bytearray(BLOCK_SIZE)
    for lba in (0, BACKUP_LABEL_LBA):
        io.write(lba, zero)
    device.flush()
    pattern = BlockPattern(label, CHUNK_BLOCKS)
    total = device.geometry.size
    _write_pattern(io, pattern, label.data_extent, progress, done=0, total=total)
    _write_zeros(io, 1, label.reserve_blocks)
    device.flush()
    io.write(BACKUP_LABEL_LBA, label.as_copy(LabelCopy.BACKUP).pack_block())
    io.write(0, label.pack_block())
    device.flush()
    if progress is not None:
        progress(total, total)


def _write_zeros(io: BlockIO, first_lba: int, end_lba: int) -> None:
    # buffers are page-aligned mmaps (O_DIRECT) freed by reference counting: a slice
    # handed to a driver may outlive an explicit close()
    zeros = memoryview(mmap.mmap(-1, CHUNK_BLOCKS * BLOCK_SIZE))
    for lba, count in _chunks(BlockExtent(first_lba, end_lba - first_lba)):
        io.write(lba, zeros[: count * BLOCK_SIZE])


def _chunks(extent: BlockExtent) -> Iterator[tuple[int, int]]:
    """(lba, block_count) pieces of ``extent``, cut at absolute multiples of CHUNK_BLOCKS."""
    lba = extent.start_lba
    while lba < extent.end_lba:
        stop = min(extent.end_lba, (lba // CHUNK_BLOCKS + 1) * CHUNK_BLOCKS)
        yield lba, stop - lba
        lba = stop


def _buffers() -> list[memoryview]:
    # page-aligned (O_DIRECT) chunk buffers, freed by reference counting
    return [memoryview(mmap.mmap(-1, CHUNK_BLOCKS * BLOCK_SIZE)) for _ in range(IO_DEPTH)]


def _write_pattern(
    io: BlockIO,
    pattern: BlockPattern,
    extent: BlockExtent,
    progress: Progress | None,
    *,
    done: int,
    total: int,
) -> int:
    """Write the pattern over ``extent``; return ``done`` plus the bytes written."""
    views = _buffers()
    # what each buffer holds: (lba, blocks); a full chunk only needs its lbas restamped
    holds: list[tuple[int, int] | None] = [None] * IO_DEPTH
    in_flight: deque[Future[None]] = deque()
    with ThreadPoolExecutor(max_workers=IO_DEPTH, thread_name_prefix="diskdump-write") as pool:
        for index, (lba, count) in enumerate(_chunks(extent)):
            if len(in_flight) == IO_DEPTH:
                in_flight.popleft().result()  # frees buffer index % IO_DEPTH
            slot = index % IO_DEPTH
            view = views[slot][: count * BLOCK_SIZE]
            held = holds[slot]
            same_size = held is not None and held[1] == count
            pattern.fill(view, lba, holds_lba=held[0] if held is not None and same_size else None)
            holds[slot] = (lba, count)
            in_flight.append(pool.submit(io.write, lba, view))
            done += count * BLOCK_SIZE
            if progress is not None:
                progress(done, total)
        while in_flight:
            in_flight.popleft().result()
    return done


def reinit_blocks(
    device: DumpDevice,
    label: PartitionLabel,
    extents: Iterable[BlockExtent],
    progress: Progress | None = None,
) -> int:
    """Rewrite the pattern of the blocks a dump used (after savecore saved it).

    Only the dump area may be touched: an extent reaching into the reserve
    or past the end raises :class:`~diskdump.errors.OutOfBoundsError` before
    any write.

    :param extents: the runs of blocks the dump wrote
    :return: the number of blocks rewritten
    """
    runs = list(extents)
    io = BlockIO(device, label.reserve_blocks, label.block_count)
    for run in runs:
        if run.block_count:
            io.check_bounds(run.start_lba, run.block_count * label.block_size)
    pattern = BlockPattern(label, CHUNK_BLOCKS)
    total = sum(r.block_count for r in runs) * label.block_size
    done = 0
    for run in runs:
        if run.block_count:
            done = _write_pattern(io, pattern, run, progress, done=done, total=total)
    device.flush()
    return done // label.block_size


def verify_device(
    device: DumpDevice,
    sample_every: int = 1,
    progress: Progress | None = None,
    *,
    label: PartitionLabel | None = None,
) -> VerifyResult:
    """Read the dump area and compare every (or every N-th) block with its pattern.

    :param sample_every: 1 reads every block; N reads every N-th block of
        the dump area plus its last block
    :param progress: called as ``progress(done_bytes, total_bytes)``
    :param label: the label, if already read
    :raises NotThisFormatError: no label (see :func:`read_label`)
    :raises DeviceIOError: a read failed
    """
    if sample_every < 1:
        raise ValueError(f"sample_every must be >= 1, got {sample_every}")
    label = label if label is not None else read_label(device)
    io = BlockIO(device, label.reserve_blocks, label.block_count)
    pattern = BlockPattern(label, CHUNK_BLOCKS)
    tally = _Tally(pattern)
    if sample_every == 1:
        _verify_full(io, label.data_extent, tally, progress)
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
    io: BlockIO, extent: BlockExtent, tally: _Tally, progress: Progress | None
) -> None:
    views = _buffers()
    chunks = list(_chunks(extent))
    total = extent.block_count * BLOCK_SIZE
    done = 0

    def read(index: int) -> memoryview:
        lba, count = chunks[index]
        view = views[index % IO_DEPTH][: count * BLOCK_SIZE]
        io.read(lba, view)
        return view

    with ThreadPoolExecutor(max_workers=IO_DEPTH, thread_name_prefix="diskdump-read") as pool:
        ahead = deque(pool.submit(read, i) for i in range(min(IO_DEPTH - 1, len(chunks))))
        for index, (lba, _count) in enumerate(chunks):
            view = ahead.popleft().result()
            if index + IO_DEPTH - 1 < len(chunks):
                # into the buffer compared in the previous step
                ahead.append(pool.submit(read, index + IO_DEPTH - 1))
            tally.check(view, lba)
            done += len(view)
            if progress is not None:
                progress(done, total)


def _verify_sampled(
    io: BlockIO, label: PartitionLabel, every: int, tally: _Tally, progress: Progress | None
) -> None:
    lbas = list(range(label.reserve_blocks, label.block_count, every))
    if lbas[-1] != label.block_count - 1:
        lbas.append(label.block_count - 1)
    view = memoryview(mmap.mmap(-1, BLOCK_SIZE))
    for index, lba in enumerate(lbas):
        io.read(lba, view)
        tally.check(view, lba)
        if progress is not None:
            progress((index + 1) * BLOCK_SIZE, len(lbas) * BLOCK_SIZE)
