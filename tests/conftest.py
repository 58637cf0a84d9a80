# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared pytest configuration: tiers, skips that name their reason, DISKDUMP_REQUIRE_ALL."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REQUIRE_ALL = os.environ.get("DISKDUMP_REQUIRE_ALL") == "1"
CACHE = Path(os.environ.get("DISKDUMP_CACHE", Path.home() / ".cache" / "diskdump"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-seconds", type=float, default=None, help="seconds per fuzz target (default 60)"
    )


def need(condition: bool, reason: str) -> None:
    """Skip with ``reason`` unless ``condition``; under DISKDUMP_REQUIRE_ALL=1 fail instead."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"required test cannot run: {reason}")
    pytest.skip(reason)


def need_tool(name: str) -> str:
    """Path of an external tool, or skip (fail under DISKDUMP_REQUIRE_ALL) naming it."""
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    need(path is not None, f"{name} is not installed (make deps installs it)")
    assert path is not None
    return path


def need_root() -> None:
    need(os.geteuid() == 0, "needs root (loop devices); CI runs as root")


@pytest.fixture
def cache_dir() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE
