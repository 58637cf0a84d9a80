# SPDX-License-Identifier: GPL-2.0-or-later
"""The VM commands keep the QEMU harness out of `diskdump dump`'s memory (lazy imports)."""

from __future__ import annotations

import subprocess
import sys

from diskdump.cli.commands import demo, initramfs, test
from diskdump.vm import capture, cycle, sysrq


def test_building_the_cli_does_not_import_the_harness() -> None:
    code = (
        "import sys\nfrom diskdump.cli.main import build_parser\nbuild_parser()\n"
        "print(sorted(m for m in sys.modules if m.startswith('diskdump.vm')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_cli_defaults_match_the_library() -> None:
    assert demo.DEFAULT_CRASHKERNEL_MIB == cycle.DEFAULT_CRASHKERNEL_MIB
    assert initramfs.CAPTURE_MODULES == capture.CAPTURE_MODULES
    assert str(sysrq.SYSRQ_TRIGGER) == test.SYSRQ_TRIGGER
