# SPDX-License-Identifier: GPL-2.0-or-later
"""A writer for the cpio "newc" archives the Linux kernel unpacks as its initramfs.

Spec: the kernel's Documentation/driver-api/early-userspace/buffer-format.rst and
usr/gen_init_cpio.c (Linux 6.1 and 6.12 read the same format). Only the
``070701`` (newc, no checksum) variant is written::

    +----------------------------+  one entry
    | c_magic    "070701"        |  6 ASCII bytes
    | c_ino .. c_check           |  13 fields, 8 ASCII hex digits each (104 bytes)
    | name, NUL-terminated       |  c_namesize bytes (NUL included)
    | pad to a multiple of 4     |  counted from the start of the entry
    | data                       |  c_filesize bytes (file contents, symlink target)
    | pad to a multiple of 4     |
    +----------------------------+
    ... more entries ...
    | entry named "TRAILER!!!"   |  ends the archive
    +----------------------------+

Field order: c_ino, c_mode, c_uid, c_gid, c_nlink, c_mtime, c_filesize,
c_devmajor, c_devminor, c_rdevmajor, c_rdevminor, c_namesize, c_check.

Archives are deterministic: every entry gets mtime 0, uid/gid 0 and a fresh inode
number, so building twice from the same inputs gives the same bytes.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from diskdump._binary import check_range
from diskdump.errors import BadMagicError, CorruptDataError

__all__ = [
    "CPIO_ALIGNMENT",
    "NEWC_MAGIC",
    "TRAILER_NAME",
    "CpioEntry",
    "CpioWriter",
    "iter_entries",
]

#: magic of the newc format without checksums (buffer-format.rst)
NEWC_MAGIC = b"070701"
#: name of the entry that ends an archive
TRAILER_NAME = "TRAILER!!!"
#: header, name and data are each padded to this many bytes
CPIO_ALIGNMENT = 4
#: number of 8-digit hex fields after the magic
_FIELD_COUNT = 13
#: size of the fixed header: magic plus 13 fields of 8 hex digits
HEADER_SIZE = len(NEWC_MAGIC) + _FIELD_COUNT * 8
#: largest value an 8-hex-digit field holds
_FIELD_MAX = 0xFFFFFFFF

assert HEADER_SIZE == 110


@dataclass(frozen=True, slots=True)
class CpioEntry:
    """One archive member as it appears in the newc header.

    :param name: path inside the archive, without a leading slash
    :param mode: st_mode (type bits and permissions)
    :param data: file contents or symlink target
    """

    name: str
    mode: int
    data: bytes = b""
    nlink: int = 1
    rdevmajor: int = 0
    rdevminor: int = 0

    def pack(self, ino: int) -> bytes:
        """The entry's bytes (header, padded name, padded data) with inode number ``ino``."""
        name = self.name.encode() + b"\0"
        fields = (
            ino,
            self.mode,
            0,  # c_uid: root
            0,  # c_gid: root
            self.nlink,
            0,  # c_mtime: fixed, for reproducible archives
            len(self.data),
            0,  # c_devmajor
            0,  # c_devminor
            self.rdevmajor,
            self.rdevminor,
            len(name),
            0,  # c_check: unused in newc
        )
        for value in fields:
            if not 0 <= value <= _FIELD_MAX:
                raise ValueError(f"cpio field out of range in {self.name!r}: {value:#x}")
        header = NEWC_MAGIC + b"".join(b"%08X" % value for value in fields)
        out = bytearray(header + name)
        out += b"\0" * _pad(len(out))
        out += self.data
        out += b"\0" * _pad(len(self.data))
        return bytes(out)


def iter_entries(
    data: bytes | bytearray | memoryview, *, path: str | None = None
) -> Iterator[CpioEntry]:
    """Decode one newc archive (up to its trailer), yielding every entry but the trailer.

    :raises BadMagicError: an entry does not start with ``070701``
    :raises TruncatedError: a header, name or data runs past the end of ``data`` (no trailer)
    :raises CorruptDataError: a header field is not hexadecimal
    """
    view = memoryview(data)
    offset = 0
    while True:
        check_range(offset, HEADER_SIZE, len(view), what="cpio header", path=path)
        magic = bytes(view[offset : offset + len(NEWC_MAGIC)])
        if magic != NEWC_MAGIC:
            raise BadMagicError(
                "bad cpio magic", path=path, offset=offset, expected=NEWC_MAGIC, found=magic
            )
        fields = _fields(view, offset, path)
        namesize, filesize = fields[11], fields[6]
        name_at = offset + HEADER_SIZE
        check_range(name_at, namesize, len(view), what="cpio name", path=path)
        name = bytes(view[name_at : name_at + namesize]).rstrip(b"\0").decode()
        data_at = name_at + namesize + _pad(HEADER_SIZE + namesize)
        check_range(data_at, filesize, len(view), what="cpio data", path=path)
        if name == TRAILER_NAME:
            return
        yield CpioEntry(
            name=name,
            mode=fields[1],
            data=bytes(view[data_at : data_at + filesize]),
            nlink=fields[4],
            rdevmajor=fields[9],
            rdevminor=fields[10],
        )
        offset = data_at + filesize + _pad(filesize)


def _fields(view: memoryview, offset: int, path: str | None) -> list[int]:
    start = offset + len(NEWC_MAGIC)
    raw = bytes(view[start : start + _FIELD_COUNT * 8])
    try:
        return [int(raw[i : i + 8], 16) for i in range(0, len(raw), 8)]
    except ValueError:
        raise CorruptDataError(
            "cpio header field is not hexadecimal", path=path, offset=offset, found=raw
        ) from None


def _pad(size: int) -> int:
    return -size % CPIO_ALIGNMENT


class CpioWriter:
    """Stream newc entries to a binary file; parent directories are added on demand.

    Use as a context manager or call :meth:`close` to write the trailer.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 0
        self._names: set[str] = set()
        self._closed = False

    def __enter__(self) -> CpioWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def names(self) -> frozenset[str]:
        """Every name written so far."""
        return frozenset(self._names)

    def _put(self, entry: CpioEntry) -> None:
        if self._closed:
            raise ValueError("cpio archive already closed")
        self._ino += 1
        self._out.write(entry.pack(self._ino))
        self._names.add(entry.name)

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.add_dir("/".join(parts[:i]))

    @staticmethod
    def _clean(name: str) -> str:
        clean = name.strip("/")
        if not clean or ".." in clean.split("/"):
            raise ValueError(f"bad archive path {name!r}")
        return clean

    def add_dir(self, name: str, perm: int = 0o755) -> None:
        """Add a directory (and its parents) unless already present."""
        clean = self._clean(name)
        if clean in self._names:
            return
        self._parents(clean)
        self._put(CpioEntry(clean, stat.S_IFDIR | perm, nlink=2))

    def add_file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        """Add a regular file with contents ``data``; a name already written is skipped."""
        clean = self._clean(name)
        if clean in self._names:
            return
        self._parents(clean)
        self._put(CpioEntry(clean, stat.S_IFREG | perm, data))

    def add_symlink(self, name: str, target: str) -> None:
        """Add a symbolic link ``name`` -> ``target``."""
        clean = self._clean(name)
        if clean in self._names:
            return
        self._parents(clean)
        self._put(CpioEntry(clean, stat.S_IFLNK | 0o777, target.encode()))

    def add_chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        """Add a character device node (``/dev/console`` must exist before /init runs)."""
        clean = self._clean(name)
        self._parents(clean)
        self._put(CpioEntry(clean, stat.S_IFCHR | perm, rdevmajor=major, rdevminor=minor))

    def close(self) -> None:
        """Write the trailer entry; idempotent."""
        if self._closed:
            return
        self._put(CpioEntry(TRAILER_NAME, 0, nlink=1))
        self._closed = True
