# SPDX-License-Identifier: GPL-2.0-or-later
"""The dump-device driver contract.

Modelled on the 2004 diskdump ``disk_dump_device_ops`` and FreeBSD's
``struct dumperinfo``: a driver exposes a frozen :class:`DeviceGeometry` and
four operations::

    sanity_check()            read-only; may be called at configure and at panic time
    quiesce()                 stop other I/O, take exclusive use, switch to polled mode; idempotent
    rw_block(op, lba, buf)    block-aligned transfer of len(buf) bytes at block lba; no retries
    shutdown()                flush and release; idempotent; always called

plus ``flush()`` (never a zero-length write). Drivers do **no** bounds checking:
every caller goes through :class:`BlockIO`, the one choke point that checks a
request against the range the caller may touch before ``rw_block`` runs.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass

from diskdump.errors import OutOfBoundsError

__all__ = [
    "BlockIO",
    "DeviceGeometry",
    "DumpDevice",
    "Health",
    "Op",
    "SanityResult",
]


class Op(enum.IntEnum):
    """Direction of an ``rw_block`` call (the seed's ``rw`` argument)."""

    READ = 0
    WRITE = 1


class Health(enum.Enum):
    """Verdict of ``sanity_check``: take the device, take it only in a second pass, or never."""

    SANE = "sane"
    MAYBE = "maybe"
    UNUSABLE = "unusable"


@dataclass(frozen=True, slots=True)
class SanityResult:
    """Outcome of :meth:`DumpDevice.sanity_check` with the reason in words."""

    health: Health
    reason: str

    @property
    def usable(self) -> bool:
        return self.health is not Health.UNUSABLE


@dataclass(frozen=True, slots=True)
class DeviceGeometry:
    """Fixed shape of a dump device.

    :param block_size: bytes per block; every lba is in these units (4096 on x86_64)
    :param block_count: number of blocks on the device
    :param max_io_size: largest single ``rw_block`` transfer, in bytes (a multiple of block_size)
    :param logical_block_size: the device's own logical sector size, in bytes
    """

    block_size: int
    block_count: int
    max_io_size: int
    logical_block_size: int = 512

    def __post_init__(self) -> None:
        if self.block_size <= 0 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two, got {self.block_size}")
        if self.max_io_size < self.block_size or self.max_io_size % self.block_size:
            raise ValueError(f"max_io_size {self.max_io_size} is not a multiple of block_size")

    @property
    def size(self) -> int:
        """Device size in bytes."""
        return self.block_size * self.block_count


class DumpDevice(abc.ABC):
    """A dump target: an image file, a block device, or a wrapper around one."""

    #: the path or name shown in every message about this device
    name: str

    @property
    @abc.abstractmethod
    def geometry(self) -> DeviceGeometry:
        """The device's frozen geometry."""

    @abc.abstractmethod
    def sanity_check(self) -> SanityResult:
        """Say whether the device can take a dump now; read-only, never raises for 'no'."""

    @abc.abstractmethod
    def quiesce(self) -> None:
        """Stop other I/O and take exclusive use; idempotent."""

    @abc.abstractmethod
    def rw_block(self, op: Op, lba: int, buffer: bytearray | memoryview) -> None:
        """Transfer ``len(buffer)`` bytes (a multiple of block_size, at most max_io_size).

        READ fills ``buffer``; WRITE writes it. Raises :class:`DeviceIOError` on failure.
        No bounds checking: callers go through :class:`BlockIO`.
        """

    @abc.abstractmethod
    def flush(self) -> None:
        """Make every completed write durable (drain the device's write cache)."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Flush and release the device; idempotent, called on success and on failure."""

    def __enter__(self) -> DumpDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class BlockIO:
    """The one bounds-checked path to ``rw_block``.

    Every read or write of a dump device goes through an instance of this
    class, created with the block range ``[first_lba, end_lba)`` its owner may
    touch (the panic writer, for instance, excludes the reserved area that
    holds the partition label). A request outside that range raises
    :class:`OutOfBoundsError` before the driver is called. Large requests are
    split at the driver's ``max_io_size``.
    """

    def __init__(self, device: DumpDevice, first_lba: int = 0, end_lba: int | None = None) -> None:
        geo = device.geometry
        end = geo.block_count if end_lba is None else end_lba
        if not 0 <= first_lba <= end <= geo.block_count:
            raise OutOfBoundsError(
                "allowed block range does not fit the device",
                device=device.name,
                expected=f"0 <= first <= end <= {geo.block_count}",
                found=f"[{first_lba}, {end})",
            )
        self.device = device
        self.geometry = geo
        self.first_lba = first_lba
        self.end_lba = end

    def check_bounds(self, lba: int, nbytes: int) -> int:
        """Return the block count of a request, or raise :class:`OutOfBoundsError`."""
        bs = self.geometry.block_size
        if nbytes <= 0 or nbytes % bs:
            raise OutOfBoundsError(
                "transfer is not a whole number of blocks",
                device=self.device.name,
                lba=lba,
                expected=f"a positive multiple of {bs}",
                found=nbytes,
            )
        blocks = nbytes // bs
        if lba < self.first_lba or lba + blocks > self.end_lba:
            raise OutOfBoundsError(
                "block request outside the allowed range",
                device=self.device.name,
                lba=lba,
                offset=lba * bs,
                expected=f"lba in [{self.first_lba}, {self.end_lba})",
                found=f"[{lba}, {lba + blocks})",
            )
        return blocks

    def read(self, lba: int, buffer: bytearray | memoryview) -> None:
        """Fill ``buffer`` from block ``lba`` on."""
        self._transfer(Op.READ, lba, memoryview(buffer))

    def write(self, lba: int, buffer: bytes | bytearray | memoryview) -> None:
        """Write ``buffer`` at block ``lba``."""
        self._transfer(Op.WRITE, lba, memoryview(buffer))

    def _transfer(self, op: Op, lba: int, view: memoryview) -> None:
        self.check_bounds(lba, len(view))
        bs = self.geometry.block_size
        step = self.geometry.max_io_size
        for start in range(0, len(view), step):
            part = view[start : start + step]
            self.device.rw_block(op, lba + start // bs, part)
