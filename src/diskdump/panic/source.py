# SPDX-License-Identifier: GPL-2.0-or-later
"""The system state the writer records before any page, read from the memory source.

Collected before crash-dump mode (it reads memory and may import the
printk and summary code), then carried as a frozen :class:`SystemState`::

    utsname        init_uts_ns.name from memory (formats/summary.py rules)
    crash_time     VMCOREINFO CRASHTIME, else the time the dump started
    panic_string   the "Kernel panic - not syncing: " (or Oops/BUG) log line
    nr_cpus        NT_PRSTATUS notes; crashing_cpu by the summary's rules
    notes          the ELF note blob as the source holds it (PRSTATUS + VMCOREINFO)
    vmcoreinfo     the VMCOREINFO note text; phys_base from it
    kernel_log     the printk ring as ``makedumpfile --dump-dmesg`` prints it

Each part that cannot be read becomes a warning, never a refusal: a dump with
an empty kernel log is better than no dump.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from diskdump.errors import DiskdumpError
from diskdump.formats.dumpheader import DumpMetadata, Utsname
from diskdump.formats.filtered import PackedRuns
from diskdump.formats.memsource import MemorySource, PfnRun
from diskdump.formats.notes import find_vmcoreinfo
from diskdump.formats.printk import PrintkRecord, format_dmesg
from diskdump.formats.summary import read_kernel_log, summarize
from diskdump.formats.vmcoreinfo import VmcoreInfo

__all__ = ["SystemState", "collect_state"]

log = logging.getLogger(__name__)

#: struct new_utsname.sysname of every kernel this project dumps
LINUX_SYSNAME = "Linux"


@dataclass(frozen=True, slots=True)
class SystemState:
    """What the leading header and the metadata say about the crashed system."""

    utsname: Utsname
    crash_time: int
    panic_string: str
    nr_cpus: int
    crashing_cpu: int
    notes: bytes
    vmcoreinfo: bytes
    phys_base: int
    kernel_log: str
    source: str
    warnings: tuple[str, ...] = ()

    def metadata(self, source: MemorySource) -> DumpMetadata:
        """The metadata records for a dump of ``source``."""
        return DumpMetadata(
            notes=self.notes,
            ram_runs=tuple(source.ram_runs()),
            data_runs=_runs(source.data_runs()),
            panic_string=self.panic_string,
            kernel_log=self.kernel_log,
            vmcoreinfo=self.vmcoreinfo,
            source=self.source,
        )


def _runs(runs: Sequence[PfnRun]) -> Sequence[PfnRun]:
    """A dump level's packed runs as they are (a tuple of PfnRun would cost 33 MiB for the
    8 GiB bench image's 334,590 runs at -d 31); any other sequence as a tuple (a few runs)."""
    return runs if isinstance(runs, PackedRuns) else tuple(runs)


def _vmcoreinfo_text(notes: bytes, warnings: list[str]) -> bytes:
    try:
        where = find_vmcoreinfo(notes)
    except DiskdumpError as err:
        warnings.append(f"notes unreadable: {err}")
        return b""
    if where is None:
        warnings.append("no VMCOREINFO note: readers will not find the kernel's structures")
        return b""
    offset, size = where
    return notes[offset : offset + size]


def _kernel_log(source: MemorySource, warnings: list[str]) -> list[PrintkRecord]:
    try:
        return read_kernel_log(source)
    except DiskdumpError as err:
        warnings.append(f"kernel log not read: {err}")
        return []


def collect_state(source: MemorySource, description: str) -> SystemState:
    """Read everything the header and metadata need from ``source``.

    :param description: where the memory comes from (``/proc/vmcore (elf)``)
    """
    warnings: list[str] = []
    notes = bytes(source.notes)
    text = _vmcoreinfo_text(notes, warnings)
    info = VmcoreInfo.unpack(text) if text else None
    records = _kernel_log(source, warnings)
    summary = summarize(source, records=records)
    warnings.extend(summary.warnings)
    crash_time = info.crashtime if info is not None else None
    phys_base = 0
    if info is not None:
        try:
            phys_base = info.phys_base
        except DiskdumpError as err:
            warnings.append(f"phys_base unknown: {err}")
    for warning in warnings:
        log.warning("%s", warning)
    return SystemState(
        utsname=Utsname(
            sysname=LINUX_SYSNAME,
            nodename=summary.nodename or "",
            release=summary.release or "",
            version=summary.version or "",
            machine=summary.machine or "",
        ),
        crash_time=crash_time if crash_time is not None else int(time.time()),
        panic_string=summary.panic or "",
        nr_cpus=summary.cpus,
        crashing_cpu=summary.crashing_cpu if summary.crashing_cpu is not None else -1,
        notes=notes,
        vmcoreinfo=text,
        phys_base=phys_base,
        kernel_log=format_dmesg(records),
        source=description,
        warnings=tuple(warnings),
    )
