# SPDX-License-Identifier: GPL-2.0-or-later
"""SIGKILL savecore after each of its steps, run it again: exactly one save, device cleared last.

The savecore subprocess kills itself with SIGKILL right after the step named
by DISKDUMP_SAVECORE_KILL_AT (savecore/save.py, STEPS): a real kill -9 at a
known point, with no chance to clean up.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from diskdump.savecore.save import STEPS
from tests.savecore.conftest import DumpFactory, device_state, digest, info_of, run_savecore, saves

#: steps after which the device must still be byte-for-byte what the panic writer left
_UNTOUCHED = STEPS[: STEPS.index("reinit-data")]


@pytest.mark.parametrize("step", STEPS)
def test_killed_at_each_step_then_rerun_saves_exactly_once(
    step: str, dumped: DumpFactory, crash_dir: Path
) -> None:
    image = dumped()
    before = digest(image)
    killed = run_savecore(image, crash_dir, step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(saves(crash_dir)) == (1 if STEPS.index(step) >= STEPS.index("renamed") else 0)
    if step in _UNTOUCHED:
        assert digest(image) == before, "device changed before the save was durable"
    elif step == "reinitialised":
        assert device_state(image) == (False, False, True)
    else:
        leading, trailing, _ok = device_state(image)
        assert leading, "the leading header (the dump id) must be re-initialised last"
        assert trailing == (step == "reinit-data")
    rerun = run_savecore(image, crash_dir, None)
    assert rerun.returncode == 0, rerun.stderr
    (save,) = saves(crash_dir)
    assert info_of(save)["status"] == "COMPLETE"
    assert os.readlink(crash_dir / "latest") == save.name
    assert not [p for p in crash_dir.iterdir() if p.name.endswith(".partial")]
    assert device_state(image) == (False, False, True)
    if step == "reinitialised":
        expected = "no dump"
    elif STEPS.index(step) >= STEPS.index("renamed"):
        expected = "already saved"
    else:
        expected = "saved dump"
    assert expected in rerun.stdout, rerun.stdout
    again = run_savecore(image, crash_dir, None)
    assert again.returncode == 0 and "no dump (no dump header)" in again.stdout
    assert len(saves(crash_dir)) == 1
