# SPDX-License-Identifier: GPL-2.0-or-later
"""The whole kdump cycle on a real Debian kernel under QEMU (TCG).

Sequence (each phase timed, host wall clock)::

    host     disks: vda = blank (NOT formatted), vdb = `diskdump format`ed dump device
    host     capture.img  = capture initramfs (capture.py), config lists vda then vdb
    host     first.img    = capture.img + an appended archive: /etc/first-stage.sh,
                            /boot/vmlinuz, /boot/capture.img, /etc/diskdump-vm.env
    boot     first kernel, crashkernel=<N>M                     -> "arming"
    arm      kexec -p (or `diskdump arm`) loads the capture kernel  -> "arm exited"
    workload page cache, anonymous memory, processes          -> "panicking now"
    panic    echo c > /proc/sysrq-trigger; capture kernel boots -> "capture kernel"
    capture  `diskdump dump`: vda fails the pattern check, vdb takes the dump
    reboot   final action reboots; the first kernel finds the dump (`diskdump check`)
    save     `diskdump savecore` (in the guest onto an ext4 disk, or on the host
             against the dump image) writes <dir>/<host>-<time>/vmcore

The guest prints ``DISKDUMP-VM: ...`` markers on its serial console; the host
follows them. A cycle that goes wrong raises :class:`VMError` naming the console
log, which is kept in the work directory.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from diskdump.errors import VMError
from diskdump.vm.assets import fetch_busybox, fetch_kernel
from diskdump.vm.capture import CaptureImage, CaptureOptions, build_capture_initramfs
from diskdump.vm.initramfs import Initramfs, guest_script
from diskdump.vm.kmod import resolve_modules
from diskdump.vm.qemu import Guest, GuestSpec

__all__ = ["CycleOptions", "CycleResult", "PhaseCallback", "run_cycle"]

log = logging.getLogger(__name__)

#: callback(phase, seconds the phase took, console line that ended it)
PhaseCallback = Callable[[str, float, str], None]

#: smallest crashkernel= (MiB) measured to capture with this initramfs (docs/vm.md)
DEFAULT_CRASHKERNEL_MIB = 160
#: the blank disk the writer must skip, and the formatted dump device, as the guest sees them
BLANK_DEVICE, DUMP_DEVICE = "/dev/vda", "/dev/vdb"
#: guest device of the ext4 disk savecore writes to when it runs in the guest
SAVE_DEVICE = "/dev/vdc"
#: appended to the capture kernel's command line (vm-notes.md; kdumpctl uses the same)
CAPTURE_APPEND = "console=ttyS0 irqpoll nr_cpus=1 reset_devices panic=1 quiet"
#: zstd level of the first-stage archive: its big files (bzImage, capture.img) are compressed
_FAST_ZSTD_LEVEL = 1
#: extra room on the dump device beyond guest RAM, MiB
_DUMP_MARGIN_MIB = 64
#: MiB in bytes
_MIB = 1 << 20
#: any panic but the one we trigger, or the first kernel booting again before the dump
#: is found, means the cycle failed (a capture kernel that panics reboots: panic=1)
FAIL_PATTERN = (
    r"Kernel panic - not syncing: (?!sysrq triggered crash).*"
    r"|DISKDUMP-VM: first kernel .* arming"
)
#: phases, the console marker that ends each, and its time-out in seconds (TCG is slow)
PHASES: tuple[tuple[str, str, float], ...] = (
    ("boot", r"DISKDUMP-VM: first kernel .* arming", 240.0),
    ("arm", r"DISKDUMP-VM: arm exited with status (\d+).*", 120.0),
    ("workload", r"Kernel panic - not syncing: sysrq triggered crash", 120.0),
    ("panic", r"DISKDUMP-VM: capture kernel .*", 240.0),
    ("capture", r"DISKDUMP-VM: diskdump dump exited with status (\d+)", 600.0),
    ("reboot", r"DISKDUMP-VM: rebooted: .* holds a dump", 240.0),
    ("poweroff", r"DISKDUMP-VM: cycle done.*", 900.0),
)


@dataclass(frozen=True)
class CycleOptions:
    """How to run one cycle.

    :param kernel: kernel series, "6.1" or "6.12"
    :param memory_mib: guest RAM, MiB
    :param crashkernel_mib: memory reserved for the capture kernel, MiB
    :param arm_with: "kexec" (kexec -p from /init) or "diskdump" (`diskdump arm`)
    :param savecore_in_guest: run savecore in the rebooted guest (else on the host)
    :param dump_options: extra TOML lines for the [dump] table
    """

    kernel: str = "6.1"
    workdir: Path = Path("vm-cycle")
    memory_mib: int = 512
    cpus: int = 2
    crashkernel_mib: int = DEFAULT_CRASHKERNEL_MIB
    arm_with: str = "diskdump"
    savecore_in_guest: bool = False
    dump_options: tuple[str, ...] = ('compress = "zstd"', "level = 1", 'verify = "full"')


@dataclass
class CycleResult:
    """What a cycle produced."""

    release: str
    workdir: Path
    console_log: Path
    capture: CaptureImage
    dump_status: int | None = None
    vmcore: Path | None = None
    savecore_dir: Path | None = None
    phases: dict[str, float] = field(default_factory=dict)


def _diskdump(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the diskdump CLI of this checkout on the host (the public command contract)."""
    argv = [sys.executable, "-m", "diskdump.cli.main", *args]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise VMError(f"diskdump {args[0]} timed out after {timeout:.0f} s") from err


def _make_disks(opts: CycleOptions) -> tuple[Path, ...]:
    size = (opts.memory_mib + _DUMP_MARGIN_MIB) * _MIB
    blank, dump = opts.workdir / "blank.img", opts.workdir / "dump.img"
    for disk in (blank, dump):
        disk.unlink(missing_ok=True)
        with open(disk, "wb") as f:
            f.truncate(size)
    with open(dump, "r+b") as f:
        # the file driver refuses sparse images: a dump must not hit ENOSPC at panic time
        os.posix_fallocate(f.fileno(), 0, size)
    done = _diskdump("format", str(dump))
    if done.returncode != 0:
        raise VMError(
            "diskdump format of the dump image failed",
            path=str(dump),
            found=(done.stderr or done.stdout).strip()[-300:],
        )
    disks = [blank, dump]
    if opts.savecore_in_guest:
        save = opts.workdir / "save.img"
        save.unlink(missing_ok=True)
        with open(save, "wb") as f:
            f.truncate(size)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(save)], check=True, capture_output=True)
        disks.append(save)
    return tuple(disks)


def _config_text(opts: CycleOptions) -> str:
    lines = [f'[[device]]\npath = "{BLANK_DEVICE}"\n', f'[[device]]\npath = "{DUMP_DEVICE}"\n']
    lines.append("[dump]\n" + "".join(f"{line}\n" for line in opts.dump_options))
    lines.append('final_action = "reboot"\n')
    # what the guest's `diskdump arm` loads with kexec -p (the first kernel's cmdline,
    # less crashkernel=, plus these options: see diskdump.panic.kexec)
    lines.append(
        f'[capture]\nkernel = "/boot/vmlinuz"\ninitrd = "/boot/capture.img"\n'
        f'append = "{CAPTURE_APPEND}"\n'
    )
    return "\n".join(lines)


def _first_stage(opts: CycleOptions, capture: Path, vmlinuz: Path, modules_dir: Path) -> Path:
    """first.img: the capture image followed by the first-stage archive."""
    overlay = Initramfs()
    overlay.add_bytes("/etc/first-stage.sh", guest_script("first-stage.sh"), 0o755)
    overlay.add_host_file("/boot/vmlinuz", vmlinuz, 0o644)
    overlay.add_host_file("/boot/capture.img", capture, 0o644)
    env = {
        "DUMP_DEVICE": DUMP_DEVICE,
        "WAIT_DISK": DUMP_DEVICE,
        "CAPTURE_APPEND": CAPTURE_APPEND,
        "ARM_WITH": opts.arm_with,
        "SAVECORE_DEVICE": SAVE_DEVICE if opts.savecore_in_guest else "",
    }
    overlay.add_bytes(
        "/etc/diskdump-vm.env", "".join(f"{k}='{v}'\n" for k, v in env.items()).encode()
    )
    if opts.savecore_in_guest:
        # ext4's metadata checksums need a crc32c implementation (a module in both kernels)
        names = ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"]
        overlay.add_modules(resolve_modules(modules_dir, names))
    overlay_path = opts.workdir / "overlay.img"
    overlay.write(overlay_path, level=_FAST_ZSTD_LEVEL)
    first = opts.workdir / "first.img"
    first.write_bytes(capture.read_bytes() + overlay_path.read_bytes())
    return first


def _follow(
    guest: Guest, result: CycleResult, on_phase: PhaseCallback | None, savecore_in_guest: bool
) -> None:
    position = 0
    mark = time.monotonic()
    for name, pattern, timeout in PHASES:
        fail = FAIL_PATTERN if name != "boot" else None
        match = guest.wait_for(pattern, timeout, start=position, fail=fail)
        position = match.end()
        now = time.monotonic()
        # with savecore in the guest, the last phase is mostly savecore's run
        label = "savecore" if name == "poweroff" and savecore_in_guest else name
        result.phases[label] = now - mark
        mark = now
        if name == "capture":
            result.dump_status = int(match.group(1))
        if on_phase is not None:
            on_phase(label, result.phases[label], match.group(0))
    guest.wait_exit(60)


def run_cycle(
    opts: CycleOptions,
    on_phase: PhaseCallback | None = None,
    on_line: Callable[[str], None] | None = None,
) -> CycleResult:
    """Run one full cycle; the console log stays in ``opts.workdir``.

    :param on_phase: called after each phase with its name and duration
    :param on_line: called with each line of the guest's serial console
    :raises VMError: a phase did not complete (the message names the console log)
    """
    opts.workdir.mkdir(parents=True, exist_ok=True)
    kernel = fetch_kernel(opts.kernel)
    started = time.monotonic()
    disks = _make_disks(opts)
    capture_opts = CaptureOptions(
        modules_dir=kernel.modules,
        busybox=fetch_busybox(),
        config_text=_config_text(opts),
        wait_disk=DUMP_DEVICE,
    )
    capture = build_capture_initramfs(opts.workdir / "capture.img", capture_opts)
    first = _first_stage(opts, capture.path, kernel.vmlinuz, kernel.modules)
    result = CycleResult(kernel.release, opts.workdir, opts.workdir / "console.log", capture)
    result.phases["prepare"] = time.monotonic() - started
    if on_phase is not None:
        on_phase("prepare", result.phases["prepare"], f"capture initramfs {capture.size} bytes")
    append = f"console=ttyS0 crashkernel={opts.crashkernel_mib}M panic=1 quiet"
    spec = GuestSpec(
        kernel=kernel.vmlinuz,
        initrd=first,
        append=append,
        memory_mib=opts.memory_mib,
        cpus=opts.cpus,
        disks=disks,
        reboot=True,
    )
    with Guest(spec, opts.workdir, on_line) as guest:
        _follow(guest, result, on_phase, opts.savecore_in_guest)
    if opts.savecore_in_guest:
        _fetch_guest_savecore(opts, disks[2], result)
    else:
        _host_savecore(opts, disks[1], result, on_phase)
    return result


def _fetch_guest_savecore(opts: CycleOptions, save_disk: Path, result: CycleResult) -> None:
    """Copy what the guest's savecore wrote on its ext4 disk out with debugfs (no mount)."""
    crash_dir = opts.workdir / "crash"
    crash_dir.mkdir(mode=0o700, exist_ok=True)
    try:
        subprocess.run(
            ["debugfs", "-R", f"rdump / {crash_dir}", str(save_disk)],
            check=True,
            capture_output=True,
            timeout=300,
        )
    except (OSError, subprocess.SubprocessError) as err:
        raise VMError(f"cannot copy savecore's output out: {err}", path=str(save_disk)) from err
    vmcores = [p for p in crash_dir.glob("*/vmcore") if not p.parent.is_symlink()]
    if not vmcores:
        raise VMError("savecore in the guest wrote no vmcore", path=str(save_disk))
    result.vmcore = max(vmcores, key=lambda p: p.stat().st_mtime).resolve()
    result.savecore_dir = result.vmcore.parent


def _host_savecore(
    opts: CycleOptions, dump: Path, result: CycleResult, on_phase: PhaseCallback | None
) -> None:
    start = time.monotonic()
    crash_dir = opts.workdir / "crash"
    crash_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(crash_dir, 0o700)
    done = _diskdump(
        "savecore",
        "--device",
        str(dump),
        "--dir",
        str(crash_dir),
        "--format",
        "kdump",
        "--compress",
        "zlib",  # Debian's makedumpfile and crash read zlib, not zstd
    )
    result.phases["savecore"] = time.monotonic() - start
    if done.returncode not in (0, 6):
        raise VMError(
            "diskdump savecore failed",
            path=str(dump),
            found=(done.stderr or done.stdout).strip()[-400:],
        )
    vmcores = [p for p in crash_dir.glob("*/vmcore") if not p.parent.is_symlink()]
    if not vmcores:
        raise VMError("savecore wrote no vmcore", path=str(crash_dir))
    result.vmcore = max(vmcores, key=lambda p: p.stat().st_mtime).resolve()
    result.savecore_dir = result.vmcore.parent
    if on_phase is not None:
        on_phase("savecore", result.phases["savecore"], str(result.vmcore))
