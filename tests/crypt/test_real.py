# SPDX-License-Identifier: GPL-2.0-or-later
"""The encryption round trip on a real kernel's memory, read back by crash and makedumpfile.

The vmcore is the QMP dump of the 512 MiB Debian 6.1 guest the VM tier
builds and caches (diskdump.vm.qmp_vmcores)::

    diskdump dump --encrypt-to PUB --compress none     sealed chunks on a partition image
    diskdump savecore --keep (no key)                  vmcore.encrypted, info.json, info.txt
        no page of the source is findable in it (pages stored uncompressed, then sealed)
    diskdump decrypt --key PRIV                        a kdump vmcore (zlib)
        crash --osrelease and makedumpfile --dump-dmesg open it; every page equals the source
    diskdump savecore --decrypt-with PRIV (other dir)  vmcore + dmesg.txt == makedumpfile's

``--compress none`` makes the "no clear page" check strong: a page left
unsealed would be in the file byte for byte. Wall times are recorded as
properties, never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diskdump.formats.detect import opened_vmcore
from diskdump.formats.kdump_read import KdumpFile
from tests.conftest import need_tool
from tests.crypt.conftest import make_pair
from tests.savecore.conftest import saves

pytestmark = [pytest.mark.vm, pytest.mark.slow]

#: dump partition size for a 512 MiB guest (the pages held are about 115 MiB raw)
IMAGE_SIZE = 700 << 20
#: pages compared per read
_BATCH = 256
#: distinctive source pages searched for in vmcore.encrypted
_PROBES = 64


def _cli(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "diskdump.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    return proc, time.monotonic() - started


def _probe_pages(source: Path) -> list[bytes]:
    """Pages of the source with many distinct byte values (never produced by chance)."""
    found: list[bytes] = []
    with opened_vmcore(source) as src:
        for run in src.data_runs():
            for pfn in range(run.start_pfn, run.end_pfn, 97):
                page = src.read_pages(pfn, 1)
                if len(set(page)) > 128:
                    found.append(page)
                if len(found) == _PROBES:
                    return found
    return found


def _compare_pages(source: Path, vmcore: Path) -> int:
    compared = 0
    with opened_vmcore(source) as src, KdumpFile.open(str(vmcore)) as core:
        for run in src.data_runs():
            for pfn in range(run.start_pfn, run.end_pfn, _BATCH):
                count = min(_BATCH, run.end_pfn - pfn)
                assert core.read_pages(pfn, count) == src.read_pages(pfn, count), hex(pfn)
                compared += count
    return compared


def test_real_vmcore_encrypted_round_trip(
    tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    from tests.vm.conftest import need_vm_tools

    need_vm_tools()
    crash_tool, makedumpfile = need_tool("crash"), need_tool("makedumpfile")
    from diskdump.vm import qmp_vmcores

    source = qmp_vmcores("6.1").elf
    keys = make_pair(tmp_path, "x25519")
    image = tmp_path / "dump.img"
    with open(image, "wb") as file:
        os.posix_fallocate(file.fileno(), 0, IMAGE_SIZE)
    proc, _ = _cli("format", str(image), "--quiet")
    assert proc.returncode == 0, proc.stderr
    proc, dump_s = _cli(
        "dump",
        "--unarmed",
        "--no-mlock",
        "--json",
        "--device",
        str(image),
        "--source",
        str(source),
        "--compress",
        "none",
        "--encrypt-to",
        str(keys.public_pem),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["encrypted"] is True
    crash = tmp_path / "crash"
    crash.mkdir(mode=0o700)
    proc, save_s = _cli(
        "savecore",
        "--device",
        str(image),
        "--dir",
        str(crash),
        "--min-free",
        "0",
        "--quiet",
        "--keep",
    )
    assert proc.returncode == 0, proc.stderr
    (saved,) = saves(crash)
    assert not (saved / "dmesg.txt").exists() and not (saved / "vmcore").exists()
    sealed = (saved / "vmcore.encrypted").read_bytes()
    probes = _probe_pages(source)
    assert len(probes) == _PROBES
    assert not [p for p in probes if p in sealed]
    del sealed

    out = tmp_path / "vmcore"
    proc, decrypt_s = _cli(
        "decrypt",
        "--quiet",
        "--key",
        str(keys.private_pem),
        str(saved / "vmcore.encrypted"),
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    for name, value in (("dump_s", dump_s), ("savecore_s", save_s), ("decrypt_s", decrypt_s)):
        record_property(name, round(value, 2))
    print(
        f"\n{source.name}: encrypted dump {dump_s:.1f} s, savecore (kept encrypted) "
        f"{save_s:.1f} s, decrypt to kdump {decrypt_s:.1f} s"
    )
    osrelease = subprocess.run(
        [crash_tool, "--osrelease", str(out)], capture_output=True, text=True, timeout=300
    )
    assert osrelease.stdout.strip() == "6.1.0-56-amd64", osrelease.stdout + osrelease.stderr
    dmesg = tmp_path / "dmesg"
    proc = subprocess.run(
        [makedumpfile, "--dump-dmesg", str(out), str(dmesg)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Linux version 6.1.0" in dmesg.read_text()
    assert _compare_pages(source, out) > 100_000

    crash2 = tmp_path / "crash2"
    crash2.mkdir(mode=0o700)
    proc, _ = _cli(
        "savecore",
        "--device",
        str(image),
        "--dir",
        str(crash2),
        "--min-free",
        "0",
        "--quiet",
        "--decrypt-with",
        str(keys.private_pem),
    )
    assert proc.returncode == 0, proc.stderr
    (saved2,) = saves(crash2)
    assert (saved2 / "dmesg.txt").read_text() == dmesg.read_text()
    assert json.loads((saved2 / "info.json").read_text())["encryption"]["saved_decrypted"]
    proc, _ = _cli("check", str(image), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr  # re-initialised after the save
