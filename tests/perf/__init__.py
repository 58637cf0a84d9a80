# SPDX-License-Identifier: GPL-2.0-or-later
"""Resource bounds of whole commands (memory), measured on subprocesses."""
