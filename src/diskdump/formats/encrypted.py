# SPDX-License-Identifier: GPL-2.0-or-later
"""Encrypted dumps on the partition: what is sealed, what stays clear, and unlocking.

An encrypted dump (``DumpFlag.ENCRYPTED``) has the layout of a clear one
(formats/dumpheader.py, formats/chunk.py); the dump key (formats/crypt.py)
seals the payloads and part of the metadata::

    dump header          clear   block size, sizes, utsname, crash time, cpus, flags
    metadata (crc32 over what is stored)
      RAM_RUNS            clear   sizes: savecore estimates and checks without the key
      DATA_RUNS           clear
      PANIC_STRING        clear   the one log line triage needs (the issue allows it)
      SOURCE              clear
      KEY_ENVELOPE        clear   the dump key wrapped for the public key; names its key id
      SEALED              sealed  NOTES (PRSTATUS registers, VMCOREINFO), KERNEL_LOG,
                                  VMCOREINFO; associated data: the header's identity
                                  (header_identity) and every clear record above
    chunk header          clear   page states, sizes, crcs (associated data of its seal)
    chunk payload         sealed  compressed pages + 16-byte Poly1305 tag

Why these choices: the kernel log holds whatever the kernel printed (keys in
debug output, user names, addresses), so it is sealed, and only the panic
line stays clear. The notes are sealed too: PRSTATUS carries every CPU's
general registers at the crash, which can hold key material or data being
processed, and VMCOREINFO gives KERNELOFFSET, which defeats KASLR for anyone
who reads the file. Nothing savecore needs to find, size and manage the dump
is sealed: those facts are in the header and the clear records.

The header itself is protected by a crc32 only, but its identity (dump id,
utsname, crash time, cpus, page size, sizes planned, levels: everything but
where the dump lies, its status and its timing, which the writer or savecore
rewrite) is associated data of the sealed metadata, so an edited header fails
authentication when the dump is opened with the key.

Nonces: chunk ``sequence`` (a u32) for chunk payloads; :data:`METADATA_SEQUENCE`
(2**64 - 1, beyond any u32) for the sealed metadata. One dump key is drawn per
device attempt of the writer, so a nonce is never used twice with one key.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, replace
from typing import Final

from diskdump.errors import CorruptDataError, CryptoError, TruncatedError
from diskdump.formats.crypt import (
    ChunkCipher,
    KeyEnvelope,
    load_private_key,
    load_public_key,
    new_dump_key,
    unwrap_dump_key,
)
from diskdump.formats.dumpheader import (
    DumpHeader,
    DumpMetadata,
    RecordType,
    pack_metadata,
    pack_record,
    unpack_metadata,
)

__all__ = [
    "METADATA_SEQUENCE",
    "SEALED_FIELDS",
    "DumpSealer",
    "FileBlocks",
    "header_identity",
    "read_private_key",
    "read_public_key",
    "seal_metadata",
    "unlock_metadata",
]

#: nonce sequence of the sealed metadata; chunk sequences are u32, so it never collides
METADATA_SEQUENCE: Final = (1 << 64) - 1
#: DumpMetadata fields sealed in an encrypted dump (see the module docstring)
SEALED_FIELDS: Final = ("notes", "kernel_log", "vmcoreinfo")
#: type, reserved, length of a metadata record (formats/dumpheader.py)
_RECORD = struct.Struct("<HHI")
_RECORD_ALIGN: Final = 8
#: header_identity: a tag, then dump_id, the integer facts, the packed utsname
_IDENTITY_TAG: Final = b"DDhdrid1"
_IDENTITY = struct.Struct("<8s16sIQQQIiIIQ")


def header_identity(head: DumpHeader) -> bytes:
    """The facts of a dump header that a sealed dump authenticates (not placement,
    status, flags or timing, which change after the metadata is sealed)."""
    fixed = _IDENTITY.pack(
        _IDENTITY_TAG,
        head.dump_id,
        head.page_size,
        head.max_pfn,
        head.phys_base,
        head.crash_time,
        head.nr_cpus,
        head.crashing_cpu,
        head.dump_level,
        head.applied_level,
        head.pages_planned,
    )
    return fixed + head.utsname.pack()


def read_public_key(path: str) -> object:
    """Load the public key (X25519, or RSA >= 3072 bits) an encrypted dump is sealed for.

    :raises CryptoError: unreadable, not a PEM public key, or an unsupported key
    """
    try:
        with open(path, "rb") as file:
            pem = file.read()
    except OSError as err:
        raise CryptoError(f"cannot read the public key: {err.strerror}", path=path) from err
    return load_public_key(pem, path=path)


def read_private_key(path: str) -> object:
    """Load the private key that opens encrypted dumps.

    :raises CryptoError: unreadable, or not an unencrypted PEM private key
    """
    try:
        with open(path, "rb") as file:
            pem = file.read()
    except OSError as err:
        raise CryptoError(f"cannot read the private key: {err.strerror}", path=path) from err
    return load_private_key(pem, path=path)


@dataclass(frozen=True, slots=True)
class DumpSealer:
    """One dump key, ready before crash-dump mode: its cipher and its packed envelope."""

    cipher: ChunkCipher
    envelope: bytes

    @classmethod
    def fresh(cls, public_key: object) -> DumpSealer:
        """Draw a new random dump key and wrap it for ``public_key``."""
        dump_key, envelope = new_dump_key(public_key)
        return cls(ChunkCipher(dump_key), envelope.pack())


def seal_metadata(meta: DumpMetadata, sealer: DumpSealer, identity: bytes) -> bytes:
    """The metadata of an encrypted dump: clear records, then the SEALED record (last).

    :param identity: :func:`header_identity` of the header the dump will carry
    """
    clear = replace(meta, notes=b"", kernel_log="", vmcoreinfo=b"", key_envelope=sealer.envelope)
    secret = DumpMetadata(notes=meta.notes, kernel_log=meta.kernel_log, vmcoreinfo=meta.vmcoreinfo)
    head = pack_metadata(replace(clear, sealed=b""))
    sealed = sealer.cipher.seal(METADATA_SEQUENCE, identity + head, _secret_records(secret))
    return head + pack_record(RecordType.SEALED, sealed)


def _secret_records(secret: DumpMetadata) -> bytes:
    return b"".join(
        pack_record(rtype, payload)
        for rtype, payload in (
            (RecordType.NOTES, secret.notes),
            (RecordType.KERNEL_LOG, secret.kernel_log.encode()),
            (RecordType.VMCOREINFO, secret.vmcoreinfo),
        )
    )


def unlock_metadata(
    raw: bytes,
    meta: DumpMetadata,
    private_key: object,
    head: DumpHeader,
    *,
    name: str | None = None,
    offset: int = 0,
) -> tuple[ChunkCipher, DumpMetadata]:
    """Unwrap the dump key and open the sealed records.

    Fails fast on the wrong key: the envelope names the key id, checked
    before any chunk is read.

    :param raw: the metadata bytes as stored (``meta_size`` bytes)
    :param meta: ``raw`` already unpacked
    :param head: the dump header (its identity is authenticated with the metadata)
    :param offset: byte offset of the metadata on ``name``, for messages
    :return: the dump's chunk cipher and the metadata with the sealed fields filled in
    :raises CorruptDataError: no key envelope or sealed record, or SEALED is not last
    :raises CryptoError: the wrong private key, or tampered metadata
    """
    if not meta.key_envelope or not meta.sealed:
        raise CorruptDataError(
            "encrypted dump has no key envelope or sealed metadata",
            device=name,
            offset=offset,
            field="KEY_ENVELOPE/SEALED",
        )
    envelope = KeyEnvelope.unpack(meta.key_envelope)
    cipher = ChunkCipher(unwrap_dump_key(envelope, private_key, path=name))
    size = _RECORD.size + len(meta.sealed)
    size += -size % _RECORD_ALIGN
    start = len(raw) - size
    if start < 0 or _RECORD.unpack_from(raw, start)[0] != RecordType.SEALED:
        raise CorruptDataError(
            "sealed metadata record is not the last record",
            device=name,
            offset=offset + max(start, 0),
            field="SEALED",
        )
    try:
        secret_raw = cipher.open(
            METADATA_SEQUENCE, header_identity(head) + raw[:start], meta.sealed
        )
    except CryptoError:
        raise CryptoError(
            "dump header or metadata fails authentication (tampered)",
            device=name,
            offset=offset + start,
            field="SEALED",
        ) from None
    secret = unpack_metadata(secret_raw, device=name, offset=offset + start)
    values = {name: getattr(secret, name) for name in SEALED_FIELDS}
    return cipher, replace(meta, **values)


@dataclass(frozen=True, slots=True)
class _Geometry:
    block_size: int
    block_count: int


class FileBlocks:
    """A file read as blocks (positional reads): a saved ``vmcore.encrypted`` image.

    Satisfies formats.dumpimage.BlockSource.

    :param path: the file
    :param block_size: bytes per block (the dump's block size)
    :raises OSError: the file cannot be opened
    """

    def __init__(self, path: str, block_size: int) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        size = os.fstat(self._fd).st_size
        self.geometry = _Geometry(block_size, size // block_size)

    def read(self, lba: int, buffer: bytearray | memoryview) -> None:
        """Fill ``buffer`` from block ``lba``.

        :raises TruncatedError: the read runs past the end of the file
        """
        offset = lba * self.geometry.block_size
        data = os.pread(self._fd, len(buffer), offset)
        if len(data) != len(buffer):
            raise TruncatedError(
                "read past the end of the dump image",
                path=self.path,
                offset=offset,
                expected=len(buffer),
                found=len(data),
            )
        buffer[:] = data

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileBlocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
