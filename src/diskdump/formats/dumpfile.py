# SPDX-License-Identifier: GPL-2.0-or-later
"""A dump partition's dump as a self-contained file: what savecore saves as ``vmcore.encrypted``.

An encrypted dump cannot be turned into a vmcore without the private key,
so savecore keeps it as it is on the partition, minus the partition around
it: the same blocks, moved to the front of a file, with the headers
rewritten for their new places::

    partition (R = reserve_blocks, N blocks)      file (block size as on the partition)
    lba R        leading header        ------>    block 0          header, header_lba 0
    lba R+1 ..   metadata (as stored)  ------>    block 1 ..       metadata, byte-identical
    lba data_lba chunks (as stored)    ------>    block data_lba-R chunks, byte-identical
    lba N-1      trailing header       ------>    last block       the same header again

Only placement fields change (``header_lba``, ``meta_lba``, ``data_lba``,
``data_end_lba``, ``device_blocks``): the metadata and chunks, whose seals do
not depend on where they lie, are copied byte for byte. ``open_dump`` reads
the file like a device (formats/encrypted.FileBlocks) with the header at
block 0, with or without the private key. A dump cut short keeps its status
INCOMPLETE; the file ends after the last chunk the reader accepted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

from diskdump.errors import NotThisFormatError, TruncatedError
from diskdump.formats.dumpheader import (
    DUMP_HEADER_MAGIC,
    HEADER_SIZE,
    DumpHeader,
    header_block,
)
from diskdump.formats.dumpimage import DumpImage, open_dump
from diskdump.formats.encrypted import FileBlocks

__all__ = ["is_dump_file", "opened_dump_file", "write_dump_file"]

#: blocks copied per read while writing the file
_COPY_BLOCKS = 256


def _file_header(image: DumpImage) -> DumpHeader:
    head = image.header
    bs = head.block_size
    last = image.chunks[-1] if image.chunks else None
    end_lba = last.lba + last.header.blocks(bs) if last is not None else head.data_lba
    shift = head.header_lba
    return head.finished(
        header_lba=0,
        meta_lba=head.meta_lba - shift,
        data_lba=head.data_lba - shift,
        data_end_lba=end_lba - shift,
        device_blocks=end_lba - shift + 1,
        chunk_count=len(image.chunks) if head.complete else head.chunk_count,
    )


def write_dump_file(
    image: DumpImage, out: BinaryIO, *, progress: Callable[[int, int], None] | None = None
) -> int:
    """Write ``image`` (read from a partition, key or not) as a self-contained file.

    :param out: a writable binary file at offset 0
    :param progress: ``progress(done_bytes, total_bytes)`` after every copied batch
    :return: bytes written
    """
    new = _file_header(image)
    bs = new.block_size
    block = header_block(new)
    out.write(block)
    first = image.header.meta_lba
    count = new.data_end_lba - new.meta_lba
    total = (count + 2) * bs
    done = bs
    buf = bytearray(_COPY_BLOCKS * bs)
    for lba in range(first, first + count, _COPY_BLOCKS):
        n = min(_COPY_BLOCKS, first + count - lba)
        view = memoryview(buf)[: n * bs]
        image.src.read(lba, view)
        out.write(view)
        done += n * bs
        if progress is not None:
            progress(done, total)
    out.write(block)
    return done + bs


def is_dump_file(path: str) -> bool:
    """True if the file at ``path`` starts with a live dump header; never raises."""
    try:
        with open(path, "rb") as file:
            return file.read(len(DUMP_HEADER_MAGIC)) == DUMP_HEADER_MAGIC
    except OSError:
        return False


@contextlib.contextmanager
def opened_dump_file(path: str, *, private_key: object | None = None) -> Iterator[DumpImage]:
    """Open a file written by :func:`write_dump_file` as a :class:`DumpImage`.

    :param private_key: opens an encrypted dump; without it pages are unreadable
    :raises NotThisFormatError: the file does not start with a dump header
    :raises FormatError: the file is damaged
    :raises CryptoError: the wrong key, or tampered sealed metadata
    :raises OSError: the file cannot be read
    """
    with open(path, "rb") as file:
        first = file.read(HEADER_SIZE)
    if len(first) < HEADER_SIZE and first[: len(DUMP_HEADER_MAGIC)] == DUMP_HEADER_MAGIC:
        raise TruncatedError(
            "dump file is cut short", path=path, expected=HEADER_SIZE, found=len(first)
        )
    head = DumpHeader.unpack(first, device=path)  # NotThisFormatError for anything else
    if head.header_lba != 0:
        raise NotThisFormatError(
            "a dump partition image, not a saved dump file",
            path=path,
            field="header_lba",
            expected=0,
            found=head.header_lba,
        )
    with FileBlocks(path, head.block_size) as blocks:
        yield open_dump(blocks, 0, name=path, private_key=private_key)
