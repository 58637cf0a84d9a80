# SPDX-License-Identifier: GPL-2.0-or-later
"""One QEMU guest: qemu-system-x86_64 under TCG, its serial console in a log file, QMP.

The guest runs headless (``-display none``); its serial console (ttyS0) goes to
``console.log`` in the work directory, which the harness polls for the markers
the guest scripts print (``DISKDUMP-VM: ...``). QMP is spoken with the
``qemu.qmp`` library over a UNIX socket the host listens on.

``-device vmcoreinfo`` lets the guest's qemu_fw_cfg module publish VMCOREINFO
to QEMU, so ``dump-guest-memory`` output carries it (QEMU >= 2.11, Linux >= 4.17).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from diskdump.errors import VMError

__all__ = ["Guest", "GuestSpec"]

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
#: seconds between polls of the console log
_POLL_INTERVAL = 0.2
#: seconds QEMU gets to exit after "quit" before it is killed
_QUIT_GRACE = 10.0
#: seconds to wait for QEMU to connect to the QMP socket
_QMP_ACCEPT_TIMEOUT = 30.0


@dataclass(frozen=True)
class GuestSpec:
    """What to boot.

    :param kernel: bzImage (or an uncompressed vmlinux with a PVH note)
    :param initrd: initramfs image
    :param append: kernel command line
    :param memory_mib: guest RAM in MiB
    :param cpus: number of virtual CPUs
    :param disks: raw images attached as virtio disks, in order (vda, vdb, ...)
    :param reboot: let a guest reboot restart the machine (else QEMU exits)
    """

    kernel: Path
    initrd: Path
    append: str
    memory_mib: int = 512
    cpus: int = 2
    disks: tuple[Path, ...] = ()
    reboot: bool = False
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def argv(self, console_log: Path, qmp_socket: Path) -> list[str]:
        """qemu-system-x86_64 command line for this guest."""
        argv = [
            QEMU,
            "-accel",
            "tcg",
            "-m",
            str(self.memory_mib),
            "-smp",
            str(self.cpus),
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            f"file:{console_log}",
            "-qmp",
            f"unix:{qmp_socket}",
            "-device",
            "vmcoreinfo",
            "-kernel",
            str(self.kernel),
            "-initrd",
            str(self.initrd),
            "-append",
            self.append,
            "-nic",
            "none",
        ]
        if not self.reboot:
            argv.append("-no-reboot")
        for disk in self.disks:
            argv += ["-drive", f"file={disk},format=raw,if=virtio,cache=unsafe"]
        return argv + list(self.extra_args)


class Guest:
    """A running guest; use as a context manager (QEMU is always stopped on exit).

    :param spec: what to boot
    :param workdir: directory for console.log and the QMP socket
    :param on_line: called with each complete console line as :meth:`wait_for` sees it
    """

    def __init__(
        self, spec: GuestSpec, workdir: Path, on_line: Callable[[str], None] | None = None
    ) -> None:
        self.spec = spec
        self._on_line = on_line
        self._fed = 0
        self.workdir = workdir
        self.console_log = workdir / "console.log"
        self._socket = workdir / "qmp.sock"
        self._proc: subprocess.Popen[bytes] | None = None
        self._qmp: object | None = None
        self.started = 0.0

    def __enter__(self) -> Guest:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start QEMU and accept its QMP connection.

        :raises VMError: qemu-system-x86_64 is missing or does not connect
        """
        from qemu.qmp.legacy import QEMUMonitorProtocol

        if shutil.which(QEMU) is None:
            raise VMError(f"{QEMU} is not installed", hint="make deps installs qemu-system-x86")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._socket.unlink(missing_ok=True)
        self.console_log.write_bytes(b"")
        qmp = QEMUMonitorProtocol(str(self._socket), server=True)
        argv = self.spec.argv(self.console_log, self._socket)
        log.info("starting %s", " ".join(argv))
        stderr = open(self.workdir / "qemu.stderr", "wb")  # noqa: SIM115 (kept for the process)
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=stderr)
        stderr.close()
        self.started = time.monotonic()
        try:
            qmp.accept(timeout=_QMP_ACCEPT_TIMEOUT)
        except Exception as err:
            self.stop()
            raise VMError(
                f"qemu did not connect to QMP: {err}", path=str(self.workdir / "qemu.stderr")
            ) from err
        self._qmp = qmp

    def qmp(self, command: str, **arguments: object) -> object:
        """Run a QMP command and return its result.

        :raises VMError: QMP is not connected or the command fails
        """
        if self._qmp is None:
            raise VMError("guest is not running")
        try:
            return self._qmp.cmd(command, **arguments)  # type: ignore[attr-defined]
        except Exception as err:
            raise VMError(f"qmp {command} failed: {err}") from err

    def console(self) -> str:
        """Everything the guest wrote to its serial console so far."""
        return self.console_log.read_bytes().decode("utf-8", "replace")

    @property
    def running(self) -> bool:
        """Whether the QEMU process is still alive."""
        return self._proc is not None and self._proc.poll() is None

    def wait_for(
        self, pattern: str, timeout: float, *, start: int = 0, fail: str | None = None
    ) -> re.Match[str]:
        """Wait until the console (from character ``start`` on) matches ``pattern``.

        :param timeout: seconds before giving up
        :param fail: a pattern that, seen first, means the wait is hopeless
        :raises VMError: time-out, ``fail`` matched, or QEMU exited first; the message
            names the console log
        """
        regex = re.compile(pattern, re.MULTILINE)
        fail_regex = re.compile(fail, re.MULTILINE) if fail else None
        deadline = time.monotonic() + timeout
        while True:
            text = self.console()
            self._feed(text)
            match = regex.search(text, start)
            if match is not None:
                return match
            failed = fail_regex.search(text, start) if fail_regex else None
            if failed is not None:
                raise VMError(
                    f"console showed {failed.group(0)!r} while waiting for {pattern!r}",
                    path=str(self.console_log),
                )
            if not self.running:
                raise VMError(
                    f"qemu exited before the console showed {pattern!r}",
                    path=str(self.console_log),
                )
            if time.monotonic() > deadline:
                raise VMError(
                    f"timed out after {timeout:.0f} s waiting for {pattern!r}",
                    path=str(self.console_log),
                )
            time.sleep(_POLL_INTERVAL)

    def _feed(self, text: str) -> None:
        if self._on_line is None:
            return
        end = text.rfind("\n") + 1
        if end > self._fed:
            for line in text[self._fed : end].splitlines():
                self._on_line(line.rstrip("\r"))
            self._fed = end

    def wait_exit(self, timeout: float) -> int:
        """Wait for QEMU to exit by itself (guest poweroff with -no-reboot); its exit status.

        :raises VMError: still running after ``timeout`` seconds
        """
        if self._proc is None:
            raise VMError("guest was never started")
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise VMError(
                f"guest still running after {timeout:.0f} s", path=str(self.console_log)
            ) from err

    def dump_memory(self, output: Path, fmt: str = "elf") -> None:
        """``dump-guest-memory`` into ``output`` (synchronous; paging off).

        :param fmt: "elf", "kdump-zlib", "kdump-lzo" or "kdump-snappy" (QEMU's names)
        """
        output.unlink(missing_ok=True)
        self.qmp("dump-guest-memory", paging=False, protocol=f"file:{output}", format=fmt)
        if not output.is_file() or output.stat().st_size == 0:
            raise VMError("dump-guest-memory wrote nothing", path=str(output))

    def stop(self) -> None:
        """Quit QEMU (QMP quit, then kill) and close QMP; idempotent."""
        if self._qmp is not None:
            try:
                if self.running:
                    self._qmp.cmd("quit")  # type: ignore[attr-defined]
            except Exception:  # QEMU may close the socket before answering
                pass
            try:
                self._qmp.close()  # type: ignore[attr-defined]
            except Exception:
                pass
            self._qmp = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=_QUIT_GRACE)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._socket.unlink(missing_ok=True)
