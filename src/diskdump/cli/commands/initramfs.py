# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump initramfs build``: the capture initramfs the capture kernel boots after a panic."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from diskdump.cli._render import emit_json, human_size
from diskdump.cli.exitcodes import ExitCode

# diskdump.vm is imported inside run(), so that `diskdump dump` does not load the builder

#: storage modules loaded by default (diskdump.vm.capture.CAPTURE_MODULES; a test checks)
CAPTURE_MODULES = ("virtio_pci", "virtio_blk")

DESCRIPTION = """\
Build the capture initramfs: static busybox, kexec and its libraries, Debian's
python3 with the standard-library modules the writer can import (measured with
modulefinder), the diskdump package, zstandard, the configuration and a manifest
of every writer file as stored in the image. Its /init runs `diskdump dump` when
/proc/vmcore exists, then the configured final action.
"""

EPILOG = """\
examples:
  diskdump initramfs build --output /boot/diskdump-capture.img
  diskdump initramfs build --config /etc/diskdump.toml --manifest manifest.json --json
"""

#: default output on a real host
DEFAULT_OUTPUT = "/var/lib/diskdump/capture.img"


def register(sub: Any) -> None:
    """Add the ``initramfs`` sub-parser and its ``build`` action."""
    parser = sub.add_parser(
        "initramfs",
        help="build the capture initramfs",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    build = actions.add_parser("build", help="build the image", description=DESCRIPTION)
    build.add_argument("--output", metavar="F", default=DEFAULT_OUTPUT, help="image to write")
    build.add_argument("--config", metavar="F", help="configuration (default /etc/diskdump.toml)")
    build.add_argument("--manifest", metavar="F", help="also write the image's manifest to F")
    build.add_argument(
        "--modules-dir",
        metavar="DIR",
        help="lib/modules/<release> of the capture kernel (default: the running kernel's)",
    )
    build.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="NAME",
        help=f"kernel module to load (repeatable; default {', '.join(CAPTURE_MODULES)})",
    )
    build.add_argument("--busybox", metavar="F", help="static busybox (default: `busybox`)")
    build.add_argument("--json", action="store_true", help="print one JSON object")
    build.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the image and report its size."""
    from diskdump.vm.capture import CaptureOptions, build_capture_initramfs

    modules_dir = Path(args.modules_dir or f"/lib/modules/{os.uname().release}")
    options = CaptureOptions(
        modules_dir=modules_dir if modules_dir.is_dir() else None,
        modules=tuple(args.module) or CAPTURE_MODULES,
        config=Path(args.config) if args.config else None,
        manifest_copy=Path(args.manifest) if args.manifest else None,
        busybox=Path(args.busybox) if args.busybox else None,
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    image = build_capture_initramfs(output, options)
    if args.json:
        emit_json(
            {
                "path": str(image.path.resolve()),
                "size": image.size,
                "unpacked_size": image.unpacked_size,
                "files": image.files,
                "stdlib_modules": image.stdlib_modules,
            }
        )
    else:
        print(f"capture initramfs: {image.path.resolve()}")
        print(f"  size {human_size(image.size)} compressed, {human_size(image.unpacked_size)}")
        print(f"  {image.files} files, {image.stdlib_modules} stdlib files")
    return ExitCode.OK
