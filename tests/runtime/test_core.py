# SPDX-License-Identifier: GPL-2.0-or-later
"""The runtime: normal-mode scheduling, and the routing of crash-dump mode."""

from __future__ import annotations

import threading
import time

from diskdump.runtime import core
from diskdump.runtime.core import Runtime, Tasklet, Timer

#: generous guard for "eventually": a failure waits this long, a pass does not
GUARD = 10.0


def test_normal_mode_timer_and_tasklet_run_on_the_scheduler_thread() -> None:
    rt = Runtime()
    ran: list[str] = []
    done = threading.Event()

    def timer_fn() -> None:
        ran.append(threading.current_thread().name)
        done.set()

    rt.add_timer(Timer(timer_fn, time.monotonic()))
    assert done.wait(GUARD)
    got = threading.Event()
    rt.tasklet_schedule(Tasklet(got.set))
    assert got.wait(GUARD)
    assert ran == ["diskdump-runtime"]


def test_del_timer_and_reschedule_semantics() -> None:
    rt = Runtime()
    hits: list[int] = []
    far = Timer(lambda: hits.append(1), time.monotonic() + 3600)
    rt.add_timer(far)
    assert far.pending and rt.del_timer(far) and not far.pending
    assert not rt.del_timer(far)
    rt.enter_crashdump_mode()
    tasklet = Tasklet(lambda: hits.append(2))
    rt.tasklet_schedule(tasklet)
    rt.tasklet_schedule(tasklet)  # already queued: runs once
    assert rt.run_pending() == 1 and hits == [2]
    assert rt.run_pending() == 0
    rt.exit_crashdump_mode()


def test_outside_work_never_runs_in_crashdump_mode_and_the_dumps_own_does() -> None:
    clock = [0.0]
    rt = Runtime(clock=lambda: clock[0])
    outside: list[str] = []
    own: list[str] = []
    # registered in normal mode (not yet due), then the dump starts and time passes
    rt.add_timer(Timer(lambda: outside.append("timer before"), 10.0))
    rt.tasklet_schedule(Tasklet(lambda: outside.append("warm-up")))
    deadline = time.monotonic() + GUARD
    while outside != ["warm-up"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert outside == ["warm-up"]
    outside.clear()
    rt.enter_crashdump_mode()
    clock[0] = 20.0
    # registered by a thread that is not the dump's: goes to the normal lists
    foreign = threading.Thread(
        target=lambda: (
            rt.add_timer(Timer(lambda: outside.append("foreign timer"), 0.0)),
            rt.tasklet_schedule(Tasklet(lambda: outside.append("foreign tasklet"))),
        )
    )
    foreign.start()
    foreign.join()
    me = threading.get_ident()
    rt.add_timer(Timer(lambda: own.append(f"timer {threading.get_ident() == me}"), 0.0))
    rt.tasklet_schedule(Tasklet(lambda: own.append("tasklet")))
    time.sleep(0.3)  # give the scheduler thread every chance to misbehave
    assert own == [] and outside == []  # nothing runs behind the writer's back
    assert rt.next_expiry() == 0.0
    assert rt.run_pending() == 2
    assert own == ["timer True", "tasklet"]
    for _ in range(3):
        rt.run_pending()
    assert outside == []
    assert rt.crashdump_mode()
    rt.exit_crashdump_mode()
    deadline = time.monotonic() + GUARD
    while len(outside) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(outside) == ["foreign tasklet", "foreign timer", "timer before"]


def test_adopted_worker_thread_schedules_on_the_private_list() -> None:
    rt = Runtime()
    rt.enter_crashdump_mode()
    ran: list[str] = []

    def worker() -> None:
        rt.adopt_thread()
        rt.tasklet_schedule(Tasklet(lambda: ran.append(threading.current_thread().name)))

    t = threading.Thread(target=worker, name="compress-0")
    t.start()
    t.join()
    assert ran == []
    assert rt.run_pending() == 1
    assert ran == [threading.current_thread().name]  # ran in the polling loop, not the worker
    rt.exit_crashdump_mode()


def test_timer_expiry_order_and_failures_are_contained() -> None:
    now = [100.0]
    rt = Runtime(clock=lambda: now[0])
    rt.enter_crashdump_mode()
    order: list[int] = []
    rt.add_timer(Timer(lambda: order.append(2), 102.0))
    rt.add_timer(Timer(lambda: order.append(1), 101.0))

    def boom() -> None:
        raise RuntimeError("boom")

    rt.add_timer(Timer(boom, 101.5))
    assert rt.run_pending() == 0 and rt.next_expiry() == 101.0
    now[0] = 102.0
    assert rt.run_pending() == 3
    assert order == [1, 2]
    rt.exit_crashdump_mode()


def test_module_functions_use_the_default_runtime() -> None:
    assert not core.crashdump_mode()
    core.enter_crashdump_mode()
    try:
        hit: list[int] = []
        core.add_timer(Timer(lambda: hit.append(1), 0.0))
        core.tasklet_schedule(Tasklet(lambda: hit.append(2)))
        assert core.crashdump_mode() and core.next_expiry() == 0.0
        assert core.run_pending() == 2 and hit == [1, 2]
        late = Timer(lambda: hit.append(3), time.monotonic() + 3600)
        core.mod_timer(late, time.monotonic() + 7200)
        assert core.del_timer(late)
    finally:
        core.exit_crashdump_mode()
    assert not core.crashdump_mode()
