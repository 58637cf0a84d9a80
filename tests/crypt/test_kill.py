# SPDX-License-Identifier: GPL-2.0-or-later
"""An encrypted dump's save killed (SIGKILL) at a step, then rerun: one save, device cleared last.

The same kill hook as tests/savecore/test_kill.py (DISKDUMP_SAVECORE_KILL_AT);
the save without a key writes vmcore.encrypted, and the device must stay
byte for byte what the writer left until the save is durable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from diskdump.cli.main import main
from diskdump.savecore.save import KILL_HOOK_ENV, STEPS
from tests.crypt.conftest import KeyPair
from tests.panic.helpers import write_vmcore
from tests.savecore.conftest import device_state, digest, info_of, make_image, saves

IMAGE_SIZE = 64 << 20


@pytest.fixture(scope="module")
def vmcore(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_vmcore(tmp_path_factory.mktemp("src") / "src.elf")


def _savecore(image: Path, crash: Path, kill_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != KILL_HOOK_ENV}
    if kill_at is not None:
        env[KILL_HOOK_ENV] = kill_at
    argv = [
        sys.executable,
        "-m",
        "diskdump.cli.main",
        "savecore",
        "--device",
        str(image),
        "--dir",
        str(crash),
        "--min-free",
        "0",
        "--quiet",
    ]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("step", ["partial-created", "vmcore-written", "renamed", "reinit-data"])
def test_encrypted_save_killed_then_rerun_saves_once(
    step: str, tmp_path: Path, vmcore: Path, x25519_keys: KeyPair
) -> None:
    image = tmp_path / "dump.img"
    make_image(image, IMAGE_SIZE)
    assert (
        main(
            [
                "dump",
                "--unarmed",
                "--no-mlock",
                "-q",
                "--device",
                str(image),
                "--source",
                str(vmcore),
                "--encrypt-to",
                str(x25519_keys.public_pem),
            ]
        )
        == 0
    )
    crash = tmp_path / "crash"
    crash.mkdir(mode=0o700)
    before = digest(image)
    killed = _savecore(image, crash, step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    durable = STEPS.index(step) >= STEPS.index("renamed")
    assert len(saves(crash)) == (1 if durable else 0)
    if STEPS.index(step) < STEPS.index("reinit-data"):
        assert digest(image) == before, "device changed before the save was durable"
    rerun = _savecore(image, crash, None)
    assert rerun.returncode == 0, rerun.stderr
    (save,) = saves(crash)
    assert sorted(p.name for p in save.iterdir()) == ["info.json", "info.txt", "vmcore.encrypted"]
    assert info_of(save)["encryption"]["saved_decrypted"] is False
    assert ("already saved" if durable else "saved dump") in rerun.stdout
    assert device_state(image) == (False, False, True)
