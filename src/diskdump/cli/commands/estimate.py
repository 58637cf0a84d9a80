# SPDX-License-Identifier: GPL-2.0-or-later
"""`diskdump estimate`: placeholder until its issue lands (owner replaces this file)."""

from __future__ import annotations

import argparse
from typing import Any

from diskdump.errors import DiskdumpError


def register(sub: Any) -> None:
    parser = sub.add_parser("estimate", help="(not yet available)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise DiskdumpError("diskdump estimate is not available yet")
