# SPDX-License-Identifier: GPL-2.0-or-later
"""Power cut at every chunk boundary of the real panic writer, then savecore.

The panic writer (panic/writer.py) writes to a fault-injecting device that
silently stops keeping writes after N blocks, for N at every chunk boundary
(and inside some last blocks). savecore must then either save a readable
dump, marked INCOMPLETE unless the cut came after the trailer, or report
that there is none; never fail, never write a corrupt file, and always leave
the partition ready.
"""

from __future__ import annotations

from pathlib import Path

from diskdump.config import DeviceSpec
from diskdump.devices.fault import FaultDevice, FaultPlan
from diskdump.formats.kdump import DumpStatus as KdumpStatus
from diskdump.formats.kdump_read import KdumpFile
from diskdump.panic.writer import write_dump
from diskdump.savecore.save import Outcome, SaveOptions, run_savecore
from tests.panic.helpers import formatted, read_back, settings, small_source, state
from tests.savecore.conftest import device_state, info_of, saves

#: device size of the test partitions, in 4 KiB blocks
BLOCKS = 3000


def _cut_points() -> tuple[list[int], int, int]:
    """Blocks-written counts at which to cut: around the metadata and after every chunk."""
    ref, label = formatted(blocks=BLOCKS)
    write_dump(small_source(2), state(), [ref], settings(chunk_pages=128, sample_every=64))
    image = read_back(ref, label)
    meta_end = image.header.data_lba - image.header.header_lba
    cuts, done = [0, 1, meta_end], meta_end
    for index, chunk in enumerate(image.chunks):
        done += chunk.header.blocks(label.block_size)
        cuts.append(done)
        if index % 4 == 0:
            cuts.append(done - 1)  # inside the chunk's last block
    return sorted({*cuts, done + 1, done + 2}), meta_end, done


def test_power_cut_at_every_chunk_boundary_then_savecore(tmp_path: Path) -> None:
    source = small_source(2)
    cuts, meta_end, data_end = _cut_points()
    outcomes: dict[Outcome, int] = {}
    for cut in cuts:
        inner, _label = formatted(blocks=BLOCKS)
        device = FaultDevice(inner, FaultPlan(power_cut_after_blocks=cut))
        write_dump(source, state(), [device], settings(chunk_pages=128, sample_every=64))
        image = tmp_path / f"cut-{cut}.img"
        image.write_bytes(inner.data)
        crash = tmp_path / f"crash-{cut}"
        options = SaveOptions(dir=str(crash), compress="zlib", min_free=0)
        (report,) = run_savecore([DeviceSpec(str(image))], options)
        outcomes[report.outcome] = outcomes.get(report.outcome, 0) + 1
        assert report.outcome is not Outcome.FAILED, (cut, report.error)
        assert device_state(image) == (False, False, True), cut
        if report.outcome is Outcome.NO_DUMP:
            assert cut < meta_end, cut
            assert saves(crash) == []
            continue
        (save,) = saves(crash)
        assert (report.outcome is Outcome.SAVED) == (cut > data_end), cut
        assert info_of(save)["incomplete"] == (cut <= data_end)
        _assert_readable(save / "vmcore", source, incomplete=cut <= data_end)
    assert outcomes[Outcome.NO_DUMP] == 2 and outcomes[Outcome.SAVED] == 2
    assert outcomes[Outcome.SAVED_INCOMPLETE] == len(cuts) - 4


def _assert_readable(vmcore: Path, source: object, *, incomplete: bool) -> None:
    with KdumpFile.open(str(vmcore)) as core:
        assert bool(core.header.status & KdumpStatus.INCOMPLETE) == incomplete
        for run in core.data_runs():
            got = core.read_pages(run.start_pfn, run.pages)
            assert got == source.read_pages(run.start_pfn, run.pages)  # type: ignore[attr-defined]
