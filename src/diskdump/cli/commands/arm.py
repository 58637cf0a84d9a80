# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump arm``: check the dump devices, size the dump, record the writer's manifest."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from diskdump.cli._render import emit_json, human_size
from diskdump.cli.exitcodes import ExitCode
from diskdump.config import CaptureOptions, Config, load_config
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
writes anything. Then the capture kernel is loaded with `kexec -p` (the
[capture] section: kernel, initramfs from `diskdump initramfs build`, and
`irqpoll nr_cpus=1 reset_devices` appended to the running command line), after
checking that crashkernel= memory is reserved and large enough (160 MiB; 144
MiB is the measured minimum for the default capture initramfs). Under kernel
lockdown (Secure Boot) kexec_file_load is used, which verifies the signature.
`diskdump status` then says whether a crash now would be captured.

With --encrypt-to PUBLIC.pem ([dump] encrypt_to) dumps will be encrypted
to that key: arm checks that it loads (X25519, or RSA of at least 3072
bits), records it in the manifest with its SHA-256 and the cryptography
package's files, and `diskdump dump` uses it when its configuration names
no key. A key that does not load is an error and nothing is armed.
"""

EPILOG = """\
exit status:
  0   armed: the manifest is written, at least one device fits the estimate,
      and the capture kernel is loaded (or --no-load / [capture] load = false)
  5   not ready: no device is usable and big enough (the shortfall is printed),
      or the capture kernel could not be loaded (the reason is printed)
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
    p.add_argument(
        "--kernel",
        metavar="FILE",
        help="capture kernel ([capture] kernel; default /boot/vmlinuz-$(uname -r))",
    )
    p.add_argument(
        "--initrd",
        metavar="FILE",
        help="capture initramfs ([capture] initrd; `diskdump initramfs build` makes it)",
    )
    p.add_argument(
        "--append",
        metavar="OPTIONS",
        help="added to the capture kernel's command line ([capture] append)",
    )
    p.add_argument(
        "--no-load",
        action="store_true",
        help="write the manifest but leave loading the capture kernel to another tool",
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
    config = replace(config, capture=_capture(args, config))
    report = arm(config, args.manifest, meminfo_path=args.meminfo)
    if args.json:
        emit_json(_as_dict(report))
    else:
        _print(report)
    ready = report.armed and not report.capture_error
    return ExitCode.OK if ready else ExitCode.NOT_READY


def _capture(args: argparse.Namespace, config: Config) -> CaptureOptions:
    """[capture] with the command-line flags applied."""
    cap = config.capture
    return replace(
        cap,
        kernel=args.kernel or cap.kernel,
        initrd=args.initrd or cap.initrd,
        append=cap.append if args.append is None else args.append,
        load=cap.load and not args.no_load,
    )


def _as_dict(report: ArmReport) -> dict[str, object]:
    return {
        "armed": report.armed,
        "estimate_size": report.estimate_size,
        "shortfall": report.shortfall(),
        "manifest": report.manifest_path if report.armed else None,
        "files": len(report.manifest.files) if report.manifest is not None else 0,
        "capture_kernel": report.capture,
        "capture_error": report.capture_error or None,
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
    if report.capture_error:
        print(f"not ready: the capture kernel is not loaded: {report.capture_error}")
