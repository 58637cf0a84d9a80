# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump dump``: the panic path (run by the capture kernel, or on a saved vmcore)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

from diskdump.cli._render import emit_json, human_size
from diskdump.cli.exitcodes import ExitCode
from diskdump.config import load_config, validate_dump_options
from diskdump.formats.dumpheader import DumpFlag
from diskdump.panic.manifest import DEFAULT_MANIFEST_PATH
from diskdump.panic.run import DEFAULT_SOURCE, DumpRequest, run_dump
from diskdump.panic.writer import DumpResult, ProgressInfo

__all__ = ["register", "run"]

DESCRIPTION = """\
Write the crashed kernel's memory to the first usable dump device.

In order: verify the writer against the manifest `diskdump arm` recorded
(any difference: nothing is written, every difference is printed); enter
crash-dump mode (signals blocked, memory locked, OOM-immune, GC off, timers
and tasklets on private lists); take the first device whose driver says sane
and whose pattern verifies (then "maybe" devices if allowed); write the
leading header (INCOMPLETE), the system state (utsname, panic string, CPU
registers, VMCOREINFO, kernel log), then the pages in checksummed chunks,
kernel image first; flush; then the trailing header and the leading header
COMPLETE. With --encrypt-to PUBLIC.pem ([dump] encrypt_to) the dump is
encrypted: a fresh random key per dump seals every chunk and the kernel log,
registers and VMCOREINFO (ChaCha20-Poly1305), and is stored only wrapped
with the public key (X25519, or RSA-OAEP >= 3072 bits); the headers, the
panic line and the sizes stay clear. The key is loaded before crash-dump
mode; a key that does not load means nothing is written. A write error or
an I/O stall (--io-timeout) moves the dump to the next device; a full
device keeps what fits and marks the dump incomplete.

Nothing that is not this partition's own is overwritten. With the default
--verify written, a sample of the dump area (every 4096th block) is checked
before the dump, and every block is read back and compared with its format
pattern just before it is overwritten; a block that fails stops the writes
to that device (lba and reason printed) and the dump moves to the next one.
--verify full reads the whole area before writing (the seed's exhaustive
check; slower on large partitions); --verify sample:N checks every N-th
block before the dump and nothing while writing.
"""

EPILOG = """\
exit status:
  0   a complete dump was written
  4   a dump was written but is incomplete (device full, or the source was short)
  1   no dump was written (manifest mismatch, no usable device; the reasons are printed)
  64  usage error

examples:
  diskdump dump --config /etc/diskdump.toml           (in the capture kernel)
  diskdump dump --unarmed --device dump.img --source vmcore --compress zlib
  diskdump dump --unarmed --device dump.img --source vmcore --encrypt-to dump-key.pub.pem
"""


def register(sub: Any) -> None:
    """Add the ``dump`` sub-parser."""
    p = sub.add_parser(
        "dump",
        help="write the crashed kernel's memory to a dump device",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="F", help="configuration file (default /etc/diskdump.toml)")
    p.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="D",
        help="dump device, in order of preference (repeat; replaces the config's)",
    )
    p.add_argument(
        "--source",
        default=DEFAULT_SOURCE,
        metavar="FILE",
        help="memory to dump: /proc/vmcore (default), an ELF or kdump vmcore",
    )
    p.add_argument(
        "--unarmed",
        action="store_true",
        help="skip the manifest self-check (recorded in the dump header)",
    )
    p.add_argument(
        "--manifest",
        default=str(DEFAULT_MANIFEST_PATH),
        metavar="F",
        help=f"manifest to verify against (default {DEFAULT_MANIFEST_PATH})",
    )
    p.add_argument("--level", type=int, metavar="N", help="dump level (bit 1: zero pages)")
    p.add_argument("--compress", choices=["zstd", "zlib", "lzo", "snappy", "none"])
    p.add_argument("--threads", type=int, metavar="N", help="compression workers (0: per CPU)")
    p.add_argument(
        "--io-timeout", type=float, metavar="S", help="seconds before a stalled device is abandoned"
    )
    p.add_argument(
        "--verify",
        metavar="written|full|sample:N",
        help="pattern check before overwriting: 'written' (default) checks each block just "
        "before it is written, after a sample of the area; 'full' reads the whole area first; "
        "'sample:N' every N-th block first and nothing while writing",
    )
    p.add_argument(
        "--allow-maybe",
        action="store_true",
        default=None,
        help="second pass over devices whose sanity check says maybe",
    )
    p.add_argument(
        "--encrypt-to",
        metavar="PUBLIC.pem",
        help="encrypt the dump to this X25519 or RSA (>= 3072 bits) public key",
    )
    p.add_argument("--no-mlock", action="store_true", help="do not lock memory (small replays)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run)


def _request(args: argparse.Namespace) -> DumpRequest:
    config = load_config(args.config, required=args.config is not None)
    if args.device:
        config = config.with_devices(args.device)
    flags = {
        "level": args.level,
        "compress": args.compress,
        "threads": args.threads,
        "io_timeout": args.io_timeout,
        "verify": args.verify,
        "allow_maybe": args.allow_maybe,
        "encrypt_to": args.encrypt_to,
    }
    dump = replace(config.dump, **{k: v for k, v in flags.items() if v is not None})
    validate_dump_options(dump, source="command line")
    quiet = args.quiet or args.json
    return DumpRequest(
        config=replace(config, dump=dump),
        source=args.source,
        unarmed=args.unarmed,
        manifest=args.manifest,
        progress=None if quiet else _progress_line,
        lock_memory=not args.no_mlock,
    )


def _progress_line(info: ProgressInfo) -> None:
    pct = 100.0 * info.pages_done / info.pages_total if info.pages_total else 100.0
    eta = "?" if info.eta is None else f"{info.eta:.0f}s"
    print(
        f"diskdump: {info.device}: {pct:5.1f}% of {info.pages_total} pages, "
        f"{human_size(info.bytes_written)} written, eta {eta}",
        file=sys.stderr,
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    """Run the panic path; exit 0 complete, 4 incomplete."""
    result = run_dump(_request(args))
    if args.json:
        emit_json(_as_dict(result))
    else:
        _print(result)
    return ExitCode.OK if result.complete else ExitCode.DUMP_INCOMPLETE


def _as_dict(result: DumpResult) -> dict[str, object]:
    head = result.header
    return {
        "device": result.device,
        "complete": result.complete,
        "dump_id": head.dump_id.hex(),
        "flags": [f.name.lower() for f in type(head.flags) if f in head.flags and f.name],
        "pages_written": head.pages_written,
        "pages_planned": head.pages_planned,
        "chunks": head.chunk_count,
        "encrypted": bool(head.flags & DumpFlag.ENCRYPTED),
        "bytes_written": result.bytes_written,
        "seconds": round(result.elapsed, 3),
        "events": list(result.events),
    }


def _print(result: DumpResult) -> None:
    for event in result.events:
        print(f"diskdump: {event}", file=sys.stderr)
    head = result.header
    state = "complete" if result.complete else "INCOMPLETE"
    rate = result.bytes_written / result.elapsed if result.elapsed > 0 else 0.0
    print(
        f"dump {head.dump_id.hex()} {state} on {result.device}: "
        f"{head.pages_written} of {head.pages_planned} pages in {head.chunk_count} chunks, "
        f"{human_size(result.bytes_written)} in {result.elapsed:.1f} s "
        f"({human_size(rate)}/s)"
    )
