# SPDX-License-Identifier: GPL-2.0-or-later
"""Pure codecs: bytes and files in, objects out, and back. Imports only errors and _binary."""
