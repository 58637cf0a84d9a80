# SPDX-License-Identifier: GPL-2.0-or-later
"""Crash this machine on purpose, the way ``kdumpctl test`` does: sysrq 'c'.

Writing ``c`` to /proc/sysrq-trigger makes the kernel call ``panic("sysrq
triggered crash")`` (drivers/tty/sysrq.c: sysrq_handle_crash), which enters
the loaded capture kernel. /proc/sysrq-trigger accepts every command from root
whatever kernel.sysrq says; that sysctl only masks the keyboard.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from diskdump.errors import DiskdumpError

__all__ = ["SYSRQ_CRASH", "SYSRQ_TRIGGER", "trigger_crash"]

log = logging.getLogger(__name__)

#: the kernel's sysrq trigger file
SYSRQ_TRIGGER = Path("/proc/sysrq-trigger")
#: sysrq command that panics the kernel
SYSRQ_CRASH = b"c"


def trigger_crash(trigger: Path = SYSRQ_TRIGGER) -> None:
    """Flush file systems, then panic the kernel through ``trigger``.

    On a real kernel this does not return. It returns only if ``trigger`` is not
    the kernel's file (tests); the caller decides what that means.

    :raises DiskdumpError: the trigger cannot be written (not root, no /proc)
    """
    os.sync()
    log.warning("writing %r to %s: the kernel panics now", SYSRQ_CRASH, trigger)
    try:
        with open(trigger, "wb", buffering=0) as f:
            f.write(SYSRQ_CRASH)
    except OSError as err:
        raise DiskdumpError(
            f"cannot write the sysrq trigger: {err.strerror}", path=str(trigger), hint="run as root"
        ) from err
