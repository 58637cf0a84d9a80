# SPDX-License-Identifier: GPL-2.0-or-later
"""savecore.convert and `diskdump convert`: formats, atomic output, levels, errors, CLI."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest

from diskdump.cli.main import main
from diskdump.errors import (
    CodecUnavailableError,
    ConfigError,
    DeviceIOError,
    NotThisFormatError,
    OutputExistsError,
)
from diskdump.formats.detect import opened_vmcore
from diskdump.formats.elf import ElfVmcore
from diskdump.formats.kdump_read import KdumpFile
from diskdump.formats.memsource import MemorySource, PfnRun
from diskdump.savecore.convert import convert
from tests.builders.kernel import build_kernel
from tests.differential.synthetic import PAGE_SIZE, MemSource, build_source


def same_pages(a: MemorySource, b: MemorySource) -> int:
    assert list(a.data_runs()) == list(b.data_runs())
    for run in a.data_runs():
        assert a.read_pages(run.start_pfn, run.pages) == b.read_pages(run.start_pfn, run.pages)
    return sum(run.pages for run in a.data_runs())


@pytest.fixture(scope="module")
def kernel_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    kernel = build_kernel()
    path = tmp_path_factory.mktemp("src") / "vmcore.elf"
    convert(kernel.source, path, format="elf", level=0)
    return path


def test_memory_source_to_kdump(tmp_path: Path) -> None:
    source = build_source(excluded=[(0x300, 0x310)])
    out = tmp_path / "vmcore"
    result = convert(source, out, compress="zlib", level=1)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["vmcore"]  # the temporary file was renamed
    assert result.pages == 1679 and result.output_size == out.stat().st_size
    assert result.input_size == 1679 * PAGE_SIZE and 0 < result.ratio < 1
    with KdumpFile.open(out) as kfile:
        assert same_pages(kfile, source) == 1679


def test_elf_kdump_elf_round_trip(tmp_path: Path, kernel_elf: Path) -> None:
    kdump = tmp_path / "vmcore.kdump"
    back = tmp_path / "vmcore.elf"
    convert(kernel_elf, kdump, compress="zlib", level=0)
    convert(kdump, back, format="elf", level=0)
    with ElfVmcore.open(kernel_elf) as a, KdumpFile.open(kdump) as b, ElfVmcore.open(back) as c:
        assert same_pages(a, b) == same_pages(b, c) == 16384 - 97
        assert a.notes == b.notes == c.notes
        # utsname comes from init_uts_ns in memory
        assert b.header.uts.nodename == "crashbox" and b.header.uts.version.startswith("#1 SMP")


def test_elf_level_1_leaves_zero_pages_out(tmp_path: Path, kernel_elf: Path) -> None:
    out = tmp_path / "zero-less.elf"
    result = convert(kernel_elf, out, format="elf", level=1)
    with ElfVmcore.open(kernel_elf) as full, ElfVmcore.open(out) as thin:
        zero = bytes(PAGE_SIZE)
        expected = [
            pfn
            for run in full.data_runs()
            for pfn in range(run.start_pfn, run.end_pfn)
            if full.read_pages(pfn, 1) != zero
        ]
        held = [pfn for run in thin.data_runs() for pfn in range(run.start_pfn, run.end_pfn)]
        assert held == expected and result.pages == len(expected)
        assert all(thin.read_pages(p, 1) == full.read_pages(p, 1) for p in held)


@pytest.mark.parametrize("fmt", ["kdump", "elf"])
def test_flattened_to_file_and_stream(tmp_path: Path, fmt: str) -> None:
    source = build_source()
    flat = tmp_path / "vmcore.flat"
    convert(source, flat, format=fmt, flatten=True, level=0)
    assert flat.read_bytes()[:12] == b"makedumpfile"
    stream = io.BytesIO()
    result = convert(source, stream, format=fmt, flatten=True, level=0)
    assert stream.getvalue() == flat.read_bytes() and result.output_size == len(stream.getvalue())
    if fmt == "kdump":
        with opened_vmcore(flat) as back:
            assert same_pages(back, source) == 1695


def test_elf_streams_without_flattening() -> None:
    stream = io.BytesIO()
    result = convert(build_source(), stream, format="elf", level=0)
    assert stream.getvalue()[:4] == b"\x7fELF" and result.output_size == len(stream.getvalue())


def test_kdump_to_stream_needs_flatten() -> None:
    with pytest.raises(ConfigError, match=r"needs random access.*field out"):
        convert(build_source(), io.BytesIO(), format="kdump")


def test_existing_output(tmp_path: Path) -> None:
    out = tmp_path / "vmcore"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match=r"output exists on .*vmcore"):
        convert(build_source(), out)
    assert out.read_bytes() == b"keep me"
    convert(build_source(), out, overwrite=True)
    assert out.read_bytes()[:8] == b"KDUMP   "


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": 32}, r"dump level out of range in field level"),
        ({"level": -1}, r"dump level out of range in field level: expected '0-31"),
        ({"format": "lkcd"}, r"unknown output format in field format"),
        ({"compress": "gzip"}, r"unknown page codec in field compress"),
    ],
)
def test_bad_options_are_refused_before_writing(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        convert(build_source(), tmp_path / "vmcore", **kwargs)  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_missing_codec_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "lzo", None)
    with pytest.raises(CodecUnavailableError, match=r"page codec lzo needs the python package"):
        convert(build_source(), tmp_path / "vmcore", compress="lzo")
    assert os.listdir(tmp_path) == []


class FailingSource(MemSource):
    def read_pages(self, pfn: int, count: int) -> bytes:
        if pfn >= 0x400:
            raise DeviceIOError("read failed", device="/dev/fake", lba=pfn)
        return super().read_pages(pfn, count)


def test_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    base = build_source()
    failing = FailingSource(base.max_pfn, base.ram, base.data, base.pages, base.notes)
    with pytest.raises(DeviceIOError, match=r"read failed"):
        convert(failing, tmp_path / "vmcore")
    assert os.listdir(tmp_path) == []


def test_not_a_vmcore(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello world" * 100)
    with pytest.raises(NotThisFormatError, match=r"not a vmcore"):
        convert(junk, tmp_path / "out")


def test_incomplete_source_stays_incomplete(tmp_path: Path) -> None:
    source = build_source(excluded=[(0x500, 0x700)], incomplete=True)
    convert(source, tmp_path / "k")
    with KdumpFile.open(tmp_path / "k") as kfile:
        assert kfile.incomplete and kfile.data_runs() == list(source.data_runs())
        assert kfile.ram_runs() == [PfnRun(0, 0x9F), PfnRun(0x100, 0x700)]


# -- the command ---------------------------------------------------------------------------


def test_cli_convert_json(tmp_path: Path, kernel_elf: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "vmcore"
    argv = ["convert", str(kernel_elf), str(out), "--format", "kdump", "--compress", "zstd"]
    assert main([*argv, "--level", "1", "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["format"] == "kdump" and summary["path"] == str(out)
    assert summary["output_bytes"] == out.stat().st_size and summary["pages"] > 0
    assert set(summary) >= {"pages", "input_bytes", "output_bytes", "ratio", "seconds"}
    assert captured.err == ""  # --json: no progress


def test_cli_convert_text_and_progress(
    tmp_path: Path, kernel_elf: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "vmcore.flat"
    assert main(["convert", str(kernel_elf), str(out), "--flatten", "--level", "0"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{out}: kdump (flattened), 16287 pages")
    assert "convert: 100.0%" in captured.err  # plain lines when not a terminal


def test_cli_errors(tmp_path: Path, kernel_elf: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "vmcore"
    assert main(["convert", str(kernel_elf), str(out), "--level", "40"]) == 64
    assert "dump level out of range" in capsys.readouterr().err
    assert main(["convert", str(kernel_elf), str(out), "--compress", "gzip"]) == 64
    assert "invalid choice: 'gzip'" in capsys.readouterr().err
    out.write_bytes(b"x")
    assert main(["convert", str(kernel_elf), str(out)]) == 1
    err = capsys.readouterr().err
    assert "output exists" in err and "hint: pass --force" in err
    assert main(["convert", str(out), str(tmp_path / "o2")]) == 1
    assert "not a vmcore" in capsys.readouterr().err


def test_cli_help_names_the_contract(capsys: pytest.CaptureFixture) -> None:
    assert main(["convert", "--help"]) == 0
    text = capsys.readouterr().out
    for word in ("--format {kdump,elf}", "--flatten", "--compress", "--level N", "exit status"):
        assert word in text
