# SPDX-License-Identifier: GPL-2.0-or-later
"""Real vmcores of real kernels: QEMU ``dump-guest-memory`` of a Debian kernel at work.

``qmp_vmcore("6.1")`` boots the kernel under TCG with a busybox initramfs that
loads the virtio and qemu_fw_cfg modules (so VMCOREINFO reaches QEMU through
``-device vmcoreinfo``), runs a small workload, and takes two dumps of the same
running guest over QMP, into the cache::

    vmcores/qmp-<release>.elf          dump-guest-memory format=elf
    vmcores/qmp-<release>.kdump.flat   dump-guest-memory format=kdump-zlib (flattened)
    vmcores/qmp-<release>.console.log  the guest's serial console

The guest keeps running between the two dumps but does nothing new (its /init
sleeps), so both hold the same kernel log. Files are reused when present;
building is locked per release against concurrent runs.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from diskdump.vm.assets import KernelAssets, cache_dir, cache_lock, fetch_busybox, fetch_kernel
from diskdump.vm.initramfs import Initramfs, guest_script
from diskdump.vm.kmod import resolve_modules
from diskdump.vm.qemu import Guest, GuestSpec

__all__ = ["GUEST_MODULES", "QmpVmcores", "build_guest_initramfs", "qmp_vmcore", "qmp_vmcores"]

log = logging.getLogger(__name__)

#: modules every guest loads, in the order vm-notes.md found to work (deps resolved by kmod)
GUEST_MODULES = ("virtio_pci", "virtio_blk", "qemu_fw_cfg")
#: guest RAM of the QMP-dump guest, MiB
QMP_GUEST_MEMORY_MIB = 512
#: seconds from QEMU start to the guest's "ready" marker (about 15 s here; TCG is slow)
BOOT_TIMEOUT = 240.0
#: kernel command line of the QMP guest (quiet: the serial console costs time under TCG)
QMP_APPEND = "console=ttyS0 panic=-1 quiet loglevel=4"
#: marker the guest prints once the workload runs (qmp-init.sh)
READY_MARKER = r"DISKDUMP-VM: ready for dump-guest-memory"


@dataclass(frozen=True, slots=True)
class QmpVmcores:
    """Both dumps of one guest and its console log."""

    release: str
    elf: Path
    kdump_flat: Path
    console_log: Path


def build_guest_initramfs(kernel: KernelAssets, init_script: str, output: Path) -> int:
    """A busybox initramfs whose /init is the package's guest script ``init_script``.

    :return: the image size in bytes
    """
    image = Initramfs()
    image.add_busybox(fetch_busybox())
    image.add_modules(resolve_modules(kernel.modules, list(GUEST_MODULES)))
    image.add_bytes("/etc/common.sh", guest_script("common.sh"))
    image.add_bytes("/init", guest_script(init_script), 0o755)
    return image.write(output)


def _paths(release: str) -> QmpVmcores:
    base = cache_dir() / "vmcores"
    base.mkdir(exist_ok=True)
    return QmpVmcores(
        release=release,
        elf=base / f"qmp-{release}.elf",
        kdump_flat=base / f"qmp-{release}.kdump.flat",
        console_log=base / f"qmp-{release}.console.log",
    )


def _take(kernel: KernelAssets, out: QmpVmcores) -> None:
    with tempfile.TemporaryDirectory(prefix="diskdump-qmp-") as tmp:
        work = Path(tmp)
        initrd = work / "initrd.img"
        build_guest_initramfs(kernel, "qmp-init.sh", initrd)
        spec = GuestSpec(
            kernel=kernel.vmlinuz, initrd=initrd, append=QMP_APPEND, memory_mib=QMP_GUEST_MEMORY_MIB
        )
        started = time.monotonic()
        try:
            with Guest(spec, work) as guest:
                guest.wait_for(READY_MARKER, BOOT_TIMEOUT)
                booted = time.monotonic()
                elf_tmp = out.elf.with_suffix(".elf.tmp")
                flat_tmp = out.kdump_flat.with_suffix(".flat.tmp")
                guest.dump_memory(elf_tmp, "elf")
                guest.dump_memory(flat_tmp, "kdump-zlib")
                log.info(
                    "%s: boot %.1f s, dumps %.1f s",
                    kernel.release,
                    booted - started,
                    time.monotonic() - booted,
                )
        finally:
            shutil.copyfile(work / "console.log", out.console_log)
        elf_tmp.rename(out.elf)
        flat_tmp.rename(out.kdump_flat)


def qmp_vmcores(kernel: str = "6.1") -> QmpVmcores:
    """The QMP dumps of kernel series ``kernel`` ("6.1" or "6.12"), built on first use.

    :raises VMError: the kernel cannot be fetched, the guest does not boot, QMP fails
        (the message names the console log)
    """
    assets = fetch_kernel(kernel)
    out = _paths(assets.release)
    with cache_lock(f"vmcore-{assets.release}"):
        if not (out.elf.is_file() and out.kdump_flat.is_file()):
            _take(assets, out)
    return out


def qmp_vmcore(kernel: str = "6.1") -> Path:
    """Path of the ELF QMP dump of kernel series ``kernel``, built on first use.

    :raises VMError: see :func:`qmp_vmcores`
    """
    return qmp_vmcores(kernel).elf
