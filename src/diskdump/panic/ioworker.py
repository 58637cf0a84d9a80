# SPDX-License-Identifier: GPL-2.0-or-later
"""The writer's I/O thread and watchdog: every rw_block runs here, the writer polls.

::

    writer thread (polling loop)                 I/O thread
    ----------------------------                 ----------
    submit(job) ----------------------------->   BlockIO.write -> driver rw_block
    add_timer(watchdog, now + io_timeout)
    loop: wait(done, POLL_INTERVAL)
          run_pending()   <- progress line, compression completions, the watchdog
          watchdog fired? -> DumpAbortedError: the device is abandoned
    done -> del_timer(watchdog); raise the job's error, if any

A driver that hangs (a dead controller, a path that never answers) cannot
stop the dump: after ``io_timeout`` seconds the writer gives the device up,
leaves the stuck thread behind (a daemon; it cannot be killed) and falls back
to the next device with a fresh I/O thread. Both threads count as the dump's
own for the runtime (their timers and tasklets go to the private lists).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from diskdump.devices.base import BlockIO
from diskdump.errors import DumpAbortedError
from diskdump.runtime import core as runtime
from diskdump.runtime.core import Timer

__all__ = ["POLL_INTERVAL", "IoWorker"]

log = logging.getLogger(__name__)

#: seconds between two runs of the private timer and tasklet lists while waiting
POLL_INTERVAL = 0.02


class _Job:
    __slots__ = ("done", "error", "function", "stalled")

    def __init__(self, function: Callable[[], None]) -> None:
        self.function = function
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.stalled = False


class IoWorker:
    """One I/O thread for one device.

    :param io: the bounds-checked block path (the dump area only)
    :param io_timeout: seconds an rw_block (or flush) may take before the device is abandoned
    """

    def __init__(self, io: BlockIO, io_timeout: float) -> None:
        self.io = io
        self.io_timeout = io_timeout
        self.name = io.device.name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=f"io {self.name}", daemon=True)
        self._thread.start()
        if self._thread.ident is not None:
            runtime.adopt_thread(self._thread.ident)
        self.stalled = False

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job.function()
            except BaseException as err:  # handed to the writer thread, which re-raises it
                job.error = err
            job.done.set()

    def write(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``lba`` through BlockIO on the I/O thread; wait with a deadline.

        :raises DeviceIOError: the driver failed
        :raises OutOfBoundsError: the request leaves the dump area (nothing is written)
        :raises DumpAbortedError: the call took longer than io_timeout
        """
        self._run(lambda: self.io.write(lba, data), f"write at lba {lba}")

    def flush(self) -> None:
        """Flush the device's write cache on the I/O thread, with the same deadline."""
        self._run(self.io.device.flush, "flush")

    def _run(self, function: Callable[[], None], what: str) -> None:
        if self.stalled:
            raise DumpAbortedError("device was abandoned after an i/o stall", device=self.name)
        job = _Job(function)
        watchdog = Timer(lambda: setattr(job, "stalled", True))
        started = time.monotonic()
        runtime.mod_timer(watchdog, started + self.io_timeout)
        self._jobs.put(job)
        try:
            while not job.done.wait(POLL_INTERVAL):
                runtime.run_pending()
                if job.stalled and not job.done.is_set():
                    self.stalled = True
                    raise DumpAbortedError(
                        f"{what} did not complete within {self.io_timeout:g} s; device abandoned",
                        device=self.name,
                        expected=f"<= {self.io_timeout:g} s",
                        found=f"{time.monotonic() - started:.1f} s",
                    )
        finally:
            runtime.del_timer(watchdog)
        runtime.run_pending()
        if job.error is not None:
            raise job.error

    def close(self) -> None:
        """Let the thread exit (a stalled thread stays blocked in the driver)."""
        self._jobs.put(None)
