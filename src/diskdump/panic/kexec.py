# SPDX-License-Identifier: GPL-2.0-or-later
"""Loading the capture kernel: ``kexec -p`` with diskdump's capture initramfs.

What `diskdump arm` checks before it loads, each failure a clear error:

* the running kernel supports crash kexec (``/sys/kernel/kexec_crash_size`` exists);
* memory is reserved for the capture kernel (``crashkernel=``: the size is not 0)
  and is at least :data:`MIN_CRASHKERNEL_SIZE`, the smallest reservation with
  which a capture was measured to work with the default capture initramfs
  (docs/vm.md: 144 MiB captured a 1 GiB guest, 128 MiB ran out of memory; the
  check asks for 160 MiB, one step of margin);
* the capture kernel and initramfs exist and fit in the reservation.

The capture kernel's command line is the running kernel's (``/proc/cmdline``)
without the options that must not repeat in the capture kernel
(``crashkernel=``, ``BOOT_IMAGE=``, ``initrd=``), plus the configured append
(``irqpoll nr_cpus=1 reset_devices`` by default). When the kernel is locked
down (Secure Boot: ``/sys/kernel/security/lockdown`` shows ``[integrity]`` or
``[confidentiality]``) kexec must use ``kexec_file_load`` (``kexec -s``), which
verifies the capture kernel's signature; otherwise kexec-tools' default
``kexec_load`` is used, which loads Debian's signed bzImage as it is.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from diskdump.config import CaptureOptions
from diskdump.errors import DumpError

__all__ = [
    "MIN_CRASHKERNEL_SIZE",
    "CapturePaths",
    "capture_command_line",
    "kexec_command",
    "load_capture",
]

#: smallest crashkernel= reservation measured to capture with the default initramfs
MIN_CRASHKERNEL_SIZE: Final = 160 << 20
#: kernel options that describe the first boot and must not reach the capture kernel
_DROP_OPTIONS: Final = ("crashkernel=", "BOOT_IMAGE=", "initrd=", "kexec_jump_back_entry=")
_LOCKED_DOWN: Final = ("[integrity]", "[confidentiality]")


@dataclass(frozen=True, slots=True)
class CapturePaths:
    """The sysfs and procfs files the loader reads (tests point them elsewhere)."""

    crash_size: str = "/sys/kernel/kexec_crash_size"
    crash_loaded: str = "/sys/kernel/kexec_crash_loaded"
    cmdline: str = "/proc/cmdline"
    lockdown: str = "/sys/kernel/security/lockdown"


def capture_command_line(running: str, append: str) -> str:
    """``running`` without first-boot options, plus ``append``: the capture command line."""
    kept = [opt for opt in shlex.split(running) if not opt.startswith(_DROP_OPTIONS)]
    extra = [opt for opt in shlex.split(append) if opt not in kept]
    return " ".join([*kept, *extra])


def kexec_command(kernel: str, initrd: str, cmdline: str, *, file_load: bool) -> list[str]:
    """The kexec invocation that loads the capture kernel (``-p``: on panic)."""
    kexec = shutil.which("kexec") or "/usr/sbin/kexec"
    mode = ["-s"] if file_load else []
    return [kexec, "-p", *mode, kernel, f"--initrd={initrd}", f"--append={cmdline}"]


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _reserved(paths: CapturePaths) -> int:
    text = _read(paths.crash_size)
    if text is None:
        raise DumpError(
            "this kernel cannot load a capture kernel",
            path=paths.crash_size,
            hint="a kernel built with CONFIG_KEXEC and CONFIG_CRASH_DUMP is needed",
        )
    reserved = int(text)
    if reserved < MIN_CRASHKERNEL_SIZE:
        raise DumpError(
            "too little memory reserved for the capture kernel",
            path=paths.crash_size,
            expected=f">= {MIN_CRASHKERNEL_SIZE >> 20} MiB",
            found=f"{reserved >> 20} MiB",
            hint="boot with crashkernel=160M (or more) on the kernel command line",
        )
    return reserved


def _files(opts: CaptureOptions, reserved: int) -> tuple[str, str]:
    kernel = opts.kernel or f"/boot/vmlinuz-{os.uname().release}"
    for what, path in (("capture kernel", kernel), ("capture initramfs", opts.initrd)):
        if not os.path.isfile(path):
            raise DumpError(
                f"{what} does not exist",
                path=path,
                hint="diskdump initramfs build --output PATH writes the initramfs",
            )
    size = os.path.getsize(kernel) + os.path.getsize(opts.initrd)
    if size >= reserved:
        raise DumpError(
            "capture kernel and initramfs do not fit the reserved memory",
            path=opts.initrd,
            expected=f"< {reserved} bytes",
            found=size,
        )
    return kernel, opts.initrd


def load_capture(opts: CaptureOptions, paths: CapturePaths = CapturePaths()) -> str:
    """Load the capture kernel with ``kexec -p``; return what was loaded, in words.

    :raises DumpError: no crash-kexec support, too little reserved memory, a
        missing kernel or initramfs, or kexec failed (its message is included)
    """
    reserved = _reserved(paths)
    kernel, initrd = _files(opts, reserved)
    cmdline = capture_command_line(_read(paths.cmdline) or "", opts.append)
    file_load = any(mode in (_read(paths.lockdown) or "") for mode in _LOCKED_DOWN)
    command = kexec_command(kernel, initrd, cmdline, file_load=file_load)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or _read(paths.crash_loaded) != "1":
        raise DumpError(
            f"kexec -p failed (exit {done.returncode}): {done.stderr.strip()}",
            path=kernel,
            hint=shlex.join(command),
        )
    how = "kexec_file_load" if file_load else "kexec_load"
    return (
        f"loaded {kernel} with {initrd} ({os.path.getsize(initrd)} bytes) by {how} into "
        f"{reserved >> 20} MiB reserved; command line: {cmdline}"
    )
