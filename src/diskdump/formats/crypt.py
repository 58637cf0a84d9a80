# SPDX-License-Identifier: GPL-2.0-or-later
"""Encrypted dumps: a fresh symmetric key per dump, stored only wrapped with a public key.

The panic writer draws a random 256-bit *dump key* and encrypts every chunk
payload with ChaCha20-Poly1305 (an AEAD). The dump key is stored only inside a
*key envelope*, wrapped with the administrator's public key; the headers, the
panic string and the sizes stay in clear so savecore can find and manage the
dump without the private key. Modelled on FreeBSD's and illumos' encrypted
kernel dumps (public-key wrapped key, symmetric cipher for the data).

Key envelope (little endian)::

    offset size field
    0      8    magic              b"DDKEYENV"
    8      2    version            1
    10     2    algorithm          1 = X25519 + HKDF-SHA256 + ChaCha20-Poly1305 wrap,
                                   2 = RSA-OAEP-SHA256 (modulus >= 3072 bits)
    12     4    wrapped_size       bytes of wrapped key material that follow
    16     8    key_id             first 8 bytes of SHA-256 of the recipient public key (DER)
    24     32   ephemeral_public   X25519 only (zeros for RSA)
    56     ...  wrapped            X25519: 48 bytes (key + tag); RSA: modulus-size bytes

Chunk sealing: nonce = 4-byte domain tag || 8-byte chunk sequence (unique per
dump key, so never reused); associated data = the chunk's clear header, so a
header moved onto another chunk or altered fails authentication too.

Cost on the dump path is measured by ``bench/dump.py`` (per-page overhead).
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Final

from diskdump.errors import CodecUnavailableError, CorruptDataError, CryptoError

__all__ = [
    "ALG_RSA_OAEP",
    "ALG_X25519",
    "KEY_SIZE",
    "ChunkCipher",
    "KeyEnvelope",
    "load_private_key",
    "load_public_key",
    "new_dump_key",
    "unwrap_dump_key",
]

ENVELOPE_MAGIC: Final = b"DDKEYENV"
ENVELOPE_VERSION: Final = 1
ALG_X25519: Final = 1
ALG_RSA_OAEP: Final = 2
KEY_SIZE: Final = 32  #: ChaCha20-Poly1305 key, bytes
TAG_SIZE: Final = 16  #: Poly1305 tag, bytes
MIN_RSA_BITS: Final = 3072
_HEAD = struct.Struct("<8sHHI8s32s")
_HKDF_INFO: Final = b"diskdump dump-key wrap v1"
_CHUNK_NONCE_TAG: Final = b"DDc1"
_WRAP_NONCE: Final = b"\x00" * 12  # the key-encryption key is fresh per envelope
_MAX_WRAPPED: Final = 4096  # an RSA-32768 modulus; anything larger is corrupt


def _crypto() -> object:
    try:
        import cryptography
    except ImportError:
        raise CodecUnavailableError(
            "encrypted dumps need the cryptography package",
            hint="pip install 'diskdump[crypto]' (Debian: apt install python3-cryptography)",
        ) from None
    return cryptography


@dataclass(frozen=True, slots=True)
class KeyEnvelope:
    """The dump key wrapped for one recipient public key."""

    algorithm: int
    key_id: bytes
    ephemeral_public: bytes
    wrapped: bytes

    SIZE_FIXED = _HEAD.size

    def pack(self) -> bytes:
        head = _HEAD.pack(
            ENVELOPE_MAGIC,
            ENVELOPE_VERSION,
            self.algorithm,
            len(self.wrapped),
            self.key_id,
            self.ephemeral_public,
        )
        return head + self.wrapped

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview) -> KeyEnvelope:
        """Parse an envelope; every size is checked against ``buf``.

        :raises CorruptDataError: bad magic, version, algorithm or sizes
        """
        data = bytes(buf)
        if len(data) < _HEAD.size:
            raise CorruptDataError(
                "key envelope is cut short",
                field="envelope",
                expected=f">= {_HEAD.size} bytes",
                found=len(data),
            )
        magic, version, alg, size, key_id, eph = _HEAD.unpack_from(data)
        if magic != ENVELOPE_MAGIC:
            raise CorruptDataError(
                "bad key envelope magic", field="magic", expected=ENVELOPE_MAGIC, found=magic
            )
        if version != ENVELOPE_VERSION or alg not in (ALG_X25519, ALG_RSA_OAEP):
            raise CorruptDataError(
                "unsupported key envelope",
                field="version/algorithm",
                expected=f"{ENVELOPE_VERSION}/1-2",
                found=f"{version}/{alg}",
            )
        if size > _MAX_WRAPPED or _HEAD.size + size > len(data):
            raise CorruptDataError(
                "wrapped key size out of range",
                field="wrapped_size",
                offset=12,
                expected=f"<= {len(data) - _HEAD.size}",
                found=size,
            )
        return cls(alg, key_id, eph, data[_HEAD.size : _HEAD.size + size])


def load_public_key(pem: bytes, *, path: str | None = None) -> object:
    """Load an X25519 or RSA (>= 3072 bits) public key from PEM.

    :raises CryptoError: not a PEM public key, or an unsupported/too small key
    """
    _crypto()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa, x25519

    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as err:
        raise CryptoError("not a PEM public key", path=path) from err
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise CryptoError(
            "RSA key too small", path=path, expected=f">= {MIN_RSA_BITS} bits", found=key.key_size
        )
    if not isinstance(key, rsa.RSAPublicKey | x25519.X25519PublicKey):
        raise CryptoError(
            "unsupported public key type",
            path=path,
            expected="X25519 or RSA",
            found=type(key).__name__,
        )
    return key


def load_private_key(pem: bytes, *, path: str | None = None) -> object:
    """Load an X25519 or RSA private key from PEM (unencrypted PEM).

    :raises CryptoError: not a PEM private key of a supported type
    """
    _crypto()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa, x25519

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise CryptoError("not an unencrypted PEM private key", path=path) from err
    if not isinstance(key, rsa.RSAPrivateKey | x25519.X25519PrivateKey):
        raise CryptoError(
            "unsupported private key type",
            path=path,
            expected="X25519 or RSA",
            found=type(key).__name__,
        )
    return key


def _key_id(public_key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()[:8]


def _kek(shared: bytes, eph_pub: bytes, key_id: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=eph_pub + key_id, info=_HKDF_INFO)
    return hkdf.derive(shared)


def new_dump_key(public_key: object) -> tuple[bytes, KeyEnvelope]:
    """Draw a fresh dump key and wrap it for ``public_key``.

    :return: the clear dump key (keep it only in memory) and its envelope
    """
    _crypto()
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa, x25519
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    dump_key = os.urandom(KEY_SIZE)
    key_id = _key_id(public_key)
    if isinstance(public_key, rsa.RSAPublicKey):
        oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
        return dump_key, KeyEnvelope(
            ALG_RSA_OAEP, key_id, b"\x00" * 32, public_key.encrypt(dump_key, oaep)
        )
    assert isinstance(public_key, x25519.X25519PublicKey)
    eph = x25519.X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    kek = _kek(eph.exchange(public_key), eph_pub, key_id)
    wrapped = ChaCha20Poly1305(kek).encrypt(_WRAP_NONCE, dump_key, ENVELOPE_MAGIC)
    return dump_key, KeyEnvelope(ALG_X25519, key_id, eph_pub, wrapped)


def unwrap_dump_key(
    envelope: KeyEnvelope, private_key: object, *, path: str | None = None
) -> bytes:
    """Recover the dump key; fails fast with a clear message for the wrong key.

    :raises CryptoError: the private key is not the one the dump was encrypted to,
        or the envelope was tampered with
    """
    _crypto()
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa, x25519
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    public = private_key.public_key()  # type: ignore[attr-defined]
    if _key_id(public) != envelope.key_id:
        raise CryptoError(
            "wrong key: the dump was encrypted to another public key",
            path=path,
            field="key_id",
            expected=envelope.key_id.hex(),
            found=_key_id(public).hex(),
        )
    try:
        if envelope.algorithm == ALG_RSA_OAEP and isinstance(private_key, rsa.RSAPrivateKey):
            oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
            key = private_key.decrypt(envelope.wrapped, oaep)
        elif envelope.algorithm == ALG_X25519 and isinstance(private_key, x25519.X25519PrivateKey):
            eph = x25519.X25519PublicKey.from_public_bytes(envelope.ephemeral_public)
            kek = _kek(private_key.exchange(eph), envelope.ephemeral_public, envelope.key_id)
            key = ChaCha20Poly1305(kek).decrypt(_WRAP_NONCE, envelope.wrapped, ENVELOPE_MAGIC)
        else:
            raise CryptoError(
                "key type does not match the envelope",
                path=path,
                field="algorithm",
                found=envelope.algorithm,
            )
    except (InvalidTag, ValueError) as err:
        raise CryptoError(
            "key envelope does not authenticate (tampered)", path=path, field="wrapped"
        ) from err
    if len(key) != KEY_SIZE:
        raise CryptoError(
            "unwrapped key has the wrong size", path=path, expected=KEY_SIZE, found=len(key)
        )
    return bytes(key)


class ChunkCipher:
    """Seal and open chunk payloads with the dump key (ChaCha20-Poly1305).

    Built once, before the dump starts (the panic path allocates nothing per
    chunk but the ciphertext). ``sequence`` must be unique per chunk of a dump.
    """

    OVERHEAD = TAG_SIZE

    def __init__(self, dump_key: bytes) -> None:
        _crypto()
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        if len(dump_key) != KEY_SIZE:
            raise CryptoError("dump key has the wrong size", expected=KEY_SIZE, found=len(dump_key))
        self._aead = ChaCha20Poly1305(dump_key)

    @staticmethod
    def _nonce(sequence: int) -> bytes:
        return _CHUNK_NONCE_TAG + struct.pack("<Q", sequence)

    def seal(self, sequence: int, header: bytes, payload: bytes | memoryview) -> bytes:
        """Encrypt ``payload``; ``header`` is authenticated but stays in clear."""
        return self._aead.encrypt(self._nonce(sequence), bytes(payload), header)

    def open(
        self,
        sequence: int,
        header: bytes,
        sealed: bytes | memoryview,
        *,
        offset: int | None = None,
        device: str | None = None,
    ) -> bytes:
        """Decrypt and authenticate one chunk.

        :raises CryptoError: the chunk, its header or its position was altered
        """
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(self._nonce(sequence), bytes(sealed), header)
        except InvalidTag:
            raise CryptoError(
                f"chunk {sequence} fails authentication (tampered or corrupt)",
                offset=offset,
                device=device,
            ) from None
