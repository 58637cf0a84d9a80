# SPDX-License-Identifier: GPL-2.0-or-later
"""The image-file dump device, and the aligned positional I/O both real drivers use.

A dump "partition" may be a preallocated file. It must not be sparse: at
panic time the filesystem would have to allocate blocks for the holes, and
the filesystem is exactly what may be damaged in a crashed kernel (a raw
partition needs no filesystem code at all; docs/partitions.md says more). So
:meth:`FileDevice.sanity_check` says UNUSABLE for a file with holes (``st_blocks``
short of ``st_size``), one on a read-only filesystem, one in use as swap, or
one a loop device is attached to.

I/O is positional (``os.preadv``/``os.pwritev``, never a shared file offset),
with ``O_DIRECT`` where the filesystem allows it so the page cache is out of
the way; a buffer that is not page aligned goes through a bounce buffer
allocated when the device is opened (never at panic time).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import mmap
import os
import stat
from pathlib import Path

from diskdump.devices.base import DeviceGeometry, DumpDevice, Health, Op, SanityResult
from diskdump.errors import DeviceIOError, DeviceNotReadyError, DeviceTooSmallError

__all__ = ["BLOCK_SIZE", "DEFAULT_MAX_IO_SIZE", "AlignedIO", "FileDevice", "swap_paths"]

log = logging.getLogger(__name__)

#: bytes per block of every driver (the x86_64 page size; lbas are in these units)
BLOCK_SIZE = 4096
#: largest transfer per rw_block call, in bytes
DEFAULT_MAX_IO_SIZE = 8 << 20
#: O_DIRECT wants buffers aligned to the logical block size; a page satisfies every device
_BUFFER_ALIGNMENT = mmap.PAGESIZE
#: st_blocks counts 512-byte units whatever the filesystem block size (stat(2))
_ST_BLOCK_UNIT = 512
_PROC_SWAPS = Path("/proc/swaps")
_SYS_BLOCK = Path("/sys/block")


def _address(view: memoryview) -> int | None:
    """Address of a writable buffer, or None for a read-only one (which then bounces)."""
    if view.readonly:
        return None
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


class AlignedIO:
    """Positional I/O on one descriptor, with a bounce buffer for unaligned buffers.

    :param fd: an open descriptor (O_DIRECT or not)
    :param name: the device name for messages
    :param max_io_size: the largest transfer, in bytes (sizes the bounce buffer)
    :param flags: extra ``RWF_*`` flags for every call (``os.RWF_HIPRI`` for polled I/O)
    """

    def __init__(self, fd: int, name: str, max_io_size: int, flags: int = 0) -> None:
        self.fd = fd
        self.name = name
        self.flags = flags
        self._bounce = mmap.mmap(-1, max_io_size)
        self._bounce_view = memoryview(self._bounce)

    def _aligned(self, view: memoryview) -> bool:
        address = _address(view)
        return address is not None and address % _BUFFER_ALIGNMENT == 0

    def transfer(self, op: Op, offset: int, buffer: bytearray | memoryview) -> None:
        """Read into or write from ``buffer`` at byte ``offset``; whole or DeviceIOError."""
        view = memoryview(buffer).cast("B")
        direct = self._aligned(view)
        io_view = view if direct else self._bounce_view[: len(view)]
        if op is Op.WRITE and not direct:
            io_view[:] = view
        done = 0
        while done < len(io_view):
            part = io_view[done:]
            try:
                if op is Op.READ:
                    count = os.preadv(self.fd, [part], offset + done, self.flags)
                else:
                    count = os.pwritev(self.fd, [part], offset + done, self.flags)
            except OSError as err:
                raise self._error(op, offset + done, err) from err
            if count <= 0:
                raise DeviceIOError(
                    f"short {op.name.lower()}: end of device",
                    device=self.name,
                    offset=offset + done,
                    expected=f"{len(io_view)} bytes",
                    found=f"{done} bytes",
                )
            done += count
        if op is Op.READ and not direct:
            view[:] = io_view

    def _error(self, op: Op, offset: int, err: OSError) -> DeviceIOError:
        code = errno.errorcode.get(err.errno or 0, str(err.errno))
        return DeviceIOError(
            f"{op.name.lower()} failed: {err.strerror}",
            device=self.name,
            offset=offset,
            found=code,
        )

    def close(self) -> None:
        """Free the bounce buffer."""
        self._bounce_view.release()
        self._bounce.close()


def swap_paths() -> list[str]:
    """Paths of the active swap areas (``/proc/swaps``, first column; octal escapes decoded)."""
    try:
        lines = _PROC_SWAPS.read_text().splitlines()[1:]
    except OSError:
        return []
    return [_unescape(line.split()[0]) for line in lines if line.strip()]


def _unescape(field: str) -> str:
    # /proc/swaps and mountinfo escape space, tab, newline and backslash as \\ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _same_file(a: str, st: os.stat_result) -> bool:
    try:
        other = os.stat(a)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


class FdDevice(DumpDevice):
    """What the file and block drivers share: an open descriptor and positional O_DIRECT I/O.

    Subclasses set ``name``, ``writable``, ``_fd``, ``_io`` and ``_closed`` in
    their constructor and add their own checks (sanity_check, quiesce, geometry).
    """

    name: str
    writable: bool
    _fd: int
    _io: AlignedIO
    _closed: bool

    def rw_block(self, op: Op, lba: int, buffer: bytearray | memoryview) -> None:
        self._io.transfer(op, lba * BLOCK_SIZE, buffer)

    def flush(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as err:
            raise DeviceIOError(f"flush failed: {err.strerror}", device=self.name) from err

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.writable:
                self.flush()
        finally:
            self._io.close()
            os.close(self._fd)


class FileDevice(FdDevice):
    """A preallocated image file as a dump device.

    :param path: the image file
    :param writable: open for writing (format, dump, re-initialise); read-only otherwise
    :param direct: ``True`` requires O_DIRECT, ``False`` never uses it, ``None`` tries it
    :param min_size: refuse a file smaller than this, in bytes
    :param max_io_size: largest transfer per rw_block call, in bytes
    :raises DeviceNotReadyError: the file does not exist, is not a regular file, or cannot be opened
    :raises DeviceTooSmallError: the file is smaller than ``min_size`` or than one block
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        writable: bool = False,
        direct: bool | None = None,
        min_size: int = BLOCK_SIZE,
        max_io_size: int = DEFAULT_MAX_IO_SIZE,
    ) -> None:
        self.path = os.fspath(path)
        self.name = self.path
        self.writable = writable
        self._fd = self._open(direct)
        st = os.fstat(self._fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(self._fd)
            raise DeviceNotReadyError("not a regular file", device=self.name, hint="driver=block")
        size = st.st_size - st.st_size % BLOCK_SIZE
        if size < max(min_size, BLOCK_SIZE):
            os.close(self._fd)
            raise DeviceTooSmallError(
                "image file too small",
                device=self.name,
                expected=f">= {max(min_size, BLOCK_SIZE)} bytes",
                found=f"{st.st_size} bytes",
            )
        self._geometry = DeviceGeometry(BLOCK_SIZE, size // BLOCK_SIZE, max_io_size)
        self._io = AlignedIO(self._fd, self.name, max_io_size)
        self._locked = False
        self._closed = False

    def _open(self, direct: bool | None) -> int:
        flags = (os.O_RDWR if self.writable else os.O_RDONLY) | os.O_CLOEXEC
        attempts = [True, False] if direct is None else [direct]
        last: OSError | None = None
        for use_direct in attempts:
            try:
                fd = os.open(self.path, flags | (os.O_DIRECT if use_direct else 0))
            except OSError as err:
                last = err
                if err.errno == errno.EINVAL and use_direct:
                    continue  # this filesystem has no O_DIRECT (tmpfs): buffered + fsync
                break
            self.direct = use_direct
            return fd
        assert last is not None
        raise DeviceNotReadyError(
            f"cannot open: {last.strerror}",
            device=self.path,
            found=errno.errorcode.get(last.errno or 0),
            hint="create a preallocated image with fallocate -l SIZE FILE"
            if last.errno == errno.ENOENT
            else None,
        )

    @property
    def geometry(self) -> DeviceGeometry:
        return self._geometry

    def sanity_check(self) -> SanityResult:
        """UNUSABLE for a vanished, replaced, sparse, swap, loop-attached or read-only file."""
        try:
            st = os.stat(self.path)
        except OSError as err:
            return SanityResult(Health.UNUSABLE, f"cannot stat: {err.strerror}")
        if self._closed or (st.st_dev, st.st_ino) != _identity(self._fd):
            return SanityResult(Health.UNUSABLE, "file was replaced or closed since it was opened")
        allocated = st.st_blocks * _ST_BLOCK_UNIT
        if allocated < st.st_size - st.st_size % BLOCK_SIZE:
            holes = st.st_size - allocated
            return SanityResult(
                Health.UNUSABLE,
                f"sparse file ({holes} bytes not allocated); "
                "preallocate it with fallocate -l SIZE FILE",
            )
        if any(_same_file(p, st) for p in swap_paths()):
            return SanityResult(Health.UNUSABLE, "file is an active swap area")
        loop = _attached_loop(st)
        if loop is not None:
            return SanityResult(Health.UNUSABLE, f"file is attached to {loop}; use that device")
        if self.writable and os.statvfs(self.path).f_flag & os.ST_RDONLY:
            return SanityResult(Health.UNUSABLE, "file is on a read-only filesystem")
        how = "O_DIRECT" if self.direct else "buffered (no O_DIRECT on this filesystem)"
        return SanityResult(Health.SANE, f"preallocated image file, {how} i/o")

    def quiesce(self) -> None:
        """Take an exclusive advisory lock (flock) so a second diskdump cannot use the file."""
        if self._locked:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise DeviceNotReadyError(
                "image file is locked by another process", device=self.name, found=err.strerror
            ) from err
        self._locked = True


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _attached_loop(st: os.stat_result) -> str | None:
    """``/dev/loopN`` if a loop device is backed by the file with this stat, else None."""
    for backing in _SYS_BLOCK.glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            text = backing.read_text().strip().removesuffix(" (deleted)")
            if _same_file(text, st):
                return f"/dev/{backing.parent.parent.name}"
    return None
