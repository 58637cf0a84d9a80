# SPDX-License-Identifier: GPL-2.0-or-later
"""Fixtures of the encrypted-dump tests: key pairs (X25519, RSA-3072) as PEM files, tampering."""

from __future__ import annotations

import functools
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, x25519

from diskdump.formats.chunk import CHUNK_HEADER_SIZE
from diskdump.formats.partition import PartitionLabel

#: RSA modulus the issue asks for at least
RSA_BITS = 3072
#: offsets inside a chunk header (formats/chunk.py layout)
PAYLOAD_CRC_OFFSET = 56
HEADER_CRC_OFFSET = 60
STATE_MAP_OFFSET = 64
START_PFN_OFFSET = 32
PAGE_COUNT_OFFSET = 40
PAYLOAD_SIZE_OFFSET = 48


@dataclass(frozen=True)
class KeyPair:
    """A private key object and both halves as PEM files."""

    kind: str
    private: object
    private_pem: Path
    public_pem: Path

    @property
    def public(self) -> object:
        return self.private.public_key()  # type: ignore[attr-defined]


@functools.cache
def _private(kind: str, n: int) -> object:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return x25519.X25519PrivateKey.generate()


def make_pair(directory: Path, kind: str, n: int = 0) -> KeyPair:
    """Key pair ``n`` of ``kind`` (generated once per process), written under ``directory``."""
    key = _private(kind, n)
    priv = directory / f"{kind}{n}.pem"
    pub = directory / f"{kind}{n}.pub.pem"
    priv.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub.write_bytes(
        key.public_key().public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return KeyPair(kind, key, priv, pub)


@pytest.fixture(params=["x25519", "rsa"])
def keys(request: pytest.FixtureRequest, tmp_path: Path) -> KeyPair:
    """One key pair of each kind the issue names."""
    return make_pair(tmp_path, request.param)


@pytest.fixture
def x25519_keys(tmp_path: Path) -> KeyPair:
    return make_pair(tmp_path, "x25519")


@pytest.fixture
def other_keys(tmp_path: Path) -> KeyPair:
    """A second X25519 pair: the wrong key."""
    return make_pair(tmp_path, "x25519", 1)


def fix_chunk_crcs(buf: bytearray, chunk_offset: int, *, payload: bool, header: bool) -> None:
    """Recompute a chunk's payload crc and/or header crc in place (a deliberate tamperer)."""
    start = chunk_offset
    if payload:
        (size,) = struct.unpack_from("<I", buf, start + PAYLOAD_SIZE_OFFSET)
        body = bytes(buf[start + CHUNK_HEADER_SIZE : start + CHUNK_HEADER_SIZE + size])
        struct.pack_into("<I", buf, start + PAYLOAD_CRC_OFFSET, zlib.crc32(body))
    if header:
        (pages,) = struct.unpack_from("<I", buf, start + PAGE_COUNT_OFFSET)
        smap = bytes(buf[start + STATE_MAP_OFFSET : start + STATE_MAP_OFFSET + -(-pages // 4)])
        fixed = bytes(buf[start : start + PAYLOAD_CRC_OFFSET + 4])
        struct.pack_into("<I", buf, start + HEADER_CRC_OFFSET, zlib.crc32(smap, zlib.crc32(fixed)))


def dump_to_image(
    image: Path, vmcore: Path, keys: KeyPair | None, size: int = 64 << 20
) -> PartitionLabel:
    """Format ``image`` and dump ``vmcore`` onto it, encrypted to ``keys`` when given."""
    from diskdump.cli.main import main
    from tests.savecore.conftest import make_image

    label = make_image(image, size)
    args = [
        "dump",
        "--unarmed",
        "--no-mlock",
        "-q",
        "--device",
        str(image),
        "--source",
        str(vmcore),
    ]
    if keys is not None:
        args += ["--encrypt-to", str(keys.public_pem)]
    assert main(args) == 0
    return label
