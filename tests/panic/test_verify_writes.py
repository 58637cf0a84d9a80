# SPDX-License-Identifier: GPL-2.0-or-later
"""``verify = "written"``: every block is compared with its pattern just before it is written.

The sampled check before the dump (every 4096th block) misses damage between
two sampled blocks; these tests put foreign bytes exactly there and prove that
the writer stops before overwriting them, names the lba, and moves the dump to
the next device, and that the foreign bytes are still there afterwards.
"""

from __future__ import annotations

import hashlib

import pytest

from diskdump.devices.base import Op
from diskdump.devices.fault import FaultDevice, FaultPlan
from diskdump.formats.dumpheader import DumpFlag
from diskdump.formats.partition import BLOCK_SIZE
from diskdump.panic.writer import write_dump
from tests.panic.helpers import (
    assert_pages_match,
    formatted,
    kernel,
    read_back,
    settings,
    state,
)

#: what the sampled pre-check of "written" reads: every 4096th block
SAMPLE = 4096

FOREIGN = b"EXT4 or somebody else's data, not ours".ljust(BLOCK_SIZE, b"\xa5")


def _plant(data: bytearray, lba: int) -> str:
    data[lba * BLOCK_SIZE : (lba + 1) * BLOCK_SIZE] = FOREIGN
    return hashlib.sha256(data[lba * BLOCK_SIZE : (lba + 1) * BLOCK_SIZE]).hexdigest()


@pytest.mark.parametrize("where", ["metadata", "chunk area"])
def test_foreign_block_between_samples_is_not_overwritten(where: str) -> None:
    k = kernel()
    first, label1 = formatted(name="first")
    r = label1.reserve_blocks
    lba = {"metadata": r + 1, "chunk area": r + 1500}[where]
    assert (lba - r) % SAMPLE != 0  # the sampled pre-check cannot see it
    planted = _plant(first.data, lba)
    after = bytes(first.data[(lba + 1) * BLOCK_SIZE :])  # nothing past it may change either
    second, label2 = formatted(name="second")
    result = write_dump(
        k.source,
        state(),
        [first, second],
        settings(sample_every=SAMPLE, verify_writes=True),
    )
    assert result.device == "second" and result.complete
    assert result.header.flags & DumpFlag.FALLBACK
    refusal = [e for e in result.events if e.startswith("first: abandoned")]
    assert refusal and f"lba {lba}" in refusal[0] and "format pattern" in refusal[0]
    assert "no pattern signature" in refusal[0]
    block = first.data[lba * BLOCK_SIZE : (lba + 1) * BLOCK_SIZE]
    assert hashlib.sha256(block).hexdigest() == planted
    assert bytes(first.data[(lba + 1) * BLOCK_SIZE :]) == after
    assert_pages_match(read_back(second, label2), k.source)


def test_without_write_verification_the_same_block_would_be_overwritten() -> None:
    """The control: sampling alone misses the planted block (why "written" exists)."""
    k = kernel()
    dev, _ = formatted(name="only")
    lba = 256 + 1500
    _plant(dev.data, lba)
    result = write_dump(k.source, state(), [dev], settings(sample_every=SAMPLE))
    assert result.device == "only" and result.complete
    assert bytes(dev.data[lba * BLOCK_SIZE : (lba + 1) * BLOCK_SIZE]) != FOREIGN


def test_verified_dump_is_complete_and_checks_every_written_block() -> None:
    k = kernel()
    dev, label = formatted()
    result = write_dump(k.source, state(), [dev], settings(verify_writes=True, sample_every=SAMPLE))
    assert result.complete and not result.header.flags & DumpFlag.FALLBACK
    image = read_back(dev, label)
    assert_pages_match(image, k.source)
    # the whole written extent went through the check: header, metadata, every chunk, trailer
    written = result.header.data_end_lba - result.header.header_lba + 1
    assert result.bytes_written >= written * BLOCK_SIZE
    coverage = [e for e in result.events if "pattern checked on" in e]
    assert coverage == [
        f"mem0: pattern checked on {-(-label.data_blocks // SAMPLE) + 1} of {label.data_blocks} "
        f"blocks before the dump (every {SAMPLE}th and the last); "
        # every block written, less the leading header's rewrite (ours since the start)
        f"{result.bytes_written // BLOCK_SIZE - 1} blocks read back and compared before being "
        "overwritten"
    ]


def test_write_error_stops_the_queue_no_later_write_reaches_the_device() -> None:
    """Writes are queued two deep: after a failed one, nothing behind it is written."""
    k = kernel()
    inner, label1 = formatted(name="first")
    fail = label1.reserve_blocks + 300
    first = FaultDevice(inner, FaultPlan(fail_at_lba=fail, fail_op=Op.WRITE))
    pristine, _ = formatted(name="pristine")
    second, _ = formatted(name="second")
    result = write_dump(k.source, state(), [first, second], settings(verify_writes=True))
    assert result.device == "second" and result.complete
    inner.reopen()
    # every block after the failed chunk still holds the pattern, except the trailer
    # and header blocks the writer never reached (it abandoned the device)
    tail = slice((fail + 300) * BLOCK_SIZE, (label1.block_count - 1) * BLOCK_SIZE)
    assert bytes(inner.data[tail]) == bytes(pristine.data[tail])
