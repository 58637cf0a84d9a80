# SPDX-License-Identifier: GPL-2.0-or-later
"""Dump-key wrapping and chunk sealing (formats/crypt.py)."""

from __future__ import annotations

import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, x25519
from hypothesis import given
from hypothesis import strategies as st

from diskdump.errors import CorruptDataError, CryptoError
from diskdump.formats.crypt import (
    ALG_RSA_OAEP,
    ALG_X25519,
    ChunkCipher,
    KeyEnvelope,
    load_private_key,
    load_public_key,
    new_dump_key,
    unwrap_dump_key,
)


def _pems(kind: str, bits: int = 3072) -> tuple[bytes, bytes]:
    key: rsa.RSAPrivateKey | x25519.X25519PrivateKey
    key = (
        rsa.generate_private_key(65537, bits)
        if kind == "rsa"
        else x25519.X25519PrivateKey.generate()
    )
    priv = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return priv, pub


@pytest.fixture(scope="module")
def x25519_keys() -> tuple[bytes, bytes]:
    return _pems("x25519")


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[bytes, bytes]:
    return _pems("rsa")


@pytest.mark.parametrize("kind", ["x25519", "rsa"])
def test_wrap_unwrap_round_trip(
    kind: str, x25519_keys: tuple[bytes, bytes], rsa_keys: tuple[bytes, bytes]
) -> None:
    priv, pub = x25519_keys if kind == "x25519" else rsa_keys
    key, envelope = new_dump_key(load_public_key(pub))
    parsed = KeyEnvelope.unpack(envelope.pack())
    assert parsed == envelope
    assert parsed.algorithm == (ALG_X25519 if kind == "x25519" else ALG_RSA_OAEP)
    assert unwrap_dump_key(parsed, load_private_key(priv)) == key


def test_each_dump_gets_a_fresh_key(x25519_keys: tuple[bytes, bytes]) -> None:
    pub = load_public_key(x25519_keys[1])
    assert new_dump_key(pub)[0] != new_dump_key(pub)[0]


def test_wrong_key_fails_fast_naming_both_key_ids(x25519_keys: tuple[bytes, bytes]) -> None:
    _, envelope = new_dump_key(load_public_key(x25519_keys[1]))
    other_priv, _ = _pems("x25519")
    with pytest.raises(CryptoError, match=r"wrong key.*field key_id.*expected '[0-9a-f]{16}'"):
        unwrap_dump_key(envelope, load_private_key(other_priv), path="k.pem")


def test_tampered_envelope_is_detected(x25519_keys: tuple[bytes, bytes]) -> None:
    priv, pub = x25519_keys
    _, envelope = new_dump_key(load_public_key(pub))
    raw = bytearray(envelope.pack())
    raw[-1] ^= 1
    with pytest.raises(CryptoError, match="does not authenticate"):
        unwrap_dump_key(KeyEnvelope.unpack(raw), load_private_key(priv))


def test_small_rsa_key_is_refused() -> None:
    _, pub = _pems("rsa", 2048)
    with pytest.raises(CryptoError, match=r"RSA key too small.*expected '>= 3072 bits', got 0x800"):
        load_public_key(pub, path="small.pem")


def test_not_a_pem() -> None:
    with pytest.raises(CryptoError, match=r"not a PEM public key on x\.pem"):
        load_public_key(b"hello", path="x.pem")
    with pytest.raises(CryptoError, match="not an unencrypted PEM private key"):
        load_private_key(b"hello")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:10], "key envelope is cut short"),
        (lambda b: b"XXXXXXXX" + b[8:], "bad key envelope magic"),
        (lambda b: b[:10] + b"\x07\x00" + b[12:], "unsupported key envelope"),
        (lambda b: b[:12] + b"\xff\xff\x00\x00" + b[16:], "wrapped key size out of range"),
    ],
)
def test_corrupt_envelopes(mutate: object, message: str, x25519_keys: tuple[bytes, bytes]) -> None:
    _, envelope = new_dump_key(load_public_key(x25519_keys[1]))
    with pytest.raises(CorruptDataError, match=re.escape(message)):
        KeyEnvelope.unpack(mutate(envelope.pack()))  # type: ignore[operator]


@given(st.binary(max_size=4096), st.binary(max_size=64), st.integers(0, 2**64 - 1))
def test_chunk_seal_open_round_trip(payload: bytes, header: bytes, seq: int) -> None:
    cipher = ChunkCipher(b"k" * 32)
    sealed = cipher.seal(seq, header, payload)
    assert len(sealed) == len(payload) + ChunkCipher.OVERHEAD
    assert cipher.open(seq, header, sealed) == payload


@pytest.mark.parametrize("where", ["payload", "header", "sequence"])
def test_any_change_to_a_chunk_is_detected(where: str) -> None:
    cipher = ChunkCipher(bytes(range(32)))
    header, payload = b"chunk-header", bytes(4096)
    sealed = bytearray(cipher.seal(7, header, payload))
    seq = 7
    if where == "payload":
        sealed[100] ^= 0x40
    elif where == "header":
        header = b"chunk-headeR"
    else:
        seq = 8
    with pytest.raises(CryptoError, match=rf"chunk {seq} fails authentication.*0x2000 on /dev/x"):
        cipher.open(seq, header, sealed, offset=0x2000, device="/dev/x")
