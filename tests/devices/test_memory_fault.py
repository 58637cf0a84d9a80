# SPDX-License-Identifier: GPL-2.0-or-later
"""The memory device (and the bounds proof it gives) and the fault-injecting wrapper."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskdump.devices.base import BlockIO, Health, Op
from diskdump.devices.fault import FaultDevice, FaultPlan
from diskdump.devices.memory import MemoryDevice
from diskdump.errors import DeviceIOError, OutOfBoundsError

BS = 4096


def _blocks(n: int, seed: int = 1) -> bytes:
    return bytes((seed + i // BS) % 251 for i in range(n * BS))


def test_memory_round_trip_and_calls() -> None:
    dev = MemoryDevice(64, max_io_size=4 * BS)
    io = BlockIO(dev)
    io.write(3, _blocks(10))
    back = bytearray(10 * BS)
    io.read(3, back)
    assert back == _blocks(10)
    # BlockIO split the 10-block transfer at max_io_size
    assert [(c.op, c.lba, c.block_count) for c in dev.calls[:3]] == [
        (Op.WRITE, 3, 4),
        (Op.WRITE, 7, 4),
        (Op.WRITE, 11, 2),
    ]
    assert dev.sanity_check().health is Health.SANE
    dev.shutdown()
    dev.shutdown()
    assert dev.sanity_check().health is Health.UNUSABLE
    with pytest.raises(
        DeviceIOError, match=r"i/o on a device that was shut down \(lba 0\) on memory"
    ):
        dev.rw_block(Op.READ, 0, bytearray(BS))


def test_memory_device_raises_when_called_out_of_bounds() -> None:
    dev = MemoryDevice(16, name="mem0")
    with pytest.raises(
        OutOfBoundsError, match=r"driver called out of bounds .*on mem0.*\[15, 17\)"
    ):
        dev.rw_block(Op.WRITE, 15, bytearray(2 * BS))
    with pytest.raises(OutOfBoundsError, match=r"driver called out of bounds"):
        dev.rw_block(Op.READ, 0, bytearray(100))
    assert dev.calls == []


@given(st.integers(-5, 40), st.integers(0, 20), st.integers(0, 16), st.integers(0, 16))
def test_blockio_never_lets_a_driver_see_out_of_bounds(
    lba: int, blocks: int, first: int, span: int
) -> None:
    """Whatever BlockIO is asked, the memory device (which raises) never sees a bad call."""
    dev = MemoryDevice(16, max_io_size=3 * BS)
    end = min(16, first + span)
    io = BlockIO(dev, first, end)
    try:
        io.write(lba, bytes(blocks * BS))
    except OutOfBoundsError as err:
        assert "driver called" not in str(err)
        assert dev.calls == []
    else:
        assert first <= lba and lba + blocks <= end and blocks > 0
        assert all(first <= c.lba and c.lba + c.block_count <= end for c in dev.calls)


def test_blockio_refuses_outside_range_with_message() -> None:
    io = BlockIO(MemoryDevice(600, name="mem1"), 256, 600)
    with pytest.raises(
        OutOfBoundsError,
        match=r"block request outside the allowed range at offset 0xff000 \(lba 255\) on mem1: "
        r"expected 'lba in \[256, 600\)', got '\[255, 256\)'",
    ):
        io.write(255, bytes(BS))


def _faulty(**plan: object) -> tuple[MemoryDevice, FaultDevice]:
    inner = MemoryDevice(64, name="inner")
    return inner, FaultDevice(inner, FaultPlan(**plan))  # type: ignore[arg-type]


def test_fault_at_call_and_op_filter() -> None:
    inner, dev = _faulty(fail_at_call=2, fail_op=Op.WRITE)
    dev.rw_block(Op.WRITE, 0, bytearray(BS))
    with pytest.raises(
        DeviceIOError, match=r"injected i/o error at call 2 \(write\) \(lba 1\) .*EIO"
    ):
        dev.rw_block(Op.WRITE, 1, bytearray(b"\1" * BS))
    assert inner.data[BS : 2 * BS] == bytes(BS)  # nothing reached the medium
    inner, dev = _faulty(fail_at_call=1, fail_op=Op.WRITE)
    dev.rw_block(Op.READ, 0, bytearray(BS))  # reads are spared


def test_fault_at_block_and_lba() -> None:
    _inner, dev = _faulty(fail_at_block=6)
    dev.rw_block(Op.WRITE, 0, bytearray(4 * BS))  # blocks 1-4
    with pytest.raises(DeviceIOError, match=r"injected i/o error at block 6"):
        dev.rw_block(Op.WRITE, 4, bytearray(4 * BS))  # would carry blocks 5-8
    _inner, dev = _faulty(fail_at_lba=10)
    dev.rw_block(Op.READ, 0, bytearray(10 * BS))
    with pytest.raises(DeviceIOError, match=r"injected i/o error at lba 10 \(read\) \(lba 8\)"):
        dev.rw_block(Op.READ, 8, bytearray(4 * BS))


def test_torn_write_leaves_half_new_half_old() -> None:
    inner, dev = _faulty(torn_write_at_call=1, torn_bytes=BS + 100)
    inner.data[:] = b"\xee" * len(inner.data)
    with pytest.raises(DeviceIOError, match=r"injected torn write: 4196 of 12288 bytes"):
        dev.rw_block(Op.WRITE, 2, bytearray(b"\x11" * 3 * BS))
    assert inner.data[2 * BS : 3 * BS + 100] == b"\x11" * (BS + 100)
    assert inner.data[3 * BS + 100 : 5 * BS] == b"\xee" * (2 * BS - 100)


def test_disappearing_device() -> None:
    _inner, dev = _faulty(disappear_at_call=2)
    dev.rw_block(Op.READ, 0, bytearray(BS))
    with pytest.raises(DeviceIOError, match=r"device disappeared \(injected\).*ENODEV"):
        dev.rw_block(Op.READ, 0, bytearray(BS))
    assert dev.sanity_check().health is Health.UNUSABLE
    with pytest.raises(DeviceIOError, match="disappeared"):
        dev.flush()
    dev.shutdown()


def test_failing_flush_and_latency() -> None:
    inner, dev = _faulty(fail_flush=True, latency=0.01)
    with pytest.raises(DeviceIOError, match=r"injected flush failure on inner"):
        dev.flush()
    assert inner.flushes == 0
    start = time.monotonic()
    dev.rw_block(Op.READ, 0, bytearray(BS))
    assert time.monotonic() - start >= 0.01  # the sleep happened (a lower bound, not a timing)


def test_power_cut_keeps_what_was_written_before() -> None:
    inner, dev = _faulty(power_cut_after_blocks=5)
    dev.rw_block(Op.WRITE, 0, bytearray(b"\1" * 3 * BS))
    dev.rw_block(Op.WRITE, 10, bytearray(b"\2" * 4 * BS))  # only 2 of these survive
    dev.rw_block(Op.WRITE, 20, bytearray(b"\3" * BS))  # lost, silently
    dev.flush()
    assert inner.data[: 3 * BS] == b"\1" * 3 * BS
    assert inner.data[10 * BS : 12 * BS] == b"\2" * 2 * BS
    assert inner.data[12 * BS : 14 * BS] == bytes(2 * BS)
    assert inner.data[20 * BS : 21 * BS] == bytes(BS)
    assert (dev.blocks_written, dev.blocks_lost) == (5, 3)
