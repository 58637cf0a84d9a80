# SPDX-License-Identifier: GPL-2.0-or-later
"""Dump-partition operations: format, verify, re-initialise (devices + formats.partition)."""
