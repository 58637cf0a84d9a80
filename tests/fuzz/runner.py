# SPDX-License-Identifier: GPL-2.0-or-later
"""atheris entry point: ``python -m tests.fuzz.runner TARGET [libFuzzer options] [CORPUS]``.

The target function gets the fuzzer's bytes; any exception other than a
:class:`DiskdumpError` (or a hang, or an allocation over the malloc limit) is a
finding: libFuzzer writes the input to ``crash-*`` / ``timeout-*`` / ``oom-*``
and exits non-zero.
"""

from __future__ import annotations

import logging
import sys

import atheris

with atheris.instrument_imports(include=["diskdump"]):
    from diskdump.errors import DiskdumpError
    from tests.fuzz.targets import TARGETS


def main() -> None:
    # Readers log a warning for many malformed inputs; at thousands of inputs a second
    # that output is pure cost (and once filled a pipe and stalled the fuzzer).
    logging.disable(logging.CRITICAL)
    name = sys.argv[1]
    target = TARGETS[name]

    def one_input(data: bytes) -> None:
        try:
            target(data)
        except DiskdumpError:
            pass

    atheris.Setup([sys.argv[0], *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
