# SPDX-License-Identifier: GPL-2.0-or-later
"""Put a dump on a formatted device the way the panic writer lays it out, with fault knobs.

Built only from the project's codecs (formats/dumpheader.py, formats/chunk.py)
and the partition operations, so a change of the on-disk format shows up
here as a failing test. The knobs make the states savecore must handle: a
writer cut short after N chunks (no trailer, leading INCOMPLETE), a writer
stopped between the trailer and the leading rewrite, a damaged trailer, two
headers of different dumps, a dump cut before its metadata.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from diskdump._binary import checksum32
from diskdump.devices.base import BlockIO, DumpDevice
from diskdump.formats.chunk import PageState, build_chunk
from diskdump.formats.codecs import get_codec
from diskdump.formats.dumpheader import (
    DumpFlag,
    DumpHeader,
    DumpMetadata,
    DumpStatus,
    Utsname,
    header_block,
    pack_metadata,
)
from diskdump.formats.memsource import MemorySource, iter_run_pfns
from diskdump.formats.partition import PartitionLabel

BLOCK = 4096


@dataclass(frozen=True)
class Knobs:
    """How the simulated panic writer behaves."""

    codec: str = "zlib"
    chunk_pages: int = 256
    cut_after_chunks: int | None = None  # stop after this many chunks: no trailer
    skip_leading_rewrite: bool = False  # trailer COMPLETE, leading left INCOMPLETE
    corrupt_trailer_crc: bool = False
    foreign_trailer: bool = False  # trailer of another dump id
    cut_before_metadata: bool = False  # only the leading header


def write_dump(
    device: DumpDevice,
    label: PartitionLabel,
    source: MemorySource,
    *,
    kernel_log: str = "",
    panic_string: str = "sysrq triggered crash",
    crash_time: int = 1764000000,
    nodename: str = "crashbox",
    dump_id: bytes | None = None,
    phys_base: int = 0,
    knobs: Knobs = Knobs(),
) -> DumpHeader:
    """Write ``source`` as a dump onto ``device`` (formatted with ``label``); return the header."""
    io = BlockIO(device)
    codec = get_codec(knobs.codec)
    meta = pack_metadata(
        DumpMetadata(
            notes=source.notes,
            ram_runs=tuple(source.ram_runs()),
            data_runs=tuple(source.data_runs()),
            panic_string=panic_string,
            kernel_log=kernel_log,
            source="tests/savecore/dumpbuilder.py",
        )
    )
    r = label.reserve_blocks
    meta_blocks = -(-len(meta) // BLOCK)
    planned = sum(run.pages for run in source.data_runs())
    head = DumpHeader(
        dump_id=dump_id or os.urandom(16),
        partition_uuid=label.uuid.bytes,
        block_size=BLOCK,
        page_size=source.page_size,
        device_blocks=label.block_count,
        header_lba=r,
        meta_lba=r + 1,
        meta_size=len(meta),
        meta_crc=checksum32(meta),
        codec=int(codec.flag),
        data_lba=r + 1 + meta_blocks,
        data_end_lba=r + 1 + meta_blocks,
        max_chunk_blocks=-(-(512 + knobs.chunk_pages * source.page_size) // BLOCK),
        pages_planned=planned,
        max_pfn=source.max_pfn,
        phys_base=phys_base,
        crash_time=crash_time,
        dump_start_time=crash_time + 20,
        nr_cpus=2,
        crashing_cpu=1,
        dump_level=1,
        applied_level=1,
        utsname=Utsname("Linux", nodename, "6.1.0-13-amd64", "#1 SMP", "x86_64", "(none)"),
    )
    io.write(r, header_block(head))
    if knobs.cut_before_metadata:
        device.flush()
        return head
    io.write(r + 1, meta.ljust(meta_blocks * BLOCK, b"\0"))
    lba, count, written = head.data_lba, 0, 0
    for pfn, pages in iter_run_pfns(source.data_runs(), knobs.chunk_pages):
        if knobs.cut_after_chunks is not None and count == knobs.cut_after_chunks:
            device.flush()
            return head
        raw = source.read_pages(pfn, pages)
        ps = source.page_size
        zero = bytes(ps)
        states = bytes(
            PageState.ZERO if raw[i * ps : (i + 1) * ps] == zero else PageState.PRESENT
            for i in range(pages)
        )
        present = b"".join(
            raw[i * ps : (i + 1) * ps] for i in range(pages) if states[i] == PageState.PRESENT
        )
        chunk = build_chunk(
            sequence=count,
            dump_id=head.dump_id,
            start_pfn=pfn,
            states=states,
            raw=present,
            codec=codec,
            block_size=BLOCK,
        )
        io.write(lba, chunk)
        lba += len(chunk) // BLOCK
        count += 1
        written += pages
    device.flush()
    final = replace(
        head,
        status=DumpStatus.COMPLETE,
        data_end_lba=lba,
        chunk_count=count,
        pages_written=written,
        dump_end_time=crash_time + 30,
        flags=DumpFlag.UNARMED,
    )
    trailer = final
    if knobs.foreign_trailer:
        trailer = replace(final, dump_id=os.urandom(16))
    block = bytearray(header_block(trailer))
    if knobs.corrupt_trailer_crc:
        block[100] ^= 0xFF
    io.write(label.block_count - 1, block)
    device.flush()
    if not knobs.skip_leading_rewrite:
        io.write(r, header_block(final))
        device.flush()
    return final
