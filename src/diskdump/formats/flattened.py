# SPDX-License-Identifier: GPL-2.0-or-later
"""The flattened stream of makedumpfile (``-F`` writes it, ``-R`` reassembles it).

A seekless sequence of (offset, data) records, so a random-access file (a
kdump-compressed vmcore) can travel through a pipe. All framing integers are
big-endian whatever the architecture; payload bytes are unchanged::

    offset  size   field
    0       16     signature  b"makedumpfile" + 4 NUL bytes
    16      8      type       1 (TYPE_FLAT_HEADER)
    24      8      version    1 (VERSION_FLAT_HEADER)
    32      4064   zero, up to MAX_SIZE_MDF_HEADER = 4096
    4096    ...    records:   int64 offset, int64 buf_size, buf_size bytes of payload
    ...     16     end marker: offset = -1, buf_size = -1 (END_FLAG_FLAT_HEADER)

Spec source: makedumpfile ``makedumpfile.h`` (struct makedumpfile_header,
struct makedumpfile_data_header) and ``makedumpfile.c`` (write_start_flat_header,
write_buffer, rearrange_dumpdata); readers crash ``makedumpfile.c``
(is_flattened_format, read_flattened_format) and libkdumpfile ``flatmap.c``
(2024). Version 1 is the only one defined.

Reading: records may come in any order and may overlap (makedumpfile rewrites
the sub header; QEMU interleaves descriptors and data). Overlaps resolve
deterministically: a later record wins, as in libkdumpfile. The end marker is
required (crash refuses a stream without it). Reads are strict: a range not
covered by any record is an error unless the caller says the layout allows
zeros there (``zero_gaps=True``: reassembly, block padding).

Writing: ascending, non-overlapping records covering the file once, then the
end marker; every reader (crash, libkdumpfile, ``makedumpfile -R``) agrees on
such a stream, and it can be written to a pipe.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
from collections.abc import Callable
from typing import BinaryIO

from diskdump._binary import read_at
from diskdump.errors import (
    BadMagicError,
    CorruptDataError,
    TruncatedError,
    UnsupportedVersionError,
)

__all__ = [
    "FLAT_HEADER_SIZE",
    "FLAT_SIGNATURE",
    "FlattenedView",
    "is_flattened",
    "reassemble",
    "write_flattened",
]

log = logging.getLogger(__name__)

#: ``MAKEDUMPFILE_SIGNATURE`` padded to SIG_LEN_MDF (16)
FLAT_SIGNATURE = b"makedumpfile".ljust(16, b"\0")
#: ``MAX_SIZE_MDF_HEADER``: the header occupies this many bytes
FLAT_HEADER_SIZE = 4096
#: ``TYPE_FLAT_HEADER`` and ``VERSION_FLAT_HEADER``
FLAT_TYPE = 1
FLAT_VERSION = 1
#: ``END_FLAG_FLAT_HEADER``: offset and buf_size of the end marker
FLAT_END = -1
#: payload bytes per record written (makedumpfile writes at most its cache size per record)
RECORD_SIZE = 1 << 20

_HEAD = struct.Struct(">16sqq")
_RECORD = struct.Struct(">qq")


def is_flattened(f: BinaryIO) -> bool:
    """True when ``f`` starts with the flattened signature and type 1.

    Never raises for "not this format" and never moves the file position.
    """
    try:
        fd = f.fileno()
        head = os.pread(fd, _HEAD.size, 0)
    except (OSError, AttributeError, ValueError):
        try:
            where = f.tell()
            f.seek(0)
            head = f.read(_HEAD.size)
            f.seek(where)
        except (OSError, ValueError):
            return False
    if len(head) < _HEAD.size:
        return False
    signature, ftype, _version = _HEAD.unpack(head)
    return bool(signature == FLAT_SIGNATURE and ftype == FLAT_TYPE)


class FlattenedView:
    """Random access to the file a flattened stream describes, through an index of its records.

    :param fd: open descriptor of the stream (a regular file: it is indexed once)
    :param path: name for messages
    :raises BadMagicError: no flattened signature
    :raises UnsupportedVersionError: type or version other than 1
    :raises TruncatedError: a record or the end marker is missing
    :raises CorruptDataError: a record header with a negative offset or size
    """

    def __init__(self, fd: int, *, path: str | None = None) -> None:
        self.fd = fd
        self.path = path
        self._file_size = os.fstat(fd).st_size
        self._check_header()
        # non-overlapping segments, ascending: starts[i], ends[i], where[i] = file position
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._where: list[int] = []
        self.records = self._index()

    def _check_header(self) -> None:
        head = read_at(self.fd, 0, FLAT_HEADER_SIZE, what="flattened header", path=self.path)
        signature, ftype, version = _HEAD.unpack_from(head)
        if signature != FLAT_SIGNATURE:
            raise BadMagicError(
                "not a flattened dump",
                path=self.path,
                offset=0,
                field="signature",
                expected=FLAT_SIGNATURE,
                found=signature,
            )
        for name, value, offset in (("type", ftype, 16), ("version", version, 24)):
            if value != FLAT_TYPE:
                raise UnsupportedVersionError(
                    f"flattened header {name} not supported",
                    path=self.path,
                    offset=offset,
                    field=name,
                    expected=FLAT_TYPE,
                    found=value,
                )

    def _index(self) -> int:
        pos = FLAT_HEADER_SIZE
        count = 0
        while True:
            if pos + _RECORD.size > self._file_size:
                raise TruncatedError(
                    "flattened stream ends without its end marker",
                    path=self.path,
                    offset=pos,
                    expected="offset -1, buf_size -1",
                )
            offset, size = _RECORD.unpack(os.pread(self.fd, _RECORD.size, pos))
            if offset == FLAT_END and size == FLAT_END:
                return count
            if offset < 0 or size <= 0:
                raise CorruptDataError(
                    "flattened record header is invalid",
                    path=self.path,
                    offset=pos,
                    field="offset" if offset < 0 else "buf_size",
                    expected=">= 0" if offset < 0 else "> 0",
                    found=offset if offset < 0 else size,
                )
            payload = pos + _RECORD.size
            if payload + size > self._file_size:
                raise TruncatedError(
                    "flattened record runs past the end of the stream",
                    path=self.path,
                    offset=pos,
                    field="buf_size",
                    expected=f"end <= {self._file_size:#x}",
                    found=f"end {payload + size:#x}",
                )
            self._insert(offset, offset + size, payload)
            pos = payload + size
            count += 1

    def _insert(self, start: int, end: int, where: int) -> None:
        """Add a record; it replaces whatever earlier records said about ``[start, end)``."""
        starts, ends, wheres = self._starts, self._ends, self._where
        if not starts or start >= ends[-1]:
            # the common case: ascending records
            starts.append(start)
            ends.append(end)
            wheres.append(where)
            return
        first = bisect.bisect_right(ends, start)
        last = bisect.bisect_left(starts, end)
        keep_s, keep_e, keep_w = [], [], []
        if first < last and starts[first] < start:  # head of an older segment survives
            keep_s.append(starts[first])
            keep_e.append(start)
            keep_w.append(wheres[first])
        keep_s.append(start)
        keep_e.append(end)
        keep_w.append(where)
        if first < last and ends[last - 1] > end:  # tail of an older segment survives
            keep_s.append(end)
            keep_e.append(ends[last - 1])
            keep_w.append(wheres[last - 1] + (end - starts[last - 1]))
        starts[first:last] = keep_s
        ends[first:last] = keep_e
        wheres[first:last] = keep_w

    def segments(self) -> list[tuple[int, int, int]]:
        """The resolved index: ``(start, end, stream position of start)``, ascending."""
        return list(zip(self._starts, self._ends, self._where, strict=True))

    @property
    def size(self) -> int:
        """Length of the reassembled file: the end of the furthest record."""
        return self._ends[-1] if self._ends else 0

    def pread(self, offset: int, size: int, *, zero_gaps: bool = False) -> bytes:
        """Bytes ``[offset, offset + size)`` of the reassembled file.

        :param zero_gaps: read ranges no record covers as zeros (block padding, reassembly)
        :raises TruncatedError: a range no record covers, unless ``zero_gaps``
        """
        out = bytearray()
        pos, end = offset, offset + size
        index = bisect.bisect_right(self._ends, pos)
        while pos < end:
            seg_start = self._starts[index] if index < len(self._starts) else end
            if seg_start > pos:
                gap_end = min(seg_start, end)
                if not zero_gaps:
                    raise TruncatedError(
                        "flattened stream holds no data for this range",
                        path=self.path,
                        offset=pos,
                        expected=f"records up to {end:#x}",
                        found=f"none before {seg_start:#x}",
                    )
                out += bytes(gap_end - pos)
                pos = gap_end
                continue
            take = min(end, self._ends[index]) - pos
            out += read_at(
                self.fd,
                self._where[index] + pos - seg_start,
                take,
                what="flattened record",
                path=self.path,
            )
            pos += take
            index += 1
        return bytes(out)


def reassemble(view: FlattenedView, out_fd: int, *, chunk_size: int = RECORD_SIZE) -> int:
    """Write the plain file a flattened stream describes (what ``makedumpfile -R`` does).

    Ranges no record covers stay holes (read as zeros), as with ``-R``.

    :return: bytes of the reassembled file
    """
    for start, end, where in view.segments():
        for pos in range(start, end, chunk_size):
            take = min(chunk_size, end - pos)
            data = read_at(
                view.fd, where + pos - start, take, what="flattened record", path=view.path
            )
            os.pwrite(out_fd, data, pos)
    os.ftruncate(out_fd, view.size)
    return view.size


def write_flattened(
    read: Callable[[int, int], bytes],
    size: int,
    out: BinaryIO,
    *,
    record_size: int = RECORD_SIZE,
) -> int:
    """Stream ``size`` bytes, read through ``read(offset, length)``, as a flattened stream.

    Records ascend and do not overlap; ``out`` only needs ``write`` (a pipe works).

    :return: bytes written to ``out``
    """
    header = _HEAD.pack(FLAT_SIGNATURE, FLAT_TYPE, FLAT_VERSION).ljust(FLAT_HEADER_SIZE, b"\0")
    out.write(header)
    written = len(header)
    for pos in range(0, size, record_size):
        data = read(pos, min(record_size, size - pos))
        out.write(_RECORD.pack(pos, len(data)))
        out.write(data)
        written += _RECORD.size + len(data)
    out.write(_RECORD.pack(FLAT_END, FLAT_END))
    out.flush()
    return written + _RECORD.size
