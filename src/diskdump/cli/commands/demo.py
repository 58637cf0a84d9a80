# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump demo``: a real Debian kernel panics under QEMU and diskdump captures it."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diskdump.cli._render import human_size
from diskdump.cli.exitcodes import ExitCode
from diskdump.errors import VMError

if TYPE_CHECKING:
    from diskdump.vm.cycle import CycleResult

# diskdump.vm is imported inside run(): `diskdump dump` in the capture kernel imports
# every command module, and the QEMU harness has no business in its memory

#: must equal diskdump.vm.cycle.DEFAULT_CRASHKERNEL_MIB (a test checks)
DEFAULT_CRASHKERNEL_MIB = 160

DESCRIPTION = """\
The whole crash-dump cycle on a real kernel, narrated: Debian's kernel boots
under qemu-system-x86_64 (TCG) with crashkernel= reserved; `diskdump arm`
checks the dump devices and records the manifest, and the capture kernel is
loaded with kexec -p; a workload runs; `echo c > /proc/sysrq-trigger` (via
`diskdump test --force`) panics the kernel; the capture kernel runs `diskdump
dump`, which skips a blank disk and writes to the formatted one; the guest
reboots and finds the dump; `diskdump savecore` saves it on the host. Then the
`info` summary, the tail of the kernel log, the panic line and the vmcore path.

The first run downloads the kernel package with apt-get download into
~/.cache/diskdump ($DISKDUMP_CACHE); later runs take 1-3 minutes here.
"""

#: what each phase of the cycle means, for the narrative
_PHASES = {
    "prepare": "disks and capture initramfs ready",
    "boot": "first kernel booted",
    "arm": "armed: manifest recorded, capture kernel loaded",
    "workload": "workload ran; the kernel panicked",
    "panic": "capture kernel booted on the reserved memory",
    "capture": "diskdump dump finished",
    "reboot": "guest rebooted; the first kernel found the dump",
    "poweroff": "guest powered off",
    "savecore": "diskdump savecore saved the vmcore",
}
#: lines of the kernel log shown at the end, and how many of them follow the panic line
_LOG_TAIL_LINES = 14
_LOG_AFTER_PANIC = 3
#: the panic sysrq 'c' causes (drivers/tty/sysrq.c)
PANIC_TEXT = "sysrq triggered crash"


def register(sub: Any) -> None:
    """Add the ``demo`` sub-parser."""
    p = sub.add_parser(
        "demo",
        help="a real kernel panics under QEMU; diskdump captures it",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--kernel", choices=("6.1", "6.12"), default="6.1", help="Debian kernel")
    p.add_argument("--memory", type=int, default=512, metavar="MIB", help="guest RAM (MiB)")
    p.add_argument(
        "--crashkernel",
        type=int,
        default=DEFAULT_CRASHKERNEL_MIB,
        metavar="MIB",
        help=f"memory reserved for the capture kernel (MiB, default {DEFAULT_CRASHKERNEL_MIB})",
    )
    p.add_argument("--workdir", metavar="DIR", help="work directory (default <cache>/demo)")
    p.add_argument("--quiet-console", action="store_true", help="do not echo guest output")
    p.set_defaults(func=run)


def _say(text: str) -> None:
    print(text, flush=True)


def _console_line(line: str) -> None:
    # the guest's own output and the panic; kernel chatter stays in console.log
    if line.startswith("DISKDUMP-VM: "):
        _say(f"    guest | {line.removeprefix('DISKDUMP-VM: ')}")
    elif "Kernel panic - not syncing" in line or "sysrq: Trigger" in line:
        _say(f"   kernel | {line.strip()}")
    elif line and not line.startswith(("[", " ")) and "\x1b" not in line:
        _say(f"    guest | {line}")


def _phase(name: str, seconds: float, detail: str) -> None:
    label = _PHASES.get(name, name)
    extra = f" ({detail})" if name in ("prepare", "savecore") else ""
    _say(f"[{name:>8} {seconds:5.1f} s] {label}{extra}")


def run(args: argparse.Namespace) -> int:
    """Run the cycle with a narrative; 0 only after a real capture was saved."""
    from diskdump.vm.assets import cache_dir
    from diskdump.vm.cycle import CycleOptions, run_cycle

    workdir = Path(args.workdir) if args.workdir else cache_dir() / "demo"
    if workdir.exists():
        shutil.rmtree(workdir)
    opts = CycleOptions(
        kernel=args.kernel,
        workdir=workdir,
        memory_mib=args.memory,
        crashkernel_mib=args.crashkernel,
    )
    _say(
        f"diskdump demo: Debian {args.kernel} kernel, {args.memory} MiB guest, "
        f"crashkernel={args.crashkernel}M, QEMU TCG"
    )
    _say(f"work directory {workdir.resolve()} (serial console in console.log)")
    result = run_cycle(opts, _phase, None if args.quiet_console else _console_line)
    return _finish(result)


def _finish(result: CycleResult) -> int:
    if result.dump_status != 0 or result.vmcore is None or result.savecore_dir is None:
        raise VMError(
            "the cycle ran but no complete dump was saved",
            path=str(result.console_log),
            found=f"diskdump dump status {result.dump_status}",
        )
    total = sum(result.phases.values())
    _say(
        f"\ncycle complete in {total:.0f} s; capture initramfs "
        f"{human_size(result.capture.size)} ({human_size(result.capture.unpacked_size)} "
        "unpacked)\n"
    )
    from diskdump.cli.main import main as cli_main

    sys.stdout.flush()
    cli_main(["info", str(result.vmcore)])
    log = (result.savecore_dir / "dmesg.txt").read_text(errors="replace").splitlines()
    panics = [i for i, line in enumerate(log) if PANIC_TEXT in line and "Kernel panic" in line]
    if not panics:
        raise VMError("the saved kernel log has no panic line", path=str(result.vmcore))
    # the tail that matters: the last lines before the panic, the panic, where it happened
    end = panics[-1] + 1 + _LOG_AFTER_PANIC
    shown = log[max(0, end - _LOG_TAIL_LINES) : end]
    _say(f"\nkernel log (dmesg.txt), lines {end - len(shown) + 1}-{end} of {len(log)}:")
    for line in shown:
        _say(f"  {line}")
    _say(f"\npanic: {log[panics[-1]].split('] ', 1)[-1]}")
    _say(f"vmcore: {result.vmcore}")
    return ExitCode.OK
