# SPDX-License-Identifier: GPL-2.0-or-later
"""Our on-partition dump header (leading and trailing copies).

Seed: the panic-writer work fills in the full layout. Fixed now, because the
partition ``check`` relies on it: a dump header starts with
:data:`DUMP_HEADER_MAGIC`; the leading copy sits at the first block of the
dump area (``label.reserve_blocks``), the trailing copy at the last block of
the device. A header that savecore has cleared starts with
:data:`CLEARED_MAGIC` instead.
"""

from __future__ import annotations

__all__ = ["CLEARED_MAGIC", "DUMP_HEADER_MAGIC", "is_dump_header"]

#: first 8 bytes of a live dump header (leading or trailing copy)
DUMP_HEADER_MAGIC = b"DDUMPHDR"
#: first 8 bytes of a header savecore has cleared after a successful save
CLEARED_MAGIC = b"DDUMPCLR"


def is_dump_header(block: bytes | bytearray | memoryview) -> bool:
    """True if ``block`` starts with a live dump header's magic; never raises."""
    return bytes(block[: len(DUMP_HEADER_MAGIC)]) == DUMP_HEADER_MAGIC
