# SPDX-License-Identifier: GPL-2.0-or-later
"""Timers, tasklets and crash-dump mode: the seed's runtime, in one small module.

The 2004 diskdump patch could not let the crashed kernel's timers and
tasklets run while it wrote the dump, yet its own drivers needed time-outs
and deferred work. Its answer, kept here: drivers and the writer call the
ordinary routines (:func:`add_timer`, :func:`del_timer`,
:func:`tasklet_schedule`), and the core decides where the work goes::

    normal mode      timers and tasklets go to the normal lists, run by one
                     small scheduler thread (started on first use)
    crash-dump mode  calls from the dump's own threads go to PRIVATE lists,
                     run only when the writer's polling loop calls
                     run_pending() between rw_block calls; everything else
                     (registered before the dump, or by any other thread)
                     stays on the normal lists, which do not run at all

So in crash-dump mode nothing runs behind the writer's back, and the dump's
own progress line, I/O watchdog and compression completions still run, at
points the writer chooses. Times are ``time.monotonic()`` seconds.

The lists are process-global, like the kernel's: a driver must not need a
handle to the runtime to arm a timer. :class:`Runtime` holds the state; the
module-level functions use the one default instance.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = [
    "Runtime",
    "Tasklet",
    "Timer",
    "add_timer",
    "adopt_thread",
    "crashdump_mode",
    "del_timer",
    "enter_crashdump_mode",
    "exit_crashdump_mode",
    "mod_timer",
    "next_expiry",
    "run_pending",
    "tasklet_schedule",
]

log = logging.getLogger(__name__)

#: the scheduler thread re-checks its lists at least this often (seconds), so that a
#: timer armed with a far expiry and then moved closer is never late by more than this
_IDLE_WAIT = 1.0


class Timer:
    """A one-shot timer: ``function()`` runs once ``time.monotonic() >= expires``.

    :param function: called with no arguments; exceptions are logged, not raised
    :param expires: monotonic time in seconds
    """

    __slots__ = ("_queue", "expires", "function")

    def __init__(self, function: Callable[[], None], expires: float = 0.0) -> None:
        self.function = function
        self.expires = expires
        self._queue: list[Timer] | None = None  # the list it is pending on, under the lock

    @property
    def pending(self) -> bool:
        """True while armed and not yet run or deleted."""
        return self._queue is not None


class Tasklet:
    """Deferred work: ``function()`` runs once per :func:`tasklet_schedule`, soon.

    Scheduling a tasklet that is already scheduled does nothing (as in the kernel).
    """

    __slots__ = ("_queue", "function")

    def __init__(self, function: Callable[[], None]) -> None:
        self.function = function
        self._queue: deque[Tasklet] | None = None

    @property
    def scheduled(self) -> bool:
        """True from scheduling until it starts running."""
        return self._queue is not None


class Runtime:
    """The lists, the mode and the scheduler thread.

    :param clock: monotonic clock in seconds (tests of ordering may pass their own)
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._timers: list[Timer] = []
        self._tasklets: deque[Tasklet] = deque()
        self._crash_timers: list[Timer] = []
        self._crash_tasklets: deque[Tasklet] = deque()
        self._crash = False
        self._dump_threads: set[int] = set()
        self._thread: threading.Thread | None = None

    # --- registration -------------------------------------------------------------------

    def _private(self) -> bool:
        # under the lock: does a call from this thread go to the private lists?
        return self._crash and threading.get_ident() in self._dump_threads

    def add_timer(self, timer: Timer) -> None:
        """Arm ``timer`` (re-arm it if pending) for ``timer.expires``."""
        with self._cond:
            self._unlink_timer(timer)
            queue = self._crash_timers if self._private() else self._timers
            queue.append(timer)
            timer._queue = queue
            self._kick()

    def mod_timer(self, timer: Timer, expires: float) -> None:
        """Set ``timer.expires`` and arm it."""
        timer.expires = expires
        self.add_timer(timer)

    def del_timer(self, timer: Timer) -> bool:
        """Disarm ``timer``; return True if it was pending."""
        with self._cond:
            return self._unlink_timer(timer)

    def _unlink_timer(self, timer: Timer) -> bool:
        if timer._queue is None:
            return False
        timer._queue.remove(timer)
        timer._queue = None
        return True

    def tasklet_schedule(self, tasklet: Tasklet) -> None:
        """Queue ``tasklet`` to run once; no-op if it is already queued."""
        with self._cond:
            if tasklet._queue is not None:
                return
            queue = self._crash_tasklets if self._private() else self._tasklets
            queue.append(tasklet)
            tasklet._queue = queue
            self._kick()

    def _kick(self) -> None:
        # under the lock: wake the scheduler thread, starting it on first use
        if not self._crash and self._thread is None:
            self._thread = threading.Thread(
                target=self._scheduler, name="diskdump-runtime", daemon=True
            )
            self._thread.start()
        self._cond.notify_all()

    # --- crash-dump mode ----------------------------------------------------------------

    def crashdump_mode(self) -> bool:
        """True between :meth:`enter_crashdump_mode` and :meth:`exit_crashdump_mode`."""
        return self._crash

    def enter_crashdump_mode(self) -> None:
        """Stop the normal lists; the calling thread becomes the dump's first own thread."""
        with self._cond:
            self._crash = True
            self._dump_threads = {threading.get_ident()}
            self._crash_timers.clear()
            self._crash_tasklets.clear()

    def adopt_thread(self, ident: int | None = None) -> None:
        """Count a thread (default: the caller) as the dump's own: its calls go private."""
        with self._cond:
            self._dump_threads.add(threading.get_ident() if ident is None else ident)

    def exit_crashdump_mode(self) -> None:
        """Drop the private lists and let the normal lists run again (tests, replays)."""
        with self._cond:
            for timer in self._crash_timers:
                timer._queue = None
            for tasklet in self._crash_tasklets:
                tasklet._queue = None
            self._crash_timers.clear()
            self._crash_tasklets.clear()
            self._dump_threads.clear()
            self._crash = False
            self._kick()

    def run_pending(self) -> int:
        """Run the private lists' due timers and queued tasklets; return how many ran.

        Called by the writer's polling loop between ``rw_block`` calls. Work
        queued while this runs waits for the next call.
        """
        with self._cond:
            if not self._crash:
                return 0
            due = self._take_due(self._crash_timers, self.clock())
            tasklets = self._take_tasklets(self._crash_tasklets)
        _run(due, tasklets)
        return len(due) + len(tasklets)

    def next_expiry(self) -> float | None:
        """Earliest expiry on the private lists (0.0 if a tasklet waits), or None."""
        with self._cond:
            if self._crash_tasklets:
                return 0.0
            return min((t.expires for t in self._crash_timers), default=None)

    # --- normal mode --------------------------------------------------------------------

    @staticmethod
    def _take_due(queue: list[Timer], now: float) -> list[Timer]:
        due = sorted((t for t in queue if t.expires <= now), key=lambda t: t.expires)
        for timer in due:
            queue.remove(timer)
            timer._queue = None
        return due

    @staticmethod
    def _take_tasklets(queue: deque[Tasklet]) -> list[Tasklet]:
        taken = list(queue)
        queue.clear()
        for tasklet in taken:
            tasklet._queue = None
        return taken

    def _scheduler(self) -> None:
        while True:
            with self._cond:
                while self._crash or not self._ready():
                    self._cond.wait(self._wait_time())
                due = self._take_due(self._timers, self.clock())
                tasklets = self._take_tasklets(self._tasklets)
            _run(due, tasklets)

    def _ready(self) -> bool:
        now = self.clock()
        return bool(self._tasklets) or any(t.expires <= now for t in self._timers)

    def _wait_time(self) -> float:
        if self._crash or not self._timers:
            return _IDLE_WAIT
        soonest = min(t.expires for t in self._timers) - self.clock()
        return max(0.0, min(soonest, _IDLE_WAIT))


def _run(timers: list[Timer], tasklets: list[Tasklet]) -> None:
    # outside the lock: the work may arm timers or schedule tasklets itself
    for function in [t.function for t in timers] + [t.function for t in tasklets]:
        try:
            function()
        except Exception:
            log.exception("timer or tasklet %r failed", function)


#: the process-wide runtime every driver and the writer share
DEFAULT = Runtime()


def add_timer(timer: Timer) -> None:
    """Arm ``timer`` on the default runtime (see :meth:`Runtime.add_timer`)."""
    DEFAULT.add_timer(timer)


def mod_timer(timer: Timer, expires: float) -> None:
    """Re-arm ``timer`` for ``expires`` (monotonic seconds) on the default runtime."""
    DEFAULT.mod_timer(timer, expires)


def del_timer(timer: Timer) -> bool:
    """Disarm ``timer``; True if it was pending."""
    return DEFAULT.del_timer(timer)


def tasklet_schedule(tasklet: Tasklet) -> None:
    """Queue ``tasklet`` on the default runtime."""
    DEFAULT.tasklet_schedule(tasklet)


def crashdump_mode() -> bool:
    """True while a dump is being written (the private lists are in use)."""
    return DEFAULT.crashdump_mode()


def enter_crashdump_mode() -> None:
    """Switch the default runtime to crash-dump mode (the panic writer does this)."""
    DEFAULT.enter_crashdump_mode()


def exit_crashdump_mode() -> None:
    """Leave crash-dump mode (after a replay or a test in the same process)."""
    DEFAULT.exit_crashdump_mode()


def adopt_thread(ident: int | None = None) -> None:
    """Count a thread as the dump's own (its timers and tasklets go to the private lists)."""
    DEFAULT.adopt_thread(ident)


def run_pending() -> int:
    """Run the default runtime's due private timers and tasklets (the writer's polling loop)."""
    return DEFAULT.run_pending()


def next_expiry() -> float | None:
    """Earliest private expiry of the default runtime, or None."""
    return DEFAULT.next_expiry()
