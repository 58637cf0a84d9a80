# SPDX-License-Identifier: GPL-2.0-or-later
"""Fuzz targets: one per parser, each fed arbitrary bytes, with valid seeds built by our writers.

A target may raise only :class:`diskdump.errors.DiskdumpError`; anything else
is a finding. Targets that open a whole container also read every page it
claims to hold, so lengths and offsets taken from the input are exercised.
"""

from __future__ import annotations

import functools
import io
import os
import struct
import tempfile
import uuid
from collections.abc import Callable, Sequence

from diskdump.formats import (
    chunk,
    crypt,
    dumpheader,
    elf,
    flattened,
    kdump_read,
    notes,
    partition,
)
from diskdump.formats.codecs import get_codec
from diskdump.formats.elf_write import write_elf
from diskdump.formats.kdump_write import write_kdump
from diskdump.formats.memsource import PfnRun
from diskdump.formats.printk import format_dmesg, iter_printk_records
from diskdump.formats.vmcoreinfo import VmcoreInfo, validate_vmcoreinfo
from diskdump.formats.x86_64 import KernelMemory
from tests.builders.kernel import START_KERNEL_MAP, InMemorySource, build_kernel

PAGE = 4096
_MAX_PAGES_READ = 4096  # read at most this many pages of a fuzzed container


@functools.cache
def _kernel() -> object:
    return build_kernel()


def _small_source(pages: int = 12) -> InMemorySource:
    """A few pages (some zero, some text, some random) with the synthetic kernel's notes."""
    rnd = bytes(os.urandom(0) or range(256)) * 16
    mem = bytearray()
    for i in range(pages):
        mem += (
            bytes(PAGE)
            if i % 3 == 0
            else (rnd if i % 3 == 1 else (b"log line %d\n" % i) * 400)[:PAGE]
        )
    src = InMemorySource(
        mem, [PfnRun(0, pages // 2), PfnRun(pages // 2 + 1, pages)], _kernel().notes
    )  # type: ignore[attr-defined]
    return src


def _read_all(source: object) -> None:
    budget = _MAX_PAGES_READ
    for run in source.data_runs():  # type: ignore[attr-defined]
        count = min(run.end_pfn - run.start_pfn, budget)
        if count <= 0:
            return
        source.read_pages(run.start_pfn, count)  # type: ignore[attr-defined]
        budget -= count


class _BytesView:
    """kdump_read.RandomAccess over bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def size(self) -> int:
        return len(self.data)

    def pread(self, offset: int, size: int) -> bytes:
        from diskdump._binary import check_range

        check_range(offset, size, len(self.data), what="fuzz input")
        return self.data[offset : offset + size]


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("fuzz")
    os.write(fd, data)
    return fd


# -- targets ---------------------------------------------------------------------------


def fuzz_partition_label(data: bytes) -> None:
    label = partition.PartitionLabel.unpack(data, device="fuzz")
    partition.BlockPattern(label, max_blocks=4)


def fuzz_dump_header(data: bytes) -> None:
    dumpheader.DumpHeader.unpack(data, device="fuzz")


def fuzz_dump_metadata(data: bytes) -> None:
    dumpheader.unpack_metadata(data, device="fuzz")


def fuzz_chunk(data: bytes) -> None:
    size = chunk.ChunkHeader.SIZE
    head = chunk.ChunkHeader.unpack(data[:size], page_size=PAGE, device="fuzz")
    chunk.decode_payload(head, data[size : size + head.payload_size], device="fuzz")


def fuzz_elf(data: bytes) -> None:
    with elf.ElfVmcore.from_bytes(data) as core:
        list(notes.iter_notes(core.notes))
        _read_all(core)


def fuzz_kdump(data: bytes) -> None:
    _read_all(kdump_read.KdumpFile(_BytesView(data), path="fuzz"))


def fuzz_flattened(data: bytes) -> None:
    fd = _memfd(data)
    try:
        view = flattened.FlattenedView(fd, path="fuzz")
        _read_all(kdump_read.KdumpFile(view, path="fuzz"))
    finally:
        os.close(fd)


def fuzz_notes(data: bytes) -> None:
    for note in notes.iter_notes(data):
        if note.type == notes.NoteType.NT_PRSTATUS:
            notes.PrStatus.unpack(note.desc)
    notes.find_vmcoreinfo(data)


def fuzz_vmcoreinfo(data: bytes) -> None:
    info = VmcoreInfo.unpack(data)
    validate_vmcoreinfo(info)
    info.page_size  # noqa: B018 - the parse of a typed value is what is fuzzed
    info.phys_base  # noqa: B018


def fuzz_key_envelope(data: bytes) -> None:
    crypt.KeyEnvelope.unpack(data)


def fuzz_printk(data: bytes) -> None:
    """The ring structure (first 88 bytes) and its buffers (the rest) replaced by the input."""
    k = _kernel()
    mem = k.source.memory  # type: ignore[attr-defined]
    ring_paddr = k.symbols["printk_rb_dynamic"] - START_KERNEL_MAP + k.spec.phys_base  # type: ignore[attr-defined]
    buf_paddr = len(mem) - (1 << 20)
    saved = (bytes(mem[ring_paddr : ring_paddr + 88]), bytes(mem[buf_paddr : buf_paddr + 16384]))
    head, body = data[:88], data[88 : 88 + 16384]
    mem[ring_paddr : ring_paddr + len(head)] = head
    mem[buf_paddr : buf_paddr + len(body)] = body
    try:
        info = VmcoreInfo.unpack(k.vmcoreinfo.encode())  # type: ignore[attr-defined]
        format_dmesg(iter_printk_records(KernelMemory(k.source, info), info))  # type: ignore[attr-defined]
    finally:
        mem[ring_paddr : ring_paddr + 88] = saved[0]
        mem[buf_paddr : buf_paddr + 16384] = saved[1]


TARGETS: dict[str, Callable[[bytes], None]] = {
    "partition_label": fuzz_partition_label,
    "dump_header": fuzz_dump_header,
    "dump_metadata": fuzz_dump_metadata,
    "chunk": fuzz_chunk,
    "elf": fuzz_elf,
    "kdump": fuzz_kdump,
    "flattened": fuzz_flattened,
    "notes": fuzz_notes,
    "vmcoreinfo": fuzz_vmcoreinfo,
    "printk": fuzz_printk,
    "key_envelope": fuzz_key_envelope,
}

# -- seeds: valid inputs from our own writers -----------------------------------------


def _seed_label() -> Sequence[bytes]:
    label = partition.new_label(1 << 20, uuid=uuid.UUID(int=7), format_time=1_700_000_000)
    return [label.pack()]


def _seed_chunk() -> Sequence[bytes]:
    states = bytes([chunk.PageState.PRESENT, chunk.PageState.ZERO, chunk.PageState.PRESENT])
    raw = _small_source().read_pages(1, 1) + _small_source().read_pages(2, 1)
    out = []
    for name in ("none", "zlib", "zstd"):
        out.append(
            chunk.build_chunk(
                sequence=3,
                dump_id=b"d" * 16,
                start_pfn=10,
                states=states,
                raw=raw,
                codec=get_codec(name),
                block_size=PAGE,
            )
        )
    return out


def _seed_elf() -> Sequence[bytes]:
    out = io.BytesIO()
    write_elf(_small_source(), out)
    return [out.getvalue()]


def _seed_kdump() -> Sequence[bytes]:
    seeds = []
    for codec in ("zlib", "none"):
        with tempfile.TemporaryFile() as out:
            write_kdump(_small_source(), out, compress=codec)
            out.seek(0)
            seeds.append(out.read())
    return seeds


def _seed_flattened() -> Sequence[bytes]:
    raw = _seed_kdump()[0]
    out = io.BytesIO()
    flattened.write_flattened(lambda off, n: raw[off : off + n], len(raw), out)
    return [out.getvalue()]


def _seed_vmcoreinfo() -> Sequence[bytes]:
    return [_kernel().vmcoreinfo.encode()]  # type: ignore[attr-defined]


def _seed_printk() -> Sequence[bytes]:
    k = _kernel()
    mem = k.source.memory  # type: ignore[attr-defined]
    ring_paddr = k.symbols["printk_rb_dynamic"] - START_KERNEL_MAP + k.spec.phys_base  # type: ignore[attr-defined]
    buf_paddr = len(mem) - (1 << 20)
    return [bytes(mem[ring_paddr : ring_paddr + 88]) + bytes(mem[buf_paddr : buf_paddr + 16384])]


def _seed_header() -> Sequence[bytes]:
    return _seed_with_dump()[0]


def _seed_metadata() -> Sequence[bytes]:
    return _seed_with_dump()[1]


@functools.cache
def _seed_with_dump() -> tuple[list[bytes], list[bytes]]:
    meta = dumpheader.DumpMetadata(
        notes=_kernel().notes,  # type: ignore[attr-defined]
        ram_runs=(PfnRun(0, 100), PfnRun(200, 300)),
        data_runs=(PfnRun(0, 50),),
        panic_string="Kernel panic - not syncing: sysrq triggered crash",
        kernel_log="[    0.000000] Linux version 6.1.0\n",
        vmcoreinfo=_kernel().vmcoreinfo.encode(),  # type: ignore[attr-defined]
        source="/proc/vmcore",
    )
    packed = dumpheader.pack_metadata(meta)
    header = dumpheader.DumpHeader(
        dump_id=b"i" * 16,
        partition_uuid=uuid.UUID(int=7).bytes,
        block_size=PAGE,
        page_size=PAGE,
        device_blocks=1 << 16,
        header_lba=256,
        meta_lba=257,
        meta_size=len(packed),
        meta_crc=0,
        codec=1,
        data_lba=300,
        data_end_lba=(1 << 16) - 1,
        max_chunk_blocks=256,
    )
    return [dumpheader.header_block(header)], [packed]


def _seed_envelope() -> Sequence[bytes]:
    from cryptography.hazmat.primitives.asymmetric import x25519

    _, envelope = crypt.new_dump_key(x25519.X25519PrivateKey.generate().public_key())
    return [envelope.pack()]


SEEDS: dict[str, Callable[[], Sequence[bytes]]] = {
    "partition_label": _seed_label,
    "dump_header": _seed_header,
    "dump_metadata": _seed_metadata,
    "chunk": _seed_chunk,
    "elf": _seed_elf,
    "kdump": _seed_kdump,
    "flattened": _seed_flattened,
    "notes": lambda: [_kernel().notes],  # type: ignore[attr-defined]
    "vmcoreinfo": _seed_vmcoreinfo,
    "printk": _seed_printk,
    "key_envelope": _seed_envelope,
}

_ = struct  # struct is kept for targets that pack fixed headers
