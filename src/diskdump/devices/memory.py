# SPDX-License-Identifier: GPL-2.0-or-later
"""An in-memory dump device (tests, dry runs).

A ``bytearray`` of ``block_count * block_size`` bytes. Unlike the real drivers
it *does* check every request, and raises :class:`OutOfBoundsError` when a
request falls outside the device: drivers never check bounds, callers do in
:class:`~diskdump.devices.base.BlockIO`, so a request reaching this driver out
of bounds proves a bug in that one choke point (a test relies on it). Each
call is recorded in :attr:`MemoryDevice.calls` so tests can assert what was
written where.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from diskdump.devices.base import DeviceGeometry, DumpDevice, Health, Op, SanityResult
from diskdump.errors import DeviceIOError, OutOfBoundsError

__all__ = ["DEFAULT_MAX_IO_SIZE", "IoCall", "MemoryDevice"]

log = logging.getLogger(__name__)

#: largest transfer per rw_block call (8 MiB, like the block driver)
DEFAULT_MAX_IO_SIZE = 8 << 20


@dataclass(frozen=True, slots=True)
class IoCall:
    """One ``rw_block`` call as the device saw it."""

    op: Op
    lba: int
    block_count: int


class MemoryDevice(DumpDevice):
    """A RAM-backed dump device.

    :param block_count: size of the device in blocks
    :param block_size: bytes per block
    :param name: shown in messages
    :param max_io_size: largest transfer per call, in bytes
    :param data: initial contents (copied; must be ``block_count * block_size`` bytes)
    """

    def __init__(
        self,
        block_count: int,
        *,
        block_size: int = 4096,
        name: str = "memory",
        max_io_size: int = DEFAULT_MAX_IO_SIZE,
        data: bytes | bytearray | None = None,
    ) -> None:
        self.name = name
        self._geometry = DeviceGeometry(
            block_size=block_size,
            block_count=block_count,
            max_io_size=max(block_size, min(max_io_size, block_size * max(block_count, 1))),
        )
        size = block_size * block_count
        if data is not None and len(data) != size:
            raise ValueError(f"initial data is {len(data)} bytes, device is {size}")
        self.data = bytearray(data) if data is not None else bytearray(size)
        self.calls: list[IoCall] = []
        self.flushes = 0
        self.quiesced = False
        self.is_shut_down = False

    @property
    def geometry(self) -> DeviceGeometry:
        return self._geometry

    def sanity_check(self) -> SanityResult:
        if self.is_shut_down:
            return SanityResult(Health.UNUSABLE, "device was shut down")
        return SanityResult(Health.SANE, "memory device")

    def quiesce(self) -> None:
        self.quiesced = True

    def rw_block(self, op: Op, lba: int, buffer: bytearray | memoryview) -> None:
        geo = self._geometry
        nbytes = len(buffer)
        blocks = nbytes // geo.block_size
        if (
            nbytes <= 0
            or nbytes % geo.block_size
            or nbytes > geo.max_io_size
            or lba < 0
            or lba + blocks > geo.block_count
        ):
            # never reached through BlockIO: this is the proof that the caller checked
            raise OutOfBoundsError(
                "driver called out of bounds (the caller's bounds check was bypassed)",
                device=self.name,
                lba=lba,
                expected=f"whole blocks, at most {geo.max_io_size} bytes, "
                f"inside [0, {geo.block_count})",
                found=f"{nbytes} bytes at [{lba}, {lba + blocks})",
            )
        if self.is_shut_down:
            raise DeviceIOError("i/o on a device that was shut down", device=self.name, lba=lba)
        self.calls.append(IoCall(op, lba, blocks))
        start = lba * geo.block_size
        if op is Op.READ:
            buffer[:] = self.data[start : start + nbytes]
        else:
            self.data[start : start + nbytes] = buffer

    def flush(self) -> None:
        self.flushes += 1

    def shutdown(self) -> None:
        if not self.is_shut_down:
            log.debug("%s: shut down", self.name)
        self.is_shut_down = True

    def reopen(self) -> None:
        """Make a shut-down device usable again (a reboot, for tests of the whole cycle)."""
        self.is_shut_down = False
        self.quiesced = False
