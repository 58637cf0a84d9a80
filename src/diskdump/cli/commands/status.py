# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump status``: would a crash now be captured?"""

from __future__ import annotations

import argparse
from typing import Any

from diskdump.cli._render import emit_json
from diskdump.cli.exitcodes import ExitCode
from diskdump.config import load_config
from diskdump.panic.arm import KEXEC_CRASH_LOADED, MEMINFO_PATH, readiness
from diskdump.panic.manifest import DEFAULT_MANIFEST_PATH

__all__ = ["register", "run"]

DESCRIPTION = """\
Report whether a crash now would be captured: the manifest is present and
every writer file still matches it, at least one configured device is
formatted, holds no uncleared dump, verifies and is big enough for this
machine's memory, and a capture kernel is loaded
(/sys/kernel/kexec_crash_loaded). Every reason it would not is listed.
"""

EPILOG = """\
exit status:
  0   ready: a crash now would be captured
  5   not ready (every reason is printed)
  64  usage error
"""


def register(sub: Any) -> None:
    """Add the ``status`` sub-parser."""
    p = sub.add_parser(
        "status",
        help="say whether a crash now would be captured (exit 0 or 5)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="F", help="configuration file (default /etc/diskdump.toml)")
    p.add_argument("--device", action="append", default=[], metavar="D", help="dump device")
    p.add_argument("--manifest", default=str(DEFAULT_MANIFEST_PATH), metavar="F")
    p.add_argument("--meminfo", default=MEMINFO_PATH, help=argparse.SUPPRESS)
    p.add_argument("--kexec-crash-loaded", default=KEXEC_CRASH_LOADED, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Exit 0 only when ready."""
    config = load_config(args.config, required=args.config is not None)
    if args.device:
        config = config.with_devices(args.device)
    state = readiness(
        config, args.manifest, meminfo_path=args.meminfo, kexec_path=args.kexec_crash_loaded
    )
    if args.json:
        emit_json(state.to_dict())
    else:
        for dev in state.devices:
            print(f"{dev.device}: {'ready' if dev.ready else 'not ready'}: {dev.reason}")
        print("ready: a crash now would be captured" if state.ready else "NOT READY:")
        for reason in state.reasons:
            print(f"  {reason}")
    return ExitCode.OK if state.ready else ExitCode.NOT_READY
