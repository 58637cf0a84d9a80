# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump info``: what a vmcore says about the crash, or its kernel log."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from diskdump.cli._render import emit_json, human_size
from diskdump.cli.exitcodes import ExitCode
from diskdump.devices import open_device
from diskdump.devices.base import BlockIO
from diskdump.errors import CryptoError, NoDumpFoundError, NotThisFormatError
from diskdump.formats.crypt import KeyEnvelope
from diskdump.formats.detect import opened_vmcore
from diskdump.formats.dumpfile import is_dump_file, opened_dump_file
from diskdump.formats.dumpimage import DumpImage, open_dump
from diskdump.formats.partition import LABEL_SIZE, is_partition_label
from diskdump.formats.printk import PrintkRecord, format_dmesg
from diskdump.formats.summary import CrashSummary, read_kernel_log, summarize
from diskdump.partition.ops import read_label

__all__ = ["register", "run"]

DESCRIPTION = """\
Summarize the crash recorded in PATH, a vmcore file: an ELF vmcore
(/proc/vmcore, makedumpfile -E, QEMU dump-guest-memory), a kdump-compressed
file (makedumpfile -c/-l/-p/-z, diskdump savecore) or its flattened form
(makedumpfile -F, QEMU kdump-* formats). The format is recognised by the
file's first bytes, whatever its name.

Reported: the kernel release, machine, node name and version (read from
init_uts_ns in the dumped memory), the panic line of the kernel log, the
crash time (CRASHTIME, in UTC), the number of CPUs (one NT_PRSTATUS note
each), the crashing CPU with its instruction and stack pointers, the memory
size, the dump level, the compression and whether the dump is complete.
Only VMCOREINFO is needed, no debug symbols.

A vmcore.encrypted (an encrypted dump savecore kept without the key) is
recognised by its dump header: only its clear facts are shown (release,
node name, crash time, panic line, CPUs, sizes, the key id it is sealed
for); its pages, kernel log and registers need `diskdump decrypt` first.

Anything missing or repaired is listed as a warning: no VMCOREINFO (QEMU
without -device vmcoreinfo), a container phys_base that disagrees with
VMCOREINFO (QEMU's kdump output), an empty utsname, an incomplete dump.

The panic line is the first "Kernel panic - not syncing:" line of the log,
else the first Oops/BUG line. The crashing CPU is N of the first "CPU: N PID:
P" line from there on; its registers come from the NT_PRSTATUS note of task P,
else from note N.
"""

EPILOG = """\
output:
  text      one "field: value" line each, then the warnings
  --json    one object: format, release, machine, nodename, version, panic (or null),
            crash_time (ISO 8601, UTC, or null), cpus, crashing_cpu (or null), rip, rsp
            ("0x..." strings or null), memory_bytes, page_size, dump_level (or null),
            compression, complete, warnings (list of strings), path
  --dmesg   the kernel log, one record per line exactly as makedumpfile --dump-dmesg
            prints it ("[seconds.micros] text", continuation lines indented);
            with --json: {"path": ..., "records": [{seq, ts_nsec, level, facility,
            caller, text, flags}, ...]}

exit status:
  0   success (also for an incomplete dump: see "complete" and the warnings)
  1   PATH is not a vmcore, is damaged, or its log cannot be read (--dmesg)
  64  usage error

examples:
  diskdump info /var/crash/host-2025-11-24-16:00/vmcore
  diskdump info --json vmcore | jq -r .panic
  diskdump info --dmesg vmcore > dmesg.txt
"""


def register(sub: Any) -> None:
    """Add the ``info`` sub-parser."""
    parser = sub.add_parser(
        "info",
        help="summarize a vmcore (release, panic, CPUs, ...) or print its kernel log",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", metavar="PATH", help="vmcore file (ELF, kdump, flattened)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--dmesg", action="store_true", help="print the kernel log instead of the summary"
    )
    parser.add_argument(
        "--caller",
        action="store_true",
        help="with --dmesg: show each record's caller ([T<pid>] or [C<cpu>]), "
        "as makedumpfile 1.7.5 and later do",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the summary or the log of ``args.path``."""
    if is_dump_file(args.path):
        return _dump_file(args)
    if is_partition_label(_first_block(args.path)):
        return _dump_partition(args)
    with opened_vmcore(args.path) as source:
        if args.dmesg:
            records = read_kernel_log(source)
        else:
            summary = summarize(source)
    if args.dmesg:
        if args.json:
            emit_json({"path": args.path, "records": [_record_dict(r) for r in records]})
        else:
            sys.stdout.write(format_dmesg(records, show_caller=args.caller))
        return ExitCode.OK
    if args.json:
        emit_json({**summary.to_dict(), "path": args.path})
    else:
        sys.stdout.write(_text(summary, args.path))
    return ExitCode.OK


def _record_dict(record: PrintkRecord) -> dict[str, object]:
    return {
        "seq": record.seq,
        "ts_nsec": record.ts_nsec,
        "level": record.level,
        "facility": record.facility,
        "caller": record.caller,
        "text": record.message,
        "flags": [(flag.name or "").lower() for flag in type(record.flags) if flag in record.flags],
    }


def _text(summary: CrashSummary, path: str) -> str:
    box = [summary.format, f"{summary.compression or 'unknown'} compression"]
    if summary.dump_level is not None:
        box.append(f"dump level {summary.dump_level}")
    box.append("complete" if summary.complete else "INCOMPLETE")
    cpu = "unknown"
    if summary.crashing_cpu is not None:
        cpu = str(summary.crashing_cpu)
        if summary.rip is not None and summary.rsp is not None:
            cpu += f" (rip {summary.rip:#018x}, rsp {summary.rsp:#018x})"
    rows = [
        ("vmcore", f"{path} ({', '.join(box)})"),
        ("release", summary.release or "unknown"),
        ("machine", summary.machine or "unknown"),
        ("nodename", summary.nodename or "unknown"),
        ("version", summary.version or "unknown"),
        ("panic", summary.panic or "none found"),
        ("crash time", summary.crash_time or "unknown"),
        ("cpus", str(summary.cpus)),
        ("crashing cpu", cpu),
        ("memory", f"{human_size(summary.memory_bytes)} ({summary.memory_bytes} bytes)"),
    ]
    rows += [("warning", warning) for warning in summary.warnings]
    return "".join(f"{name + ':':<14}{value}\n" for name, value in rows)


def _first_block(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(LABEL_SIZE)
    except OSError:
        return b""


def _dump_partition(args: argparse.Namespace) -> int:
    """A dump partition (block device or image): the dump it holds, read-only."""
    with open_device(args.path, writable=False) as device:
        label = read_label(device)
        try:
            image = open_dump(BlockIO(device), label.reserve_blocks, name=args.path)
        except NotThisFormatError as err:
            raise NoDumpFoundError(
                "this dump partition holds no dump",
                device=args.path,
                hint=f"diskdump check {args.path} tells whether it is ready",
            ) from err
        return _show_image(args, image)


def _dump_file(args: argparse.Namespace) -> int:
    """The clear facts of a saved dump file (vmcore.encrypted)."""
    with opened_dump_file(args.path) as image:
        return _show_image(args, image)


def _show_image(args: argparse.Namespace, image: DumpImage) -> int:
    """Facts (or, for a clear dump, the kernel log) of a dump in our own format."""
    if args.dmesg and image.locked:
        raise CryptoError(
            "the kernel log of this dump is encrypted",
            path=args.path,
            hint="diskdump decrypt --key PRIVATE.pem IN OUT, then diskdump info OUT",
        )
    if args.dmesg:
        sys.stdout.write(format_dmesg(read_kernel_log(image), show_caller=args.caller))
        return ExitCode.OK
    facts = _dump_facts(image)
    if args.json:
        emit_json({**facts, "path": args.path})
    else:
        rows = ((name.replace("_", " ") + ":", value) for name, value in facts.items())
        sys.stdout.write("".join(f"{label:<14}{value}\n" for label, value in rows))
    return ExitCode.OK


def _dump_facts(image: DumpImage) -> dict[str, object]:
    head = image.header
    uts = head.utsname
    facts: dict[str, object] = {
        "format": "diskdump-encrypted" if image.encrypted else "diskdump",
        "encrypted": image.encrypted,
        "release": uts.release or "unknown",
        "machine": uts.machine or "unknown",
        "nodename": uts.nodename or "unknown",
        "panic": image.metadata.panic_string.strip() or "none recorded",
        "crash_time": _utc(head.crash_time) if head.crash_time else "unknown",
        "cpus": head.nr_cpus,
        "crashing_cpu": head.crashing_cpu,
        "pages_held": image.pages_held,
        "page_size": head.page_size,
        "complete": not image.incomplete,
    }
    if image.encrypted:
        envelope = KeyEnvelope.unpack(image.metadata.key_envelope)
        facts["key_id"] = envelope.key_id.hex()
        facts["sealed"] = "pages, kernel log, registers (notes), VMCOREINFO"
    return facts


def _utc(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
