# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump test --force``: panic this machine on purpose to prove a crash is captured."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from diskdump.cli.exitcodes import ExitCode
from diskdump.config import load_config
from diskdump.errors import DiskdumpError
from diskdump.panic.arm import KEXEC_CRASH_LOADED, MEMINFO_PATH, readiness
from diskdump.panic.manifest import DEFAULT_MANIFEST_PATH

#: the kernel's sysrq trigger (diskdump.vm.sysrq.SYSRQ_TRIGGER; imported lazily)
SYSRQ_TRIGGER = "/proc/sysrq-trigger"

DESCRIPTION = """\
Crash this machine NOW, like `kdumpctl test`: after checking what `diskdump
status` checks (manifest, devices, capture kernel loaded), flush the file
systems and write 'c' to /proc/sysrq-trigger. The kernel panics ("sysrq
triggered crash"), the capture kernel runs `diskdump dump`, and savecore saves
the dump at the next boot. Refuses without --force, and refuses when a crash
would not be captured.
"""


def register(sub: Any) -> None:
    """Add the ``test`` sub-parser."""
    p = sub.add_parser(
        "test",
        help="crash this machine on purpose (needs --force)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--force", action="store_true", help="really crash the machine")
    p.add_argument("--config", metavar="F", help="configuration file (default /etc/diskdump.toml)")
    p.add_argument("--device", action="append", default=[], metavar="D", help="dump device")
    p.add_argument("--manifest", default=str(DEFAULT_MANIFEST_PATH), metavar="F")
    p.add_argument("--sysrq-trigger", default=str(SYSRQ_TRIGGER), help=argparse.SUPPRESS)
    p.add_argument("--meminfo", default=MEMINFO_PATH, help=argparse.SUPPRESS)
    p.add_argument("--kexec-crash-loaded", default=KEXEC_CRASH_LOADED, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check readiness, then panic the kernel (returns only when it did not panic)."""
    from diskdump.vm.sysrq import trigger_crash

    config = load_config(args.config, required=args.config is not None)
    if args.device:
        config = config.with_devices(args.device)
    state = readiness(
        config, args.manifest, meminfo_path=args.meminfo, kexec_path=args.kexec_crash_loaded
    )
    if not state.ready:
        print("not crashing: a crash now would not be captured:")
        for reason in state.reasons:
            print(f"  - {reason}")
        return ExitCode.NOT_READY
    if not args.force:
        print("ready: a crash now would be captured; `diskdump test --force` crashes the machine")
        return ExitCode.USAGE
    print("crashing the kernel now (sysrq c)", flush=True)
    trigger_crash(Path(args.sysrq_trigger))
    raise DiskdumpError(
        "the kernel did not panic after the sysrq trigger was written",
        path=args.sysrq_trigger,
        hint="is this /proc/sysrq-trigger of a kernel with CONFIG_MAGIC_SYSRQ?",
    )
