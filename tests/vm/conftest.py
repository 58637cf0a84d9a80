# SPDX-License-Identifier: GPL-2.0-or-later
"""Fixtures of the QEMU tier: real vmcores of real kernels, built on demand and cached.

Other tiers may use them too::

    from diskdump.vm import qmp_vmcore
    path = qmp_vmcore("6.1")      # cached in ~/.cache/diskdump/vmcores

The session fixtures skip (fail under DISKDUMP_REQUIRE_ALL=1) when QEMU or apt
are missing, naming why.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from diskdump.vm import QmpVmcores, qmp_vmcores
from tests.conftest import need

#: kernel series the VM tier covers
KERNELS = ("6.1", "6.12")


def need_vm_tools() -> None:
    """Skip unless QEMU and apt-get are available."""
    need(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86_64 is not installed")
    need(shutil.which("apt-get") is not None, "apt-get is needed to fetch the Debian kernels")


@pytest.fixture(scope="session", params=KERNELS, ids=lambda k: f"linux-{k}")
def qmp_dumps(request: pytest.FixtureRequest) -> QmpVmcores:
    """ELF and flattened kdump QMP dumps of each kernel series (built once, cached)."""
    need_vm_tools()
    return qmp_vmcores(request.param)


@pytest.fixture(scope="session")
def qmp_dumps_61() -> QmpVmcores:
    """QMP dumps of Debian 12's 6.1 kernel only."""
    need_vm_tools()
    return qmp_vmcores("6.1")


#: where a failing VM test leaves its console log (the checkout's artefacts/, git-ignored)
ARTEFACTS = Path(__file__).resolve().parents[2] / "artefacts" / "vm"


@contextlib.contextmanager
def keep_on_failure(workdir: Path, name: str) -> Iterator[None]:
    """Copy ``workdir``'s console log and QEMU stderr to artefacts/vm/<name>/ if the body fails."""
    try:
        yield
    except BaseException:
        dest = ARTEFACTS / name
        dest.mkdir(parents=True, exist_ok=True)
        for item in ("console.log", "qemu.stderr"):
            if (workdir / item).exists():
                shutil.copyfile(workdir / item, dest / item)
        raise
