# SPDX-License-Identifier: GPL-2.0-or-later
"""diskdump: a crash-dump system for Linux.

Dump partitions initialised with a verifiable pattern, a small panic-time
writer that runs in a kexec capture kernel, and ``savecore``, which turns the
image into a standard vmcore (kdump-compressed or ELF).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
