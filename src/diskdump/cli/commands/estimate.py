# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump estimate``: how big a dump at a level would be (makedumpfile --mem-usage)."""

from __future__ import annotations

import argparse
from typing import Any

from diskdump.cli._render import emit_json, human_size
from diskdump.cli.exitcodes import ExitCode
from diskdump.config import load_config
from diskdump.formats.detect import opened_vmcore
from diskdump.formats.sizeestimate import SizeEstimate, estimate_running_system, estimate_source

__all__ = ["register", "run"]

DESCRIPTION = """\
Predict the size in bytes of a dump at dump level N (makedumpfile -d bits:
1 zero pages, 2 page cache, 4 page cache with private data, 8 user data,
16 free pages), printed alone on the last line.

The figure is the size of a kdump-compressed file whose pages are stored
uncompressed: an upper bound, since compression only shrinks it.

Without --source it is the running system: from /proc/kcore when it is
readable and carries VMCOREINFO (Linux 4.19+, root), classifying every page
as the dump would and sampling 1 batch in 16 for zero pages; otherwise from
/proc/meminfo and /proc/zoneinfo (RAM = the zones' present pages), with a
stated margin (5 % of RAM, at least 64 MiB) because the counters are
approximate; zero pages are then not counted. With --source it is that
vmcore, exactly.
"""

EPILOG = """\
output:
  text    method, level, pages kept and excluded by reason, margin, then the
          predicted size in bytes alone on the last line
  --json  one object: level, method, page_size, ram_pages, kept_pages, zero_pages,
          excluded_pages {reason: pages}, margin_size, predicted_size, note

exit status:
  0   success
  1   the vmcore cannot be read, or its kernel cannot honour the level
  64  usage error (level outside 0-31, bad configuration)

examples:
  diskdump estimate --level 31
  diskdump estimate --source /var/crash/host-2025-11-24-16:00/vmcore --level 17
"""


def register(sub: Any) -> None:
    """Add the ``estimate`` sub-parser."""
    parser = sub.add_parser(
        "estimate",
        help="predict the dump size at a level (bytes, on the last line)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--source", metavar="FILE", help="a vmcore (ELF, kdump, flattened)")
    parser.add_argument(
        "--level",
        type=_level,
        default=None,
        help="dump level 0-31 (default: [dump] level of the configuration, else 1)",
    )
    parser.add_argument("--config", metavar="F", help="configuration file for the default level")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def _level(text: str) -> int:
    value = int(text, 0)
    if not 0 <= value <= 31:
        raise argparse.ArgumentTypeError(f"dump level must be 0-31, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    """Estimate and print."""
    level = args.level
    if level is None:
        level = load_config(args.config, required=args.config is not None).dump.level
    if args.source is not None:
        with opened_vmcore(args.source) as source:
            estimate = estimate_source(source, level)
    else:
        estimate = estimate_running_system(level)
    if args.json:
        emit_json(estimate.to_dict())
    else:
        _print_text(estimate)
    return ExitCode.OK


def _print_text(estimate: SizeEstimate) -> None:
    print(f"method: {estimate.method} ({estimate.note})")
    print(f"level: {estimate.level}")
    print(f"ram pages: {estimate.ram_pages}")
    for why, pages in sorted(estimate.excluded_pages.items()):
        print(f"excluded {why}: {pages} pages")
    print(f"kept pages: {estimate.kept_pages} ({estimate.zero_pages} zero)")
    if estimate.margin_size:
        print(f"margin: {estimate.margin_size} bytes ({human_size(estimate.margin_size)})")
    print(f"predicted size: {human_size(estimate.predicted_size)}")
    print(estimate.predicted_size)
