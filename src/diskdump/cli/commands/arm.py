# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump arm``: check the dump devices, size the dump, record the writer's manifest."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from diskdump.cli._render import emit_json, human_size
from diskdump.cli.exitcodes import ExitCode
from diskdump.config import load_config
from diskdump.panic.arm import MEMINFO_PATH, ArmReport, arm
from diskdump.panic.manifest import DEFAULT_MANIFEST_PATH

__all__ = ["register", "run"]

DESCRIPTION = """\
Prepare this machine so that a crash is captured: validate the configuration,
check every configured device the way the panic writer will (sanity check,
label, no uncleared dump, pattern), estimate from /proc/meminfo the largest
dump this machine can produce and compare it with each device's dump area,
and, if at least one device can take it, record the manifest: the SHA-256 of
every file the writer executes (the diskdump package, the interpreter, the
codec library, the configuration). `diskdump dump` verifies it before it
writes anything. Then the capture kernel is loaded (see `diskdump status`).

With --encrypt-to PUBLIC.pem ([dump] encrypt_to) dumps will be encrypted
to that key: arm checks that it loads (X25519, or RSA of at least 3072
bits), records it in the manifest with its SHA-256 and the cryptography
package's files, and `diskdump dump` uses it when its configuration names
no key. A key that does not load is an error and nothing is armed.
"""

EPILOG = """\
exit status:
  0   armed: the manifest is written and at least one device fits the estimate
  5   not armed: no device is usable and big enough (the shortfall is printed)
  1   error; 64 usage error
"""


def register(sub: Any) -> None:
    """Add the ``arm`` sub-parser."""
    p = sub.add_parser(
        "arm",
        help="check devices and record the writer's manifest",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="F", help="configuration file (default /etc/diskdump.toml)")
    p.add_argument("--device", action="append", default=[], metavar="D", help="dump device")
    p.add_argument(
        "--manifest",
        default=str(DEFAULT_MANIFEST_PATH),
        metavar="F",
        help=f"where to write the manifest (default {DEFAULT_MANIFEST_PATH})",
    )
    p.add_argument(
        "--encrypt-to",
        metavar="PUBLIC.pem",
        help="encrypt dumps to this X25519 or RSA (>= 3072 bits) public key",
    )
    p.add_argument("--meminfo", default=MEMINFO_PATH, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Arm; exit 0 when armed, 5 when no device can take the dump."""
    config = load_config(args.config, required=args.config is not None)
    if args.device:
        config = config.with_devices(args.device)
    if args.encrypt_to:
        config = replace(config, dump=replace(config.dump, encrypt_to=args.encrypt_to))
    report = arm(config, args.manifest, meminfo_path=args.meminfo)
    if args.json:
        emit_json(_as_dict(report))
    else:
        _print(report)
    return ExitCode.OK if report.armed else ExitCode.NOT_READY


def _as_dict(report: ArmReport) -> dict[str, object]:
    return {
        "armed": report.armed,
        "estimate_size": report.estimate_size,
        "shortfall": report.shortfall(),
        "manifest": report.manifest_path if report.armed else None,
        "files": len(report.manifest.files) if report.manifest is not None else 0,
        "capture_kernel": report.capture,
        "encrypt_to": report.manifest.encrypt_to if report.manifest is not None else None,
        "devices": [d.to_dict() for d in report.devices],
    }


def _print(report: ArmReport) -> None:
    print(f"estimated dump size: {human_size(report.estimate_size)} ({report.estimate_size} bytes)")
    for dev in report.devices:
        state = "ready" if dev.ready else "not ready"
        size = f", dump area {human_size(dev.capacity)}" if dev.capacity else ""
        print(f"  {dev.device}: {state}: {dev.reason}{size}")
    if report.manifest is None:
        print(
            f"not armed: no device can take the dump; the best usable one is short by "
            f"{report.shortfall()} bytes"
        )
        return
    print(f"armed: manifest of {len(report.manifest.files)} files in {report.manifest_path}")
    if report.manifest.encrypt_to:
        print(f"dumps encrypted to: {report.manifest.encrypt_to}")
    print(f"capture kernel: {report.capture}")
