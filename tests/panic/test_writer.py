# SPDX-License-Identifier: GPL-2.0-or-later
"""The panic writer on memory devices: fallback, faults, full devices, power cuts, bounds."""

from __future__ import annotations

import re

import pytest

from diskdump.devices.base import BlockIO, Op
from diskdump.devices.fault import FaultDevice, FaultPlan
from diskdump.devices.memory import MemoryDevice
from diskdump.errors import NoDumpDeviceError, NotThisFormatError, OutOfBoundsError
from diskdump.formats.chunk import CHUNK_HEADER_SIZE
from diskdump.formats.dumpheader import DumpFlag, DumpStatus, is_dump_header
from diskdump.formats.dumpimage import validate_dump
from diskdump.formats.filtered import FilteredSource, PackedRuns, TypeExclusions
from diskdump.formats.memsource import PfnRun, runs_page_count
from diskdump.formats.partition import BLOCK_SIZE
from diskdump.panic.layout import kernel_image_pfns
from diskdump.panic.writer import write_dump
from tests.panic.helpers import (
    assert_pages_match,
    device_digest,
    formatted,
    kernel,
    read_back,
    settings,
    small_source,
    state,
)


def test_complete_dump_reads_back_page_for_page() -> None:
    k = kernel()
    dev, label = formatted()
    reserve = label.reserve_blocks * BLOCK_SIZE
    reserved_before = bytes(dev.data[:reserve])
    result = write_dump(k.source, state(), [dev], settings())
    assert result.complete and result.device == "mem0"
    image = read_back(dev, label)
    validate_dump(image)
    assert not image.incomplete and image.headers.warnings == ()
    assert image.header.status is DumpStatus.COMPLETE
    assert image.header.pages_written == image.header.pages_planned
    assert assert_pages_match(image, k.source) == image.header.pages_planned
    assert image.metadata.panic_string == k.panic_line
    assert image.metadata.kernel_log == k.expected_dmesg
    assert image.notes == k.notes and image.header.utsname.release == k.spec.release
    assert image.header.nr_cpus == k.spec.nr_cpus
    assert image.header.crashing_cpu == k.spec.crashing_cpu
    assert image.header.crash_time == k.spec.crash_time
    assert list(image.ram_runs()) == list(k.source.ram_runs())
    # the reserved area (label, backup label) is untouched
    assert dev.data[:reserve] == reserved_before


def test_zero_pages_excluded_at_level_1_and_kept_at_level_0() -> None:
    k = kernel()
    dev1, label1 = formatted()
    dev0, label0 = formatted()
    write_dump(k.source, state(), [dev1], settings(level=1))
    write_dump(k.source, state(), [dev0], settings(level=0))
    img1, img0 = read_back(dev1, label1), read_back(dev0, label0)
    present1 = sum(c.header.present_count for c in img1.chunks)
    present0 = sum(c.header.present_count for c in img0.chunks)
    assert present0 == img0.header.pages_planned > present1
    assert img1.header.applied_level == 1 and img0.header.applied_level == 0
    assert_pages_match(img1, k.source)


def test_kernel_image_is_written_first() -> None:
    k = kernel()
    dev, label = formatted()
    write_dump(k.source, state(), [dev], settings())
    image = read_back(dev, label)
    kpfns = kernel_image_pfns(k.vmcoreinfo, 4096)
    assert kpfns is not None and kpfns.start_pfn <= k.kernel_start // 4096 < kpfns.end_pfn
    first = image.chunks[0].header
    assert kpfns.start_pfn <= first.start_pfn < kpfns.end_pfn


@pytest.mark.parametrize("damage", ["unformatted", "corrupt pattern", "holds a dump"])
def test_first_device_unusable_dump_lands_on_second(damage: str) -> None:
    k = kernel()
    if damage == "unformatted":
        first = MemoryDevice(20000, name="first")
    else:
        first, _ = formatted(name="first")
        if damage == "corrupt pattern":
            first.data[5000 * BLOCK_SIZE + 100] ^= 0xFF
        else:
            write_dump(k.source, state(), [first], settings())
            first.reopen()
    untouched = device_digest(first)
    second, label2 = formatted(name="second")
    result = write_dump(k.source, state(), [first, second], settings())
    assert result.device == "second" and result.complete
    assert device_digest(first) == untouched
    assert any(e.startswith("first: skipped") for e in result.events)
    assert_pages_match(read_back(second, label2), k.source)


def test_io_error_at_nth_block_falls_back_and_completes_on_second() -> None:
    k = kernel()
    inner, label1 = formatted(name="first")
    first = FaultDevice(inner, FaultPlan(fail_at_lba=label1.reserve_blocks + 300, fail_op=Op.WRITE))
    second, label2 = formatted(name="second")
    result = write_dump(k.source, state(), [first, second], settings())
    assert result.device == "second" and result.complete
    assert result.header.flags & DumpFlag.FALLBACK
    assert any(
        re.search(r"first: abandoned: injected i/o error at lba 556", e) for e in result.events
    )
    image = read_back(second, label2)
    assert not image.incomplete
    assert_pages_match(image, k.source)
    # the first device holds the same dump, cut short, and says so
    inner.reopen()
    partial = read_back(inner, label1)
    assert partial.incomplete and partial.header.dump_id == image.header.dump_id
    assert_pages_match(partial, k.source)


def test_no_usable_device_raises_with_every_reason() -> None:
    k = kernel()
    with pytest.raises(
        NoDumpDeviceError, match=r"no device could take the dump \(2 configured\)"
    ) as info:
        write_dump(
            k.source,
            state(),
            [MemoryDevice(3000, name="a"), MemoryDevice(3000, name="b")],
            settings(),
        )
    assert info.value.hint is not None
    assert "a: not a usable dump partition: no diskdump partition label" in info.value.hint
    assert "b: not a usable dump partition" in info.value.hint


def test_device_too_small_gives_an_incomplete_readable_dump() -> None:
    k = kernel()
    dev, label = formatted(blocks=1400)
    result = write_dump(k.source, state(), [dev], settings(codec="none"))
    assert not result.complete
    assert result.header.flags & DumpFlag.TRUNCATED
    image = read_back(dev, label)
    assert image.incomplete
    assert 0 < image.pages_held < image.header.pages_planned
    assert_pages_match(image, k.source)
    # the most valuable data survived: the whole kernel image
    kpfns = kernel_image_pfns(k.vmcoreinfo, 4096)
    assert kpfns is not None
    held = {p for r in image.data_runs() for p in range(r.start_pfn, r.end_pfn)}
    in_data = {p for r in k.source.data_runs() for p in range(r.start_pfn, r.end_pfn)}
    assert set(range(kpfns.start_pfn, kpfns.end_pfn)) & in_data <= held


def test_power_cut_at_every_chunk_boundary_never_gives_a_corrupt_dump() -> None:
    src = small_source(2)
    st = state()
    opts = settings(chunk_pages=128, sample_every=64)
    # a reference run tells where each chunk ends, in blocks written so far
    ref, ref_label = formatted(blocks=3000)
    write_dump(src, st, [ref], opts)
    image = read_back(ref, ref_label)
    meta_blocks = image.header.data_lba - image.header.header_lba
    bounds = [0, 1, meta_blocks]
    done = meta_blocks
    for index, ref_chunk in enumerate(image.chunks):
        done += ref_chunk.header.blocks(BLOCK_SIZE)
        bounds.append(done)  # just after the chunk
        if index % 4 == 0:
            bounds.append(done - 1)  # and, now and then, inside its last block
    bounds += [done + 1, done + 2]  # trailer written, leading rewrite lost; everything
    assert len(image.chunks) >= 8
    outcomes = {"none": 0, "incomplete": 0, "complete": 0}
    for cut in bounds:
        inner, label = formatted(blocks=3000)
        dev = FaultDevice(inner, FaultPlan(power_cut_after_blocks=cut))
        write_dump(src, st, [dev], opts)
        try:
            got = read_back(inner, label)
        except NotThisFormatError:
            outcomes["none"] += 1
            assert cut < meta_blocks  # only before the metadata is complete
            continue
        outcomes["incomplete" if got.incomplete else "complete"] += 1
        assert got.incomplete == (cut < done + 1)
        assert_pages_match(got, src)
        validate_dump(got)
    cuts_inside = len(range(0, len(image.chunks), 4))
    assert outcomes == {
        "none": 2,
        "incomplete": len(image.chunks) + cuts_inside + 1,
        "complete": 2,
    }


def test_rw_block_never_out_of_bounds() -> None:
    k = kernel()
    dev, label = formatted(blocks=3000)  # small: the writer runs into the end of the device
    dev.calls.clear()  # only the dump's calls
    write_dump(k.source, state(), [dev], settings(codec="none"))
    writes = [c for c in dev.calls if c.op is Op.WRITE]
    assert writes and all(
        label.reserve_blocks <= c.lba and c.lba + c.block_count <= 3000 for c in writes
    )
    assert is_dump_header(dev.data[2999 * BLOCK_SIZE : 3000 * BLOCK_SIZE])
    io = BlockIO(dev, label.reserve_blocks, label.block_count)
    with pytest.raises(
        OutOfBoundsError,
        match=r"^block request outside the allowed range "
        r"at offset 0xff000 \(lba 255\) on mem0: "
        r"expected 'lba in \[256, 3000\)', got '\[255, 256\)'$",
    ):
        io.write(255, bytes(BLOCK_SIZE))
    with pytest.raises(OutOfBoundsError, match=r"driver called out of bounds"):
        dev.rw_block(Op.WRITE, 3000, bytearray(BLOCK_SIZE))


def test_every_codec_writes_a_readable_dump() -> None:
    src = small_source()
    for codec in ("none", "zlib", "lzo", "snappy", "zstd"):
        dev, label = formatted(blocks=3000)
        result = write_dump(src, state(), [dev], settings(codec=codec))
        assert result.complete, codec
        image = read_back(dev, label)
        validate_dump(image)
        assert_pages_match(image, src)
        payload = {c.header.codec for c in image.chunks}
        assert payload <= {0, int(image.header.codec)}, codec
    assert CHUNK_HEADER_SIZE == 512


def test_device_without_room_for_the_metadata_is_abandoned() -> None:
    tiny, _ = formatted(blocks=256 + 20, name="tiny")
    dev, _ = formatted(name="roomy")
    result = write_dump(kernel().source, state(), [tiny, dev], settings())
    assert result.device == "roomy" and result.complete
    assert any(
        re.match(
            r"tiny: abandoned: dump area cannot hold the headers, the metadata "
            r"and one chunk on tiny: expected '\d+ blocks', got '276 blocks'$",
            e,
        )
        for e in result.events
    )


@pytest.mark.parametrize("gap", [1, 3, 8, 9, 40])
def test_fragmented_level_view_reads_grouped_and_every_page_matches(gap: int) -> None:
    """A dump level's view with runs of 1-3 pages a few pages apart (a -d 31 dump): the
    writer reads nearby runs with one call through the view and cuts them apart."""
    k = kernel()
    holes: list[PfnRun] = []
    for run in k.source.data_runs():
        pfn = run.start_pfn + 1
        while pfn + gap < run.end_pfn:
            holes.append(PfnRun(pfn, pfn + gap))
            pfn += gap + 1 + pfn % 3
    view = FilteredSource(k.source, 2, TypeExclusions(runs=PackedRuns(holes)))
    assert len(view.data_runs()) > 300
    dev, label = formatted()
    result = write_dump(view, state(), [dev], settings(level=3, type_level=2))
    assert result.complete and not result.header.flags & DumpFlag.SOURCE_SHORT
    image = read_back(dev, label)
    assert list(image.data_runs()) == list(view.data_runs())
    assert assert_pages_match(image, view) == runs_page_count(view.data_runs())
