# SPDX-License-Identifier: GPL-2.0-or-later
"""The writer's I/O thread and watchdog: every rw_block runs here, the writer polls.

::

    writer thread (polling loop)                 I/O thread
    ----------------------------                 ----------
    write(lba, data): queue the job ------------>  [verify] read the blocks, compare
      (returns at once while fewer than              with the pattern; refuse on a
       WRITE_DEPTH jobs are queued: the writer        mismatch (nothing written)
       compresses the next chunk meanwhile)        BlockIO.write -> driver rw_block
    wait for the oldest job when the queue is full, and in flush()
    loop: wait(done, POLL_INTERVAL)
          run_pending()   <- progress line, compression completions, the watchdog
          a job in the driver for more than io_timeout? -> DumpAbortedError
    done -> raise the job's error, if any

A driver that hangs (a dead controller, a path that never answers) cannot
stop the dump: after ``io_timeout`` seconds in one job the writer gives the
device up, leaves the stuck thread behind (a daemon; it cannot be killed) and
falls back to the next device with a fresh I/O thread. Both threads count as
the dump's own for the runtime (their timers and tasklets go to the private
lists). The deadline runs from the moment the I/O thread starts a job, so a
job waiting behind another is not blamed for its time in the queue.

With a :class:`~diskdump.formats.partition.BlockPattern` (``verify = "written"``),
every block is read back and compared with the format pattern just before it
is overwritten: a block that is not an untouched block of this partition (a
filesystem created over the area, another partition's blocks, an old dump) is
never written, and the device is refused with the lba named. Blocks this
attempt already wrote (the leading header, rewritten COMPLETE at the end) are
written with ``fresh=False`` and not compared.
"""

from __future__ import annotations

import logging
import mmap
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

from diskdump.devices.base import BlockIO
from diskdump.errors import DeviceRefusedError, DumpAbortedError
from diskdump.formats.partition import BlockPattern
from diskdump.runtime import core as runtime

__all__ = ["POLL_INTERVAL", "VERIFY_BLOCKS", "WRITE_DEPTH", "IoWorker"]

log = logging.getLogger(__name__)

#: seconds between two runs of the private timer and tasklet lists while waiting
POLL_INTERVAL = 0.02
#: writes queued to the I/O thread before the writer waits: one in the driver, one
#: ready behind it, so the device never idles while the writer builds the next chunk
WRITE_DEPTH = 2
#: blocks read back per compare when verifying before a write (1 MiB, one pattern period)
VERIFY_BLOCKS = 256


class _Job:
    __slots__ = ("done", "error", "function", "started", "what")

    def __init__(self, function: Callable[[], None], what: str) -> None:
        self.function = function
        self.what = what
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.started: float | None = None  #: set by the I/O thread when the job begins


class IoWorker:
    """One I/O thread for one device.

    :param io: the bounds-checked block path (the dump area only)
    :param io_timeout: seconds one rw_block job (or flush) may take before the device is
        abandoned
    :param pattern: compare every block with this partition's pattern before writing it
        (None: write without reading first)
    """

    def __init__(self, io: BlockIO, io_timeout: float, pattern: BlockPattern | None = None) -> None:
        self.io = io
        self.io_timeout = io_timeout
        self.name = io.device.name
        self.pattern = pattern
        self.verified_blocks = 0
        self._scratch: memoryview | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._pending: deque[_Job] = deque()
        self._broken = False  #: a job failed: the I/O thread runs no later job
        self._thread = threading.Thread(target=self._serve, name=f"io {self.name}", daemon=True)
        self._thread.start()
        if self._thread.ident is not None:
            runtime.adopt_thread(self._thread.ident)
        self.stalled = False

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            job.started = time.monotonic()
            if self._broken:  # never write past a failed or refused write
                job.error = DumpAbortedError(
                    f"{job.what} not attempted: an earlier write failed", device=self.name
                )
            else:
                try:
                    job.function()
                except BaseException as err:  # handed to the writer thread, which re-raises it
                    job.error = err
                    self._broken = True
            job.done.set()

    def write(self, lba: int, data: bytes | bytearray | memoryview, *, fresh: bool = True) -> None:
        """Queue ``data`` for block ``lba``; wait only when WRITE_DEPTH writes are queued.

        An error of this write surfaces at a later call (``write`` or :meth:`flush`);
        ``data`` must not change until then.

        :param fresh: the blocks were not written by this attempt yet (verify them first)
        :raises DeviceIOError: the driver failed (this or an earlier queued write)
        :raises DeviceRefusedError: a block to be overwritten does not hold its pattern
        :raises OutOfBoundsError: the request leaves the dump area (nothing is written)
        :raises DumpAbortedError: a job took longer than io_timeout
        """
        self.io.check_bounds(lba, len(data))  # a bug in the caller, not the device: now

        def job() -> None:
            if fresh and self.pattern is not None:
                self._verify(lba, len(data))
            self.io.write(lba, data)

        self._submit(job, f"write at lba {lba}")
        while len(self._pending) >= WRITE_DEPTH:
            self._wait(self._pending.popleft())

    def flush(self) -> None:
        """Wait for every queued write, then flush the device's write cache."""
        self.drain()
        self._submit(self.io.device.flush, "flush")
        self.drain()

    def drain(self) -> None:
        """Wait for every queued job; raise the first error."""
        while self._pending:
            self._wait(self._pending.popleft())

    def _verify(self, lba: int, nbytes: int) -> None:
        # runs on the I/O thread: read back, compare, refuse before anything is written
        pattern = self.pattern
        assert pattern is not None
        bs = pattern.block_size
        if self._scratch is None:
            self._scratch = memoryview(mmap.mmap(-1, VERIFY_BLOCKS * bs))  # aligned (O_DIRECT)
        blocks = nbytes // bs
        for first in range(0, blocks, VERIFY_BLOCKS):
            count = min(VERIFY_BLOCKS, blocks - first)
            view = self._scratch[: count * bs]
            self.io.read(lba + first, view)
            for bad in pattern.iter_bad_blocks(view, lba + first):
                offset = (bad - lba - first) * bs
                raise DeviceRefusedError(
                    "block to be overwritten does not hold the format pattern; "
                    "not written (the area is no longer this dump partition's alone)",
                    device=self.name,
                    lba=bad,
                    offset=bad * bs,
                    found=pattern.describe_block(view[offset : offset + bs], bad),
                    hint="run `diskdump check --full` on the device; reformat it if it is yours",
                )
            self.verified_blocks += count

    def _submit(self, function: Callable[[], None], what: str) -> None:
        if self.stalled:
            raise DumpAbortedError("device was abandoned after an i/o stall", device=self.name)
        job = _Job(function, what)
        self._pending.append(job)
        self._jobs.put(job)

    def _wait(self, job: _Job) -> None:
        while not job.done.wait(POLL_INTERVAL):
            runtime.run_pending()
            started = job.started
            if started is not None and time.monotonic() - started > self.io_timeout:
                self.stalled = True
                self._pending.clear()
                raise DumpAbortedError(
                    f"{job.what} did not complete within {self.io_timeout:g} s; device abandoned",
                    device=self.name,
                    expected=f"<= {self.io_timeout:g} s",
                    found=f"{time.monotonic() - started:.1f} s",
                )
        runtime.run_pending()
        if job.error is not None:
            self._pending.clear()
            raise job.error

    def close(self) -> None:
        """Let the thread exit once its queue is done (a stalled thread stays in the driver)."""
        self._jobs.put(None)
