# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump format`` and ``diskdump check`` in-process, on image files."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from diskdump.cli.main import main
from diskdump.formats.dumpheader import DUMP_HEADER_MAGIC
from tests.conftest import need_tool
from tests.devices.loop import make_image

BS = 4096
SIZE = 8 << 20


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return make_image(tmp_path / "dump.img", SIZE)


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out, dict)
    return out


def test_format_then_check_ready(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["format", "--uuid", "0f0e0d0c-0b0a-0908-0706-050403020100", str(image)]) == 0
    captured = capsys.readouterr()
    assert re.match(
        rf"{image}: formatted, uuid 0f0e0d0c-0b0a-0908-0706-050403020100, 1792 data blocks "
        r"\(7\.0 MiB\), 256 reserved\n",
        captured.out,
    )
    assert "format " in captured.err  # the progress lines
    assert main(["check", str(image)]) == 0
    assert capsys.readouterr().out == f"{image}: ready: 1792 blocks verified (every block)\n"
    assert main(["check", "--json", "--sample", "100", str(image)]) == 0
    (report,) = _json(capsys)["devices"]  # type: ignore[misc]
    assert report["status"] == "ready" and report["exit_code"] == 0
    assert report["label"]["uuid"] == "0f0e0d0c-0b0a-0908-0706-050403020100"
    assert report["verify"]["checked_blocks"] == 19  # every 100th of 1792, plus the last


def test_format_json(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["format", "--json", str(image)]) == 0
    (entry,) = _json(capsys)["devices"]  # type: ignore[misc]
    assert entry["status"] == "formatted" and entry["data_blocks"] == 1792


def test_check_exit_codes_and_highest_wins(
    tmp_path: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blank = make_image(tmp_path / "blank.img", SIZE)
    dumped = make_image(tmp_path / "dumped.img", SIZE)
    sparse = tmp_path / "sparse.img"
    sparse.touch()
    os.truncate(sparse, SIZE)
    assert main(["format", "-q", str(image), str(dumped)]) == 0
    with open(dumped, "r+b") as f:  # a dump's leading header at the first data block
        f.seek(256 * BS)
        f.write(DUMP_HEADER_MAGIC)
    capsys.readouterr()
    cases = [([image], 0), ([dumped], 1), ([blank], 2), ([sparse], 3), ([image, dumped, blank], 2)]
    for paths, code in cases:
        assert main(["check", "-q", *map(str, paths)]) == code, paths
    out = capsys.readouterr().out
    assert f"{dumped}: holds dump: holds a dump savecore has not cleared (leading header)" in out
    assert f"{blank}: needs format: no diskdump label" in out
    assert f"{sparse}: unsuitable: sparse file ({SIZE} bytes not allocated)" in out
    assert main(["check", "--json", str(image), str(tmp_path / "missing.img")]) == 3
    reports = _json(capsys)["devices"]
    assert [r["status"] for r in reports] == ["ready", "unsuitable"]  # type: ignore[union-attr,index]


def test_check_reports_bad_blocks(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["format", "-q", str(image)]) == 0
    with open(image, "r+b") as f:
        for lba in (300, 1000, 2047):
            f.seek(lba * BS + 100)
            f.write(b"\xff" * 8)
    capsys.readouterr()
    assert main(["check", str(image)]) == 2
    out = capsys.readouterr().out
    assert (
        "needs format: 3 of 1792 checked blocks fail the pattern (first lbas: 300, 1000, 2047;"
        in out
    )


def test_refusal_writes_nothing(
    tmp_path: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mkfs = need_tool("mkfs.ext4")
    fs = make_image(tmp_path / "fs.img", SIZE)
    subprocess.run([mkfs, "-q", "-F", "-E", "nodiscard", str(fs)], check=True)
    before = (fs.read_bytes(), image.read_bytes())
    assert main(["format", str(image), str(fs)]) == 1  # one refusal: neither is written
    err = capsys.readouterr().err
    assert f"refusing to format: it carries foreign signatures: ext4 at 0x438 on {fs}" in err
    assert "hint: check the device name; --force overwrites it" in err
    assert "nothing was written to any device" in err
    assert (fs.read_bytes(), image.read_bytes()) == before
    assert main(["format", "--json", str(fs)]) == 1
    report = _json(capsys)
    assert report["written"] is False
    assert report["devices"][0]["error"] == "DeviceRefusedError"  # type: ignore[index]
    assert main(["format", "-q", "--force", str(fs)]) == 0
    assert main(["check", "-q", str(fs)]) == 0


def test_usage_errors(tmp_path: Path, image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["format", "--uuid", "nope", str(image)]) == 64
    assert "not a UUID in field --uuid: got 'nope'" in capsys.readouterr().err
    two = ["format", "--uuid", "0f0e0d0c-0b0a-0908-0706-050403020100", str(image), str(image)]
    assert main(two) == 64
    assert main(["check", "--sample", "0", str(image)]) == 64
    assert main(["check", "--full", "--sample", "3", str(image)]) == 64
    assert main(["format", "--driver", "nfs", str(image)]) == 64
    assert main(["format", "--reserve-blocks", "100", str(image)]) == 64
    assert "must be at least 256, got 100" in capsys.readouterr().err
    assert main(["format", "-q", "--reserve-blocks", "512", str(image)]) == 0
    capsys.readouterr()
    assert main(["check", "-q", "--json", str(image)]) == 0
    assert _json(capsys)["devices"][0]["label"]["reserve_blocks"] == 512  # type: ignore[index]
    small = make_image(tmp_path / "small.img", 100 * BS)
    assert main(["format", str(small)]) == 1
    assert "device too small for a dump partition" in capsys.readouterr().err


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--help"]) == 0
    text = capsys.readouterr().out
    assert "the highest applies" in text and "3   unsuitable" in text
    assert main(["format", "--help"]) == 0
    assert "never, not even with --force" in capsys.readouterr().out
