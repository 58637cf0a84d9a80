# SPDX-License-Identifier: GPL-2.0-or-later
"""The bytes of a vmcore file: positional reads, or bounded mmap windows for /proc/vmcore.

A reader (the ELF vmcore reader) asks for ``(offset, size)`` ranges; this module
decides how to fetch them. ``/proc/vmcore`` is mapped in :data:`MAP_WINDOW_SIZE`
windows, at most :data:`MAP_WINDOWS` at a time, as makedumpfile does, because its
``read()`` copies the old kernel's memory a page at a time; an ordinary file is
read with ``pread`` (see :func:`prefers_mmap`). Either way the memory this
process holds for the file stays bounded whatever the vmcore's size.
"""

from __future__ import annotations

import logging
import mmap
import os

from diskdump._binary import read_at
from diskdump.errors import TruncatedError

__all__ = ["MAP_WINDOWS", "MAP_WINDOW_SIZE", "Backing", "prefers_mmap"]

log = logging.getLogger(__name__)


#: bytes of the file mapped at a time: makedumpfile maps /proc/vmcore in 4 MiB windows too
#: (MAP_REGION); mapping the whole file made every page read stay resident, so the peak
#: RSS grew with the vmcore (586 MiB for a 528 MiB ELF, 2.1 GiB for a 2 GiB one)
MAP_WINDOW_SIZE = 4 << 20
#: windows kept mapped at once: the page-table walk, the struct pages and the page data
#: being written each have their own place in the file
MAP_WINDOWS = 2


def prefers_mmap(path: str) -> bool:
    """Map /proc/vmcore; read ordinary files with pread.

    ``read()`` of /proc/vmcore copies the old kernel's memory a page at a time
    through a temporary mapping, so makedumpfile and we map it instead. For a
    file in the page cache ``pread`` is the faster of the two (measured on the
    8 GiB bench image: 2.4 GiB of kept pages in 1.14 s by pread, 2.23 s by
    4 MiB mmap windows, whose page faults cost more than the copy), and it
    keeps the kernel's sequential readahead when the file is on disk.
    """
    return os.path.realpath(path).startswith("/proc/")


class Backing:
    """The file's bytes: a bytes object, or bounded mmap windows, or positional reads.

    At most :data:`MAP_WINDOWS` windows of :data:`MAP_WINDOW_SIZE` bytes are mapped
    (least recently used unmapped first), so the pages of the file this process
    holds mapped, and mlockall(MCL_ONFAULT) locks, stay bounded whatever the size of
    the vmcore. A read that does not fit one window is a ``pread``.
    """

    def __init__(
        self, path: str, fd: int | None, buf: bytes | None, size: int, *, use_mmap: bool = False
    ) -> None:
        self.path = path
        self.fd = fd
        self.buf = buf
        self.size = size
        self.use_mmap = use_mmap and fd is not None and size > 0
        self._windows: dict[int, mmap.mmap] = {}  # window start -> map, oldest first

    @classmethod
    def open(cls, path: str, *, use_mmap: bool = True) -> Backing:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # /proc/vmcore reports its size in st_size; lseek covers devices
            size = os.fstat(fd).st_size or os.lseek(fd, 0, os.SEEK_END)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, None, size, use_mmap=use_mmap)

    def read(self, offset: int, size: int, what: str) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise TruncatedError(
                f"{what} runs past the end of the file",
                path=self.path,
                offset=offset,
                expected=f"end <= {self.size:#x}",
                found=f"end {offset + size:#x}",
            )
        if self.buf is not None:
            return self.buf[offset : offset + size]
        if self.fd is None:
            raise ValueError(f"{self.path}: read from a closed vmcore")
        if not self.use_mmap:
            data = os.pread(self.fd, size, offset)  # the common case: one call, whole
            if len(data) == size:
                return data
            return read_at(self.fd, offset, size, what=what, path=self.path)
        start = offset - offset % MAP_WINDOW_SIZE
        if offset + size <= start + MAP_WINDOW_SIZE:
            window = self._window(start)
            if window is not None:
                return window[offset - start : offset - start + size]
        return read_at(self.fd, offset, size, what=what, path=self.path)

    def advise(self, offset: int, size: int) -> None:
        """``posix_fadvise(WILLNEED)`` for a file read with pread; otherwise nothing."""
        if self.fd is None or self.use_mmap or self.buf is not None:
            return
        try:
            os.posix_fadvise(self.fd, offset, size, os.POSIX_FADV_WILLNEED)
        except OSError:  # a pipe, or a filesystem that refuses: only a hint
            pass

    def _window(self, start: int) -> mmap.mmap | None:
        window = self._windows.pop(start, None)
        if window is None:
            if len(self._windows) >= MAP_WINDOWS:
                self._windows.pop(next(iter(self._windows))).close()
            try:
                length = min(MAP_WINDOW_SIZE, self.size - start)
                window = mmap.mmap(self.fd, length, access=mmap.ACCESS_READ, offset=start)  # type: ignore[arg-type]
            except (OSError, ValueError) as err:
                log.info("%s: mmap failed (%s), reading with pread", self.path, err)
                self.use_mmap = False
                return None
        self._windows[start] = window  # most recently used last
        return window

    def close(self) -> None:
        for window in self._windows.values():
            window.close()
        self._windows.clear()
        self.buf = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
