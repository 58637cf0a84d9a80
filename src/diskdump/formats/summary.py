# SPDX-License-Identifier: GPL-2.0-or-later
"""A crash summary from a vmcore: what ``diskdump info`` and savecore's info file report.

Sources, in the order they are trusted::

    VMCOREINFO     OSRELEASE, CRASHTIME, NUMBER(phys_base), SYMBOL(init_uts_ns),
                   OFFSET(uts_namespace.name)                  (formats.md §3.4)
    memory         init_uts_ns.name: struct new_utsname, 6 x 65 bytes
                   (sysname, nodename, release, version, machine, domainname);
                   the kernel log (formats/printk.py)
    notes          one NT_PRSTATUS per CPU that answered, in CPU order
    container      kdump header utsname/timestamp/sub-header phys_base, ELF segments
                   (only when the above are missing, and cross-checked)

Rules (documented because tools disagree):

* **panic**: the first log line starting ``Kernel panic - not syncing: ``; if
  there is none, the first Oops/BUG line (``BUG: ``, ``Oops: ``, ``kernel BUG at ``,
  ``general protection fault``, ``Unable to handle kernel ``); else None.
* **crashing CPU**: the first ``CPU: N PID: P`` line at or after the panic
  line gives N. Its registers come from the NT_PRSTATUS note whose pr_pid is P
  (``crash_save_cpu`` stores ``current->pid``); when no single note has that
  pid, or the notes are QEMU's (pr_pid = CPU index + 1 for every note, so a
  crash in init, pid 1, would match CPU 0), from note number N. Without such
  a line: the only note with a non-zero pr_pid, else note 0, with a warning. A
  log without any panic or oops line (a live dump) names no crashing CPU. Notes are matched
  by position because the kernel writes them in CPU order (crash does the
  same; an offline CPU in the middle would shift them: crash issue #105).
* **utsname** is read at ``SYMBOL(init_uts_ns) + OFFSET(uts_namespace.name)``,
  never at an assumed offset (the name moved from 4 to 0 in Linux 5.11).
"""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from diskdump.errors import DiskdumpError, FormatError, NotThisFormatError
from diskdump.formats.detect import ContainerInfo, container_info
from diskdump.formats.memsource import MemorySource, runs_page_count
from diskdump.formats.notes import PrStatus, prstatus_notes
from diskdump.formats.printk import PrintkRecord, iter_printk_records
from diskdump.formats.vmcoreinfo import VmcoreInfo, vmcoreinfo_from_notes
from diskdump.formats.x86_64 import KernelMemory

__all__ = [
    "CrashSummary",
    "find_crashing_cpu",
    "find_panic_line",
    "read_kernel_log",
    "read_utsname",
    "summarize",
]

log = logging.getLogger(__name__)

#: struct new_utsname: six fields of __NEW_UTS_LEN + 1 bytes (include/uapi/linux/utsname.h)
UTS_FIELD_SIZE = 65
UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
PANIC_PREFIX = "Kernel panic - not syncing: "
#: first lines of an oops report (arch/x86/mm/fault.c, lib/bug.c, arch/x86/kernel/traps.c)
_OOPS = re.compile(
    r"^(BUG: |Oops: |kernel BUG at |general protection fault|Unable to handle kernel )"
)
#: dump_stack's header (lib/dump_stack.c dump_stack_print_info)
_CPU_LINE = re.compile(r"^CPU: (\d+) (?:UID: \d+ )?PID: (\d+) ")


@dataclass(frozen=True, slots=True)
class CrashSummary:
    """The facts of one crash. ``to_dict()`` gives the ``--json`` object.

    Addresses and times: ``rip``/``rsp`` are integers (hex strings in ``to_dict``),
    ``crash_time`` is ISO 8601 UTC (``2025-11-24T16:00:00Z``), sizes are bytes.
    """

    format: str
    release: str | None
    machine: str | None
    nodename: str | None
    version: str | None
    panic: str | None
    crash_time: str | None
    cpus: int
    crashing_cpu: int | None
    rip: int | None
    rsp: int | None
    memory_bytes: int
    page_size: int
    dump_level: int | None
    compression: str | None
    complete: bool
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        """JSON-ready mapping; rip/rsp as ``0x``-prefixed hex strings (they exceed 2**53)."""
        out = asdict(self)
        out["warnings"] = list(self.warnings)
        for key in ("rip", "rsp"):
            value = out[key]
            out[key] = f"{value:#018x}" if isinstance(value, int) else None
        return out


def summarize(
    source: MemorySource,
    *,
    container: ContainerInfo | None = None,
    records: Sequence[PrintkRecord] | None = None,
) -> CrashSummary:
    """Summarize the crash held by ``source``; problems become warnings, never exceptions.

    :param source: the vmcore
    :param container: what the container records; default :func:`container_info`
    :param records: the kernel log if already read (else it is read here)
    """
    box = container if container is not None else container_info(source)
    warnings: list[str] = []
    if source.incomplete:
        warnings.append("the dump is incomplete: some pages were never written")
    info = _vmcoreinfo(source, warnings)
    kmem = _kernel_memory(source, info, box, warnings)
    uts = _utsname(kmem, info, box, warnings)
    if records is None:
        records = _records(kmem, info, warnings)
    notes = _prstatus(source, warnings)
    panic = find_panic_line(records)
    cpu, note = find_crashing_cpu(records, notes, warnings)
    return CrashSummary(
        format=box.format,
        release=uts.get("release"),
        machine=uts.get("machine"),
        nodename=uts.get("nodename"),
        version=uts.get("version"),
        panic=panic,
        crash_time=_crash_time(info, box, warnings),
        cpus=len(notes),
        crashing_cpu=cpu,
        rip=note.rip if note is not None else None,
        rsp=note.rsp if note is not None else None,
        memory_bytes=runs_page_count(source.ram_runs()) * source.page_size,
        page_size=source.page_size,
        dump_level=box.dump_level,
        compression=box.compression,
        complete=not source.incomplete,
        warnings=tuple(warnings),
    )


def read_kernel_log(
    source: MemorySource, *, container: ContainerInfo | None = None
) -> list[PrintkRecord]:
    """The kernel log of ``source``, oldest record first.

    phys_base comes from VMCOREINFO, else from the container's header.

    :raises NotThisFormatError: the notes hold no VMCOREINFO (nothing to find the log with)
    :raises CorruptDataError: VMCOREINFO or the ring buffer is inconsistent
    :raises ExcludedPageError: the log lies in pages the dump does not hold
    """
    info = vmcoreinfo_from_notes(source.notes)
    box = container if container is not None else container_info(source)
    phys_base = box.phys_base if "NUMBER(phys_base)" not in info else None
    return list(iter_printk_records(KernelMemory(source, info, phys_base=phys_base), info))


def _vmcoreinfo(source: MemorySource, warnings: list[str]) -> VmcoreInfo | None:
    try:
        return vmcoreinfo_from_notes(source.notes)
    except NotThisFormatError:
        warnings.append(
            "no VMCOREINFO note: release, kernel log and panic line come from the container "
            "only (QEMU: run the guest with -device vmcoreinfo)"
        )
    except FormatError as err:
        warnings.append(f"the notes are damaged: {err}")
    return None


def _kernel_memory(
    source: MemorySource, info: VmcoreInfo | None, box: ContainerInfo, warnings: list[str]
) -> KernelMemory | None:
    if info is None:
        return None
    phys_base = None
    ours = _vmcoreinfo_phys_base(info, warnings)
    if ours is not None:
        if box.phys_base is not None and box.phys_base != ours:
            warnings.append(
                f"{box.format} header phys_base {box.phys_base:#x} disagrees with VMCOREINFO "
                f"NUMBER(phys_base) {ours:#x}; used VMCOREINFO (QEMU parses the decimal value "
                "as hex)"
            )
    elif box.phys_base is not None:
        phys_base = box.phys_base
        warnings.append(
            f"VMCOREINFO has no usable NUMBER(phys_base): used the {box.format} header's"
        )
    try:
        return KernelMemory(source, info, phys_base=phys_base)
    except DiskdumpError as err:
        warnings.append(f"kernel memory is unreadable: {err}")
        return None


def _vmcoreinfo_phys_base(info: VmcoreInfo, warnings: list[str]) -> int | None:
    if "NUMBER(phys_base)" not in info:
        return None
    try:
        return info.phys_base & ((1 << 64) - 1)
    except DiskdumpError as err:
        warnings.append(f"NUMBER(phys_base) unreadable: {err}")
        return None


def read_utsname(kmem: KernelMemory, info: VmcoreInfo) -> dict[str, str]:
    """``init_uts_ns.name`` as a mapping of the six utsname fields (empty strings kept).

    :raises CorruptDataError: VMCOREINFO lacks SYMBOL(init_uts_ns) or OFFSET(uts_namespace.name)
    :raises ExcludedPageError: the page is not in the dump
    """
    address = info.symbol("init_uts_ns") + info.offset("uts_namespace.name")
    raw = kmem.read_virt(address, UTS_FIELD_SIZE * len(UTS_FIELDS))
    return {
        name: raw[i * UTS_FIELD_SIZE : (i + 1) * UTS_FIELD_SIZE]
        .split(b"\0", 1)[0]
        .decode("utf-8", "replace")
        for i, name in enumerate(UTS_FIELDS)
    }


def _utsname(
    kmem: KernelMemory | None, info: VmcoreInfo | None, box: ContainerInfo, warnings: list[str]
) -> dict[str, str]:
    uts: dict[str, str] = {}
    if kmem is not None and info is not None:
        try:
            uts = read_utsname(kmem, info)
        except DiskdumpError as err:
            warnings.append(f"utsname unreadable: {err}")
        if uts and not uts["release"]:
            warnings.append("utsname in memory is empty (init_uts_ns.name)")
            uts = {}
    if not uts and box.utsname is not None and any(box.utsname):
        release, machine, nodename, version = box.utsname
        uts = {"release": release, "machine": machine, "nodename": nodename, "version": version}
        warnings.append(f"utsname taken from the {box.format} header")
    osrelease = info.get("OSRELEASE") if info is not None else None
    if osrelease:
        if uts.get("release") and uts["release"] != osrelease:
            warnings.append(
                f"utsname release {uts['release']!r} differs from OSRELEASE: used OSRELEASE"
            )
        uts["release"] = osrelease
    return {key: value for key, value in uts.items() if value}


def _records(
    kmem: KernelMemory | None, info: VmcoreInfo | None, warnings: list[str]
) -> list[PrintkRecord]:
    if kmem is None or info is None:
        return []
    try:
        return list(iter_printk_records(kmem, info))
    except DiskdumpError as err:
        warnings.append(f"kernel log unreadable: {err}")
        return []


def _prstatus(source: MemorySource, warnings: list[str]) -> list[PrStatus]:
    try:
        notes = prstatus_notes(source.notes)
    except FormatError as err:
        warnings.append(f"NT_PRSTATUS notes unreadable: {err}")
        return []
    if not notes:
        warnings.append("no NT_PRSTATUS notes: CPU registers unknown")
    return notes


def _crash_time(info: VmcoreInfo | None, box: ContainerInfo, warnings: list[str]) -> str | None:
    seconds = None
    if info is not None:
        try:
            seconds = info.crashtime
        except DiskdumpError as err:
            warnings.append(f"CRASHTIME unreadable: {err}")
    if seconds is None and box.timestamp:
        seconds = box.timestamp
        warnings.append(f"no CRASHTIME in VMCOREINFO: crash time from the {box.format} header")
    if seconds is None:
        warnings.append("no CRASHTIME in VMCOREINFO: not written by a kdump crash (live dump?)")
        return None
    try:
        moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        warnings.append(f"crash time {seconds} is not a representable date")
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _lines(records: Sequence[PrintkRecord]) -> list[str]:
    return [line for record in records for line in record.message.split("\n")]


def _panic_index(lines: Sequence[str]) -> int | None:
    for index, line in enumerate(lines):
        if line.startswith(PANIC_PREFIX):
            return index
    return next((index for index, line in enumerate(lines) if _OOPS.match(line)), None)


def find_panic_line(records: Sequence[PrintkRecord]) -> str | None:
    """The panic line by the rule of the module docstring, or None."""
    lines = _lines(records)
    index = _panic_index(lines)
    return None if index is None else lines[index].rstrip()


def _qemu_notes(notes: Sequence[PrStatus]) -> bool:
    # QEMU's dump-guest-memory numbers its notes' pr_pid 1, 2, 3, ... (CPU index + 1)
    return all(note.pr_pid == index + 1 for index, note in enumerate(notes))


def find_crashing_cpu(
    records: Sequence[PrintkRecord], notes: Sequence[PrStatus], warnings: list[str]
) -> tuple[int | None, PrStatus | None]:
    """(crashing CPU number, its NT_PRSTATUS) by the rule of the module docstring.

    :param warnings: a note is appended when the rule had to guess or found nothing
    """
    lines = _lines(records)
    panic = _panic_index(lines)
    if panic is None and lines:
        warnings.append("no panic or oops in the kernel log (a live dump?): no crashing CPU")
        return None, None
    for line in lines[panic or 0 :]:
        match = _CPU_LINE.match(line)
        if match is None:
            continue
        cpu, pid = int(match.group(1)), int(match.group(2))
        by_pid = [note for note in notes if note.pr_pid == pid]
        if len(by_pid) == 1 and not _qemu_notes(notes):
            return cpu, by_pid[0]
        if cpu < len(notes):
            return cpu, notes[cpu]
        warnings.append(f"CPU {cpu} of the panic report has no NT_PRSTATUS note")
        return cpu, None
    if not notes:
        return None, None
    busy = [index for index, note in enumerate(notes) if note.pr_pid]
    index = busy[0] if len(busy) == 1 else 0
    warnings.append(f"no 'CPU: N PID:' line after the panic: assumed CPU {index} crashed")
    return index, notes[index]
