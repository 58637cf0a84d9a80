# SPDX-License-Identifier: GPL-2.0-or-later
"""The dump-partition label and the per-block pattern (pure codec, standard library only).

Spec: this project (docs/partitions.md), after the 2004 diskdump partition
(formats.md §1.14: every 4 KiB block started with ``disk`` ``dump``, the block
number and an arithmetic fill, sampled at panic time). Format version 1.

Partition layout, in blocks of :data:`BLOCK_SIZE` (4096) bytes::

    lba 0                  primary label (LABEL_SIZE bytes, zero padded to a block)
    lba 1 .. 254           zero (reserved; never written at dump time)
    lba 255                backup label (BACKUP_LABEL_LBA, same bytes except `copy`)
    lba 256 .. R-1         zero (R = reserve_blocks >= 256; default 256 = 1 MiB)
    lba R .. block_count-1 dump area: every block carries the pattern below;
                           the panic writer puts its leading dump header at lba R
                           and its trailing one at lba block_count-1

Label (little endian, LABEL_SIZE = 128 bytes)::

    0x00  8  magic                  b"DDPLABEL"
    0x08  4  version                1
    0x0c  4  label_size             128
    0x10 16  uuid                   partition UUID (RFC 4122 bytes)
    0x20  4  block_size             4096
    0x24  4  pattern_period_blocks  the fill repeats every this many blocks (256)
    0x28  8  block_count            blocks on the device, reserve included
    0x30  8  reserve_blocks         blocks at the start a dump never writes
    0x38  8  format_time            seconds since the epoch (UTC)
    0x40  4  pattern_kind           1 = SHAKE-256 fill (PatternKind)
    0x44  4  copy                   0 primary, 1 backup
    0x48 52  reserved               zero
    0x7c  4  checksum               CRC-32 of bytes 0x00..0x7b

Pattern block (one per lba of the dump area)::

    0x00  8  signature  b"DDPATTRN"
    0x08 16  uuid       the label's uuid        -> a block of another partition fails
    0x18  8  lba        this block's own lba    -> a block written elsewhere fails
    0x20     fill       bytes of the partition's fill stream: SHAKE-256 of
                        (FILL_DOMAIN + uuid), period_blocks * 4096 bytes long,
                        the block at index (lba mod period_blocks), bytes
                        0x20..0xfff (a rotation of the stream chosen by the lba)

Verifying a block is one comparison of the block as read against the
expected block. :class:`BlockPattern` keeps the period stream with the
signature and uuid already stamped in, so producing the expected bytes for
many blocks is one slice copy plus one strided store of their lbas (no Python
loop over words or blocks), and comparing is ``bytearray == buffer`` (memcmp).
"""

from __future__ import annotations

import array
import enum
import hashlib
import struct
import sys
import time
import uuid as uuid_mod
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from diskdump._binary import checksum32
from diskdump.errors import (
    BadMagicError,
    ChecksumError,
    CorruptDataError,
    FormatError,
    TruncatedError,
    UnsupportedVersionError,
)

__all__ = [
    "BACKUP_LABEL_LBA",
    "BLOCK_HEADER_SIZE",
    "BLOCK_SIGNATURE",
    "BLOCK_SIZE",
    "DEFAULT_PERIOD_BLOCKS",
    "DEFAULT_RESERVE_BLOCKS",
    "LABEL_MAGIC",
    "LABEL_SIZE",
    "LABEL_VERSION",
    "MIN_DATA_BLOCKS",
    "BlockExtent",
    "BlockPattern",
    "LabelCopy",
    "PartitionLabel",
    "PatternKind",
    "is_partition_label",
    "new_label",
]

#: bytes per block; every lba of a dump partition is in these units (x86_64 page size)
BLOCK_SIZE = 4096
#: first 8 bytes of a label (ours; chosen not to collide with any blkid magic)
LABEL_MAGIC = b"DDPLABEL"
#: the one label version this module reads and writes
LABEL_VERSION = 1
#: bytes of the label proper; the rest of its block is zero
LABEL_SIZE = 128
#: first 8 bytes of every pattern block
BLOCK_SIGNATURE = b"DDPATTRN"
#: bytes of the stamped header of a pattern block (signature, uuid, lba)
BLOCK_HEADER_SIZE = 32
#: offset of the lba field inside a pattern block
_LBA_OFFSET = 24
#: default (and minimum) reserved area: 256 blocks = 1 MiB, never written at dump time
DEFAULT_RESERVE_BLOCKS = 256
#: the backup label sits in the last block of the minimum reserve
BACKUP_LABEL_LBA = DEFAULT_RESERVE_BLOCKS - 1
#: the fill repeats every 256 blocks (1 MiB of SHAKE-256 output per partition)
DEFAULT_PERIOD_BLOCKS = 256
#: upper bound on the period a label may ask for (256 MiB of fill), so a damaged label
#: cannot make a reader derive an absurd amount of SHAKE output
MAX_PERIOD_BLOCKS = 1 << 16
#: a dump area smaller than this (two headers and a little data) is useless
MIN_DATA_BLOCKS = 16
#: domain separator hashed in front of the uuid to derive the fill stream
FILL_DOMAIN = b"diskdump partition fill v1\0"

_LABEL_STRUCT = struct.Struct("<8sII16sIIQQQII52sI")
#: the label's fields in on-disk order, as _LABEL_STRUCT unpacks them
_LABEL_FIELDS = (
    "magic",
    "version",
    "label_size",
    "uuid",
    "block_size",
    "pattern_period_blocks",
    "block_count",
    "reserve_blocks",
    "format_time",
    "pattern_kind",
    "copy",
    "reserved",
    "checksum",
)
_CHECKSUM_OFFSET = LABEL_SIZE - 4
assert _LABEL_STRUCT.size == LABEL_SIZE
assert len(BLOCK_SIGNATURE) + 16 + 8 == BLOCK_HEADER_SIZE
_LBA_WORD = 8  # bytes of the lba field; the strided store below is in these units
_NATIVE_IS_LITTLE = sys.byteorder == "little"


class PatternKind(enum.IntEnum):
    """How the fill of a pattern block is derived (label field ``pattern_kind``)."""

    SHAKE256 = 1  #: SHAKE-256 of FILL_DOMAIN + uuid, rotated per block by lba


class LabelCopy(enum.IntEnum):
    """Which copy of the label a block holds (label field ``copy``)."""

    PRIMARY = 0
    BACKUP = 1


_KINDS = frozenset(int(k) for k in PatternKind)
_COPIES = frozenset(int(c) for c in LabelCopy)


@dataclass(frozen=True, slots=True)
class BlockExtent:
    """A run of blocks ``[start_lba, start_lba + block_count)`` (what a dump wrote)."""

    start_lba: int
    block_count: int

    def __post_init__(self) -> None:
        if self.start_lba < 0 or self.block_count < 0:
            raise ValueError(f"bad extent start {self.start_lba} count {self.block_count}")

    @property
    def end_lba(self) -> int:
        """One past the last lba of the extent."""
        return self.start_lba + self.block_count


@dataclass(frozen=True, slots=True)
class PartitionLabel:
    """The label at lba 0 (and its backup at :data:`BACKUP_LABEL_LBA`).

    :param uuid: the partition's UUID; stamped into every pattern block
    :param block_count: blocks of :data:`BLOCK_SIZE` bytes on the device, reserve included
    :param reserve_blocks: blocks at the start that a dump never writes
    :param format_time: when it was formatted, seconds since the epoch (UTC)
    """

    SIZE: ClassVar[int] = LABEL_SIZE

    uuid: uuid_mod.UUID
    block_count: int
    reserve_blocks: int = DEFAULT_RESERVE_BLOCKS
    format_time: int = 0
    block_size: int = BLOCK_SIZE
    pattern_period_blocks: int = DEFAULT_PERIOD_BLOCKS
    pattern_kind: PatternKind = PatternKind.SHAKE256
    copy: LabelCopy = LabelCopy.PRIMARY
    version: int = LABEL_VERSION
    _reserved: bytes = field(default=bytes(52), repr=False, compare=False)

    @property
    def data_blocks(self) -> int:
        """Blocks of the dump area (everything after the reserve)."""
        return self.block_count - self.reserve_blocks

    @property
    def data_extent(self) -> BlockExtent:
        """The dump area as an extent."""
        return BlockExtent(self.reserve_blocks, self.data_blocks)

    def as_copy(self, copy: LabelCopy) -> PartitionLabel:
        """The same label marked as the primary or the backup copy."""
        return replace(self, copy=copy)

    def pack(self) -> bytes:
        """The LABEL_SIZE on-disk bytes, checksum included."""
        body = _LABEL_STRUCT.pack(
            LABEL_MAGIC,
            self.version,
            LABEL_SIZE,
            self.uuid.bytes,
            self.block_size,
            self.pattern_period_blocks,
            self.block_count,
            self.reserve_blocks,
            self.format_time,
            int(self.pattern_kind),
            int(self.copy),
            bytes(52),
            0,
        )
        crc = checksum32(body[:_CHECKSUM_OFFSET])
        return body[:_CHECKSUM_OFFSET] + struct.pack("<I", crc)

    def pack_block(self) -> bytes:
        """The label as a whole block (zero padded), as written at lba 0 and the backup lba."""
        return self.pack().ljust(self.block_size, b"\0")

    @classmethod
    def unpack(
        cls, buf: bytes | bytearray | memoryview, *, device: str | None = None, offset: int = 0
    ) -> PartitionLabel:
        """Parse and validate a label.

        :param buf: at least LABEL_SIZE bytes starting with the label
        :param device: named in error messages
        :param offset: byte offset of ``buf`` on the device, for error messages
        :raises TruncatedError: ``buf`` is shorter than LABEL_SIZE
        :raises BadMagicError: not a diskdump label
        :raises UnsupportedVersionError: a label version this build does not read
        :raises ChecksumError: the label is damaged
        :raises CorruptDataError: a field holds an impossible value
        """
        if len(buf) < LABEL_SIZE:
            raise TruncatedError(
                "partition label is cut short",
                device=device,
                offset=offset,
                expected=f"{LABEL_SIZE} bytes",
                found=f"{len(buf)} bytes",
            )
        raw = bytes(buf[:LABEL_SIZE])
        fields = dict(zip(_LABEL_FIELDS, _LABEL_STRUCT.unpack(raw), strict=True))
        _check_envelope(raw, fields, device=device, offset=offset)
        label = cls(
            uuid=uuid_mod.UUID(bytes=fields["uuid"]),
            block_count=fields["block_count"],
            reserve_blocks=fields["reserve_blocks"],
            format_time=fields["format_time"],
            block_size=fields["block_size"],
            pattern_period_blocks=fields["pattern_period_blocks"],
            pattern_kind=PatternKind(fields["pattern_kind"]),
            copy=LabelCopy(fields["copy"]),
            version=fields["version"],
            _reserved=fields["reserved"],
        )
        label.validate(device=device, offset=offset)
        return label

    def validate(self, *, device: str | None = None, offset: int = 0) -> None:
        """Check the field values against each other.

        :raises CorruptDataError: naming the first impossible field
        """
        checks = (
            ("block_size", self.block_size == BLOCK_SIZE, BLOCK_SIZE, self.block_size),
            (
                "pattern_period_blocks",
                1 <= self.pattern_period_blocks <= MAX_PERIOD_BLOCKS,
                f"1..{MAX_PERIOD_BLOCKS}",
                self.pattern_period_blocks,
            ),
            (
                "reserve_blocks",
                self.reserve_blocks >= DEFAULT_RESERVE_BLOCKS,
                f">= {DEFAULT_RESERVE_BLOCKS}",
                self.reserve_blocks,
            ),
            (
                "block_count",
                self.block_count >= self.reserve_blocks + MIN_DATA_BLOCKS,
                f">= reserve_blocks + {MIN_DATA_BLOCKS}",
                self.block_count,
            ),
        )
        for name, ok, expected, found in checks:
            if not ok:
                raise CorruptDataError(
                    "impossible partition label value",
                    field=name,
                    device=device,
                    offset=offset,
                    expected=expected,
                    found=found,
                )


#: (error class, message, field, offset of the field in the label, expected-value) rows
_Check = tuple[type[FormatError], str, str, int, object]


def _check_envelope(raw: bytes, fields: dict[str, Any], *, device: str | None, offset: int) -> None:
    """Magic, version, checksum and the enumerated fields, in that order."""
    actual = checksum32(raw[:_CHECKSUM_OFFSET])
    bad = "impossible partition label value"
    rows: tuple[tuple[bool, _Check], ...] = (
        (
            fields["magic"] == LABEL_MAGIC,
            (BadMagicError, "no diskdump partition label", "magic", 0x00, LABEL_MAGIC),
        ),
        (
            fields["version"] == LABEL_VERSION and fields["label_size"] == LABEL_SIZE,
            (
                UnsupportedVersionError,
                "unsupported partition label version",
                "version",
                0x08,
                LABEL_VERSION,
            ),
        ),
        (
            fields["checksum"] == actual,
            (
                ChecksumError,
                "partition label checksum mismatch",
                "checksum",
                _CHECKSUM_OFFSET,
                actual,
            ),
        ),
        (
            fields["pattern_kind"] in _KINDS,
            (CorruptDataError, bad, "pattern_kind", 0x40, sorted(_KINDS)),
        ),
        (fields["copy"] in _COPIES, (CorruptDataError, bad, "copy", 0x44, sorted(_COPIES))),
    )
    for ok, (error, what, name, field_offset, expected) in rows:
        if not ok:
            raise error(
                what,
                field=name,
                offset=offset + field_offset,
                expected=expected,
                found=fields[name],
                device=device,
            )


assert PartitionLabel.SIZE == LABEL_SIZE


def new_label(
    block_count: int,
    *,
    uuid: uuid_mod.UUID | None = None,
    reserve_blocks: int = DEFAULT_RESERVE_BLOCKS,
    format_time: int | None = None,
) -> PartitionLabel:
    """A fresh, validated label for a device of ``block_count`` blocks.

    :param block_count: blocks of :data:`BLOCK_SIZE` bytes on the device
    :param uuid: the partition UUID; a random one (uuid4) when ``None``
    :param reserve_blocks: reserved area at the start, in blocks (at least 256)
    :param format_time: seconds since the epoch; now when ``None``
    :raises CorruptDataError: the device is too small for the reserve plus MIN_DATA_BLOCKS
    """
    label = PartitionLabel(
        uuid=uuid if uuid is not None else uuid_mod.uuid4(),
        block_count=block_count,
        reserve_blocks=reserve_blocks,
        format_time=int(time.time()) if format_time is None else format_time,
    )
    label.validate()
    return label


def is_partition_label(buf: bytes | bytearray | memoryview) -> bool:
    """True if ``buf`` starts with a valid label (magic, version and checksum); never raises."""
    try:
        PartitionLabel.unpack(buf)
    except (
        TruncatedError,
        BadMagicError,
        UnsupportedVersionError,
        ChecksumError,
        CorruptDataError,
    ):
        return False
    return True


class BlockPattern:
    """Expected contents of the pattern blocks of one partition.

    Build it once per label (it derives period_blocks * 4096 bytes of
    SHAKE-256 output); it is then cheap to ask for the expected bytes of any
    run of blocks, or to check a buffer read from the device.

    :param label: the partition's label (uuid, period)
    :param max_blocks: largest run asked for in one call (sizes the cached stream)
    """

    def __init__(self, label: PartitionLabel, max_blocks: int = 2048) -> None:
        self.label = label
        self.block_size = label.block_size
        self.period_blocks = label.pattern_period_blocks
        self.max_blocks = max_blocks
        bs = self.block_size
        period = hashlib.shake_256(FILL_DOMAIN + label.uuid.bytes).digest(self.period_blocks * bs)
        reps = -(-(self.period_blocks + max_blocks) // self.period_blocks)
        stream = bytearray(period * reps)
        header = BLOCK_SIGNATURE + label.uuid.bytes
        words = memoryview(stream).cast("Q")
        blocks = len(stream) // bs
        # stamp signature and uuid into every block: one strided store per 8-byte word
        for i in range(0, len(header), _LBA_WORD):
            (word,) = struct.unpack("=Q", header[i : i + _LBA_WORD])  # bytes as they are
            words[i // _LBA_WORD :: bs // _LBA_WORD] = array.array("Q", [word]) * blocks
        words.release()
        self._stream = bytes(stream)
        self._stream_view = memoryview(self._stream)
        # a reusable buffer for period-aligned runs of exactly max_blocks (the hot path)
        self._aligned = bytearray(self._stream[: max_blocks * bs])

    def expected(self, lba: int, block_count: int) -> bytearray:
        """The exact bytes blocks ``[lba, lba + block_count)`` must hold.

        For a run of ``max_blocks`` starting at a multiple of the period this
        returns the same internal buffer each time (valid until the next
        call); otherwise a new bytearray.

        :param lba: first block (an lba of the dump area)
        :param block_count: 1 .. max_blocks
        """
        if not 0 < block_count <= self.max_blocks:
            raise ValueError(f"block_count {block_count} not in 1..{self.max_blocks}")
        bs = self.block_size
        rot = lba % self.period_blocks
        if rot == 0 and block_count == self.max_blocks:
            out = self._aligned
        else:
            out = bytearray(self._stream[rot * bs : (rot + block_count) * bs])
        self._stamp(out, lba, block_count)
        return out

    def fill(self, out: bytearray | memoryview, lba: int, *, holds_lba: int | None = None) -> None:
        """Write the pattern of blocks ``[lba, lba + len(out) // block_size)`` into ``out``.

        For a writer that needs its own (for example page-aligned) buffer:
        one slice copy and one strided store per call. A writer that reuses a
        buffer may say what it holds: if ``out`` already holds the pattern of
        the same number of blocks from ``holds_lba``, and ``holds_lba`` and
        ``lba`` select the same fill (equal modulo the period), only the lba
        fields are rewritten and the copy is skipped.

        :param out: a writable buffer of 1 .. max_blocks whole blocks
        :param lba: lba of the first block of ``out``
        :param holds_lba: lba whose pattern ``out`` holds now, if any
        """
        bs = self.block_size
        count = len(out) // bs
        if count * bs != len(out) or not 0 < count <= self.max_blocks:
            raise ValueError(f"buffer of {len(out)} bytes is not 1..{self.max_blocks} blocks")
        rot = lba % self.period_blocks
        view = memoryview(out)
        if holds_lba is None or holds_lba % self.period_blocks != rot:
            view[:] = self._stream_view[rot * bs : (rot + count) * bs]  # one copy, no temporary
        self._stamp(view, lba, count)

    def _stamp(self, out: bytearray | memoryview, lba: int, block_count: int) -> None:
        lbas = array.array("Q", range(lba, lba + block_count))
        if not _NATIVE_IS_LITTLE:
            lbas.byteswap()  # the lba field is little endian on disk
        words = memoryview(out).cast("Q")
        words[_LBA_OFFSET // _LBA_WORD :: self.block_size // _LBA_WORD] = memoryview(lbas)

    def matches(self, buf: bytes | bytearray | memoryview, lba: int) -> bool:
        """True if ``buf`` (whole blocks) holds exactly the pattern of its blocks from ``lba``.

        One memcmp for the whole buffer; ``buf`` may be any buffer (mmap, bytes, memoryview).
        """
        nblocks = len(buf) // self.block_size
        if nblocks * self.block_size != len(buf) or nblocks == 0:
            raise ValueError(f"buffer of {len(buf)} bytes is not whole blocks")
        start = 0
        while start < nblocks:
            count = min(self.max_blocks, nblocks - start)
            view = memoryview(buf)[start * self.block_size : (start + count) * self.block_size]
            if self.expected(lba + start, count) != view:
                return False
            start += count
        return True

    def iter_bad_blocks(self, buf: bytes | bytearray | memoryview, lba: int) -> Iterator[int]:
        """Yield the lba of each block of ``buf`` (read from ``lba`` on) whose pattern fails.

        Fast when everything matches (one compare per max_blocks); block by block otherwise.
        """
        bs = self.block_size
        view = memoryview(buf)
        if self.matches(view, lba):
            return
        for i in range(len(view) // bs):
            if self.expected(lba + i, 1) != view[i * bs : (i + 1) * bs]:
                yield lba + i

    def describe_block(self, block: bytes | bytearray | memoryview, lba: int) -> str:
        """Say in words why ``block`` at ``lba`` fails (for reports), or ``"ok"``."""
        raw = bytes(block[: self.block_size])
        if raw[: len(BLOCK_SIGNATURE)] != BLOCK_SIGNATURE:
            return "no pattern signature (foreign or overwritten block)"
        if raw[8:24] != self.label.uuid.bytes:
            other = uuid_mod.UUID(bytes=raw[8:24])
            return f"pattern of another partition (uuid {other})"
        (stamped,) = struct.unpack_from("<Q", raw, _LBA_OFFSET)
        if stamped != lba:
            return f"pattern block of lba {stamped} found at lba {lba}"
        if self.expected(lba, 1) != raw:
            return "pattern fill differs (damaged block)"
        return "ok"
