# SPDX-License-Identifier: GPL-2.0-or-later
"""Dump-partition operations: format, read the label, verify, find a dump, re-initialise.

The one import for callers: formatting and re-initialisation live here, and
:func:`read_label`, :func:`find_dump` (:mod:`.label`) and :func:`verify_device`
(:mod:`.verify`) are re-exported. The on-disk layout is
:mod:`diskdump.formats.partition`; every transfer goes through
:class:`~diskdump.devices.base.BlockIO` (the one bounds-checked path); bulk
transfers have the shape :mod:`._bulk` describes.

Order of a format: refuse (see :func:`check_formattable`), take the device
(quiesce), wipe both label copies, write the pattern over the dump area,
zero the reserve, flush, then write the labels and flush again, so a format
cut short leaves no valid label and ``check`` says "needs format".
"""

from __future__ import annotations

import itertools
import logging
import mmap
import uuid as uuid_mod
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from diskdump.devices.base import BlockIO, DumpDevice, Health
from diskdump.errors import CorruptDataError, DeviceRefusedError, DeviceTooSmallError, FormatError
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
from diskdump.partition._bulk import CHUNK_BLOCKS, IO_DEPTH, Progress, buffers, chunks
from diskdump.partition.label import DumpPresence, find_dump, read_label
from diskdump.partition.probe import describe_signatures, probe_signatures
from diskdump.partition.verify import VerifyResult, verify_device

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
    _write_pattern(io, pattern, [label.data_extent], progress, total)
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
    for lba, count in chunks(BlockExtent(first_lba, end_lba - first_lba)):
        io.write(lba, zeros[: count * BLOCK_SIZE])


def _write_pattern(
    io: BlockIO,
    pattern: BlockPattern,
    extents: Iterable[BlockExtent],
    progress: Progress | None,
    total: int,
) -> int:
    """Write the pattern over ``extents``, IO_DEPTH chunks in flight; return the bytes written."""
    pieces = itertools.chain.from_iterable(chunks(e) for e in extents)
    done = 0
    views = buffers()
    # what each buffer holds: (lba, blocks); a full chunk only needs its lbas restamped
    holds: list[tuple[int, int] | None] = [None] * IO_DEPTH
    in_flight: deque[Future[None]] = deque()
    with ThreadPoolExecutor(max_workers=IO_DEPTH, thread_name_prefix="diskdump-write") as pool:
        for index, (lba, count) in enumerate(pieces):
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
    done = _write_pattern(io, pattern, runs, progress, total)
    device.flush()
    return done // label.block_size
