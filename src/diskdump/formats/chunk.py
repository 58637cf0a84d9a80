# SPDX-License-Identifier: GPL-2.0-or-later
"""The chunk stream of a dump partition: self-describing, checksummed groups of pages.

diskdump's own format (version 1), written by the panic writer after the
metadata (formats/dumpheader.py). Chunks follow each other without gaps from
``data_lba``; each starts on a block boundary. A chunk names its dump (dump id),
its place in the stream (sequence), its pfn range and the state of every page
in it, so the stream can be read back after the writer stopped at any chunk
boundary: the first chunk whose magic, dump id, sequence or checksum fails ends
the stream.

    chunk (little endian; bs = device block size)
    off  size  field
    0    8     magic "DDCHUNK1"
    8    2     version (1)
    10   2     codec         formats.codecs.CompressFlag of the payload (0: raw);
                             bit 15 (CODEC_SEALED): the payload is sealed (encrypted dump)
    12   4     sequence      0, 1, 2, ... in write order
    16   16    dump_id       the dump header's dump_id
    32   8     start_pfn     first pfn of the range
    40   4     page_count    pfns in the range, at most MAX_CHUNK_PAGES
    44   4     present_count pages whose contents are in the payload
    48   4     payload_size  bytes of payload as stored
    52   4     raw_size      present_count * page_size (payload after decompression)
    56   4     payload_crc   crc32 of the stored payload (the sealed bytes when sealed)
    60   4     header_crc    crc32 of bytes 0..59 and the state map
    64   P     state map     2 bits per page, page i at bits 2*(i%4) of byte i//4 (PageState)
    ...        zero up to CHUNK_HEADER_SIZE (512)
    512  S     payload       the present pages, ascending pfn, as one compressed stream
    ...        zero up to the next block boundary

The payload is one stream per chunk rather than one per page: on kernel memory
it compresses better and costs one call per chunk (figures in docs/panic.md).
A chunk whose compressed form would not be smaller is stored with codec NONE.

Sealed chunks (an encrypted dump, formats/crypt.py): the payload is first
compressed, then sealed with ChaCha20-Poly1305 (nonce from ``sequence``); it
grows by the 16-byte tag, which ``payload_size`` counts. The header stays in
clear (page states, sizes), so a dump can be found and sized without the key,
and it is the associated data of the seal with ``payload_crc`` read as zero
(the crc covers the sealed bytes, so it cannot be inside them): moving a
header onto another chunk or editing any header byte fails authentication.
A bad ``payload_crc`` means the device damaged the bytes; a good crc with a
failing tag means the bytes were changed on purpose.

formats/dumpimage.py reads a whole dump (headers, metadata, chunks) back as a
:class:`~diskdump.formats.memsource.MemorySource`.
"""

from __future__ import annotations

import enum
import logging
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from diskdump._binary import checksum32
from diskdump.errors import (
    BadMagicError,
    ChecksumError,
    CorruptDataError,
    CryptoError,
    TruncatedError,
    UnsupportedVersionError,
)
from diskdump.formats.codecs import Codec, CompressFlag, codec_for_flag
from diskdump.formats.crypt import TAG_SIZE, ChunkCipher

__all__ = [
    "CHUNK_HEADER_SIZE",
    "CHUNK_MAGIC",
    "CODEC_SEALED",
    "MAX_CHUNK_PAGES",
    "ChunkHeader",
    "PageState",
    "build_chunk",
    "chunk_blocks",
    "decode_payload",
    "is_chunk",
    "pack_states",
    "unpack_states",
]

log = logging.getLogger(__name__)

#: first 8 bytes of every chunk
CHUNK_MAGIC = b"DDCHUNK1"
#: the only chunk layout this module reads and writes
CHUNK_VERSION = 1
#: bytes before the payload: fixed fields, state map, zero fill
CHUNK_HEADER_SIZE = 512
_FIXED = struct.Struct("<8sHHI16sQIIIII")
_CRC = struct.Struct("<I")
#: 4 pages per state-map byte
_PAGES_PER_BYTE = 4
#: bit of the codec field marking a sealed (encrypted) payload; CompressFlag uses bits 0-5
CODEC_SEALED = 0x8000
#: the codec ids a chunk may name: CompressFlag values (formats/codecs.py)
_KNOWN_FLAGS = frozenset(int(flag) for flag in CompressFlag) | {0}
_STATE_BITS = 2
_STATE_MASK = 0b11
#: the state map must fit between the fixed fields and the payload
MAX_CHUNK_PAGES = (CHUNK_HEADER_SIZE - _FIXED.size - _CRC.size) * _PAGES_PER_BYTE
assert _FIXED.size + _CRC.size == 64 and MAX_CHUNK_PAGES == 1792


class PageState(enum.IntEnum):
    """State of one pfn in a chunk's range."""

    EXCLUDED = 0  #: not held: not RAM, not in the source, or filtered out
    PRESENT = 1  #: contents in the payload
    ZERO = 2  #: the page was all zeros (dump level bit 1); no payload bytes


def pack_states(states: Sequence[int]) -> bytes:
    """Pack page states, 2 bits each, page i at bits ``2*(i%4)`` of byte ``i//4``.

    Four strided byte lanes, shifted by a translate table each and OR-ed as integers:
    C loops, not a Python one per page (41 us a chunk before, on the panic path).
    """
    raw = bytes(states)
    size = -(-len(raw) // _PAGES_PER_BYTE)
    raw += bytes(size * _PAGES_PER_BYTE - len(raw))
    packed = 0
    for lane, table in enumerate(_STATE_LANES):
        packed |= int.from_bytes(raw[lane::_PAGES_PER_BYTE].translate(table), "little")
    return packed.to_bytes(size, "little")


#: per lane k, the translate table v -> (v & 3) << 2k
_STATE_LANES = tuple(
    bytes(((v & _STATE_MASK) << (_STATE_BITS * k)) & 0xFF for v in range(256))
    for k in range(_PAGES_PER_BYTE)
)


def unpack_states(packed: bytes | bytearray | memoryview, page_count: int) -> bytes:
    """One byte per page (a :class:`PageState` value) from the 2-bit state map."""
    return bytes(
        (packed[i // _PAGES_PER_BYTE] >> (_STATE_BITS * (i % 4))) & _STATE_MASK
        for i in range(page_count)
    )


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    """The first 512 bytes of a chunk (fixed fields and state map), verified."""

    SIZE = CHUNK_HEADER_SIZE

    codec: CompressFlag
    sequence: int
    dump_id: bytes
    start_pfn: int
    page_count: int
    present_count: int
    payload_size: int
    raw_size: int
    payload_crc: int
    states: bytes  #: one PageState value per page
    sealed: bool = False  #: the payload is encrypted (CODEC_SEALED)

    @property
    def end_pfn(self) -> int:
        """One past the last pfn of the range."""
        return self.start_pfn + self.page_count

    def blocks(self, block_size: int) -> int:
        """Device blocks the whole chunk occupies."""
        return chunk_blocks(self.payload_size, block_size)

    def pack(self) -> bytes:
        """The 512-byte chunk header with its crc32."""
        fixed = _FIXED.pack(
            CHUNK_MAGIC,
            CHUNK_VERSION,
            int(self.codec) | (CODEC_SEALED if self.sealed else 0),
            self.sequence,
            self.dump_id,
            self.start_pfn,
            self.page_count,
            self.present_count,
            self.payload_size,
            self.raw_size,
            self.payload_crc,
        )
        smap = pack_states(self.states)
        crc = _CRC.pack(checksum32(smap, checksum32(fixed)))
        return (fixed + crc + smap).ljust(CHUNK_HEADER_SIZE, b"\0")

    def zero_fill(self, block_size: int) -> tuple[tuple[int, int], ...]:
        """Byte ranges of the chunk the writer fills with zeros (after the state map, and
        after the payload up to the block boundary): no crc covers them, a reader checks them."""
        smap_end = _FIXED.size + _CRC.size + -(-self.page_count // _PAGES_PER_BYTE)
        end = CHUNK_HEADER_SIZE + self.payload_size
        return ((smap_end, CHUNK_HEADER_SIZE), (end, self.blocks(block_size) * block_size))

    def associated_data(self) -> bytes:
        """What a sealed payload authenticates: this header with ``payload_crc`` zero."""
        return replace(self, payload_crc=0).pack()

    @classmethod
    def unpack(
        cls,
        buf: bytes | bytearray | memoryview,
        *,
        page_size: int,
        device: str | None = None,
        offset: int = 0,
    ) -> ChunkHeader:
        """Parse and verify a chunk header; ``offset`` (bytes) feeds error messages.

        :raises TruncatedError: fewer than 512 bytes
        :raises BadMagicError: not a chunk
        :raises UnsupportedVersionError: unknown chunk version
        :raises ChecksumError: header crc mismatch
        :raises CorruptDataError: inconsistent counts or states
        """
        v = _check_fixed(buf, device, offset)
        page_count = v[6]
        smap_end = _FIXED.size + _CRC.size + -(-page_count // _PAGES_PER_BYTE)
        smap = bytes(buf[_FIXED.size + _CRC.size : smap_end])
        (stored,) = _CRC.unpack_from(buf, _FIXED.size)
        actual = checksum32(smap, checksum32(bytes(buf[: _FIXED.size])))
        if stored != actual:
            raise ChecksumError(
                "chunk header checksum mismatch",
                device=device,
                offset=offset + _FIXED.size,
                field="header_crc",
                expected=actual,
                found=stored,
            )
        header = cls(
            _codec(v[2] & ~CODEC_SEALED, device, offset),
            v[3],
            bytes(v[4]),
            v[5],
            page_count,
            v[7],
            v[8],
            v[9],
            v[10],
            unpack_states(smap, page_count),
            bool(v[2] & CODEC_SEALED),
        )
        header._validate(page_size, device, offset)
        return header

    def _validate(self, page_size: int, device: str | None, offset: int) -> None:
        if max(self.states) > PageState.ZERO:
            raise CorruptDataError(
                "unknown page state in chunk", device=device, offset=offset, field="state map"
            )
        present = self.states.count(PageState.PRESENT)
        if present != self.present_count or self.raw_size != present * page_size:
            raise CorruptDataError(
                "chunk counts disagree with its state map",
                device=device,
                offset=offset,
                field="present_count",
                expected=(present, present * page_size),
                found=(self.present_count, self.raw_size),
            )
        overhead = ChunkCipher.OVERHEAD if self.sealed else 0
        if self.codec is CompressFlag.NONE and self.payload_size != self.raw_size + overhead:
            raise CorruptDataError(
                "uncompressed chunk payload has the wrong size",
                device=device,
                offset=offset,
                field="payload_size",
                expected=self.raw_size + overhead,
                found=self.payload_size,
            )
        if self.sealed and self.payload_size < TAG_SIZE:
            raise CorruptDataError(
                "sealed chunk payload is shorter than its tag",
                device=device,
                offset=offset,
                field="payload_size",
                expected=f">= {TAG_SIZE}",
                found=self.payload_size,
            )

    def iter_runs(self, states: Sequence[int]) -> Iterator[tuple[int, int]]:
        """``(start_pfn, end_pfn)`` runs of pages whose state is in ``states``."""
        start = None
        for i, state in enumerate(self.states):
            if state in states and start is None:
                start = i
            elif state not in states and start is not None:
                yield self.start_pfn + start, self.start_pfn + i
                start = None
        if start is not None:
            yield self.start_pfn + start, self.end_pfn


def _check_fixed(
    buf: bytes | bytearray | memoryview, device: str | None, offset: int
) -> tuple[Any, ...]:
    # size, magic, version and page count, before the checksum is worth computing
    if len(buf) < CHUNK_HEADER_SIZE:
        raise TruncatedError(
            "chunk header is cut short",
            device=device,
            offset=offset,
            expected=CHUNK_HEADER_SIZE,
            found=len(buf),
        )
    v = _FIXED.unpack_from(buf)
    if v[0] != CHUNK_MAGIC:
        raise BadMagicError(
            "not a chunk",
            device=device,
            offset=offset,
            field="magic",
            expected=CHUNK_MAGIC,
            found=bytes(v[0]),
        )
    if v[1] != CHUNK_VERSION:
        raise UnsupportedVersionError(
            "unsupported chunk",
            device=device,
            offset=offset,
            field="version",
            expected=CHUNK_VERSION,
            found=v[1],
        )
    if not 0 < v[6] <= MAX_CHUNK_PAGES:
        raise CorruptDataError(
            "chunk page count out of range",
            device=device,
            offset=offset,
            field="page_count",
            expected=f"1..{MAX_CHUNK_PAGES}",
            found=v[6],
        )
    return tuple(v)


def _codec(value: int, device: str | None, offset: int) -> CompressFlag:
    if value in _KNOWN_FLAGS:
        return CompressFlag(value)
    raise CorruptDataError(
        "unknown chunk codec", device=device, offset=offset, field="codec", found=value
    )


def chunk_blocks(payload_size: int, block_size: int) -> int:
    """Blocks a chunk with ``payload_size`` bytes of payload occupies."""
    return -(-(CHUNK_HEADER_SIZE + payload_size) // block_size)


def build_chunk(
    *,
    sequence: int,
    dump_id: bytes,
    start_pfn: int,
    states: bytes,
    raw: bytes,
    codec: Codec,
    block_size: int,
    cipher: ChunkCipher | None = None,
) -> bytes:
    """Encode one chunk, padded to whole blocks (runs in a compression worker).

    :param states: one :class:`PageState` per pfn from ``start_pfn``
    :param raw: the PRESENT pages' contents, concatenated in pfn order
    :param codec: compresses the payload as one stream; kept raw when not smaller
    :param cipher: seal the compressed payload (an encrypted dump); None: clear
    """
    packed = codec.compress(raw) if raw else None
    payload, used = (raw, CompressFlag.NONE) if packed is None else (packed, codec.flag)
    # even a chunk without payload bytes (all pages zero) is sealed: its tag authenticates
    # the header, so its state map cannot be edited unnoticed
    sealed = cipher is not None
    header = ChunkHeader(
        used,
        sequence,
        dump_id,
        start_pfn,
        len(states),
        states.count(PageState.PRESENT),
        len(payload) + (ChunkCipher.OVERHEAD if sealed else 0),
        len(raw),
        0,
        states,
        sealed,
    )
    if cipher is not None:
        payload = cipher.seal(sequence, header.associated_data(), payload)
    header = replace(header, payload_crc=checksum32(payload))
    head = header.pack()
    # one copy of the payload (header + payload + pad would copy it twice)
    return b"".join((head, payload, bytes(-(len(head) + len(payload)) % block_size)))


def decode_payload(
    header: ChunkHeader,
    payload: bytes,
    *,
    device: str | None = None,
    offset: int = 0,
    cipher: ChunkCipher | None = None,
) -> bytes:
    """Verify, open (when sealed) and decompress a chunk payload into its ``raw_size`` bytes.

    :param offset: byte offset of the payload on ``device``, for messages
    :param cipher: the dump key's cipher, needed for a sealed chunk
    :raises ChecksumError: payload crc mismatch (the stored bytes were damaged)
    :raises CryptoError: a sealed chunk without a cipher, or one that fails
        authentication (a crc that matches and a tag that does not: altered on purpose)
    :raises CorruptDataError: the payload does not decompress to ``raw_size`` bytes
    :raises CodecUnavailableError: the payload's codec library is not installed
    """
    actual = checksum32(payload)
    if actual != header.payload_crc:
        what = "chunk payload checksum mismatch"
        if header.sealed:
            what = f"chunk {header.sequence} payload checksum mismatch (stored bytes damaged)"
        raise ChecksumError(
            what,
            device=device,
            offset=offset,
            field="payload_crc",
            expected=header.payload_crc,
            found=actual,
        )
    if header.sealed:
        payload = _open_sealed(header, payload, cipher, device, offset)
    if header.codec is CompressFlag.NONE:
        return payload
    try:
        return codec_for_flag(header.codec).decompress(payload, header.raw_size)
    except CorruptDataError as err:
        raise CorruptDataError(
            f"chunk payload does not decompress: {err.what}",
            device=device,
            offset=offset,
            field="payload",
            expected=header.raw_size,
            found=err.found,
        ) from err


def _open_sealed(
    header: ChunkHeader,
    sealed: bytes,
    cipher: ChunkCipher | None,
    device: str | None,
    offset: int,
) -> bytes:
    if cipher is None:
        raise CryptoError(
            f"chunk {header.sequence} is encrypted and no key was given",
            device=device,
            offset=offset,
            hint="decrypt with the private key: diskdump decrypt --key PRIVATE.pem",
        )
    return cipher.open(
        header.sequence, header.associated_data(), sealed, offset=offset, device=device
    )


def is_chunk(block: bytes | bytearray | memoryview) -> bool:
    """True if ``block`` starts with the chunk magic; never raises."""
    return bytes(block[: len(CHUNK_MAGIC)]) == CHUNK_MAGIC
