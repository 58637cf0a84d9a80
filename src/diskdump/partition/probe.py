# SPDX-License-Identifier: GPL-2.0-or-later
"""Foreign-signature probe before a format, through libblkid (util-linux ``wipefs``).

``wipefs --no-act --json PATH`` lists every signature libblkid knows at every
offset (filesystems, swap, LVM2 and RAID members, partition tables and their
backup copies at the end of the disk) and writes nothing. We keep no magic
table of our own: util-linux's is maintained and far larger.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass

from diskdump.errors import DeviceRefusedError

__all__ = ["Signature", "describe_signatures", "probe_signatures"]

log = logging.getLogger(__name__)

#: seconds a probe may take before we give up (libblkid reads a few blocks)
PROBE_TIMEOUT = 60.0
#: where util-linux installs wipefs on Debian, if it is not on PATH
_SBIN_WIPEFS = "/usr/sbin/wipefs"


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature libblkid found: its type (``ext4``, ``swap``, ``gpt``...) and offset."""

    type: str
    offset: int
    uuid: str | None = None
    label: str | None = None

    def __str__(self) -> str:
        return f"{self.type} at {self.offset:#x}"


def probe_signatures(path: str) -> list[Signature]:
    """List the signatures libblkid finds on ``path`` (a block device or an image file).

    :raises DeviceRefusedError: wipefs is missing or failed, so nothing can be
        said about the device (the caller refuses to write, unless forced)
    """
    wipefs = shutil.which("wipefs") or _SBIN_WIPEFS
    try:
        proc = subprocess.run(
            [wipefs, "--no-act", "--json", path],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DeviceRefusedError(
            f"cannot probe for foreign signatures ({err})",
            device=path,
            hint="install util-linux (wipefs)",
        ) from err
    if proc.returncode != 0:
        raise DeviceRefusedError(
            "cannot probe for foreign signatures",
            device=path,
            found=proc.stderr.strip() or f"wipefs exit status {proc.returncode}",
        )
    signatures = parse_wipefs_json(proc.stdout, path=path)
    log.debug("%s: signatures %s", path, signatures)
    return signatures


def parse_wipefs_json(text: str, *, path: str) -> list[Signature]:
    """Parse ``wipefs --json`` output (empty output means no signature)."""
    if not text.strip():
        return []
    try:
        entries = json.loads(text)["signatures"]
        return [
            Signature(
                type=str(e["type"]),
                offset=int(str(e["offset"]), 0),
                uuid=e.get("uuid"),
                label=e.get("label"),
            )
            for e in entries
        ]
    except (ValueError, KeyError, TypeError) as err:
        raise DeviceRefusedError(
            "cannot understand the signature probe's output", device=path, found=text[:200]
        ) from err


def describe_signatures(signatures: list[Signature]) -> str:
    """``"foreign signatures: ext4 at 0x438, gpt at 0x200"`` for a refusal message."""
    return "foreign signatures: " + ", ".join(str(s) for s in signatures)
