# SPDX-License-Identifier: GPL-2.0-or-later
"""The Linux block-device dump driver (a disk, a partition, a loop or virtio device).

sanity_check looks at what a kernel engineer would before writing to a raw device::

    exists, is a block device        stat(2)                         else UNUSABLE
    has a medium, kept over reboot   BLKGETSIZE64 > 0 and unchanged; not zram/brd (RAM)
    not mounted (nor a partition)    /proc/self/mountinfo maj:min + source
    not active swap                  /proc/swaps
    no holders (dm, md, bcache)      /sys/dev/block/M:m/holders (and its partitions')
    not read-only                    BLKROGET and sysfs ro
    nobody holds it exclusively      open(O_EXCL) succeeds (mounts, swap, md, dm all do)
    logical block size divides 4096  BLKSSZGET
    SCSI device state is running     /sys/.../device/state ("blocked": MAYBE)
    removable medium                 sysfs removable = 1: MAYBE (it may be gone at panic)

quiesce takes the exclusive open, drops the device's page cache (BLKFLSBUF)
and, when configured, resets a SCSI device (SG_SCSI_RESET). rw_block is
O_DIRECT positional I/O with page-aligned buffers, polled (RWF_HIPRI) when the
queue has polling enabled (``queue/io_poll``). flush is fsync (a cache flush
to the medium) plus BLKFLSBUF. shutdown flushes and releases, idempotently.

ioctl numbers: include/uapi/linux/fs.h (BLK*) and include/scsi/sg.h (SG_SCSI_RESET).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import struct
from pathlib import Path

from diskdump.devices.base import DeviceGeometry, Health, SanityResult
from diskdump.devices.file import BLOCK_SIZE, DEFAULT_MAX_IO_SIZE, AlignedIO, FdDevice, swap_paths
from diskdump.errors import DeviceIOError, DeviceNotReadyError

__all__ = ["BlockDevice"]

log = logging.getLogger(__name__)

BLKROGET = 0x125E  #: _IO(0x12, 94): int, non-zero if read-only
BLKFLSBUF = 0x1261  #: _IO(0x12, 97): write back and drop the buffer cache
BLKSSZGET = 0x1268  #: _IO(0x12, 104): int, logical block size
BLKGETSIZE64 = 0x80081272  #: _IOR(0x12, 114, size_t): u64, size in bytes
SG_SCSI_RESET = 0x2284  #: scsi/sg.h: reset; the argument is an int
SG_SCSI_RESET_DEVICE = 1  #: scsi/sg.h: reset the logical unit only
_INT = struct.Struct("=i")  # ioctl int arguments are native
_U64 = struct.Struct("=Q")
_SCSI_RUNNING = "running"
_SCSI_TRANSIENT = ("blocked", "quiesce", "created")  # may recover: MAYBE, not UNUSABLE
_MOUNTINFO = Path("/proc/self/mountinfo")
#: RAM-backed block drivers (zram, brd): a dump there is gone after the reboot
_VOLATILE_PREFIXES = ("zram", "ram")


def _ioctl_int(fd: int, request: int, fmt: struct.Struct = _INT) -> int:
    (value,) = fmt.unpack(fcntl.ioctl(fd, request, bytes(fmt.size)))
    return int(value)


def _read_sys(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


class BlockDevice(FdDevice):
    """A Linux block device or partition as a dump device.

    :param path: ``/dev/...`` (any name that resolves to the block device)
    :param writable: open for writing (format, dump, re-initialise)
    :param scsi_reset: in quiesce, reset a SCSI device (SG_SCSI_RESET) before use
    :param polled: use RWF_HIPRI; ``None`` decides from the queue's ``io_poll``
    :param max_io_size: largest transfer per rw_block call, in bytes
    :raises DeviceNotReadyError: missing, not a block device, or cannot be opened
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        writable: bool = False,
        scsi_reset: bool = False,
        polled: bool | None = None,
        max_io_size: int = DEFAULT_MAX_IO_SIZE,
    ) -> None:
        self.path = os.fspath(path)
        self.name = self.path
        self.writable = writable
        self.scsi_reset = scsi_reset
        try:
            st = os.stat(self.path)
        except OSError as err:
            raise DeviceNotReadyError(f"cannot open: {err.strerror}", device=self.path) from err
        if not stat.S_ISBLK(st.st_mode):
            raise DeviceNotReadyError("not a block device", device=self.path, hint="driver=file")
        self.rdev = st.st_rdev
        self.sysfs = Path(f"/sys/dev/block/{os.major(self.rdev)}:{os.minor(self.rdev)}").resolve()
        self._fd = self._open(exclusive=False)
        self._exclusive = False
        self._closed = False
        size = _ioctl_int(self._fd, BLKGETSIZE64, _U64)
        self.logical_block_size = _ioctl_int(self._fd, BLKSSZGET)
        self._geometry = DeviceGeometry(
            BLOCK_SIZE, size // BLOCK_SIZE, max_io_size, self.logical_block_size
        )
        self.polled = self._queue_polls() if polled is None else polled
        flags = os.RWF_HIPRI if self.polled else 0
        self._io = AlignedIO(self._fd, self.name, max_io_size, flags)

    def _open(self, *, exclusive: bool) -> int:
        flags = (os.O_RDWR if self.writable else os.O_RDONLY) | os.O_DIRECT | os.O_CLOEXEC
        try:
            return os.open(self.path, flags | (os.O_EXCL if exclusive else 0))
        except OSError as err:
            what = "in use (exclusive open failed)" if err.errno == errno.EBUSY else "cannot open"
            raise DeviceNotReadyError(
                f"{what}: {err.strerror}",
                device=self.path,
                found=errno.errorcode.get(err.errno or 0),
            ) from err

    @property
    def geometry(self) -> DeviceGeometry:
        return self._geometry

    @property
    def _disk(self) -> Path:
        """sysfs directory of the whole disk (the device itself unless it is a partition)."""
        return self.sysfs.parent if (self.sysfs / "partition").exists() else self.sysfs

    def _queue_polls(self) -> bool:
        return _read_sys(self._disk / "queue" / "io_poll") == "1"

    def _family(self) -> list[Path]:
        """sysfs directories of the device and of its partitions."""
        return [self.sysfs, *(p.parent for p in self.sysfs.glob("*/partition"))]

    def _family_devs(self) -> set[tuple[int, int]]:
        devs = set()
        for node in self._family():
            text = _read_sys(node / "dev")
            if text and ":" in text:
                major, minor = text.split(":")
                devs.add((int(major), int(minor)))
        return devs

    def sanity_check(self) -> SanityResult:
        """Say whether the device can take a dump now (read-only; never raises for 'no')."""
        try:
            st = os.stat(self.path)
        except OSError as err:
            return SanityResult(Health.UNUSABLE, f"device is gone: {err.strerror}")
        if not stat.S_ISBLK(st.st_mode) or st.st_rdev != self.rdev:
            return SanityResult(Health.UNUSABLE, "path no longer names the device opened")
        # UNUSABLE verdicts first (the most telling one wins), then MAYBE ones
        checks = (
            self._check_medium,
            self._check_mounted,
            self._check_swap,
            self._check_holders,
            self._check_readonly,
            self._check_exclusive,
            self._check_block_size,
            self._check_scsi,
            self._check_removable,
        )
        verdicts = [v for v in (check() for check in checks) if v is not None]
        for health in (Health.UNUSABLE, Health.MAYBE):
            for verdict in verdicts:
                if verdict.health is health:
                    return verdict
        return SanityResult(Health.SANE, self._describe())

    def _describe(self) -> str:
        kind = "partition" if self._disk != self.sysfs else "disk"
        poll = "polled" if self.polled else "interrupt-driven"
        return (
            f"block {kind} {self.sysfs.name}, {self._geometry.size} bytes, logical block "
            f"{self.logical_block_size}, O_DIRECT {poll} i/o"
        )

    def _check_medium(self) -> SanityResult | None:
        if self._disk.name.startswith(_VOLATILE_PREFIXES):
            return SanityResult(
                Health.UNUSABLE,
                f"memory-backed device ({self._disk.name}): its contents do not survive a reboot",
            )
        size = _ioctl_int(self._fd, BLKGETSIZE64, _U64)
        if size == 0:
            return SanityResult(Health.UNUSABLE, "device has no capacity (no medium, not set up)")
        if size // BLOCK_SIZE != self._geometry.block_count:
            return SanityResult(
                Health.UNUSABLE, f"device size changed since it was opened (now {size} bytes)"
            )
        return None

    def _check_mounted(self) -> SanityResult | None:
        devs = self._family_devs()
        try:
            lines = _MOUNTINFO.read_text().splitlines()
        except OSError:
            return SanityResult(Health.MAYBE, "cannot read /proc/self/mountinfo")
        for line in lines:
            fields = line.split()
            major, minor = (int(x) for x in fields[2].split(":"))
            source = fields[fields.index("-") + 2] if "-" in fields else ""
            if (major, minor) in devs or self._names_family(source, devs):
                return SanityResult(Health.UNUSABLE, f"mounted on {fields[4]} (never overwritten)")
        return None

    @staticmethod
    def _names_family(path: str, devs: set[tuple[int, int]]) -> bool:
        if not path.startswith("/"):
            return False
        try:
            st = os.stat(path)
        except OSError:
            return False
        rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
        return stat.S_ISBLK(st.st_mode) and rdev in devs

    def _check_swap(self) -> SanityResult | None:
        devs = self._family_devs()
        for path in swap_paths():
            if self._names_family(path, devs):
                return SanityResult(Health.UNUSABLE, f"active swap ({path})")
        return None

    def _check_holders(self) -> SanityResult | None:
        for node in self._family():
            with contextlib.suppress(OSError):
                holders = sorted(p.name for p in (node / "holders").iterdir())
                if holders:
                    return SanityResult(
                        Health.UNUSABLE, f"{node.name} is held by {', '.join(holders)} (dm/md)"
                    )
        return None

    def _check_readonly(self) -> SanityResult | None:
        try:
            ro = _ioctl_int(self._fd, BLKROGET)
        except OSError:
            ro = 0
        if ro or _read_sys(self.sysfs / "ro") == "1":
            return SanityResult(Health.UNUSABLE, "device is read-only")
        return None

    def _check_exclusive(self) -> SanityResult | None:
        if self._exclusive:
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
        except OSError as err:
            return SanityResult(Health.UNUSABLE, f"in use: exclusive open failed ({err.strerror})")
        os.close(fd)
        return None

    def _check_block_size(self) -> SanityResult | None:
        lbs = self.logical_block_size
        if lbs <= 0 or BLOCK_SIZE % lbs:
            return SanityResult(Health.UNUSABLE, f"logical block size {lbs} does not divide 4096")
        return None

    def _check_scsi(self) -> SanityResult | None:
        state = _read_sys(self._disk / "device" / "state")
        if state is None or state == _SCSI_RUNNING:
            return None
        health = Health.MAYBE if state in _SCSI_TRANSIENT else Health.UNUSABLE
        return SanityResult(health, f"SCSI device state is {state!r}, not running")

    def _check_removable(self) -> SanityResult | None:
        if _read_sys(self._disk / "removable") == "1":
            return SanityResult(Health.MAYBE, "removable medium (it may be gone at panic time)")
        return None

    def quiesce(self) -> None:
        """Take the exclusive open, drop the page cache, optionally reset the SCSI device."""
        if self._exclusive:
            return
        fd = self._open(exclusive=True)
        old, self._fd = self._fd, fd
        self._io.fd = fd
        os.close(old)
        self._exclusive = True
        try:
            fcntl.ioctl(fd, BLKFLSBUF)
        except OSError as err:
            log.warning("%s: BLKFLSBUF failed: %s", self.name, err.strerror)
        if self.scsi_reset and (self._disk / "device" / "state").exists():
            try:
                fcntl.ioctl(fd, SG_SCSI_RESET, _INT.pack(SG_SCSI_RESET_DEVICE))
            except OSError as err:
                raise DeviceNotReadyError(
                    f"SCSI device reset failed: {err.strerror}", device=self.name
                ) from err

    def flush(self) -> None:
        """fsync, then drop the device's page cache (BLKFLSBUF) so reads see the medium."""
        super().flush()
        try:
            fcntl.ioctl(self._fd, BLKFLSBUF)
        except OSError as err:
            raise DeviceIOError(f"flush failed: {err.strerror}", device=self.name) from err
