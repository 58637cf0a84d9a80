# SPDX-License-Identifier: GPL-2.0-or-later
"""Device selection at panic time: the seed's two passes over the ordered device list.

Pass 1 takes, in configuration order, each device whose driver says SANE and
whose dump area still carries the format pattern (verified over every block,
or every N-th with ``verify = "sample:N"``). Pass 2, only when ``allow_maybe``
is set, does the same for devices whose driver says MAYBE. A device that
fails either test is skipped with the reason recorded; the writer takes the
candidates lazily, so a later device is only verified if an earlier one could
not take the dump (unusable, or failed while writing).

The pattern is what makes overwriting safe: a device that holds anything but
an untouched, formatted dump area (a filesystem, a dump savecore has not
cleared, blocks of another partition) fails the verification.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from diskdump.devices.base import DumpDevice, Health
from diskdump.errors import DiskdumpError
from diskdump.formats.partition import PartitionLabel
from diskdump.partition._bulk import SMALL_CHUNK_BLOCKS
from diskdump.partition.ops import VerifyResult, read_label, verify_device

__all__ = ["Candidate", "Rejection", "Selection"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A device that passed both tests, with its label and verification outcome."""

    device: DumpDevice
    label: PartitionLabel
    health: Health
    verify: VerifyResult


@dataclass(frozen=True, slots=True)
class Rejection:
    """A device that was skipped, and why (in words)."""

    device: str
    reason: str


@dataclass(slots=True)
class Selection:
    """Lazy two-pass walk over ``devices``; iterate it for candidates in order.

    :param devices: opened devices, in configuration order
    :param allow_maybe: run pass 2 over devices whose sanity_check says MAYBE
    :param sample_every: 1 verifies every block of the dump area, N every N-th (and the last)
    """

    devices: Sequence[DumpDevice]
    allow_maybe: bool = False
    sample_every: int = 1
    rejected: list[Rejection] = field(default_factory=list)

    def __iter__(self) -> Iterator[Candidate]:
        maybe: list[DumpDevice] = []
        for device in self.devices:
            health = self._health(device)
            if health is Health.MAYBE:
                maybe.append(device)
            elif health is Health.SANE:
                candidate = self._verified(device, health)
                if candidate is not None:
                    yield candidate
        for device in maybe:
            if not self.allow_maybe:
                self._reject(device, "sanity_check says maybe and allow_maybe is off")
                continue
            candidate = self._verified(device, Health.MAYBE)
            if candidate is not None:
                yield candidate

    def _reject(self, device: DumpDevice, reason: str) -> None:
        log.warning("%s: skipped: %s", device.name, reason)
        self.rejected.append(Rejection(device.name, reason))

    def _health(self, device: DumpDevice) -> Health:
        try:
            result = device.sanity_check()
        except DiskdumpError as err:
            self._reject(device, f"sanity_check failed: {err}")
            return Health.UNUSABLE
        if result.health is Health.UNUSABLE:
            self._reject(device, f"sanity_check: {result.reason}")
        return result.health

    def _verified(self, device: DumpDevice, health: Health) -> Candidate | None:
        try:
            label = read_label(device)
            result = verify_device(
                device, self.sample_every, label=label, chunk_blocks=SMALL_CHUNK_BLOCKS
            )
        except DiskdumpError as err:
            self._reject(device, f"not a usable dump partition: {err}")
            return None
        if not result.ok:
            where = ", ".join(
                f"lba {lba}: {why}"
                for lba, why in zip(result.first_bad_lbas, result.first_bad_reasons, strict=False)
            )
            self._reject(
                device,
                f"pattern fails on {result.bad_block_count} of {result.checked_blocks} "
                f"checked blocks ({where})",
            )
            return None
        return Candidate(device, label, health, result)
