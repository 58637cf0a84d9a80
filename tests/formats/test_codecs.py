# SPDX-License-Identifier: GPL-2.0-or-later
"""Page codecs: round trips, makedumpfile's stream formats, errors, missing libraries, threads."""

from __future__ import annotations

import random
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskdump.errors import CodecUnavailableError, ConfigError, CorruptDataError
from diskdump.formats.codecs import (
    CODEC_NAMES,
    CompressFlag,
    codec_for_flag,
    get_codec,
)

PAGE = 4096
COMPRESSING = [name for name in CODEC_NAMES if name != "none"]


def text_page(seed: int = 0) -> bytes:
    rng = random.Random(seed)
    word = bytes(rng.randrange(32, 127) for _ in range(17))
    return (word * 300)[:PAGE]


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_round_trip(name: str) -> None:
    codec = get_codec(name)
    page = text_page()
    packed = codec.compress(page)
    if name == "none":
        assert packed is None
        return
    assert packed is not None and len(packed) < PAGE
    assert codec.decompress(packed, PAGE) == page
    assert codec_for_flag(codec.flag).decompress(packed, PAGE) == page


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_incompressible_page_is_stored_raw(name: str) -> None:
    page = random.Random(5).randbytes(PAGE)
    assert get_codec(name).compress(page) is None


def test_flags_match_makedumpfile() -> None:
    # values of DUMP_DH_COMPRESSED_* in makedumpfile diskdump_mod.h
    assert [get_codec(n).flag for n in ("zlib", "lzo", "snappy", "zstd")] == [1, 2, 4, 0x20]
    assert get_codec("none").flag == CompressFlag.NONE


def test_zlib_is_level_1_container() -> None:
    page = text_page(3)
    assert get_codec("zlib").compress(page) == zlib.compress(page, 1)


def test_lzo_is_raw_lzo1x_without_python_lzo_header() -> None:
    lzo = pytest.importorskip("lzo")
    page = text_page(4)
    packed = get_codec("lzo").compress(page)
    assert packed is not None
    # python-lzo's own header starts with 0xf0 and the length; the raw stream does not
    assert packed != lzo.compress(page, 1)
    assert lzo.compress(page, 1).endswith(packed)
    assert lzo.decompress(packed, False, PAGE) == page


def test_snappy_is_raw_block_format() -> None:
    snappy = pytest.importorskip("snappy")
    page = text_page(5)
    packed = get_codec("snappy").compress(page)
    assert packed is not None
    assert packed[:2] == bytes([0x80, 0x20])  # varint 4096: the raw block header
    assert snappy.uncompress(packed) == page


def test_zstd_is_one_frame_with_level() -> None:
    zstandard = pytest.importorskip("zstandard")
    page = text_page(6)
    packed = get_codec("zstd", level=19).compress(page)
    assert packed is not None
    assert packed[:4] == b"\x28\xb5\x2f\xfd"  # zstd frame magic
    assert zstandard.ZstdDecompressor().decompress(packed) == page
    assert get_codec("zstd", level=19).level == 19


@pytest.mark.parametrize("name", COMPRESSING)
def test_wrong_length_is_corrupt(name: str) -> None:
    codec = get_codec(name)
    half = text_page()[: PAGE // 2]
    packed = codec._compress(half)
    with pytest.raises(CorruptDataError, match=rf"{name} page .*(wrong size|end early).*"):
        codec.decompress(packed, PAGE)


@pytest.mark.parametrize("name", COMPRESSING)
def test_garbage_is_corrupt(name: str) -> None:
    with pytest.raises(CorruptDataError, match=rf"{name} page data"):
        get_codec(name).decompress(b"\x80\x20garbage-not-a-stream" * 3, PAGE)


def test_none_wrong_length_is_corrupt() -> None:
    with pytest.raises(CorruptDataError, match=r"none page decompresses to the wrong size"):
        get_codec("none").decompress(b"x" * 100, PAGE)


def test_unknown_name_and_flag() -> None:
    with pytest.raises(ConfigError, match=r"unknown page codec in field compress.*got 'gzip'"):
        get_codec("gzip")
    with pytest.raises(CorruptDataError, match=r"unknown page compression flags in field flags"):
        codec_for_flag(0x3)


@pytest.mark.parametrize(
    ("name", "module", "extra"),
    [("lzo", "lzo", "lzo"), ("snappy", "snappy", "snappy"), ("zstd", "zstandard", "zstd")],
)
def test_missing_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, name: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    codec = get_codec(name)  # lazily: obtaining the codec does not import
    with pytest.raises(CodecUnavailableError, match=rf"page codec {name} needs") as info:
        codec.compress(text_page())
    assert info.value.hint == f"pip install 'diskdump[{extra}]'"
    with pytest.raises(CodecUnavailableError):
        codec.decompress(b"x", PAGE)
    # zlib and none never need anything
    assert get_codec("zlib").compress(text_page()) is not None


@pytest.mark.parametrize("name", COMPRESSING)
def test_thread_safe(name: str) -> None:
    codec = get_codec(name)
    pages = [text_page(seed) for seed in range(64)]
    expected = [codec.compress(p) for p in pages]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(codec.compress, pages * 4))
    assert got == expected * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        back = list(pool.map(lambda b: codec.decompress(b, PAGE), expected))
    assert back == pages


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(COMPRESSING),
    chunks=st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=8),
)
def test_round_trip_property(name: str, chunks: list[bytes]) -> None:
    page = (b"".join(chunks) * PAGE)[:PAGE]
    codec = get_codec(name)
    packed = codec.compress(page)
    if packed is not None:
        assert len(packed) < PAGE
        assert codec.decompress(packed, PAGE) == page
