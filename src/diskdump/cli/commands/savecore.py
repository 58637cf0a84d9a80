# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump savecore``: save the dumps found on the dump devices, then re-initialise them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from diskdump.cli._render import Progress, emit_json, human_size
from diskdump.cli.exitcodes import ExitCode
from diskdump.config import Config, DeviceSpec, load_config, parse_size
from diskdump.savecore.convert import EraseOptions
from diskdump.savecore.save import (
    DeviceReport,
    Outcome,
    SaveOptions,
    reports_to_exit_kind,
    run_savecore,
)

__all__ = ["register", "run"]

DESCRIPTION = """\
Scan the dump devices (the [[device]] list of the configuration, or every
--device given) read-only for a dump the panic-time writer left there. For
each one found, check its headers in a fixed order (block size; trailing
header: magic, version, checksum; leading header; both copies agree), then
write

    DIR/<host>-<YYYYmmdd-HHMMSS>/vmcore      kdump-compressed (default) or ELF
                                 dmesg.txt   the kernel log
                                 info.json   what was saved, the dump id, what is missing
                                 info.txt    the same, for people

<host> is the crashed kernel's node name, the time its crash time in UTC.
The save is written into DIR/.<name>.partial (mode 0700, files 0600), every
file and the directory fsynced, then renamed into place; DIR/latest then
points at it and saves beyond --max-dumps are removed, oldest first. Only
after that, and not with --keep, are the blocks the dump used given their
pattern back, so `diskdump check` says the device is ready again.

A dump cut short at panic time (device full, power lost) is saved too,
marked INCOMPLETE, and info.txt says what is missing: missing pages are
holes in the vmcore, never zeros. Running savecore again, or after it was
killed at any point, never saves a dump twice and never loses one: a dump
whose id a complete save already records is only re-initialised.

An encrypted dump (`diskdump dump --encrypt-to`) is kept encrypted unless
a private key is given: DIR/<host>-<time>/vmcore.encrypted (the dump as the
partition held it, sealed) with info.json and info.txt, and no dmesg.txt,
since the kernel log is sealed too; `diskdump decrypt` opens it later.
With --decrypt-with PRIVATE.pem ([savecore] decrypt_with) the normal vmcore
and dmesg.txt are written, every chunk authenticated; a wrong key or a
tampered chunk is an error and the dump stays on the device.

DIR must be owned by root (or the caller) and not writable by group or
others, and is never followed through a symlink; the save is refused when
it would leave less than --min-free bytes free. A systemd unit that runs
savecore at boot is shipped as diskdump/data/diskdump-savecore.service.
"""

EPILOG = """\
exit status:
  0    every dump found was saved complete, or there was none
  1    error on at least one device (its dump, if any, is left in place)
  6    saved, but at least one dump was incomplete
  64   usage or configuration error

examples:
  diskdump savecore                                  devices and DIR from /etc/diskdump.toml
  diskdump savecore --device /dev/sdb2 --dir /var/crash --format elf
  diskdump savecore --device dump.img --dir crash --keep --json
  diskdump savecore --decrypt-with /root/dump-key.pem    decrypt encrypted dumps while saving
"""


def register(sub: Any) -> None:
    """Add the ``savecore`` sub-parser."""
    parser = sub.add_parser(
        "savecore",
        help="save dumps from the dump devices into the crash directory",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        metavar="F",
        help="configuration file (default /etc/diskdump.toml; missing is fine without this flag)",
    )
    parser.add_argument(
        "--device",
        metavar="DEV",
        action="append",
        default=[],
        help="a dump device or image; repeat for several (replaces the configured list)",
    )
    parser.add_argument(
        "--dir", metavar="DIR", help="crash directory ([savecore] dir, default /var/crash)"
    )
    parser.add_argument(
        "--format",
        choices=("kdump", "elf"),
        help="vmcore format ([savecore] format, default kdump)",
    )
    parser.add_argument(
        "--compress",
        choices=("zlib", "zstd", "lzo", "snappy", "none"),
        help="page compression of a kdump vmcore ([savecore] compress); "
        "makedumpfile and crash read zlib and lzo",
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the dump on the device (no re-initialisation)"
    )
    parser.add_argument(
        "--min-free",
        metavar="SIZE",
        help="free space to keep on the crash "
        "filesystem, bytes or K/M/G/T ([savecore] min_free, default 1G)",
    )
    parser.add_argument(
        "--max-dumps",
        metavar="N",
        type=int,
        help="saves to keep, the "
        "oldest removed first; 0 keeps all ([savecore] max_dumps, default 5)",
    )
    parser.add_argument(
        "--decrypt-with",
        metavar="PRIVATE.pem",
        help="private key that opens encrypted dumps ([savecore] decrypt_with); "
        "without it they are saved as vmcore.encrypted",
    )
    parser.add_argument(
        "--erase",
        action="append",
        default=[],
        metavar="SYMBOL[:SIZE]",
        help="overwrite a kernel symbol's memory with 'X' in the vmcore, recorded in "
        "info.json and the kdump erase-info area (repeatable; [erase] symbols)",
    )
    parser.add_argument(
        "--system-map", metavar="FILE", help="System.map for --erase ([erase] system_map)"
    )
    parser.add_argument("--vmlinux", metavar="FILE", help="vmlinux for --erase ([erase] vmlinux)")
    parser.add_argument(
        "--threads",
        metavar="N",
        type=int,
        help="page-compression workers of a kdump vmcore ([savecore] threads; "
        "default 0: one per CPU)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def _erase(args: argparse.Namespace, config: Config) -> EraseOptions:
    """--erase flags, else the configuration's [erase] section."""
    system_map = args.system_map or config.erase_system_map
    vmlinux = args.vmlinux or config.erase_vmlinux
    return EraseOptions(
        tuple(args.erase) or config.erase_symbols,
        Path(system_map) if system_map else None,
        Path(vmlinux) if vmlinux else None,
    )


def _options(args: argparse.Namespace) -> tuple[list[DeviceSpec], SaveOptions]:
    config = load_config(args.config, required=args.config is not None)
    if args.device:
        config = config.with_devices(args.device)
    saved = config.savecore
    min_free = (
        saved.min_free
        if args.min_free is None
        else parse_size(args.min_free, field_name="--min-free")
    )
    compress = args.compress or saved.compress
    options = SaveOptions(
        dir=args.dir or saved.dir,
        format=args.format or saved.format,
        compress=compress,
        keep=args.keep,
        min_free=min_free,
        max_dumps=saved.max_dumps if args.max_dumps is None else args.max_dumps,
        decrypt_with=args.decrypt_with or saved.decrypt_with,
        erase=_erase(args, config),
        threads=saved.threads if args.threads is None else args.threads,
    )
    return list(config.devices), options


def run(args: argparse.Namespace) -> int:
    """Run savecore; return the exit status described in the epilog."""
    devices, options = _options(args)
    progress = Progress("savecore", enabled=not (args.json or args.quiet))
    reports = run_savecore(devices, options, progress=progress)
    kind = reports_to_exit_kind(reports)
    if args.json:
        emit_json({"dir": options.dir, "result": kind, "devices": [r.to_dict() for r in reports]})
    else:
        for report in reports:
            _print_report(report, options.dir)
    return {"error": ExitCode.FAILURE, "incomplete": ExitCode.SAVED_INCOMPLETE}.get(
        kind, ExitCode.OK
    )


def _print_report(report: DeviceReport, crash_dir: str) -> None:
    where = f"{crash_dir.rstrip('/')}/{report.directory}" if report.directory else ""
    reinit = "; device re-initialised" if report.reinitialised else ""
    if report.outcome is Outcome.FAILED:
        assert report.error is not None
        if report.directory:
            print(
                f"{report.device}: saved dump {report.dump_id} to {where}, but the device "
                "was not re-initialised (the next run retries)"
            )
        print(f"diskdump: error: {report.device}: {report.error}", file=sys.stderr)
        if report.error.hint:
            print(f"diskdump: hint: {report.error.hint}", file=sys.stderr)
        return
    text = {
        Outcome.NO_DUMP: f"no dump ({report.reason})",
        Outcome.ALREADY_SAVED: f"dump {report.dump_id} already saved in {where}{reinit}",
        Outcome.SAVED: f"saved dump {report.dump_id} to {where} "
        f"({human_size(report.vmcore_size)} vmcore){reinit}",
        Outcome.SAVED_INCOMPLETE: f"saved INCOMPLETE dump {report.dump_id} to {where} "
        f"({human_size(report.vmcore_size)} vmcore){reinit}",
    }[report.outcome]
    print(f"{report.device}: {text}")
    for problem in report.problems:
        print(f"  {problem}")
