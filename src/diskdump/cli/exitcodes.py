# SPDX-License-Identifier: GPL-2.0-or-later
"""Documented exit codes of the ``diskdump`` command (also listed in ``diskdump --help``)."""

from __future__ import annotations

import enum

__all__ = ["ExitCode"]


class ExitCode(enum.IntEnum):
    """Exit status of ``diskdump``. Some values are shared: their meaning depends on the command."""

    OK = 0  #: success; check: the device is formatted and ready
    FAILURE = 1  #: an error (the message says which); not used by check
    CHECK_HOLDS_DUMP = 1  #: check: holds a dump savecore has not cleared
    CHECK_NEEDS_FORMAT = 2  #: check: no label, or blocks whose pattern fails
    CHECK_UNSUITABLE = 3  #: check: sanity_check says the device cannot take a dump
    DUMP_INCOMPLETE = 4  #: dump: a dump was written but cut short (device full, source short)
    NOT_READY = 5  #: status/arm: a crash now would not be captured
    SAVED_INCOMPLETE = 6  #: savecore: saved, but at least one dump is incomplete or salvaged
    USAGE = 64  #: bad command line or configuration (EX_USAGE)
    INTERRUPTED = 130  #: interrupted by SIGINT


EXIT_CODE_HELP = """\
exit status:
  0    success; for check: formatted and ready
  1    error (the message names the device, offset and field); for check: holds a dump
  2    check: needs format (no label or pattern mismatch)
  3    check: unsuitable (mounted, in use, read-only, too small, ...)
  4    dump: a dump was written but is incomplete
  5    status/arm: a crash now would not be captured
  6    savecore: saved, but a dump was incomplete or salvaged
  64   usage error
  130  interrupted
"""
