# SPDX-License-Identifier: GPL-2.0-or-later
"""Report how many pages each external reader compared byte for byte in this run."""

from __future__ import annotations

import pytest

from tests.differential.readers import COMPARED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not any(COMPARED.values()):
        return
    parts = ", ".join(f"{reader} {count}" for reader, count in sorted(COMPARED.items()))
    terminalreporter.write_line(f"differential: pages compared byte for byte: {parts}")
