# SPDX-License-Identifier: GPL-2.0-or-later
"""Offline conversion between vmcore containers: ELF <-> kdump-compressed, plain or flattened.

The input is any :class:`~diskdump.formats.memsource.MemorySource` or a path
that :func:`~diskdump.formats.detect.open_vmcore` recognises (ELF, kdump,
flattened kdump). The output is written atomically: a temporary file in the
target directory (mode 0600), fsync, rename, fsync of the directory. A stream
(a pipe, stdout) is accepted for ELF output and for flattened output; a plain
kdump file needs random access, so flattened output is first written to an
unnamed temporary file and then streamed in ascending records.

Dump levels are makedumpfile's ``-d`` bits. Bit 1 drops zero pages (kdump:
shared zero page; ELF: zero pages left out of the segments, as ``makedumpfile
-E -d 1``); the type bits (2, 4, 8, 16) are applied by page classification
(:func:`~diskdump.formats.filtered.filter_source`) in :func:`_filtered`, which
refuses a level the kernel's struct page layout cannot honour rather than guess.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from diskdump.errors import ConfigError, DiskdumpError, OutputExistsError
from diskdump.formats.codecs import CODEC_NAMES, get_codec
from diskdump.formats.detect import open_vmcore
from diskdump.formats.elf_write import write_elf
from diskdump.formats.erase import ErasedSource, erase_source, eraseinfo_text
from diskdump.formats.filtered import filter_source
from diskdump.formats.flattened import write_flattened
from diskdump.formats.kdump import NewUtsname
from diskdump.formats.kdump_read import KdumpFile
from diskdump.formats.kdump_write import DUMP_LEVEL_ZERO, check_dump_level, write_kdump
from diskdump.formats.memsource import MemorySource, PfnRun, iter_run_pfns, runs_page_count
from diskdump.formats.summary import UTS_FIELDS, read_utsname
from diskdump.formats.vmcoreinfo import vmcoreinfo_from_notes
from diskdump.formats.x86_64 import KernelMemory

__all__ = ["FORMATS", "ConvertResult", "EraseOptions", "convert", "resolve_level"]

log = logging.getLogger(__name__)

#: output formats
FORMATS = ("kdump", "elf")
#: mode of every file written (savecore rule: dumps hold secrets)
OUTPUT_MODE = 0o600
#: pages scanned per read when looking for zero pages (ELF output at level 1)
_SCAN_PAGES = 256

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class ConvertResult:
    """What :func:`convert` wrote.

    :param format: ``kdump`` or ``elf``
    :param flattened: the output is a flattened stream
    :param pages: pages written (kdump: page descriptors; ELF: pages in PT_LOAD segments)
    :param input_size: bytes of memory those pages hold (pages x page size)
    :param output_size: bytes written
    :param seconds: wall time of the conversion
    """

    format: str
    flattened: bool
    pages: int
    input_size: int
    output_size: int
    seconds: float
    #: one ``erase <symbol> size <n>`` line per erased symbol
    erased: tuple[str, ...] = ()

    @property
    def ratio(self) -> float:
        """output_size / input_size (0 when nothing was written)."""
        return self.output_size / self.input_size if self.input_size else 0.0

    def to_dict(self) -> dict[str, object]:
        """The ``--json`` form."""
        return {
            "format": self.format,
            "flattened": self.flattened,
            "erased": list(self.erased),
            "pages": self.pages,
            "input_bytes": self.input_size,
            "output_bytes": self.output_size,
            "ratio": round(self.ratio, 4),
            "seconds": round(self.seconds, 3),
        }


def resolve_level(level: int) -> int:
    """The dump level to apply (0-31); the single place that knows which levels exist.

    :raises ConfigError: a level outside 0-31
    """
    return check_dump_level(level)


def _erased(memory: MemorySource, erase: EraseOptions) -> MemorySource:
    """``memory`` with the erase rules applied (an :class:`ErasedSource`), or unchanged."""
    if not erase.rules:
        return memory
    return erase_source(memory, erase.rules, system_map=erase.system_map, vmlinux=erase.vmlinux)


def _filtered(memory: MemorySource, level: int) -> MemorySource:
    """``memory`` with the type bits of ``level`` applied (bit 1 is the writers' own).

    :raises UnsupportedVersionError: the kernel's layout cannot honour the level
    :raises NotThisFormatError: the vmcore has no VMCOREINFO to classify pages with
    """
    types = level & ~DUMP_LEVEL_ZERO
    if not types:
        return memory
    info = vmcoreinfo_from_notes(memory.notes)
    return filter_source(memory, types, info)


def convert(
    source: str | os.PathLike[str] | MemorySource,
    out: str | os.PathLike[str] | BinaryIO,
    *,
    format: str = "kdump",
    flatten: bool = False,
    compress: str = "zlib",
    level: int = DUMP_LEVEL_ZERO,
    progress: Progress | None = None,
    overwrite: bool = False,
    zstd_level: int | None = None,
    threads: int = 1,
    erase: EraseOptions | None = None,
) -> ConvertResult:
    """Convert a vmcore to kdump-compressed or ELF, atomically.

    :param source: a vmcore path (ELF, kdump, flattened) or an open memory source
    :param out: output path, or a writable stream (ELF or ``flatten`` only)
    :param format: ``kdump`` or ``elf``
    :param flatten: write the flattened stream (``makedumpfile -F``) instead of a plain file
    :param compress: kdump page codec: none, zlib, zstd, lzo, snappy (ignored for ELF)
    :param level: dump level, 0 or 1 (1 = zero pages excluded)
    :param progress: ``progress(done, total)`` in bytes of memory
    :param overwrite: replace an existing output file
    :param zstd_level: zstd compression level (default 1, as makedumpfile)
    :param threads: compression workers for kdump output
    :param erase: symbols to overwrite with the erase filler; recorded in the kdump
        erase-info area and in :attr:`ConvertResult.erased`
    :raises ConfigError: bad format, level or codec, or a kdump stream without ``flatten``
    :raises CodecUnavailableError: the codec's library is not installed
    :raises OutputExistsError: ``out`` exists and ``overwrite`` is false
    :raises FormatError: the input is not a readable vmcore
    """
    options = _Options(
        format,
        flatten,
        compress,
        resolve_level(level),
        zstd_level,
        threads,
        erase or EraseOptions(),
    )
    options.check(out)
    if isinstance(out, str | os.PathLike) and os.path.lexists(out) and not overwrite:
        raise OutputExistsError("output exists", path=os.fspath(out), hint="pass --force")
    started = time.monotonic()
    with _opened(source) as opened:
        memory = _erased(_filtered(opened, options.level), options.erase)
        if isinstance(out, str | os.PathLike):
            with _atomic(Path(out)) as stream:
                pages, size = _write(memory, stream, options, progress)
        else:
            pages, size = _write(memory, out, options, progress)
        input_size = pages * memory.page_size
        erased = memory.ranges if isinstance(memory, ErasedSource) else ()
    seconds = time.monotonic() - started
    log.info("converted %d pages to %s in %.1f s", pages, options.format, seconds)
    lines = tuple(eraseinfo_text(erased).splitlines())
    return ConvertResult(options.format, flatten, pages, input_size, size, seconds, lines)


@dataclass(frozen=True, slots=True)
class EraseOptions:
    """Erase rules for :func:`convert` (see :mod:`diskdump.formats.erase`).

    :param rules: ``"name"`` or ``"name:size"`` per symbol
    :param system_map: a System.map of the crashed kernel, to find symbols VMCOREINFO lacks
    :param vmlinux: the crashed kernel's vmlinux (symbol addresses and sizes)
    """

    rules: tuple[str, ...] = ()
    system_map: Path | None = None
    vmlinux: Path | None = None


@dataclass(frozen=True, slots=True)
class _Options:
    format: str
    flatten: bool
    compress: str
    level: int
    zstd_level: int | None
    threads: int
    erase: EraseOptions = EraseOptions()

    def check(self, out: object) -> None:
        if self.format not in FORMATS:
            raise ConfigError(
                "unknown output format", field="format", expected=list(FORMATS), found=self.format
            )
        if self.compress not in CODEC_NAMES:
            raise ConfigError(
                "unknown page codec",
                field="compress",
                expected=list(CODEC_NAMES),
                found=self.compress,
            )
        if self.format == "kdump":
            get_codec(self.compress).check_available()
        elif self.compress not in ("none", "zlib"):
            log.warning("--compress %s is ignored: ELF output is not compressed", self.compress)
        if not isinstance(out, str | os.PathLike) and self.format == "kdump" and not self.flatten:
            raise ConfigError(
                "a kdump-compressed file needs random access: cannot write it to a stream",
                field="out",
                hint="add --flatten to stream it (makedumpfile -R reassembles it)",
            )


@contextlib.contextmanager
def _opened(source: str | os.PathLike[str] | MemorySource) -> Iterator[MemorySource]:
    if not isinstance(source, str | os.PathLike):
        yield source
        return
    memory = open_vmcore(source)
    try:
        yield memory
    finally:
        close = getattr(memory, "close", None)
        if close is not None:
            close()


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[BinaryIO]:
    """A temporary file beside ``path`` (0600), renamed over it only when the body succeeds."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, OUTPUT_MODE)
        with os.fdopen(fd, "w+b") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.rename(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write(
    memory: MemorySource, out: BinaryIO, options: _Options, progress: Progress | None
) -> tuple[int, int]:
    """Write ``memory`` to ``out``; return the pages and the bytes written."""
    if not options.flatten:
        return _write_plain(memory, out, options, progress)
    with tempfile.TemporaryFile(dir=_temp_dir(out)) as plain:
        pages, size = _write_plain(memory, plain, options, progress)
        plain.flush()
        fd = plain.fileno()
        return pages, write_flattened(lambda at, length: os.pread(fd, length, at), size, out)


def _temp_dir(out: BinaryIO) -> str | None:
    # keep the unflattened copy on the output's filesystem when it is a file
    name = getattr(out, "name", None)
    if isinstance(name, str) and os.path.isabs(name):
        return os.path.dirname(name)
    return None


def _write_plain(
    memory: MemorySource, out: BinaryIO, options: _Options, progress: Progress | None
) -> tuple[int, int]:
    if options.format == "kdump":
        codec = get_codec(options.compress, level=options.zstd_level)
        erased = (
            eraseinfo_text(memory.ranges).encode() if isinstance(memory, ErasedSource) else None
        )
        result = write_kdump(
            memory,
            out,
            compress=codec,
            level=options.level,
            utsname=source_utsname(memory),
            progress=progress,
            threads=options.threads,
            erase_info=erased,
        )
        return result.pages, result.file_size
    source = _ZeroPagesExcluded(memory) if options.level & DUMP_LEVEL_ZERO else memory
    size = write_elf(source, out, progress=progress)
    return runs_page_count(source.data_runs()), size


def source_utsname(source: MemorySource) -> NewUtsname | None:
    """The crashed kernel's utsname: ``init_uts_ns`` in memory, else a sane kdump header's.

    :return: None when neither is available (the writer then uses VMCOREINFO's OSRELEASE)
    """
    try:
        info = vmcoreinfo_from_notes(source.notes)
        fields = read_utsname(KernelMemory(source, info), info)
        if fields.get("release") and fields.get("sysname") == "Linux":
            return NewUtsname(**{name: fields.get(name, "") for name in UTS_FIELDS})
    except (DiskdumpError, ValueError) as err:
        log.info("utsname not read from memory: %s", err)
    if isinstance(source, KdumpFile):
        uts = source.header.uts
        if uts.sysname == "Linux" and uts.release and uts.version and uts.machine:
            return uts
    return None


class _ZeroPagesExcluded:
    """A :class:`MemorySource` view that leaves out all-zero pages (dump level bit 1)."""

    def __init__(self, inner: MemorySource) -> None:
        self.inner = inner
        self._data = self._scan()

    def _scan(self) -> list[PfnRun]:
        size = self.inner.page_size
        zero = bytes(size)
        runs: list[PfnRun] = []
        for pfn, count in iter_run_pfns(self.inner.data_runs(), _SCAN_PAGES):
            raw = self.inner.read_pages(pfn, count)
            for index in range(count):
                if raw[index * size : (index + 1) * size] == zero:
                    continue
                page = pfn + index
                if runs and runs[-1].end_pfn == page:
                    runs[-1] = PfnRun(runs[-1].start_pfn, page + 1)
                else:
                    runs.append(PfnRun(page, page + 1))
        return runs

    @property
    def page_size(self) -> int:
        return self.inner.page_size

    @property
    def max_pfn(self) -> int:
        return self.inner.max_pfn

    def ram_runs(self) -> Sequence[PfnRun]:
        return self.inner.ram_runs()

    def data_runs(self) -> Sequence[PfnRun]:
        return self._data

    def read_pages(self, pfn: int, count: int) -> bytes:
        return self.inner.read_pages(pfn, count)

    @property
    def notes(self) -> bytes:
        return self.inner.notes

    @property
    def incomplete(self) -> bool:
        return self.inner.incomplete
