# SPDX-License-Identifier: GPL-2.0-or-later
"""`diskdump info` on a dump partition: the dump it holds, read-only; an empty one is told apart."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from diskdump.cli.main import main
from tests.builders.kernel import build_kernel


def _partition(path: Path) -> Path:
    with path.open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, 96 << 20)
    assert main(["format", "--force", "--quiet", str(path)]) == 0
    return path


def test_info_reads_the_dump_on_a_partition(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k = build_kernel()
    elf = k.write_elf(tmp_path / "vmcore.elf")
    img = _partition(tmp_path / "dump.img")
    assert main(["dump", "--unarmed", "--quiet", "--device", str(img), "--source", str(elf)]) == 0
    capsys.readouterr()
    before = hashlib.sha256(img.read_bytes()).hexdigest()
    assert main(["info", str(img), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["release"] == k.spec.release
    assert facts["panic"] == k.panic_line
    assert facts["complete"] is True and facts["format"] == "diskdump"
    assert main(["info", str(img), "--dmesg"]) == 0
    assert capsys.readouterr().out == k.expected_dmesg
    assert hashlib.sha256(img.read_bytes()).hexdigest() == before  # read-only


def test_info_on_an_empty_partition_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = _partition(tmp_path / "empty.img")
    capsys.readouterr()
    assert main(["info", str(img)]) == 1
    assert "this dump partition holds no dump on" in capsys.readouterr().err
