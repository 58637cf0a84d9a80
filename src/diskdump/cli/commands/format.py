# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump format``: initialise dump partitions with the label and the per-block pattern."""

from __future__ import annotations

import argparse
import uuid as uuid_mod
from contextlib import ExitStack
from typing import Any

from diskdump.cli._render import Progress, emit_json, human_size, print_error
from diskdump.cli.exitcodes import ExitCode
from diskdump.devices import open_device
from diskdump.devices.base import DumpDevice
from diskdump.errors import ConfigError, DeviceError
from diskdump.formats.partition import DEFAULT_RESERVE_BLOCKS
from diskdump.partition.ops import check_formattable, format_device

__all__ = ["register", "run"]

DESCRIPTION = """\
Prepare each DEVICE (a block device, a partition, or a preallocated image
file) as a dump partition: a label (with a backup copy) in a reserved area
of 1 MiB at the start, which a dump never writes, then every 4 KiB block of
the dump area stamped with a signature, the partition's UUID, its own block
number and a fill derived from them. `diskdump dump` verifies this pattern
before it writes and never overwrites a block that does not carry it.

Before anything is written every DEVICE is checked, and if any one is refused
nothing is written to any of them:

  never, not even with --force: a device that is mounted (or has a mounted
  partition), is active swap, is held by device-mapper or md, is read-only,
  or is opened exclusively by someone else;

  unless --force: a device carrying a filesystem, swap, LVM2 or RAID member,
  or partition-table signature (as libblkid's wipefs lists them), one that
  holds a dump savecore has not saved, or one whose sanity check says
  "maybe" (a removable medium, a SCSI device not in the running state).

An image file must be preallocated (fallocate -l SIZE FILE): a sparse file
is refused, because filling its holes at panic time needs the filesystem.
"""

EPILOG = """\
examples:
  diskdump format /dev/disk/by-partlabel/dump0
  diskdump format --json /dev/sdb2 /dev/sdc2
  fallocate -l 8G /var/dump.img && diskdump format /var/dump.img

exit status: 0 formatted; 1 refused or failed (nothing written when refused); 64 usage.
"""


def register(sub: Any) -> None:
    """Add the ``format`` sub-parser."""
    parser = sub.add_parser(
        "format",
        help="initialise dump partitions with the verifiable pattern",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("devices", nargs="+", metavar="DEVICE", help="block device or image file")
    parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite foreign signatures, an unsaved dump or a 'maybe' device "
        "(never a mounted or busy one)",
    )
    parser.add_argument("--uuid", help="partition UUID (one DEVICE only); default: random")
    parser.add_argument(
        "--reserve-blocks",
        type=_reserve,
        default=DEFAULT_RESERVE_BLOCKS,
        metavar="N",
        help=f"4 KiB blocks reserved at the start (default {DEFAULT_RESERVE_BLOCKS} = 1 MiB)",
    )
    parser.add_argument(
        "--driver", default="auto", help="device driver: auto (default), block or file"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def _reserve(text: str) -> int:
    value = int(text)
    if value < DEFAULT_RESERVE_BLOCKS:
        raise argparse.ArgumentTypeError(f"must be at least {DEFAULT_RESERVE_BLOCKS}, got {text}")
    return value


def _parse_uuid(args: argparse.Namespace) -> uuid_mod.UUID | None:
    if args.uuid is None:
        return None
    if len(args.devices) > 1:
        raise ConfigError("--uuid names one partition; give one DEVICE", field="--uuid")
    try:
        return uuid_mod.UUID(args.uuid)
    except ValueError:
        raise ConfigError("not a UUID", field="--uuid", found=args.uuid) from None


def run(args: argparse.Namespace) -> int:
    """Check every device, then format them all; nothing is written if one is refused."""
    part_uuid = _parse_uuid(args)
    with ExitStack() as stack:
        devices: list[DumpDevice] = []
        refusals: list[tuple[str, DeviceError]] = []
        for path in args.devices:
            try:
                device = open_device(path, args.driver, writable=True)
                stack.callback(device.shutdown)
                check_formattable(device, force=args.force)
                devices.append(device)
            except DeviceError as err:
                refusals.append((path, err))
        if refusals:
            return _report_refusals(args, refusals)
        results = [_format_one(args, device, part_uuid) for device in devices]
    if args.json:
        emit_json({"devices": results})
    return ExitCode.OK


def _format_one(
    args: argparse.Namespace, device: DumpDevice, part_uuid: uuid_mod.UUID | None
) -> dict[str, object]:
    progress = Progress(f"format {device.name}", enabled=not (args.json or args.quiet))
    label = format_device(
        device,
        part_uuid,
        args.force,
        progress,
        reserve_blocks=args.reserve_blocks,
        check=False,
    )
    size = label.data_blocks * label.block_size
    if not args.json:
        print(
            f"{device.name}: formatted, uuid {label.uuid}, {label.data_blocks} data blocks "
            f"({human_size(size)}), {label.reserve_blocks} reserved"
        )
    return {
        "device": device.name,
        "status": "formatted",
        "uuid": str(label.uuid),
        "block_size": label.block_size,
        "block_count": label.block_count,
        "reserve_blocks": label.reserve_blocks,
        "data_blocks": label.data_blocks,
    }


def _report_refusals(args: argparse.Namespace, refusals: list[tuple[str, DeviceError]]) -> int:
    if args.json:
        emit_json(
            {
                "devices": [{"device": p, "status": "refused", **e.to_dict()} for p, e in refusals],
                "written": False,
            }
        )
    else:
        for _path, err in refusals:
            print_error(str(err), err.hint)
        print_error("nothing was written to any device")
    return ExitCode.FAILURE
