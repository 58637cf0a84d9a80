# SPDX-License-Identifier: GPL-2.0-or-later
"""The systemd unit that runs savecore at boot, checked by systemd-analyze."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

from tests.conftest import need, need_tool

UNIT = "diskdump-savecore.service"


def _unit_text() -> str:
    return files("diskdump").joinpath("data", UNIT).read_text()


def test_unit_runs_savecore_once_after_local_filesystems() -> None:
    lines = _unit_text().splitlines()
    assert "ExecStart=/usr/bin/diskdump savecore --config /etc/diskdump.toml" in lines
    assert "Type=oneshot" in lines and "After=local-fs.target systemd-udev-settle.service" in lines
    assert "SuccessExitStatus=6" in lines  # saved but incomplete is not a unit failure
    assert "UMask=0077" in lines
    assert "WantedBy=multi-user.target" in lines


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = need_tool("systemd-analyze")
    beside = Path(sys.executable).parent / "diskdump"
    diskdump = str(beside) if beside.exists() else shutil.which("diskdump")
    need(diskdump is not None, "the diskdump console script is not on PATH (pip install -e .)")
    assert diskdump is not None
    unit = tmp_path / UNIT
    unit.write_text(_unit_text().replace("/usr/bin/diskdump", diskdump))
    proc = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.strip() == ""
