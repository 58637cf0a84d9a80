# SPDX-License-Identifier: GPL-2.0-or-later
"""Encrypted dumps on in-memory partitions: the real writer, the real reader, both key kinds.

Every test writes a real dump of the synthetic kernel with
:func:`diskdump.panic.writer.write_dump` and reads it back with
:func:`diskdump.formats.dumpimage.open_dump`; tampering edits the device's
bytes (and, for a deliberate tamperer, fixes the crc32s too).
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import pytest

from diskdump.devices.base import BlockIO, Op
from diskdump.devices.fault import FaultDevice, FaultPlan
from diskdump.devices.memory import MemoryDevice
from diskdump.errors import (
    ChecksumError,
    CorruptDataError,
    CryptoError,
    TruncatedError,
)
from diskdump.formats.chunk import CHUNK_HEADER_SIZE, ChunkHeader, PageState
from diskdump.formats.codecs import CompressFlag
from diskdump.formats.crypt import KeyEnvelope
from diskdump.formats.dumpheader import (
    HEADER_SIZE,
    DumpFlag,
    DumpHeader,
    header_block,
    pack_metadata,
    unpack_metadata,
)
from diskdump.formats.dumpimage import DumpImage, open_dump, validate_dump
from diskdump.formats.encrypted import FileBlocks, read_private_key, read_public_key
from diskdump.formats.partition import PartitionLabel
from diskdump.panic.writer import write_dump
from diskdump.savecore.encrypted import verify_unread_chunks
from tests.crypt.conftest import (
    START_PFN_OFFSET,
    STATE_MAP_OFFSET,
    KeyPair,
    fix_chunk_crcs,
)
from tests.panic.helpers import assert_pages_match, formatted, settings, small_source, state

#: bytes of a page searched for in the device (a whole page: no accidental match)
PAGE = 4096


def _dump(
    keys: KeyPair | None, *, codec: str = "none", mib: int = 2
) -> tuple[MemoryDevice, PartitionLabel]:
    dev, label = formatted(blocks=3000)
    public = keys.public if keys is not None else None
    result = write_dump(small_source(mib), state(), [dev], settings(codec=codec, public_key=public))
    assert result.complete
    assert bool(result.header.flags & DumpFlag.ENCRYPTED) == (keys is not None)
    dev.reopen()
    return dev, label


def _open(dev: MemoryDevice, label: PartitionLabel, key: object | None = None) -> DumpImage:
    return open_dump(BlockIO(dev), label.reserve_blocks, name=dev.name, private_key=key)


def _present_chunk(image: DumpImage, *, with_pages: bool = True) -> tuple[int, ChunkHeader, int]:
    """(byte offset, header, chunk index) of a chunk with (or without) PRESENT pages."""
    for index, ref in enumerate(image.chunks):
        if (ref.header.present_count > 0) == with_pages:
            return ref.lba * image.header.block_size, ref.header, index
    raise AssertionError("no such chunk")


def _mixed_chunk(image: DumpImage) -> tuple[int, ChunkHeader, int]:
    """A chunk holding both PRESENT and ZERO pages."""
    for index, ref in enumerate(image.chunks):
        if PageState.ZERO in ref.header.states and ref.header.present_count > 0:
            return ref.lba * image.header.block_size, ref.header, index
    raise AssertionError("no chunk with PRESENT and ZERO pages")


def _present_page(image: DumpImage) -> tuple[int, bytes]:
    """A PRESENT pfn that is not all one byte value, and its contents in the source."""
    src = small_source(2)
    for ref in image.chunks:
        for pfn, end in ref.header.iter_runs((PageState.PRESENT,)):
            for p in range(pfn, end):
                page = src.read_pages(p, 1)
                if len(set(page)) > 16:
                    return p, page
    raise AssertionError("no distinctive page")


def test_round_trip_with_either_key_kind(keys: KeyPair) -> None:
    dev, label = _dump(keys, codec="zstd")
    locked = _open(dev, label)
    assert locked.encrypted and locked.locked
    assert locked.metadata.panic_string.startswith("Kernel panic - not syncing")  # clear
    assert locked.notes == b"" and locked.metadata.kernel_log == ""  # sealed
    assert KeyEnvelope.unpack(locked.metadata.key_envelope).algorithm == (
        2 if keys.kind == "rsa" else 1
    )
    pfn, _ = _present_page(locked)
    with pytest.raises(CryptoError, match=r"^chunk \d+ is encrypted and no key was given"):
        locked.read_pages(pfn, 1)
    image = _open(dev, label, keys.private)
    assert not image.locked
    assert image.notes == state().notes and image.metadata.kernel_log == state().kernel_log
    assert image.metadata.vmcoreinfo == state().vmcoreinfo
    assert assert_pages_match(image, small_source(2)) > 500
    validate_dump(image)


def test_no_clear_page_or_log_bytes_on_the_device(x25519_keys: KeyPair) -> None:
    clear_dev, clear_label = _dump(None)
    pfn, page = _present_page(_open(clear_dev, clear_label))
    log_line = state().kernel_log.splitlines()[3].encode()
    assert len(log_line) > 20
    # the control: codec none stores the page verbatim in a clear dump
    assert page in clear_dev.data and log_line in clear_dev.data
    dev, label = _dump(x25519_keys)
    assert page not in dev.data and page[:64] not in dev.data
    assert log_line not in dev.data
    assert _open(dev, label, x25519_keys.private).read_pages(pfn, 1) == page


class _CountingBlocks:
    """A BlockSource that records which blocks were read."""

    def __init__(self, dev: MemoryDevice) -> None:
        self.io = BlockIO(dev)
        self.geometry = self.io.geometry
        self.lbas: list[int] = []

    def read(self, lba: int, buffer: bytearray | memoryview) -> None:
        self.lbas.append(lba)
        self.io.read(lba, buffer)


def test_wrong_key_fails_before_any_chunk_is_read(
    x25519_keys: KeyPair, other_keys: KeyPair
) -> None:
    dev, label = _dump(x25519_keys)
    head = _open(dev, label).header
    counting = _CountingBlocks(dev)
    with pytest.raises(
        CryptoError,
        match=r"^wrong key: the dump was encrypted to another public key in field key_id",
    ):
        open_dump(counting, label.reserve_blocks, name="mem", private_key=other_keys.private)
    # the two headers and the metadata only: no chunk was read
    assert all(lba < head.data_lba or lba == head.trailer_lba for lba in counting.lbas)


def _tampered(
    dev: MemoryDevice, offset: int, *, fix_payload: bool, fix_header: bool, mask: int = 0x01
) -> MemoryDevice:
    data = bytearray(dev.data)
    data[offset] ^= mask
    chunk = offset - offset % 4096
    while bytes(data[chunk : chunk + 8]) != b"DDCHUNK1":
        chunk -= 4096
    fix_chunk_crcs(data, chunk, payload=fix_payload, header=fix_header)
    return MemoryDevice(len(data) // 4096, name="tampered", data=bytes(data))


@pytest.mark.parametrize(
    ("where", "fix_payload", "fix_header", "error", "pattern"),
    [
        (
            "payload",
            True,
            True,
            CryptoError,
            r"^chunk (\d+) fails authentication \(tampered or corrupt\) at offset 0x",
        ),
        ("tag", True, True, CryptoError, r"^chunk (\d+) fails authentication"),
        ("start_pfn", False, True, CryptoError, r"^chunk (\d+) fails authentication"),
        ("state map", False, True, CryptoError, r"^chunk (\d+) fails authentication"),
        (
            "fill",
            False,
            False,
            CorruptDataError,
            r"^chunk (\d+) zero fill holds data \(altered\) in field zero fill at offset 0x",
        ),
        (
            "payload",
            False,
            False,
            ChecksumError,
            r"^chunk (\d+) payload checksum mismatch \(stored bytes damaged\) "
            r"in field payload_crc at offset 0x",
        ),
        (
            "start_pfn",
            False,
            False,
            ChecksumError,
            r"^chunk header checksum mismatch in field header_crc at offset 0x",
        ),
    ],
)
def test_a_changed_byte_in_a_chunk_is_reported(
    x25519_keys: KeyPair,
    where: str,
    fix_payload: bool,
    fix_header: bool,
    error: type[Exception],
    pattern: str,
) -> None:
    dev, label = _dump(x25519_keys, codec="zstd")
    image = _open(dev, label)
    chunk_at, head, index = _mixed_chunk(image)
    zero_page = head.states.index(PageState.ZERO)
    offset, mask = {
        "payload": (CHUNK_HEADER_SIZE + head.payload_size // 2, 0x01),
        "tag": (CHUNK_HEADER_SIZE + head.payload_size - 3, 0x01),
        # far away in pfn space: no overlap, so only the seal can tell
        "start_pfn": (START_PFN_OFFSET + 4, 0x01),
        # a ZERO page becomes EXCLUDED: the counts still agree, only the seal can tell
        "state map": (STATE_MAP_OFFSET + zero_page // 4, 0b10 << (2 * (zero_page % 4))),
        # the zero fill between the state map and the payload: no crc covers it
        "fill": (STATE_MAP_OFFSET + head.page_count // 4 + 8, 0x01),
    }[where]
    bad = _tampered(
        dev, chunk_at + offset, fix_payload=fix_payload, fix_header=fix_header, mask=mask
    )
    with pytest.raises(error, match=pattern) as info:
        validate_dump(_open(bad, label, x25519_keys.private))
    if re.match(r"^chunk \d+ ", str(info.value)):
        assert str(info.value).startswith(f"chunk {index} ")
    assert f"on {bad.name}" in str(info.value)


def test_a_chunk_without_present_pages_is_authenticated_too(x25519_keys: KeyPair) -> None:
    # zero pages only: no payload bytes, yet the seal's tag covers the header
    dev, label = formatted(blocks=3000)
    src = small_source(2)
    image = None
    result = write_dump(src, state(), [dev], settings(codec="zstd", public_key=x25519_keys.public))
    dev.reopen()
    image = _open(dev, label)
    try:
        chunk_at, head, index = _present_chunk(image, with_pages=False)
    except AssertionError:
        pytest.fail(
            f"the synthetic kernel has no all-zero window ({result.header.chunk_count} chunks)"
        )
    assert head.payload_size == 16  # the tag alone
    assert verify_unread_chunks(_open(dev, label, x25519_keys.private)) >= 1
    # the first page: ZERO becomes EXCLUDED (counts still agree)
    bad = _tampered(dev, chunk_at + STATE_MAP_OFFSET, fix_payload=False, fix_header=True, mask=0b10)
    with pytest.raises(CryptoError, match=rf"^chunk {index} fails authentication"):
        verify_unread_chunks(_open(bad, label, x25519_keys.private))


def _rewrite_metadata(dev: MemoryDevice, label: PartitionLabel, edit: object) -> MemoryDevice:
    """Apply ``edit(bytearray)`` to the stored metadata and fix meta_crc in both headers."""
    image = _open(dev, label)
    head = image.header
    bs = head.block_size
    data = bytearray(dev.data)
    start = head.meta_lba * bs
    meta = bytearray(data[start : start + head.meta_size])
    edit(meta)  # type: ignore[operator]
    assert head.meta_lba * bs + len(meta) <= head.data_lba * bs
    data[start : start + len(meta)] = meta
    new = head.finished(meta_crc=zlib.crc32(bytes(meta)), meta_size=len(meta))
    for lba in (head.header_lba, head.trailer_lba):
        data[lba * bs : (lba + 1) * bs] = header_block(new)
    return MemoryDevice(len(data) // bs, name="tampered", data=bytes(data))


def test_tampered_metadata_fails_authentication(x25519_keys: KeyPair) -> None:
    dev, label = _dump(x25519_keys)

    def flip_panic_string(meta: bytearray) -> None:
        at = bytes(meta).index(b"Kernel panic")
        meta[at] ^= 0x20  # "kernel panic": the clear record is associated data

    def flip_sealed(meta: bytearray) -> None:
        meta[-40] ^= 0x01  # inside the SEALED record, the last one

    for edit in (flip_panic_string, flip_sealed):
        bad = _rewrite_metadata(dev, label, edit)
        assert _open(bad, label).locked  # without the key nothing checks the seal
        with pytest.raises(
            CryptoError,
            match=r"^dump header or metadata fails authentication \(tampered\) "
            r"in field SEALED at offset 0x",
        ):
            _open(bad, label, x25519_keys.private)


def test_metadata_without_envelope_or_sealed_record_last(x25519_keys: KeyPair) -> None:
    dev, label = _dump(x25519_keys)
    image = _open(dev, label)

    def drop_records(meta: bytearray) -> None:
        clear = replace(image.metadata, key_envelope=b"", sealed=b"")
        meta[:] = pack_metadata(clear)

    with pytest.raises(
        CorruptDataError, match=r"^encrypted dump has no key envelope or sealed metadata"
    ):
        _open(_rewrite_metadata(dev, label, drop_records), label, x25519_keys.private)

    def sealed_not_last(meta: bytearray) -> None:
        meta += struct.pack("<HHI", 7, 0, 0)  # an empty SOURCE record after SEALED

    with pytest.raises(CorruptDataError, match=r"^sealed metadata record is not the last record"):
        _open(_rewrite_metadata(dev, label, sealed_not_last), label, x25519_keys.private)
    assert unpack_metadata(pack_metadata(image.metadata)) == image.metadata


def test_a_clear_chunk_in_an_encrypted_dump_is_refused(x25519_keys: KeyPair) -> None:
    dev, label = _dump(x25519_keys, codec="zstd")
    image = _open(dev, label)
    # a compressed chunk: an uncompressed one fails its size check first
    ref = next(r for r in image.chunks if r.header.codec is not CompressFlag.NONE)
    chunk_at, head = ref.lba * image.header.block_size, ref.header
    data = bytearray(dev.data)
    data[chunk_at : chunk_at + CHUNK_HEADER_SIZE] = replace(head, sealed=False).pack()
    bad = MemoryDevice(len(data) // 4096, name="tampered", data=bytes(data))
    with pytest.raises(
        CorruptDataError, match=r"^chunk sealing disagrees with the dump header's ENCRYPTED flag"
    ):
        _open(bad, label, x25519_keys.private)


def test_sealed_chunk_shorter_than_its_tag_is_refused() -> None:
    head = ChunkHeader(0x20, 0, bytes(16), 0, 4, 1, 8, 4096, 0, bytes([1, 2, 2, 2]), True)  # type: ignore[arg-type]
    with pytest.raises(
        CorruptDataError,
        match=r"^sealed chunk payload is shorter than its tag in field payload_size",
    ):
        ChunkHeader.unpack(head.pack(), page_size=4096)


def test_each_device_attempt_gets_its_own_dump_key(x25519_keys: KeyPair) -> None:
    # the first device fails after its headers: the second rewrites every chunk sequence
    first, label1 = formatted(blocks=3000, name="first")
    second, label = formatted(blocks=3000, name="second")
    # the leading header (lba R) and the metadata go out; the first chunk write fails
    fail = FaultPlan(fail_at_lba=label1.reserve_blocks + 3, fail_op=Op.WRITE)
    failing = FaultDevice(first, fail)
    result = write_dump(
        small_source(2), state(), [failing, second], settings(public_key=x25519_keys.public)
    )
    assert result.device == "second" and result.header.flags & DumpFlag.FALLBACK
    second.reopen()
    first.reopen()
    env2 = _open(second, label).metadata.key_envelope
    env1 = _open(first, label).metadata.key_envelope if _has_metadata(first, label) else b""
    assert env2 and env1 != env2
    assert assert_pages_match(_open(second, label, x25519_keys.private), small_source(2)) > 500


def _has_metadata(dev: MemoryDevice, label: PartitionLabel) -> bool:
    try:
        _open(dev, label)
    except Exception:
        return False
    return True


def test_key_loading_errors(tmp_path: Path, x25519_keys: KeyPair) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    with pytest.raises(
        CryptoError,
        match=r"^cannot read the public key: No such file or directory on .*nothing\.pem",
    ):
        read_public_key(str(tmp_path / "nothing.pem"))
    with pytest.raises(CryptoError, match=r"^cannot read the private key: No such file"):
        read_private_key(str(tmp_path / "nothing.pem"))
    small = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    path = tmp_path / "small.pem"
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    path.write_bytes(small.public_bytes(serialization.Encoding.PEM, spki))
    with pytest.raises(
        CryptoError, match=r"^RSA key too small on .*: expected '>= 3072 bits', got 0x800"
    ):
        read_public_key(str(path))
    with pytest.raises(CryptoError, match=r"^not an unencrypted PEM private key"):
        read_private_key(str(x25519_keys.public_pem))


def test_file_blocks_refuse_a_read_past_the_end(tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_bytes(bytes(HEADER_SIZE * 5))
    with FileBlocks(str(path), 4096) as blocks:
        assert blocks.geometry.block_count == 1
        with pytest.raises(
            TruncatedError, match=r"^read past the end of the dump image at offset 0x1000"
        ):
            blocks.read(1, bytearray(4096))
    assert DumpHeader.SIZE == HEADER_SIZE


@pytest.mark.parametrize("codec", list(CompressFlag))
def test_sealed_chunk_header_round_trip(codec: CompressFlag) -> None:
    states = bytes([PageState.PRESENT, PageState.ZERO, PageState.EXCLUDED, PageState.PRESENT])
    raw = 2 * PAGE
    payload = raw + 16 if codec is CompressFlag.NONE else 777
    head = ChunkHeader(codec, 7, bytes(range(16)), 0x1234, 4, 2, payload, raw, 0xDEAD, states, True)
    back = ChunkHeader.unpack(head.pack(), page_size=PAGE)
    assert back == head and back.sealed
    assert back.associated_data() == replace(head, payload_crc=0).pack()
    assert (
        ChunkHeader.unpack(
            replace(
                head, sealed=False, payload_size=raw if codec is CompressFlag.NONE else payload
            ).pack(),
            page_size=PAGE,
        ).sealed
        is False
    )


def test_metadata_with_envelope_and_sealed_records_round_trip() -> None:
    meta = replace(state().metadata(small_source(1)), key_envelope=b"E" * 104, sealed=b"S" * 99)
    packed = pack_metadata(meta)
    assert unpack_metadata(packed) == meta
    # a clear dump's metadata has neither record: its bytes are what they were
    clear = replace(meta, key_envelope=b"", sealed=b"")
    assert pack_metadata(clear) == packed[: len(pack_metadata(clear))]
    assert len(pack_metadata(clear)) == len(packed) - (8 + 104) - (8 + 104)


def test_a_cut_short_encrypted_dump_saved_as_a_file_keeps_what_was_written(
    tmp_path: Path, x25519_keys: KeyPair
) -> None:
    from diskdump.formats.dumpfile import opened_dump_file, write_dump_file
    from diskdump.formats.dumpheader import DumpStatus

    src = small_source(2)
    whole = _open(*_dump(x25519_keys, codec="zstd")).header
    inner, label = formatted(blocks=3000)
    # power lost half-way through the chunks: no trailer, header INCOMPLETE
    cut = (whole.data_end_lba + whole.data_lba) // 2 - whole.header_lba
    dev = FaultDevice(inner, FaultPlan(power_cut_after_blocks=cut))
    write_dump(src, state(), [dev], settings(codec="zstd", public_key=x25519_keys.public))
    inner.reopen()
    image = _open(inner, label)
    assert image.incomplete and image.header.status is DumpStatus.INCOMPLETE
    assert len(image.chunks) > 0
    path = tmp_path / "vmcore.encrypted"
    with path.open("wb") as out:
        size = write_dump_file(image, out)
    assert size == path.stat().st_size
    with opened_dump_file(str(path)) as locked:
        assert locked.locked and locked.incomplete
        assert locked.header.header_lba == 0 and len(locked.chunks) == len(image.chunks)
    with opened_dump_file(str(path), private_key=x25519_keys.private) as opened:
        assert opened.pages_held == image.pages_held > 0
        assert assert_pages_match(opened, src) == opened.pages_held
        assert opened.metadata.kernel_log == state().kernel_log
    with (
        pytest.raises(CryptoError, match=r"^wrong key"),
        opened_dump_file(str(path), private_key=_other_private()),
    ):
        pass  # pragma: no cover


def _other_private() -> object:
    from cryptography.hazmat.primitives.asymmetric import x25519

    return x25519.X25519PrivateKey.generate()


def test_a_partition_image_is_not_a_dump_file(tmp_path: Path) -> None:
    from diskdump.errors import NotThisFormatError
    from diskdump.formats.dumpfile import is_dump_file, opened_dump_file

    dev, label = _dump(None)
    raw = bytes(dev.data[label.reserve_blocks * 4096 :])  # the header is at its block 0 ...
    path = tmp_path / "image"
    path.write_bytes(raw)
    assert is_dump_file(str(path)) and not is_dump_file(str(tmp_path / "missing"))
    # ... but it names lba 256 as its own place: a partition's, not a saved file's
    with (
        pytest.raises(
            NotThisFormatError,
            match=r"^a dump partition image, not a saved dump file in field header_lba",
        ),
        opened_dump_file(str(path)),
    ):
        pass
    path.write_bytes(raw[:100])
    with (
        pytest.raises(TruncatedError, match=r"^dump file is cut short"),
        opened_dump_file(str(path)),
    ):
        pass  # pragma: no cover


def test_an_edited_header_fails_authentication_with_the_key(x25519_keys: KeyPair) -> None:
    dev, label = _dump(x25519_keys)
    head = _open(dev, label).header
    edited = head.finished(crash_time=head.crash_time + 3600, nr_cpus=head.nr_cpus + 1)
    data = bytearray(dev.data)
    bs = head.block_size
    for lba in (head.header_lba, head.trailer_lba):  # both copies, crc32 recomputed
        data[lba * bs : (lba + 1) * bs] = header_block(edited)
    bad = MemoryDevice(len(data) // bs, name="tampered", data=bytes(data))
    assert _open(bad, label).header.nr_cpus == head.nr_cpus + 1  # clear: readable, unchecked
    with pytest.raises(CryptoError, match=r"^dump header or metadata fails authentication"):
        _open(bad, label, x25519_keys.private)
