# SPDX-License-Identifier: GPL-2.0-or-later
"""A fault-injecting wrapper around any dump device (tests of the writer and savecore).

Faults are described by a frozen :class:`FaultPlan` and counted in rw_block
calls (1-based) or in blocks transferred (1-based, cumulative over reads and
writes unless ``fail_op`` restricts them)::

    fail_at_call=N             the N-th rw_block call raises DeviceIOError, nothing transferred
    fail_at_block=N            the call that would transfer the N-th block raises
    fail_at_lba=L              any call touching block L raises
    fail_op=Op.WRITE           the three faults above only hit writes (or reads)
    torn_write_at_call=N       that write reaches the medium only for its first torn_bytes
                               bytes (may end inside a block), then raises
    disappear_at_call=N        from that call on the device is gone: every call raises,
                               sanity_check says UNUSABLE, flush raises
    fail_flush=True            flush() raises (the write cache could not be drained)
    latency=S                  every rw_block call sleeps S seconds first
    power_cut_after_blocks=N   after N written blocks further writes are silently lost
                               (calls succeed, the medium keeps what it had at the cut)

The wrapper never checks bounds itself: it forwards to the wrapped driver.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from dataclasses import dataclass

from diskdump.devices.base import DeviceGeometry, DumpDevice, Health, Op, SanityResult
from diskdump.errors import DeviceIOError

__all__ = ["FaultDevice", "FaultPlan"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Which faults a :class:`FaultDevice` injects (see the module docstring)."""

    fail_at_call: int | None = None
    fail_at_block: int | None = None
    fail_at_lba: int | None = None
    fail_op: Op | None = None
    torn_write_at_call: int | None = None
    torn_bytes: int = 2048
    disappear_at_call: int | None = None
    fail_flush: bool = False
    latency: float = 0.0
    power_cut_after_blocks: int | None = None


class FaultDevice(DumpDevice):
    """Wrap ``inner`` and inject the faults of ``plan``.

    :param inner: the device that really stores the blocks
    :param plan: the faults to inject
    """

    def __init__(self, inner: DumpDevice, plan: FaultPlan) -> None:
        self.inner = inner
        self.plan = plan
        self.name = inner.name
        #: the wrapped driver's path, if it has one (so format still probes the real device)
        self.path: str | None = getattr(inner, "path", None)
        self.calls = 0  #: rw_block calls seen, failed ones included
        self.blocks_transferred = 0  #: blocks read or written successfully
        self.blocks_written = 0  #: blocks that reached the medium
        self.blocks_lost = 0  #: blocks dropped after the power cut
        self.gone = False
        self._lock = threading.Lock()

    @property
    def geometry(self) -> DeviceGeometry:
        return self.inner.geometry

    def sanity_check(self) -> SanityResult:
        if self.gone:
            return SanityResult(Health.UNUSABLE, "device disappeared")
        return self.inner.sanity_check()

    def quiesce(self) -> None:
        self._check_present(None)
        self.inner.quiesce()

    def rw_block(self, op: Op, lba: int, buffer: bytearray | memoryview) -> None:
        # one call at a time, so "the N-th call" means the same thing with concurrent callers
        with self._lock:
            self._rw_block(op, lba, buffer)

    def _rw_block(self, op: Op, lba: int, buffer: bytearray | memoryview) -> None:
        plan = self.plan
        self.calls += 1
        if plan.latency > 0:
            time.sleep(plan.latency)
        if plan.disappear_at_call is not None and self.calls >= plan.disappear_at_call:
            if not self.gone:
                log.debug("%s: injected disappearance at call %d", self.name, self.calls)
            self.gone = True
        self._check_present(lba)
        blocks = len(buffer) // self.geometry.block_size
        self._maybe_fail(op, lba, blocks)
        if op is Op.WRITE and plan.torn_write_at_call == self.calls:
            self._torn_write(lba, buffer)
        if op is Op.WRITE and plan.power_cut_after_blocks is not None:
            self._write_until_cut(lba, buffer, blocks)
            return
        self.inner.rw_block(op, lba, buffer)
        self.blocks_transferred += blocks
        if op is Op.WRITE:
            self.blocks_written += blocks

    def _hits(self, op: Op) -> bool:
        return self.plan.fail_op is None or self.plan.fail_op is op

    def _maybe_fail(self, op: Op, lba: int, blocks: int) -> None:
        plan = self.plan
        if not self._hits(op):
            return
        reason = None
        if plan.fail_at_call == self.calls:
            reason = f"injected i/o error at call {self.calls}"
        elif plan.fail_at_block is not None and (
            self.blocks_transferred < plan.fail_at_block <= self.blocks_transferred + blocks
        ):
            reason = f"injected i/o error at block {plan.fail_at_block}"
        elif plan.fail_at_lba is not None and lba <= plan.fail_at_lba < lba + blocks:
            reason = f"injected i/o error at lba {plan.fail_at_lba}"
        if reason is not None:
            raise DeviceIOError(
                f"{reason} ({op.name.lower()})",
                device=self.name,
                lba=lba,
                found=errno.errorcode[errno.EIO],
            )

    def _torn_write(self, lba: int, buffer: bytearray | memoryview) -> None:
        bs = self.geometry.block_size
        keep = min(self.plan.torn_bytes, len(buffer))
        whole = -(-keep // bs)
        if whole:
            # read-modify-write so the medium holds new bytes up to `keep` and old bytes after
            merged = bytearray(whole * bs)
            self.inner.rw_block(Op.READ, lba, merged)
            merged[:keep] = memoryview(buffer)[:keep]
            self.inner.rw_block(Op.WRITE, lba, merged)
        raise DeviceIOError(
            f"injected torn write: {keep} of {len(buffer)} bytes reached the medium",
            device=self.name,
            lba=lba,
        )

    def _write_until_cut(self, lba: int, buffer: bytearray | memoryview, blocks: int) -> None:
        assert self.plan.power_cut_after_blocks is not None
        room = max(0, self.plan.power_cut_after_blocks - self.blocks_written)
        kept = min(room, blocks)
        if kept:
            bs = self.geometry.block_size
            self.inner.rw_block(Op.WRITE, lba, memoryview(buffer)[: kept * bs])
            self.blocks_written += kept
        self.blocks_lost += blocks - kept
        self.blocks_transferred += blocks

    def _check_present(self, lba: int | None) -> None:
        if self.gone:
            raise DeviceIOError(
                "device disappeared (injected)",
                device=self.name,
                lba=lba,
                found=errno.errorcode[errno.ENODEV],
            )

    def flush(self) -> None:
        self._check_present(None)
        if self.plan.fail_flush:
            raise DeviceIOError("injected flush failure", device=self.name)
        self.inner.flush()

    def shutdown(self) -> None:
        # always release the real device, even when it "disappeared"
        self.inner.shutdown()
