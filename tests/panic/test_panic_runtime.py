# SPDX-License-Identifier: GPL-2.0-or-later
"""The runtime inside a real dump: the watchdog, the progress timer, outside work, re-entry."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from diskdump.devices.fault import FaultDevice, FaultPlan
from diskdump.errors import DumpInProgressError
from diskdump.formats.dumpheader import DumpFlag
from diskdump.panic.crashmode import CrashMode, dump_in_progress
from diskdump.panic.writer import ProgressInfo, write_dump
from diskdump.runtime import core as runtime
from diskdump.runtime.core import Tasklet, Timer
from tests.panic.helpers import (
    assert_pages_match,
    formatted,
    read_back,
    settings,
    small_source,
    state,
)


def test_watchdog_abandons_a_stalling_device_and_falls_back() -> None:
    src = small_source(2)
    inner, _ = formatted(blocks=3000, name="slow")
    slow = FaultDevice(inner, FaultPlan(latency=0.8))
    # verification reads go through the slow device too; sample them sparsely
    fast, label = formatted(blocks=3000, name="fast")
    started = time.monotonic()
    result = write_dump(src, state(), [slow, fast], settings(io_timeout=0.3, sample_every=4096))
    assert result.device == "fast" and result.complete
    assert result.header.flags & DumpFlag.FALLBACK
    assert any(
        "slow: abandoned" in e and "did not complete within 0.3 s" in e for e in result.events
    )
    assert_pages_match(read_back(fast, label), src)
    assert time.monotonic() - started < 60  # a guard against a hang, not a timing claim


def test_outside_timers_do_not_run_during_the_dump_and_the_dumps_own_do() -> None:
    src = small_source(6)
    inner, _ = formatted(blocks=3000)
    # ~2.5 s of I/O (about 8 requests: chunks go out in 1 MiB batches): several progress ticks
    dev = FaultDevice(inner, FaultPlan(latency=0.3))
    outside: list[str] = []
    reports: list[tuple[ProgressInfo, bool, str, int]] = []
    # armed in normal mode, due while the dump runs
    runtime.add_timer(Timer(lambda: outside.append("timer"), time.monotonic() + 0.5))

    def progress(info: ProgressInfo) -> None:
        reports.append(
            (info, runtime.crashdump_mode(), threading.current_thread().name, len(outside))
        )
        if len(reports) == 1:  # a foreign thread schedules work in the middle of the dump
            t = threading.Thread(
                target=runtime.tasklet_schedule, args=(Tasklet(lambda: outside.append("tasklet")),)
            )
            t.start()
            t.join()

    result = write_dump(
        src, state(), [dev], settings(progress=progress, chunk_pages=64, sample_every=512)
    )
    assert result.complete
    ticks = [r for r in reports if r[1]]
    assert ticks == reports  # every report came from inside crash-dump mode
    assert all(r[3] == 0 for r in ticks)  # nothing outside ran while the dump was written
    assert len(ticks) >= 2  # the progress timer fired from the polling loop
    assert all(name == threading.current_thread().name for _, _, name, _ in ticks)
    done = [r[0].pages_done for r in ticks]
    assert done == sorted(done) and ticks[-1][0].pages_done == ticks[-1][0].pages_total
    assert any(r[0].eta is not None for r in ticks)
    deadline = time.monotonic() + 10
    while len(outside) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(outside) == ["tasklet", "timer"]  # and they run once the dump is over


def test_reentry_guard() -> None:
    with CrashMode(lock_memory=False):
        assert dump_in_progress() and runtime.crashdump_mode()
        with (
            pytest.raises(DumpInProgressError, match=r"^a dump is already in progress"),
            CrashMode(lock_memory=False),
        ):
            pass  # pragma: no cover
        src = small_source(1)
        dev, _ = formatted(blocks=3000)
        with pytest.raises(DumpInProgressError):
            write_dump(src, state(), [dev], settings())
    assert not dump_in_progress() and not runtime.crashdump_mode()


def test_crash_mode_blocks_signals_locks_memory_and_restores() -> None:
    import gc
    import signal

    assert gc.isenabled()
    with CrashMode(lock_memory=True) as mode:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        assert signal.SIGINT in blocked and signal.SIGTERM in blocked
        assert not gc.isenabled()
        assert "maskable signals blocked" in mode.report
        assert any(r.startswith(("memory locked", "mlockall refused")) for r in mode.report)
        with open("/proc/self/status") as f:
            locked = [line for line in f if line.startswith("VmLck:")]
        if "memory locked (mlockall)" in mode.report:
            assert locked and int(locked[0].split()[1]) > 0
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert gc.isenabled()


_IMPORTS_IN_CRASH_MODE: list[str] = []


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "import" and runtime.crashdump_mode():
        _IMPORTS_IN_CRASH_MODE.append(str(args[0]))


def test_no_imports_after_entering_crashdump_mode() -> None:
    import sys

    sys.addaudithook(_audit)  # hooks cannot be removed; this one only looks at a flag
    for codec in ("zstd", "zlib", "lzo", "snappy", "none"):
        dev, _ = formatted(blocks=3000)
        result = write_dump(small_source(2), state(), [dev], settings(codec=codec))
        assert result.complete
    assert _IMPORTS_IN_CRASH_MODE == []


_ENCRYPTED_DUMP_SCRIPT = """
import sys
from diskdump.formats.encrypted import read_public_key
from diskdump.panic.writer import write_dump
from diskdump.runtime import core as runtime
from tests.panic.helpers import formatted, settings, small_source, state

seen = []


def hook(event, args):
    if event == "import" and runtime.crashdump_mode():
        seen.append(str(args[0]))


sys.addaudithook(hook)
key = read_public_key(sys.argv[1])  # what panic/run.py does before crash-dump mode
for codec in ("zstd", "none"):
    dev, _ = formatted(blocks=3000)
    result = write_dump(small_source(1), state(), [dev], settings(codec=codec, public_key=key))
    assert result.complete and result.header.flags & 0x20, result
print("imports in crash-dump mode:", seen)
"""


@pytest.mark.parametrize("kind", ["x25519", "rsa"])
def test_no_imports_in_crashdump_mode_when_encrypting(tmp_path: Path, kind: str) -> None:
    # a fresh interpreter: cryptography is not imported yet, so an import the writer
    # forgot to do before crash-dump mode would show
    from tests.crypt.conftest import make_pair

    pair = make_pair(tmp_path, kind)
    proc = subprocess.run(
        [sys.executable, "-c", _ENCRYPTED_DUMP_SCRIPT, str(pair.public_pem)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "imports in crash-dump mode: []"
