# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump arm --encrypt-to``: the key is checked, recorded, hashed, and used by the dump.

The commands run in a subprocess on a copy of the package (as the manifest
tests in tests/panic do), so that the manifest the test arms cannot be
invalidated by an unrelated edit of the working tree while the test runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from diskdump.cli.exitcodes import ExitCode
from diskdump.devices import open_device
from diskdump.devices.base import BlockIO
from diskdump.errors import NotThisFormatError
from diskdump.formats.dumpheader import DumpFlag
from diskdump.formats.dumpimage import open_dump
from diskdump.partition.label import read_label
from tests.crypt.conftest import KeyPair
from tests.panic.helpers import write_vmcore
from tests.savecore.conftest import make_image

SRC_DIR = Path(__file__).resolve().parents[2] / "src"
IMAGE_SIZE = 64 << 20
#: /proc/meminfo of a machine whose dump fits the image
MEMINFO = "MemTotal:       16384 kB\nMemFree:        1000 kB\n"


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("pkg")
    shutil.copytree(
        SRC_DIR / "diskdump", copy / "diskdump", ignore=shutil.ignore_patterns("__pycache__")
    )
    return copy


def _run(package: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(package))
    return subprocess.run(
        [sys.executable, "-m", "diskdump.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_arm_records_the_key_and_the_armed_dump_is_encrypted(
    tmp_path: Path, package: Path, x25519_keys: KeyPair
) -> None:
    image = tmp_path / "dump.img"
    make_image(image, IMAGE_SIZE)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(MEMINFO)
    manifest = tmp_path / "manifest.json"
    base = ["--device", str(image), "--manifest", str(manifest)]
    armed = _run(
        package,
        "arm",
        "--no-load",
        *base,
        "--meminfo",
        str(meminfo),
        "--encrypt-to",
        str(x25519_keys.public_pem),
    )
    assert armed.returncode == ExitCode.OK, armed.stderr
    assert f"dumps encrypted to: {x25519_keys.public_pem}" in armed.stdout
    doc = json.loads(manifest.read_text())
    assert doc["encrypt_to"] == str(x25519_keys.public_pem)
    assert str(x25519_keys.public_pem) in doc["files"]
    assert any("/cryptography/" in path and path.endswith(".so") for path in doc["files"])

    vmcore = write_vmcore(tmp_path / "src.elf")
    # no --encrypt-to here: the armed manifest names the key
    dump = _run(package, "dump", *base, "--source", str(vmcore), "--no-mlock", "-q")
    assert dump.returncode == ExitCode.OK, dump.stderr
    with open_device(image) as device:
        label = read_label(device)
        locked = open_dump(BlockIO(device), label.reserve_blocks, name=str(image))
        assert locked.header.flags & DumpFlag.ENCRYPTED and locked.locked
        assert not locked.header.flags & DumpFlag.UNARMED
        opened = open_dump(
            BlockIO(device), label.reserve_blocks, name=str(image), private_key=x25519_keys.private
        )
        assert opened.pages_held > 10_000 and opened.metadata.kernel_log

    # the key file is part of the manifest: a swapped key refuses the next dump
    x25519_keys.public_pem.write_bytes(x25519_keys.public_pem.read_bytes() + b"\n")
    refused = _run(package, "dump", *base, "--source", str(vmcore), "--no-mlock", "-q")
    assert refused.returncode == ExitCode.FAILURE
    assert f"{x25519_keys.public_pem}: sha256 " in refused.stderr


def test_arm_refuses_a_key_that_does_not_load(tmp_path: Path, package: Path) -> None:
    image = tmp_path / "dump.img"
    make_image(image, IMAGE_SIZE)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(MEMINFO)
    manifest = tmp_path / "manifest.json"
    small = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    key = tmp_path / "rsa2048.pub.pem"
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    key.write_bytes(small.public_bytes(serialization.Encoding.PEM, spki))
    proc = _run(
        package,
        "arm",
        "--no-load",
        "--device",
        str(image),
        "--manifest",
        str(manifest),
        "--meminfo",
        str(meminfo),
        "--encrypt-to",
        str(key),
    )
    assert proc.returncode == ExitCode.FAILURE
    assert f"error: RSA key too small on {key}: expected '>= 3072 bits', got 0x800" in proc.stderr
    assert not manifest.exists()
    vmcore = write_vmcore(tmp_path / "src.elf")
    proc = _run(
        package,
        "dump",
        "--unarmed",
        "--device",
        str(image),
        "--source",
        str(vmcore),
        "--no-mlock",
        "-q",
        "--encrypt-to",
        str(tmp_path / "missing.pem"),
    )
    assert proc.returncode == ExitCode.FAILURE
    assert "error: cannot read the public key: No such file or directory" in proc.stderr
    with open_device(image) as device:  # nothing written
        label = read_label(device)
        with pytest.raises(NotThisFormatError, match=r"^no dump header"):
            open_dump(BlockIO(device), label.reserve_blocks, name=str(image))
