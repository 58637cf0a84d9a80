# SPDX-License-Identifier: GPL-2.0-or-later
"""savecore on image files: what is saved, what is refused, idempotence, re-initialisation."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from diskdump.config import DeviceSpec
from diskdump.errors import (
    ChecksumError,
    ConfigError,
    DeviceNotReadyError,
    HeaderMismatchError,
    InsufficientSpaceError,
)
from diskdump.formats.kdump import DumpStatus as KdumpStatus
from diskdump.formats.kdump_read import KdumpFile
from diskdump.formats.memsource import iter_run_pfns
from diskdump.savecore.save import (
    DeviceReport,
    Outcome,
    SaveOptions,
    reports_to_exit_kind,
    run_savecore,
    save_name,
)
from tests.builders.kernel import SyntheticKernel
from tests.conftest import need, need_root, need_tool
from tests.savecore.conftest import (
    DumpFactory,
    device_state,
    digest,
    info_of,
    saves,
)
from tests.savecore.dumpbuilder import Knobs


def _run(crash: Path, *devices: Path, **opts: object) -> list[DeviceReport]:
    options = SaveOptions(dir=str(crash), min_free=0, **opts)  # type: ignore[arg-type]
    return run_savecore([DeviceSpec(str(d)) for d in devices], options)


def _pages_equal(vmcore: Path, kernel: SyntheticKernel) -> int:
    """Compare every page the vmcore holds with the source; return how many were compared."""
    core = KdumpFile.open(str(vmcore))
    compared = 0
    try:
        for run in core.data_runs():
            for pfn in range(run.start_pfn, run.end_pfn, 64):
                count = min(64, run.end_pfn - pfn)
                assert core.read_pages(pfn, count) == kernel.source.read_pages(pfn, count), pfn
                compared += count
    finally:
        core.close()
    return compared


def test_complete_dump_is_saved_and_device_reinitialised(
    dumped: DumpFactory, crash_dir: Path, small_kernel: SyntheticKernel
) -> None:
    image = dumped()
    assert device_state(image)[:2] == (True, True)
    (report,) = _run(crash_dir, image)
    assert report.outcome is Outcome.SAVED and report.reinitialised, report
    (save,) = saves(crash_dir)
    assert save.name == "crashbox-20251124-160000" == report.directory
    assert sorted(p.name for p in save.iterdir()) == [
        "dmesg.txt",
        "info.json",
        "info.txt",
        "vmcore",
    ]
    assert stat.S_IMODE(save.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in save.iterdir())
    info = info_of(save)
    assert info["dump_id"] == report.dump_id and info["status"] == "COMPLETE"
    assert info["missing"] == [] and info["incomplete"] is False
    assert info["utsname"]["nodename"] == "crashbox"
    assert (save / "dmesg.txt").read_text() == small_kernel.expected_dmesg
    assert "dump status:    COMPLETE" in (save / "info.txt").read_text()
    held = sum(r.pages for r in small_kernel.source.data_runs())
    assert _pages_equal(save / "vmcore", small_kernel) == held
    assert os.readlink(crash_dir / "latest") == save.name
    assert device_state(image) == (False, False, True)


def test_second_run_finds_nothing(dumped: DumpFactory, crash_dir: Path) -> None:
    image = dumped()
    _run(crash_dir, image)
    (report,) = _run(crash_dir, image)
    assert report.outcome is Outcome.NO_DUMP and report.reason == "no dump header"
    assert len(saves(crash_dir)) == 1


def test_keep_leaves_the_dump_and_a_rerun_does_not_save_it_twice(
    dumped: DumpFactory, crash_dir: Path
) -> None:
    image = dumped()
    before = digest(image)
    (first,) = _run(crash_dir, image, keep=True)
    assert first.outcome is Outcome.SAVED and not first.reinitialised
    assert digest(image) == before
    (second,) = _run(crash_dir, image, keep=True)
    assert second.outcome is Outcome.ALREADY_SAVED and second.directory == first.directory
    assert digest(image) == before
    (third,) = _run(crash_dir, image)
    assert third.outcome is Outcome.ALREADY_SAVED and third.reinitialised
    assert len(saves(crash_dir)) == 1
    assert device_state(image) == (False, False, True)


def test_incomplete_dump_is_saved_with_the_flag(
    dumped: DumpFactory, crash_dir: Path, small_kernel: SyntheticKernel
) -> None:
    image = dumped(knobs=Knobs(cut_after_chunks=10, chunk_pages=256))
    (report,) = _run(crash_dir, image)
    assert report.outcome is Outcome.SAVED_INCOMPLETE and report.reinitialised
    assert reports_to_exit_kind([report]) == "incomplete"
    (save,) = saves(crash_dir)
    info = info_of(save)
    assert info["incomplete"] is True and info["status"] == "INCOMPLETE"
    batches = list(iter_run_pfns(small_kernel.source.data_runs(), 256))[:10]
    held = sum(count for _pfn, count in batches)
    assert info["pages_held"] == held
    text = "\n".join(info["missing"])
    assert "no trailing header" in text
    planned = sum(r.pages for r in small_kernel.source.data_runs())
    assert f"{planned - held} of {planned} planned pages missing" in text
    assert "missing or odd:" in (save / "info.txt").read_text()
    # the log ring lies in the lost pages: dmesg.txt is the copy the writer put in the metadata
    assert "kernel log unreadable from memory" in text
    assert (save / "dmesg.txt").read_text() == small_kernel.expected_dmesg
    core = KdumpFile.open(str(save / "vmcore"))
    try:
        assert core.header.status & KdumpStatus.INCOMPLETE
        assert sum(r.pages for r in core.data_runs()) == held
    finally:
        core.close()
    assert _pages_equal(save / "vmcore", small_kernel) == held
    assert device_state(image) == (False, False, True)


def test_writer_stopped_before_the_leading_rewrite(dumped: DumpFactory, crash_dir: Path) -> None:
    image = dumped(knobs=Knobs(skip_leading_rewrite=True))
    (report,) = _run(crash_dir, image)
    assert report.outcome is Outcome.SAVED
    assert any("not rewritten COMPLETE" in p for p in report.problems)


def test_corrupt_trailer_is_an_error_and_the_dump_stays(
    dumped: DumpFactory, crash_dir: Path
) -> None:
    image = dumped(knobs=Knobs(corrupt_trailer_crc=True))
    before = digest(image)
    (report,) = _run(crash_dir, image)
    assert report.outcome is Outcome.FAILED
    assert isinstance(report.error, ChecksumError)
    assert str(report.error).startswith("dump header checksum mismatch in field header_crc at ")
    assert reports_to_exit_kind([report]) == "error"
    assert digest(image) == before and saves(crash_dir) == []


def test_headers_of_two_dumps_are_refused(dumped: DumpFactory, crash_dir: Path) -> None:
    image = dumped(knobs=Knobs(foreign_trailer=True))
    (report,) = _run(crash_dir, image)
    assert isinstance(report.error, HeaderMismatchError)
    assert "leading and trailing dump headers differ" in str(report.error)


def test_dump_cut_before_its_metadata_is_reported_and_cleared(
    dumped: DumpFactory, crash_dir: Path
) -> None:
    image = dumped(knobs=Knobs(cut_before_metadata=True))
    (report,) = _run(crash_dir, image)
    assert report.outcome is Outcome.NO_DUMP and report.reinitialised
    assert report.reason.startswith("unusable dump: dump was cut short before its metadata")
    assert saves(crash_dir) == [] and device_state(image) == (False, False, True)


def test_unformatted_devices_hold_no_dump_missing_ones_fail_others_are_saved(
    dumped: DumpFactory, crash_dir: Path, tmp_path: Path
) -> None:
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(2 << 20))
    image = dumped()
    reports = _run(crash_dir, blank, tmp_path / "missing.img", image)
    assert [r.outcome for r in reports] == [Outcome.NO_DUMP, Outcome.FAILED, Outcome.SAVED]
    assert re.search(r"not a dump partition: no diskdump partition label", reports[0].reason)
    assert isinstance(reports[1].error, DeviceNotReadyError)


def test_two_devices_with_dumps_from_the_same_second(dumped: DumpFactory, crash_dir: Path) -> None:
    first, second = dumped("a.img"), dumped("b.img")
    reports = _run(crash_dir, first, second)
    assert [r.directory for r in reports] == [
        "crashbox-20251124-160000",
        "crashbox-20251124-160000-1",
    ]
    assert os.readlink(crash_dir / "latest") in {r.directory for r in reports}


def test_hostile_nodename_cannot_escape_the_crash_directory(
    dumped: DumpFactory, crash_dir: Path
) -> None:
    image = dumped(nodename="../../etc/.x y")
    (report,) = _run(crash_dir, image)
    assert report.directory == "_.._etc_.x_y-20251124-160000"
    assert (crash_dir / report.directory / "vmcore").is_file()
    assert save_name("..", 0, "h").startswith("unknown-")
    assert save_name("", 0, "h").startswith("h-")


def test_reserve_refuses_the_save_and_keeps_the_dump(dumped: DumpFactory, crash_dir: Path) -> None:
    image = dumped()
    before = digest(image)
    options = SaveOptions(dir=str(crash_dir), min_free=1 << 60)
    (report,) = run_savecore([DeviceSpec(str(image))], options)
    assert isinstance(report.error, InsufficientSpaceError)
    assert "saving would cross the free-space reserve" in str(report.error)
    assert digest(image) == before
    assert sorted(p.name for p in crash_dir.iterdir()) == [".lock"]


def test_retention_keeps_max_dumps(dumped: DumpFactory, crash_dir: Path) -> None:
    names = []
    for i in range(3):
        image = dumped(f"d{i}.img", crash_time=1764000000 + i)
        (report,) = _run(crash_dir, image, max_dumps=2)
        names.append(report.directory)
    assert [p.name for p in saves(crash_dir)] == names[1:]
    assert os.readlink(crash_dir / "latest") == names[2]


def test_bad_options_are_refused_before_any_io(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown output format in field format: .*got 'tar'"):
        run_savecore([DeviceSpec("x")], SaveOptions(dir=str(tmp_path / "c"), format="tar"))
    with pytest.raises(ConfigError, match=r"no dump device given in field device"):
        run_savecore([], SaveOptions(dir=str(tmp_path / "c")))
    with pytest.raises(ConfigError, match=r"unknown page codec in field compress: .*got 'gzip'"):
        run_savecore([DeviceSpec("x")], SaveOptions(dir=str(tmp_path / "c"), compress="gzip"))
    with pytest.raises(ConfigError, match=r"min_free and max_dumps must not be negative"):
        run_savecore([DeviceSpec("x")], SaveOptions(dir=str(tmp_path / "c"), max_dumps=-1))
    assert not (tmp_path / "c").exists()


def test_json_report_shape(dumped: DumpFactory, crash_dir: Path) -> None:
    image = dumped()
    (report,) = _run(crash_dir, image)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["outcome"] == "saved" and data["reinitialised"] is True
    assert data["directory"] == report.directory and data["vmcore_size"] > 0


def test_full_crash_filesystem_refuses_and_keeps_the_dump(
    dumped: DumpFactory, tmp_path: Path
) -> None:
    need_root()
    image = dumped()
    before = digest(image)
    crash = tmp_path / "tiny"
    crash.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(crash)],
        capture_output=True,
        text=True,
    )
    assert mount.returncode == 0, mount.stderr
    try:
        (report,) = _run(crash, image)
        assert isinstance(report.error, InsufficientSpaceError), report
        assert re.search(
            r"saving would cross the free-space reserve on .*tiny: expected "
            r"'\d+ bytes to write \+ 0 bytes reserve",
            str(report.error),
        )
        assert sorted(p.name for p in crash.iterdir()) == [".lock"]
    finally:
        subprocess.run(["umount", str(crash)], check=True)
    assert digest(image) == before


def test_reinit_failure_keeps_the_save_and_a_rerun_finishes(
    dumped: DumpFactory, crash_dir: Path
) -> None:
    need_root()
    chattr = need_tool("chattr")
    image = dumped()
    immutable = subprocess.run([chattr, "+i", str(image)], capture_output=True, text=True)
    need(immutable.returncode == 0, f"chattr +i does not work here: {immutable.stderr.strip()}")
    try:
        (report,) = _run(crash_dir, image)
    finally:
        subprocess.run([chattr, "-i", str(image)], check=True)
    assert report.outcome is Outcome.FAILED and report.directory and not report.reinitialised
    assert isinstance(report.error, DeviceNotReadyError)
    assert re.search(r"cannot open.*Operation not permitted", str(report.error))
    assert len(saves(crash_dir)) == 1 and device_state(image)[:2] == (True, True)
    (rerun,) = _run(crash_dir, image)
    assert rerun.outcome is Outcome.ALREADY_SAVED and rerun.reinitialised
    assert device_state(image) == (False, False, True) and len(saves(crash_dir)) == 1
