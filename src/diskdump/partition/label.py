# SPDX-License-Identifier: GPL-2.0-or-later
"""Reading a dump partition's label (primary, then backup) and looking for a dump on it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from diskdump.devices.base import BlockIO, DumpDevice
from diskdump.errors import BadMagicError, FormatError, HeaderMismatchError, NotThisFormatError
from diskdump.formats.dumpheader import is_dump_header
from diskdump.formats.partition import BACKUP_LABEL_LBA, BLOCK_SIZE, PartitionLabel

__all__ = ["DumpPresence", "find_dump", "read_label"]

log = logging.getLogger(__name__)


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
