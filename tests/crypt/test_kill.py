# SPDX-License-Identifier: GPL-2.0-or-later
"""An encrypted dump's save killed (SIGKILL) at a step, then rerun: one save, device cleared last.

The same kill hook as tests/savecore/test_kill.py (DISKDUMP_SAVECORE_KILL_AT);
the save without a key writes vmcore.encrypted, and the device must stay
byte for byte what the writer left until the save is durable.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from diskdump.savecore.save import STEPS
from tests.crypt.conftest import KeyPair, dump_to_image
from tests.panic.helpers import write_vmcore
from tests.savecore.conftest import device_state, digest, info_of, run_savecore, saves

IMAGE_SIZE = 64 << 20


@pytest.fixture(scope="module")
def vmcore(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_vmcore(tmp_path_factory.mktemp("src") / "src.elf")


@pytest.mark.parametrize("step", ["partial-created", "vmcore-written", "renamed", "reinit-data"])
def test_encrypted_save_killed_then_rerun_saves_once(
    step: str, tmp_path: Path, vmcore: Path, x25519_keys: KeyPair
) -> None:
    image = tmp_path / "dump.img"
    dump_to_image(image, vmcore, x25519_keys)
    crash = tmp_path / "crash"
    crash.mkdir(mode=0o700)
    before = digest(image)
    killed = run_savecore(image, crash, step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    durable = STEPS.index(step) >= STEPS.index("renamed")
    assert len(saves(crash)) == (1 if durable else 0)
    if STEPS.index(step) < STEPS.index("reinit-data"):
        assert digest(image) == before, "device changed before the save was durable"
    rerun = run_savecore(image, crash, None)
    assert rerun.returncode == 0, rerun.stderr
    (save,) = saves(crash)
    assert sorted(p.name for p in save.iterdir()) == ["info.json", "info.txt", "vmcore.encrypted"]
    assert info_of(save)["encryption"]["saved_decrypted"] is False
    assert ("already saved" if durable else "saved dump") in rerun.stdout
    assert device_state(image) == (False, False, True)
