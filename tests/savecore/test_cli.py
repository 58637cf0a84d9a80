# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump savecore`` in-process: exit codes, --json, --config, --help."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diskdump.cli.exitcodes import ExitCode
from diskdump.cli.main import main
from tests.savecore.conftest import DumpFactory, make_image, saves
from tests.savecore.dumpbuilder import Knobs


def _argv(crash: Path, *devices: Path, extra: tuple[str, ...] = ()) -> list[str]:
    argv = ["savecore", "--dir", str(crash), "--min-free", "0", "--compress", "zlib", "--quiet"]
    for device in devices:
        argv += ["--device", str(device)]
    return argv + list(extra)


def test_saved_complete_exits_0_and_says_where(
    dumped: DumpFactory, crash_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = dumped()
    assert main(_argv(crash_dir, image)) == ExitCode.OK
    out = capsys.readouterr().out
    assert f"{image}: saved dump " in out and "crashbox-20251124-160000" in out
    assert out.rstrip().endswith("device re-initialised")


def test_nothing_found_exits_0(
    tmp_path: Path, crash_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blank = tmp_path / "clean.img"
    make_image(blank)
    assert main(_argv(crash_dir, blank)) == ExitCode.OK
    assert "no dump (no dump header)" in capsys.readouterr().out


def test_incomplete_exits_6_with_json(
    dumped: DumpFactory, crash_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = dumped(knobs=Knobs(cut_after_chunks=3))
    assert main(_argv(crash_dir, image, extra=("--json",))) == ExitCode.SAVED_INCOMPLETE == 6
    data = json.loads(capsys.readouterr().out)
    assert data["result"] == "incomplete"
    (device,) = data["devices"]
    assert device["outcome"] == "saved-incomplete" and device["reinitialised"] is True
    assert any("no trailing header" in p for p in device["problems"])


def test_error_exits_1_and_names_the_device(
    dumped: DumpFactory, crash_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = dumped(knobs=Knobs(corrupt_trailer_crc=True))
    assert main(_argv(crash_dir, image, extra=("--json",))) == ExitCode.FAILURE
    data = json.loads(capsys.readouterr().out)
    assert data["result"] == "error"
    assert data["devices"][0]["error"]["error"] == "ChecksumError"
    assert main(_argv(crash_dir, image)) == ExitCode.FAILURE
    assert f"diskdump: error: {image}: dump header checksum mismatch" in capsys.readouterr().err


def test_keep_and_config_file(
    dumped: DumpFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = dumped()
    crash = tmp_path / "from-config"
    config = tmp_path / "diskdump.toml"
    config.write_text(
        f'[[device]]\npath = "{image}"\n\n[savecore]\ndir = "{crash}"\n'
        'min_free = "0"\nmax_dumps = 3\ncompress = "zlib"\nformat = "kdump"\n'
    )
    assert main(["savecore", "--config", str(config), "--keep", "--quiet"]) == 0
    assert main(["savecore", "--config", str(config), "--keep", "--quiet"]) == 0
    assert "already saved" in capsys.readouterr().out
    assert len(saves(crash)) == 1


def test_usage_errors_exit_64(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["savecore", "--config", str(missing)]) == ExitCode.USAGE
    assert "configuration file does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty.toml"
    empty.write_text(f'[savecore]\ndir = "{tmp_path / "c"}"\n')
    assert main(["savecore", "--config", str(empty)]) == ExitCode.USAGE
    assert "no dump device given" in capsys.readouterr().err
    assert main(["savecore", "--format", "tar"]) == ExitCode.USAGE


def test_unsafe_directory_is_an_error(
    dumped: DumpFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = dumped()
    crash = tmp_path / "open"
    crash.mkdir()
    crash.chmod(0o777)
    assert main(_argv(crash, image)) == ExitCode.FAILURE
    err = capsys.readouterr().err
    assert "crash directory is writable by group or others" in err
    assert f"hint: chmod go-w {crash}" in err


def test_help_documents_the_contract(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["savecore", "--help"]) == 0
    text = capsys.readouterr().out
    for needle in (
        "--device DEV",
        "--dir DIR",
        "--format {kdump,elf}",
        "--keep",
        "--json",
        "exit status:",
        "  6    saved, but",
        "<host>-<YYYYmmdd-HHMMSS>",
        "dmesg.txt",
        "info.json",
        "info.txt",
        "INCOMPLETE",
    ):
        assert needle in text, needle
