# SPDX-License-Identifier: GPL-2.0-or-later
"""Is a dump partition ready? One verdict per device, in the order a panic would ask.

::

    sanity_check UNUSABLE           -> UNSUITABLE    (the driver's reason)
    no label / damaged label        -> NEEDS_FORMAT
    a leading or trailing dump header -> HOLDS_DUMP   (savecore has not cleared it)
    blocks whose pattern fails      -> NEEDS_FORMAT  (how many, and the first lbas)
    otherwise                       -> READY         (MAYBE is reported, still ready)

A dump overwrites the pattern of the blocks it uses, so the pattern is not
verified on a device that holds a dump.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from diskdump.devices.base import DumpDevice, Health, SanityResult
from diskdump.errors import FormatError, NotThisFormatError
from diskdump.formats.partition import PartitionLabel
from diskdump.partition.ops import DumpPresence, Progress, VerifyResult, find_dump, read_label
from diskdump.partition.ops import verify_device as _verify

__all__ = ["CheckResult", "CheckStatus", "check_device"]


class CheckStatus(enum.IntEnum):
    """Verdict of :func:`check_device`; the value is ``diskdump check``'s exit status."""

    READY = 0
    HOLDS_DUMP = 1
    NEEDS_FORMAT = 2
    UNSUITABLE = 3


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Everything :func:`check_device` found out about one device."""

    device: str
    status: CheckStatus
    reason: str
    sanity: SanityResult | None = None
    label: PartitionLabel | None = None
    dump: DumpPresence | None = None
    verify: VerifyResult | None = None

    def to_dict(self) -> dict[str, object]:
        """Plain data for ``--json``."""
        out: dict[str, object] = {
            "device": self.device,
            "status": self.status.name.lower(),
            "exit_code": int(self.status),
            "reason": self.reason,
        }
        if self.sanity is not None:
            out["sanity"] = {"health": self.sanity.health.value, "reason": self.sanity.reason}
        if self.label is not None:
            out["label"] = _label_dict(self.label)
        if self.dump is not None:
            out["dump"] = {
                "leading_header": self.dump.leading,
                "trailing_header": self.dump.trailing,
            }
        if self.verify is not None:
            v = self.verify
            out["verify"] = {
                "sample_every": v.sample_every,
                "checked_blocks": v.checked_blocks,
                "data_blocks": v.data_blocks,
                "bad_blocks": v.bad_block_count,
                "first_bad_lbas": list(v.first_bad_lbas),
                "first_bad_reasons": list(v.first_bad_reasons),
            }
        return out


def _label_dict(label: PartitionLabel) -> dict[str, object]:
    return {
        "uuid": str(label.uuid),
        "version": label.version,
        "block_size": label.block_size,
        "block_count": label.block_count,
        "reserve_blocks": label.reserve_blocks,
        "data_blocks": label.data_blocks,
        "format_time": label.format_time,
        "copy": label.copy.name.lower(),
    }


def check_device(
    device: DumpDevice, sample_every: int = 1, progress: Progress | None = None
) -> CheckResult:
    """Say whether ``device`` is ready to take a dump (see the module docstring).

    :param sample_every: 1 verifies every block of the dump area; N every N-th and the last
    :param progress: called as ``progress(done_bytes, total_bytes)`` during verification
    :raises DeviceIOError: a read failed
    """
    name = device.name
    sanity = device.sanity_check()
    if sanity.health is Health.UNUSABLE:
        return CheckResult(name, CheckStatus.UNSUITABLE, sanity.reason, sanity)
    try:
        label = read_label(device)
    except NotThisFormatError:
        return CheckResult(name, CheckStatus.NEEDS_FORMAT, "no diskdump label", sanity)
    except FormatError as err:
        return CheckResult(name, CheckStatus.NEEDS_FORMAT, f"damaged label: {err}", sanity)
    dump = find_dump(device, label)
    if dump.present:
        where = " and ".join(
            w for w, ok in (("leading", dump.leading), ("trailing", dump.trailing)) if ok
        )
        reason = f"holds a dump savecore has not cleared ({where} header)"
        return CheckResult(name, CheckStatus.HOLDS_DUMP, reason, sanity, label, dump)
    result = _verify(device, sample_every, progress, label=label)
    if not result.ok:
        lbas = ", ".join(str(lba) for lba in result.first_bad_lbas)
        reason = (
            f"{result.bad_block_count} of {result.checked_blocks} checked blocks fail the "
            f"pattern (first lbas: {lbas}; {result.first_bad_reasons[0]})"
        )
        return CheckResult(name, CheckStatus.NEEDS_FORMAT, reason, sanity, label, dump, result)
    coverage = "every block" if sample_every == 1 else f"every {sample_every}th block"
    reason = f"{result.checked_blocks} blocks verified ({coverage})"
    if sanity.health is Health.MAYBE:
        reason += f"; but sanity check says maybe: {sanity.reason}"
    return CheckResult(name, CheckStatus.READY, reason, sanity, label, dump, result)
