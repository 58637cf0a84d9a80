# SPDX-License-Identifier: GPL-2.0-or-later
"""Read-only discovery and validation of dumps on dump devices.

Where a dump lives on a formatted partition (formats/partition.py,
formats/dumpheader.py; ``R`` = the label's ``reserve_blocks``, ``N`` blocks)::

    lba 0          partition label (and its backup at lba 255)
    lba R          leading dump header   (status INCOMPLETE, then COMPLETE)
    lba R+1 ..     metadata records (notes, RAM runs, panic string, kernel log), crc32
    lba data_lba   chunk stream ...
    lba N-1        trailing dump header  (written last, only when the dump finished)

The checks run in the fixed order of FreeBSD savecore (sbin/savecore/savecore.c,
DoFile), so the first failure is the most basic one:

1. the device's block size against the header size and the label's block size;
2. the trailing header: magic, version, checksum (``DumpHeader.unpack``);
3. the leading header at the offset computed from the label, bounds-checked
   against the device, then magic, version, checksum;
4. byte-equality of the two copies.

A dump cut short at panic time has no trailing header: the leading header
(INCOMPLETE) alone is then trusted and the dump is reported incomplete, with
what is missing. A trailing header whose leading copy is still INCOMPLETE
with the same dump id means the writer stopped between its last two writes:
the trailer (written after the final flush) is trusted and a warning noted.
Nothing here writes to a device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from diskdump.devices.base import BlockIO, DumpDevice
from diskdump.errors import (
    CorruptDataError,
    DeviceTooSmallError,
    HeaderMismatchError,
    NotThisFormatError,
    OutOfBoundsError,
)
from diskdump.formats.dumpheader import (
    HEADER_SIZE,
    DumpHeader,
    DumpStatus,
)
from diskdump.formats.partition import PartitionLabel

__all__ = ["FoundDump", "ScanResult", "read_blocks", "scan_device"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FoundDump:
    """A dump found on a device, its headers validated.

    :param device: the device's name
    :param label: the partition label the dump lies in
    :param header: the header trusted (the trailing copy when there is one)
    :param has_trailer: the writer finished (a valid trailing header exists)
    :param problems: what is missing or odd, in words, for info.txt/info.json
    """

    device: str
    label: PartitionLabel
    header: DumpHeader
    has_trailer: bool
    problems: tuple[str, ...] = ()

    @property
    def dump_id(self) -> str:
        """The dump id as lowercase hex (recorded in info.json for idempotence)."""
        return self.header.dump_id.hex()

    @property
    def complete(self) -> bool:
        """True when the writer finished and wrote every page it planned."""
        return self.has_trailer and self.header.complete


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What a device holds: a dump, or why there is none.

    :param device: the device's name
    :param dump: the dump, or None
    :param reason: when there is no dump, why (``"no dump header"``, ``"dump header was cleared"``)
    """

    device: str
    dump: FoundDump | None
    reason: str = ""


def read_blocks(io: BlockIO, lba: int, count: int) -> bytearray:
    """Read ``count`` blocks at ``lba`` through the bounds-checked path."""
    buf = bytearray(count * io.geometry.block_size)
    io.read(lba, buf)
    return buf


def scan_device(device: DumpDevice, label: PartitionLabel) -> ScanResult:
    """Find the dump on ``device`` and validate its headers, without writing anything.

    Only the header blocks are read, so a dump whose other blocks savecore
    already started to re-initialise is still recognised by its dump id.

    :param device: an open dump device (read-only is enough)
    :param label: its partition label (read by the caller)
    :return: the dump found, or the reason there is none
    :raises DeviceTooSmallError: the block size cannot hold a header
    :raises FormatError: a dump is there but a header is corrupt or the copies disagree
    :raises DeviceIOError: a read failed
    """
    name = device.name
    geo = device.geometry
    _check_block_size(geo.block_size, label, name)
    io = BlockIO(device)
    trailer_lba = geo.block_count - 1
    trailer = _try_header(io, trailer_lba, name)
    leading_lba = label.reserve_blocks
    if not label.reserve_blocks < trailer_lba:
        raise OutOfBoundsError(
            "leading dump header lies outside the device",
            device=name,
            lba=leading_lba,
            expected=f"lba < {trailer_lba}",
            found=leading_lba,
        )
    if trailer is None:
        return _without_trailer(io, label, leading_lba, name)
    header, raw_trailer = trailer
    _check_header_place(header, label, geo.block_count, name)
    leading = _try_header(io, header.header_lba, name)
    problems: list[str] = []
    if leading is None or leading[1] != raw_trailer:
        problems.append(_compare_copies(header, leading, name))
    return ScanResult(name, FoundDump(name, label, header, True, tuple(problems)))


def _check_block_size(block_size: int, label: PartitionLabel, name: str) -> None:
    if block_size < HEADER_SIZE:
        raise DeviceTooSmallError(
            "block size cannot hold a dump header",
            device=name,
            field="block_size",
            expected=f">= {HEADER_SIZE}",
            found=block_size,
        )
    if block_size != label.block_size:
        raise CorruptDataError(
            "device block size differs from the label's",
            device=name,
            field="block_size",
            expected=label.block_size,
            found=block_size,
        )


def _try_header(io: BlockIO, lba: int, name: str) -> tuple[DumpHeader, bytes] | None:
    """The header at ``lba`` and its raw bytes, or None when no live header is there."""
    block = read_blocks(io, lba, 1)
    try:
        header = DumpHeader.unpack(block, device=name, offset=lba * io.geometry.block_size)
    except NotThisFormatError as err:
        _log.debug("%s", err)
        return None
    return header, bytes(block[:HEADER_SIZE])


def _check_header_place(header: DumpHeader, label: PartitionLabel, blocks: int, name: str) -> None:
    """The header's own idea of the layout must match the device and the label."""
    checks = (
        ("device_blocks", header.device_blocks, blocks),
        ("header_lba", header.header_lba, label.reserve_blocks),
        ("block_size", header.block_size, label.block_size),
        ("partition_uuid", header.partition_uuid, label.uuid.bytes),
    )
    for field_name, found, expected in checks:
        if found != expected:
            raise CorruptDataError(
                "dump header does not match the device",
                device=name,
                field=field_name,
                expected=expected,
                found=found,
            )


def _compare_copies(
    trailer: DumpHeader, leading: tuple[DumpHeader, bytes] | None, name: str
) -> str:
    """Accept only the one benign difference; return it as a note, else raise."""
    offset = trailer.header_lba * trailer.block_size
    if leading is None:
        raise HeaderMismatchError(
            "leading dump header is missing but the trailer is valid",
            device=name,
            offset=offset,
            field="magic",
            expected="a live dump header",
        )
    head = leading[0]
    if head.dump_id == trailer.dump_id and head.status is DumpStatus.INCOMPLETE:
        return "leading header not rewritten COMPLETE (writer stopped after the trailer)"
    raise HeaderMismatchError(
        "leading and trailing dump headers differ",
        device=name,
        offset=offset,
        field="dump_id/status",
        expected=(trailer.dump_id.hex(), trailer.status.name),
        found=(head.dump_id.hex(), head.status.name),
    )


def _without_trailer(io: BlockIO, label: PartitionLabel, lba: int, name: str) -> ScanResult:
    block = read_blocks(io, lba, 1)
    try:
        header = DumpHeader.unpack(block, device=name, offset=lba * io.geometry.block_size)
    except NotThisFormatError as err:
        return ScanResult(name, None, reason=err.what)
    _check_header_place(header, label, io.geometry.block_count, name)
    problems = ["no trailing header: the dump was cut short at panic time"]
    if header.status is DumpStatus.COMPLETE:
        problems.append("leading header says COMPLETE but the trailer is not there")
    return ScanResult(name, FoundDump(name, label, header, False, tuple(problems)))
