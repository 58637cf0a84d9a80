# SPDX-License-Identifier: GPL-2.0-or-later
"""Encrypted dumps after the reboot: kept sealed by savecore, opened by ``diskdump decrypt``.

What savecore writes for a dump with the ENCRYPTED flag::

    without a private key                    with --decrypt-with PRIVATE.pem
    <host>-<time>/vmcore.encrypted  0600     <host>-<time>/vmcore      0600
                  info.json, info.txt                      dmesg.txt, info.json, info.txt

``vmcore.encrypted`` is the dump as the partition held it (headers,
metadata, sealed chunks; formats/dumpfile.py), so it needs no partition to
be read again: ``diskdump decrypt --key PRIVATE.pem vmcore.encrypted vmcore``
turns it into a normal kdump or ELF vmcore, and ``diskdump info`` shows its
clear facts. There is no dmesg.txt beside it: the kernel log is sealed.

Authentication: the wrong key fails before any chunk is read (the key
envelope names its key id); every chunk is authenticated as it is decoded,
and chunks without PRESENT pages (all zero) are checked explicitly, since
no page read would reach them. Output is atomic (temporary file, 0600,
fsync, rename) so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from diskdump.errors import CryptoError, OutputExistsError
from diskdump.formats.crypt import ALG_RSA_OAEP, ALG_X25519, KeyEnvelope
from diskdump.formats.dumpfile import opened_dump_file
from diskdump.formats.dumpimage import DumpImage
from diskdump.formats.encrypted import SEALED_FIELDS
from diskdump.formats.kdump_write import DUMP_LEVEL_ZERO
from diskdump.savecore.convert import ConvertResult, convert

__all__ = [
    "ENCRYPTED_FORMAT",
    "ENCRYPTED_NAME",
    "SEALED_LOG_NOTE",
    "decrypt_dump_file",
    "encrypted_file_size",
    "encryption_info",
    "verify_unread_chunks",
]

#: file name of a dump savecore keeps encrypted
ENCRYPTED_NAME = "vmcore.encrypted"
#: ``vmcore.format`` in info.json for it
ENCRYPTED_FORMAT = "diskdump-encrypted"
#: info.txt/info.json note of a save without the key
SEALED_LOG_NOTE = (
    "the dump is encrypted and no key was given: kept as vmcore.encrypted, no dmesg.txt "
    "(the kernel log, notes and VMCOREINFO are sealed); "
    "diskdump decrypt --key PRIVATE.pem vmcore.encrypted vmcore opens it"
)
#: the AEAD of chunks and sealed metadata (formats/crypt.py)
CIPHER_NAME = "chacha20-poly1305"
_ALGORITHMS = {ALG_X25519: "x25519-hkdf-sha256", ALG_RSA_OAEP: "rsa-oaep-sha256"}
#: dump level of ELF output: every page written out (see savecore/save.py)
_ELF_LEVEL = 0


def encryption_info(image: DumpImage, *, decrypted: bool) -> dict[str, Any]:
    """The ``encryption`` entry of info.json.

    :param decrypted: the save holds the decrypted vmcore (savecore had the key)
    """
    envelope = KeyEnvelope.unpack(image.metadata.key_envelope)
    return {
        "encrypted": True,
        "saved_decrypted": decrypted,
        "key_id": envelope.key_id.hex(),
        "key_wrap": _ALGORITHMS.get(envelope.algorithm, str(envelope.algorithm)),
        "cipher": CIPHER_NAME,
        "sealed": [*SEALED_FIELDS, "chunk payloads"],
    }


def encrypted_file_size(image: DumpImage) -> int:
    """Bytes of the ``vmcore.encrypted`` file of ``image`` (formats/dumpfile.py)."""
    head = image.header
    last = image.chunks[-1] if image.chunks else None
    end = last.lba + last.header.blocks(head.block_size) if last is not None else head.data_lba
    return (end - head.header_lba + 1) * head.block_size


def verify_unread_chunks(image: DumpImage) -> int:
    """Authenticate the chunks no page read opens (those without PRESENT pages).

    :return: chunks checked
    :raises CryptoError: a chunk's header or tag was altered
    """
    checked = 0
    for ref in image.chunks:
        if ref.header.present_count == 0:
            image.open_chunk(ref)
            checked += 1
    return checked


def decrypt_dump_file(
    source: str,
    out: str,
    private_key: object,
    *,
    format: str = "kdump",
    compress: str = "zlib",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ConvertResult:
    """Turn a ``vmcore.encrypted`` into a normal vmcore, atomically (0600).

    :param private_key: formats/encrypted.read_private_key
    :param format: ``kdump`` (zero pages excluded, as savecore writes) or ``elf``
    :param compress: page codec of a kdump vmcore
    :raises CryptoError: the wrong key, a tampered chunk (named with its offset), or an
        input that is not an encrypted dump
    :raises FormatError: the input is damaged (crc mismatch: a storage error)
    :raises OutputExistsError: ``out`` exists and ``overwrite`` is false
    """
    with opened_dump_file(source, private_key=private_key) as image:
        if not image.encrypted:
            raise CryptoError(
                "not an encrypted dump: nothing to decrypt",
                path=source,
                field="flags",
                expected="ENCRYPTED",
                found=image.header.flags.name or str(int(image.header.flags)),
            )
        if os.path.lexists(out) and not overwrite:
            raise OutputExistsError("output exists", path=out, hint="pass --force")
        verify_unread_chunks(image)
        level = DUMP_LEVEL_ZERO if format == "kdump" else _ELF_LEVEL
        return convert(
            image,
            out,
            format=format,
            compress=compress,
            level=level,
            overwrite=overwrite,
            progress=progress,
        )
