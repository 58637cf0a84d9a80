# SPDX-License-Identifier: GPL-2.0-or-later
"""Dump-device drivers. Imports only errors and _binary: drivers move blocks and know no formats."""
