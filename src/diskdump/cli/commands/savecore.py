# SPDX-License-Identifier: GPL-2.0-or-later
"""`diskdump savecore`: placeholder until its issue lands (owner replaces this file)."""

from __future__ import annotations

import argparse
from typing import Any

from diskdump.errors import DiskdumpError


def register(sub: Any) -> None:
    parser = sub.add_parser("savecore", help="(not yet available)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise DiskdumpError("diskdump savecore is not available yet")
