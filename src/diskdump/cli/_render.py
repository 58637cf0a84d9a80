# SPDX-License-Identifier: GPL-2.0-or-later
"""Output helpers for the CLI: text or one JSON object, and progress on long work."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

__all__ = ["Progress", "emit_json", "human_size", "print_error"]


def emit_json(obj: Mapping[str, Any] | list[Any], stream: IO[str] | None = None) -> None:
    """Print ``obj`` as one JSON document followed by a newline."""
    out = stream if stream is not None else sys.stdout
    json.dump(obj, out, indent=2, sort_keys=False, default=str)
    out.write("\n")


def print_error(message: str, hint: str | None = None) -> None:
    """Print an error (and an optional likely cause) on stderr."""
    print(f"diskdump: error: {message}", file=sys.stderr)
    if hint:
        print(f"diskdump: hint: {hint}", file=sys.stderr)


def human_size(nbytes: float) -> str:
    """Format a byte count with binary units (``1.5 GiB``)."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


class Progress:
    """Progress on long work: a bar on a terminal, a plain line every few seconds otherwise.

    Call it as ``progress(done, total)`` with byte counts; it is the callback
    the library functions accept. Nothing is printed when ``enabled`` is false
    (``--quiet`` or ``--json``).
    """

    def __init__(self, label: str, *, enabled: bool = True, stream: IO[str] | None = None) -> None:
        self.label = label
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self._last = 0.0
        self._finished = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        interval = 0.2 if self.tty else 5.0
        if done < total and now - self._last < interval:
            return
        self._last = now
        elapsed = max(now - self.start, 1e-6)
        rate = done / elapsed
        pct = 100.0 * done / total if total else 100.0
        eta = (total - done) / rate if rate > 0 and total > done else 0.0
        text = (
            f"{self.label}: {pct:5.1f}% {human_size(done)}/{human_size(total)} "
            f"{human_size(rate)}/s eta {eta:.0f}s"
        )
        if self.tty:
            width = 24
            filled = int(width * pct / 100)
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {text}\x1b[K")
            if done >= total:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
