# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump convert``: rewrite a vmcore as kdump-compressed or ELF, plain or flattened."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from diskdump.cli._render import Progress, emit_json, human_size
from diskdump.cli.exitcodes import ExitCode
from diskdump.config import load_config, resolve_threads
from diskdump.formats.codecs import CODEC_NAMES
from diskdump.savecore.convert import FORMATS, ConvertResult, EraseOptions, convert

__all__ = ["register", "run"]

DESCRIPTION = """\
Convert the vmcore IN into OUT. IN may be an ELF vmcore (/proc/vmcore,
makedumpfile -E, QEMU dump-guest-memory), a kdump-compressed file
(makedumpfile -c/-l/-p/-z, diskdump savecore) or its flattened form
(makedumpfile -F, QEMU kdump-*); the format is recognised by the file's first
bytes. OUT is written as a temporary file in its directory (mode 0600),
fsynced and renamed into place, so an interrupted conversion leaves nothing
behind.

--format kdump writes the kdump-compressed format (header version 6) that
crash, makedumpfile, libkdumpfile and drgn read: both bitmaps, one
descriptor per page, each page compressed with --compress when that makes it
smaller, the CPU notes and VMCOREINFO, the utsname read from the dumped
memory. With zlib and --level 1 the file is the one `makedumpfile -c -d 1`
writes. --format elf writes an ELF vmcore (one PT_NOTE, one PT_LOAD per run
of pages).

--flatten writes makedumpfile's flattened stream instead (records of
offset and data, for pipes and ssh); `makedumpfile -R FILE < STREAM`
reassembles it. OUT "-" writes the stream to standard output.

Pages a source does not hold (filtered out, never written) stay out of the
output; they are never replaced by zeros.
"""

EPILOG = """\
dump levels (makedumpfile -d bits):
  0   every page of the input
  1   zero pages excluded (kdump: they share one stored zero page)
  2   page cache without private data     4   all page cache
  8   user process data (anonymous, hugetlbfs)   16  free pages
  Sum the bits (31 = everything). Bits 2-16 classify each page from its struct
  page through VMCOREINFO (Linux 4.16-7.1 layouts; see docs/levels.md); a level
  the kernel's layout cannot honour is refused, never guessed.

codecs (--compress, kdump only): none, zlib (standard library; every reader has
  it), zstd, lzo, snappy (optional: pip install 'diskdump[zstd]', '[lzo]',
  '[snappy]'). Debian 12's makedumpfile and crash read zlib and lzo only.

output:
  text      one line: pages, bytes, ratio, seconds; progress on standard error
            (a bar on a terminal, a line every few seconds otherwise)
  --json    one object: format, flattened, pages, input_bytes, output_bytes,
            ratio, seconds, path

exit status:
  0   converted
  1   IN is not a vmcore or is damaged, OUT exists (without --force) or cannot be
      written, the codec's library is not installed, or the level needs page
      classification the vmcore cannot support (no VMCOREINFO, unknown layout)
  64  usage error (unknown format or codec, a level outside 0-31)

examples:
  diskdump convert /proc/vmcore vmcore --format kdump --compress zstd --level 1
  diskdump convert vmcore vmcore.elf --format elf
  diskdump convert vmcore - --flatten | ssh host 'makedumpfile -R vmcore'
"""


def register(sub: Any) -> None:
    """Add the ``convert`` sub-parser."""
    parser = sub.add_parser(
        "convert",
        help="convert a vmcore: ELF <-> kdump-compressed, plain or flattened",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", metavar="IN", help="vmcore to read (ELF, kdump, flattened)")
    parser.add_argument("output", metavar="OUT", help="file to write; - for standard output")
    parser.add_argument(
        "--format", choices=FORMATS, default="kdump", help="output format (default: kdump)"
    )
    parser.add_argument(
        "--flatten", action="store_true", help="write the flattened stream (makedumpfile -F)"
    )
    parser.add_argument(
        "--compress", choices=CODEC_NAMES, default="zlib", help="kdump page codec (default: zlib)"
    )
    parser.add_argument(
        "--level",
        type=int,
        default=1,
        metavar="N",
        help="dump level, makedumpfile -d bits 0-31 (default: 1; see below)",
    )
    parser.add_argument(
        "--zstd-level",
        type=int,
        default=None,
        metavar="N",
        help="zstd compression level (default: 1, as makedumpfile)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="page-compression threads (default 0: one per CPU)",
    )
    parser.add_argument(
        "--erase",
        action="append",
        default=[],
        metavar="SYMBOL[:SIZE]",
        help="overwrite a kernel symbol's memory with 'X' in OUT (repeatable; "
        "default from [erase] symbols in the configuration)",
    )
    parser.add_argument(
        "--system-map",
        type=Path,
        metavar="FILE",
        help="System.map of the crashed kernel, for --erase symbols",
    )
    parser.add_argument(
        "--vmlinux",
        type=Path,
        metavar="FILE",
        help="vmlinux of the crashed kernel, for --erase symbols and sizes",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="configuration file (default /etc/diskdump.toml)"
    )
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert, show progress, print the summary."""
    to_stdout = args.output == "-"
    progress = Progress("convert", enabled=not (args.quiet or args.json))
    result = convert(
        args.input,
        sys.stdout.buffer if to_stdout else args.output,
        format=args.format,
        flatten=args.flatten,
        compress=args.compress,
        level=args.level,
        progress=progress,
        overwrite=args.force,
        zstd_level=args.zstd_level,
        threads=resolve_threads(args.threads),
        erase=_erase_options(args),
    )
    _render(result, args.output, as_json=args.json, stream=sys.stderr if to_stdout else None)
    return ExitCode.OK


def _erase_options(args: argparse.Namespace) -> EraseOptions:
    """--erase flags, else the configuration's [erase] section."""
    config = load_config(args.config, required=args.config is not None)
    rules = tuple(args.erase) or config.erase_symbols
    system_map = args.system_map or (
        Path(config.erase_system_map) if config.erase_system_map else None
    )
    vmlinux = args.vmlinux or (Path(config.erase_vmlinux) if config.erase_vmlinux else None)
    return EraseOptions(rules, system_map, vmlinux)


def _render(result: ConvertResult, path: str, *, as_json: bool, stream: Any) -> None:
    out = stream if stream is not None else sys.stdout
    if as_json:
        emit_json({**result.to_dict(), "path": path}, out)
        return
    kind = result.format + (" (flattened)" if result.flattened else "")
    print(
        f"{path}: {kind}, {result.pages} pages, {human_size(result.input_size)} of memory "
        f"in {human_size(result.output_size)} (ratio {result.ratio:.3f}), "
        f"{result.seconds:.1f} s",
        file=out,
    )
