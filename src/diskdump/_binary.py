# SPDX-License-Identifier: GPL-2.0-or-later
"""Small binary helpers shared by every layer.

Alignment is always given in bytes (never as a log2). Reads are positional
(``os.pread``), never through a shared file position, and every length that
came from disk is checked against its container before it is used.
"""

from __future__ import annotations

import os
import zlib
from typing import Protocol

from diskdump.errors import TruncatedError

__all__ = [
    "PositionalReader",
    "align_down",
    "align_up",
    "check_range",
    "checksum32",
    "read_at",
    "read_exact",
    "slice_checked",
]


class PositionalReader(Protocol):
    """Anything with a positional read (an open file object's fileno, or a bytes-backed fake)."""

    def fileno(self) -> int: ...


def align_up(value: int, alignment: int) -> int:
    """Round ``value`` up to a multiple of ``alignment`` bytes (a power of two or not)."""
    if alignment <= 0:
        raise ValueError(f"alignment must be positive, got {alignment}")
    return -(-value // alignment) * alignment


def align_down(value: int, alignment: int) -> int:
    """Round ``value`` down to a multiple of ``alignment`` bytes."""
    if alignment <= 0:
        raise ValueError(f"alignment must be positive, got {alignment}")
    return value - value % alignment


def check_range(
    offset: int,
    size: int,
    container_size: int,
    *,
    what: str,
    path: str | None = None,
    device: str | None = None,
    field: str | None = None,
) -> None:
    """Raise :class:`TruncatedError` unless ``[offset, offset+size)`` fits the container.

    :param offset: start of the range, in bytes
    :param size: length of the range, in bytes
    :param container_size: size of the container, in bytes
    :param what: description used in the message (``"page descriptor array"``)
    """
    if offset < 0 or size < 0 or offset + size > container_size:
        raise TruncatedError(
            f"{what} extends past the end",
            path=path,
            device=device,
            field=field,
            offset=offset,
            expected=f"end <= {container_size:#x}",
            found=f"end {offset + size:#x}",
        )


def slice_checked(
    buf: bytes | bytearray | memoryview,
    offset: int,
    size: int,
    *,
    what: str,
    path: str | None = None,
) -> memoryview:
    """Return ``buf[offset:offset+size]`` as a memoryview, or raise :class:`TruncatedError`."""
    check_range(offset, size, len(buf), what=what, path=path)
    return memoryview(buf)[offset : offset + size]


def read_at(fd: int, offset: int, size: int, *, what: str, path: str | None = None) -> bytes:
    """Read exactly ``size`` bytes at ``offset`` from ``fd`` with ``pread``.

    :raises TruncatedError: the file ends before ``offset + size``
    """
    chunks: list[bytes] = []
    done = 0
    while done < size:
        chunk = os.pread(fd, size - done, offset + done)
        if not chunk:
            raise TruncatedError(
                f"{what} is cut short",
                path=path,
                offset=offset,
                expected=f"{size} bytes",
                found=f"{done} bytes",
            )
        chunks.append(chunk)
        done += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_exact(fd: int, offset: int, size: int, *, what: str, path: str | None = None) -> bytes:
    """Alias of :func:`read_at` kept for readability at call sites that read whole structures."""
    return read_at(fd, offset, size, what=what, path=path)


def checksum32(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """CRC-32 (zlib polynomial) of ``data``; ``start`` continues a running checksum."""
    return zlib.crc32(data, start) & 0xFFFFFFFF
