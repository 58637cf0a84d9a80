# SPDX-License-Identifier: GPL-2.0-or-later
"""Page codecs of the kdump-compressed format, by name and by page flag.

Every page of a kdump-compressed file is stored on its own: raw (exactly one
page) or as one compressed block whose method is named by a bit in the page
descriptor's ``flags`` (the same bits say "may be compressed with" in the
main header's ``status``)::

    name    flag   stream format (what makedumpfile 1.7 writes, what crash,
                   libkdumpfile and drgn decompress)
    none    0x00   the page itself, page_size bytes
    zlib    0x01   RFC 1950 zlib container, level 1 (Z_BEST_SPEED), compress2()
    lzo     0x02   raw LZO1X-1 (lzo1x_1_compress), no header; lzo1x_decompress_safe
    snappy  0x04   raw snappy block (varint length + elements), not the framing format
    zstd    0x20   one complete zstd frame (ZSTD_compressCCtx, level 1 by default)

Spec source: makedumpfile ``diskdump_mod.h`` (DUMP_DH_COMPRESSED_*) and
``makedumpfile.c`` (write_kdump_pages_*: a page is stored compressed only when
the result is strictly smaller than the page), crash ``diskdump.c``
(cache_page), libkdumpfile ``diskdump.c`` (read_page). Versions: makedumpfile
1.5 (lzo, snappy) and 1.7.0 (zstd) added the optional methods.

zlib comes from the standard library. lzo (python-lzo), snappy
(python-snappy) and zstd (zstandard) are optional extras, imported lazily on
first use: a missing one raises :class:`CodecUnavailableError` naming the
extra to install, never an ImportError at import time. Codec objects are safe
to share between worker threads (zstd contexts are kept per thread).
"""

from __future__ import annotations

import importlib
import threading
import zlib
from dataclasses import dataclass, field
from enum import IntFlag
from types import ModuleType
from typing import Any

from diskdump.errors import CodecUnavailableError, ConfigError, CorruptDataError

__all__ = [
    "CODEC_NAMES",
    "Codec",
    "CompressFlag",
    "codec_for_flag",
    "get_codec",
]


class CompressFlag(IntFlag):
    """Compression bits of ``page_desc.flags`` and ``disk_dump_header.status``.

    Values from makedumpfile ``diskdump_mod.h``.
    """

    NONE = 0
    ZLIB = 0x01  #: DUMP_DH_COMPRESSED_ZLIB
    LZO = 0x02  #: DUMP_DH_COMPRESSED_LZO
    SNAPPY = 0x04  #: DUMP_DH_COMPRESSED_SNAPPY
    ZSTD = 0x20  #: DUMP_DH_COMPRESSED_ZSTD


#: zlib level makedumpfile and QEMU use (Z_BEST_SPEED)
ZLIB_LEVEL = 1
#: zstd level makedumpfile uses (ZSTD_compressCCtx(..., 1))
ZSTD_DEFAULT_LEVEL = 1
#: python-lzo's level argument selecting lzo1x_1_compress (9 would be lzo1x_999)
LZO1X_1_LEVEL = 1
#: a raw snappy block starts with the uncompressed length as a little-endian base-128 varint
_VARINT_MASK = 0x7F
_VARINT_MORE = 0x80
_VARINT_SHIFT = 7
#: a 32-bit varint takes at most 5 bytes
_VARINT_MAX_BYTES = 5


@dataclass(frozen=True, slots=True)
class _Spec:
    flag: CompressFlag
    module: str | None  # import name of the library; None = standard library
    package: str | None  # PyPI distribution, for the message
    extra: str | None  # diskdump extra that installs it


_SPECS: dict[str, _Spec] = {
    "none": _Spec(CompressFlag.NONE, None, None, None),
    "zlib": _Spec(CompressFlag.ZLIB, None, None, None),
    "lzo": _Spec(CompressFlag.LZO, "lzo", "python-lzo", "lzo"),
    "snappy": _Spec(CompressFlag.SNAPPY, "snappy", "python-snappy", "snappy"),
    "zstd": _Spec(CompressFlag.ZSTD, "zstandard", "zstandard", "zstd"),
}

#: codec names in the order the CLI lists them
CODEC_NAMES: tuple[str, ...] = tuple(_SPECS)
_BY_FLAG: dict[int, str] = {int(spec.flag): name for name, spec in _SPECS.items()}


@dataclass(frozen=True, slots=True)
class Codec:
    """One page codec. Use :func:`get_codec` or :func:`codec_for_flag` to obtain one.

    :param name: ``none``, ``zlib``, ``lzo``, ``snappy`` or ``zstd``
    :param level: compression level (zstd only; the others use makedumpfile's fixed level)
    """

    name: str
    level: int = ZSTD_DEFAULT_LEVEL
    _local: threading.local = field(
        default_factory=threading.local, init=False, repr=False, compare=False
    )

    @property
    def flag(self) -> CompressFlag:
        """The page-descriptor flag of this codec (0 for ``none``)."""
        return _SPECS[self.name].flag

    def check_available(self) -> None:
        """Import the codec's library now.

        :raises CodecUnavailableError: the optional library is not installed
        """
        self._module()

    def _module(self) -> ModuleType | None:
        spec = _SPECS[self.name]
        if spec.module is None:
            return None
        try:
            return importlib.import_module(spec.module)
        except ImportError as err:
            raise CodecUnavailableError(
                f"page codec {self.name} needs the python package {spec.package}, "
                "which is not installed",
                hint=f"pip install 'diskdump[{spec.extra}]'",
            ) from err

    def compress(self, page: bytes | bytearray | memoryview) -> bytes | None:
        """Compress one page as makedumpfile does.

        :param page: the page contents
        :return: the compressed block, or None when it is not strictly smaller than
            ``page`` (the caller then stores the page raw, flags 0)
        :raises CodecUnavailableError: the codec's library is not installed
        """
        if self.name == "none":
            return None
        data = bytes(page)
        out = self._compress(data)
        return out if len(out) < len(data) else None

    def _compress(self, data: bytes) -> bytes:
        module = self._module()
        if self.name == "zlib":
            return zlib.compress(data, ZLIB_LEVEL)
        assert module is not None
        if self.name == "lzo":
            # header=False: python-lzo otherwise prepends its own 5-byte length header
            return bytes(module.compress(data, LZO1X_1_LEVEL, False))
        if self.name == "snappy":
            return bytes(module.compress(data))
        return bytes(self._zstd_compressor(module).compress(data))

    def _zstd_compressor(self, module: ModuleType) -> Any:
        # a ZstdCompressor must not be used from two threads at once: one per thread
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = module.ZstdCompressor(level=self.level)
            self._local.compressor = compressor
        return compressor

    def decompress(self, data: bytes | bytearray | memoryview, page_size: int) -> bytes:
        """Decompress one stored block; the result must be exactly one page.

        :param data: the block as stored (``page_desc.size`` bytes)
        :param page_size: expected output length, in bytes
        :raises CorruptDataError: the block does not decode, or not to ``page_size`` bytes
        :raises CodecUnavailableError: the codec's library is not installed
        """
        raw = bytes(data)
        try:
            out = self._decompress(raw, page_size)
        except (CodecUnavailableError, CorruptDataError):
            raise
        except Exception as err:  # each library has its own error class
            raise CorruptDataError(
                f"{self.name} page data do not decompress ({err})", field="page data"
            ) from err
        if len(out) != page_size:
            raise CorruptDataError(
                f"{self.name} page decompresses to the wrong size",
                field="page data",
                expected=page_size,
                found=len(out),
            )
        return out

    def _decompress(self, raw: bytes, page_size: int) -> bytes:
        module = self._module()
        if self.name == "none":
            return raw
        if self.name == "zlib":
            inflater = zlib.decompressobj()
            # one byte more than a page is enough to see that the block is too long
            out = inflater.decompress(raw, page_size + 1)
            if not inflater.eof and len(out) == page_size:
                raise CorruptDataError("zlib page data end early", field="page data")
            return out
        assert module is not None
        if self.name == "lzo":
            return bytes(module.decompress(raw, False, page_size))
        if self.name == "snappy":
            # check the announced length first: never inflate a block that is not one page
            length = _snappy_length(raw)
            if length != page_size:
                raise CorruptDataError(
                    "snappy page data announce the wrong size",
                    field="page data",
                    expected=page_size,
                    found=length,
                )
            return bytes(module.uncompress(raw))
        decompressor = module.ZstdDecompressor()
        return bytes(decompressor.decompress(raw, max_output_size=page_size + 1))


def _snappy_length(raw: bytes) -> int | None:
    """The uncompressed length a raw snappy block announces, or None if unreadable."""
    value = 0
    for index, byte in enumerate(raw[:_VARINT_MAX_BYTES]):
        value |= (byte & _VARINT_MASK) << (_VARINT_SHIFT * index)
        if not byte & _VARINT_MORE:
            return value
    return None


def get_codec(name: str, *, level: int | None = None) -> Codec:
    """The codec called ``name``.

    :param name: one of :data:`CODEC_NAMES`
    :param level: zstd compression level (default 1, as makedumpfile); ignored by the others
    :raises ConfigError: unknown name
    """
    if name not in _SPECS:
        raise ConfigError(
            "unknown page codec", field="compress", expected=list(CODEC_NAMES), found=name
        )
    return Codec(name, ZSTD_DEFAULT_LEVEL if level is None else level)


def codec_for_flag(flag: int) -> Codec:
    """The codec a page descriptor's ``flags`` name.

    :raises CorruptDataError: the flags name no codec, or several at once
    """
    name = _BY_FLAG.get(flag)
    if name is None:
        raise CorruptDataError(
            "unknown page compression flags",
            field="flags",
            expected=[hex(int(spec.flag)) for spec in _SPECS.values()],
            found=flag,
        )
    return Codec(name)
