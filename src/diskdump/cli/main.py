# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump``: parse, call, render. The only place that maps exceptions to exit codes."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from diskdump import __version__
from diskdump.cli._render import print_error
from diskdump.cli.exitcodes import EXIT_CODE_HELP, ExitCode
from diskdump.errors import ConfigError, DiskdumpError

__all__ = ["build_parser", "main"]

#: subcommand modules under diskdump.cli.commands, in the order --help lists them
COMMANDS: tuple[str, ...] = (
    "format",
    "check",
    "arm",
    "status",
    "dump",
    "savecore",
    "info",
    "convert",
    "estimate",
    "initramfs",
    "test",
    "demo",
    "decrypt",
)

DESCRIPTION = """\
diskdump captures a crashed Linux kernel's memory onto a dedicated dump
partition and turns it into a standard vmcore after reboot.

A dump partition is prepared once with `diskdump format`: every block carries
a verifiable pattern, so the panic-time writer never overwrites data that is
not its own. `diskdump arm` records a manifest of the writer and loads the
capture kernel; when the kernel panics, the capture kernel runs `diskdump
dump`, which checks itself, picks the first usable partition and writes the
memory image. At the next boot `diskdump savecore` writes
/var/crash/<host>-<time>/{vmcore,dmesg.txt,info.json,info.txt} and
re-initialises the partition. `diskdump info` and `diskdump convert` read and
convert vmcores offline (ELF, kdump-compressed, flattened).
"""


class _Parser(argparse.ArgumentParser):
    """argparse with EX_USAGE (64) instead of 2, which `check` uses for 'needs format'."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(ExitCode.USAGE)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser, one sub-parser per command module.

    :param only: import and register just this command (the one being run): the
        panic path in the capture kernel must not pay for importing every command
    """
    parser = _Parser(
        prog="diskdump",
        description=DESCRIPTION,
        epilog=EXIT_CODE_HELP + "\nSee `diskdump COMMAND --help` for each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"diskdump {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS if only is None else (only,):
        module = importlib.import_module(f"diskdump.cli.commands.{name}")
        module.register(sub)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv``, if it is one of :data:`COMMANDS`."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diskdump`` console script; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(args_list))
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else ExitCode.USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="diskdump: %(levelname)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except ConfigError as err:
        _report(err, args.debug)
        return ExitCode.USAGE
    except DiskdumpError as err:
        _report(err, args.debug)
        return ExitCode.FAILURE
    except OSError as err:  # a missing or unreadable PATH: a message, not a traceback
        if args.debug:
            traceback.print_exc()
        print_error(str(err))
        return ExitCode.FAILURE
    except KeyboardInterrupt:
        print_error("interrupted")
        return ExitCode.INTERRUPTED


def _report(err: DiskdumpError, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    print_error(str(err), err.hint)


if __name__ == "__main__":
    sys.exit(main())
