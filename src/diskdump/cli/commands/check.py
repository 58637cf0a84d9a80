# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump check``: is each dump partition ready to take a dump?"""

from __future__ import annotations

import argparse
from typing import Any

from diskdump.cli._render import Progress, emit_json
from diskdump.devices import open_device
from diskdump.errors import DeviceError
from diskdump.partition.check import CheckResult, CheckStatus, check_device

__all__ = ["register", "run"]

DESCRIPTION = """\
Check each DEVICE (a block device, a partition or an image file) the way the
panic-time writer will: the driver's sanity check (not mounted, not swap, no
dm/md holder, writable, not busy, a usable block size, a running SCSI
device), the partition label, whether it holds a dump savecore has not yet
cleared, and the per-block pattern of the dump area. Nothing is written; a
block device is opened read-only.

By default every block of the dump area is read and compared with its
expected pattern (--full), at close to the device's read speed. --sample N
reads every N-th block and the last one instead, as a quick look.
"""

EPILOG = """\
exit status (for several DEVICEs the highest applies: 3 beats 2 beats 1 beats 0):
  0   ready: formatted, no dump on it, every checked block holds its pattern
  1   holds a dump that savecore has not saved and cleared
  2   needs format: no label, a damaged label, or blocks whose pattern fails
      (the count and the first few lbas are reported)
  3   unsuitable: the driver's sanity check says the device cannot take a dump
      (the reason is reported), or it cannot be opened
  64  usage error

examples:
  diskdump check /dev/disk/by-partlabel/dump0
  diskdump check --sample 64 --json /dev/sdb2 /var/dump.img
"""


def register(sub: Any) -> None:
    """Add the ``check`` sub-parser."""
    parser = sub.add_parser(
        "check",
        help="say whether dump partitions are ready (exit 0/1/2/3)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("devices", nargs="+", metavar="DEVICE", help="block device or image file")
    coverage = parser.add_mutually_exclusive_group()
    coverage.add_argument(
        "--full", action="store_true", help="verify every block of the dump area (default)"
    )
    coverage.add_argument(
        "--sample", type=_positive, metavar="N", help="verify every N-th block and the last one"
    )
    parser.add_argument(
        "--driver", default="auto", help="device driver: auto (default), block or file"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    """Check every device; the exit status is the highest verdict."""
    sample_every = args.sample or 1
    results = [_check_one(args, path, sample_every) for path in args.devices]
    if args.json:
        emit_json({"devices": [r.to_dict() for r in results]})
    else:
        for result in results:
            status = result.status.name.lower().replace("_", " ")
            print(f"{result.device}: {status}: {result.reason}")
    return int(max(r.status for r in results))


def _check_one(args: argparse.Namespace, path: str, sample_every: int) -> CheckResult:
    try:
        device = open_device(path, args.driver, writable=False)
    except DeviceError as err:
        return CheckResult(path, CheckStatus.UNSUITABLE, str(err))
    with device:
        progress = Progress(f"check {path}", enabled=not (args.json or args.quiet))
        try:
            return check_device(device, sample_every, progress)
        except DeviceError as err:  # a read failed: this device cannot take a dump
            return CheckResult(path, CheckStatus.UNSUITABLE, str(err))
