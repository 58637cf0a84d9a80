# SPDX-License-Identifier: GPL-2.0-or-later
"""The QEMU tier: real Debian kernels under qemu-system-x86_64 (TCG), real vmcores, real panics.

Public entry points:

* :func:`qmp_vmcore` / :func:`qmp_vmcores`: an ELF (and a flattened kdump-zlib)
  ``dump-guest-memory`` of a running Debian 6.1 or 6.12 kernel, cached by release;
* :func:`fetch_kernel`: the unpacked Debian kernel package;
* the capture initramfs builder and the full kdump cycle (``cycle.py``).

Nothing here runs at import time; QEMU, apt-get and dpkg are only called when
asked.
"""

from __future__ import annotations

from diskdump.vm.assets import KernelAssets, cache_dir, fetch_busybox, fetch_kernel
from diskdump.vm.vmcores import QmpVmcores, qmp_vmcore, qmp_vmcores

__all__ = [
    "KernelAssets",
    "QmpVmcores",
    "cache_dir",
    "fetch_busybox",
    "fetch_kernel",
    "qmp_vmcore",
    "qmp_vmcores",
]
