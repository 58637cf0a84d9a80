# SPDX-License-Identifier: GPL-2.0-or-later
"""Crash summaries and container detection on built kernels (and real QEMU dumps)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diskdump.errors import NotThisFormatError
from diskdump.formats.detect import (
    ContainerInfo,
    VmcoreFormat,
    container_info,
    detect_format,
    opened_vmcore,
)
from diskdump.formats.elf import Elf64Ehdr, Elf64Phdr, ElfVmcore
from diskdump.formats.elf_write import write_elf
from diskdump.formats.notes import NoteType, PrStatus, pack_note, prstatus_notes
from diskdump.formats.printk import format_dmesg
from diskdump.formats.summary import CrashSummary, read_kernel_log, summarize
from tests.builders.kernel import (
    IMAGE_SIZE,
    MIB,
    START_KERNEL_MAP,
    LogRecord,
    SyntheticKernel,
    build_kernel,
)
from tests.conftest import need, need_tool

SMALL = {"ram_size": 32 * MIB, "phys_base": 0x400000, "kernel_offset": 0}
MEMORY = "memory"


def _summary(kernel: SyntheticKernel, **container: object) -> CrashSummary:
    box = ContainerInfo(format=MEMORY, **container)  # type: ignore[arg-type]
    return summarize(kernel.source, container=box)


def _renote(kernel: SyntheticKernel, vmcoreinfo: str | None, prstatus: list[PrStatus]) -> None:
    notes = b"".join(pack_note("CORE", NoteType.NT_PRSTATUS, p.pack()) for p in prstatus)
    if vmcoreinfo is not None:
        notes += pack_note("VMCOREINFO", NoteType.VMCOREINFO, vmcoreinfo.encode())
    kernel.source.notes = notes


@pytest.mark.parametrize("uts_offset", [0, 8, 48])
def test_summary_of_a_sysrq_crash(uts_offset: int) -> None:
    kernel = build_kernel(uts_name_offset=uts_offset, nr_cpus=4, crashing_cpu=2, **SMALL)
    summary = _summary(kernel)
    crashing = kernel.prstatus[2]
    assert summary == CrashSummary(
        format=MEMORY,
        release="6.1.0-13-amd64",
        machine="x86_64",
        nodename="crashbox",
        version=kernel.spec.version,
        panic="Kernel panic - not syncing: sysrq triggered crash",
        crash_time="2025-11-24T16:00:00Z",
        cpus=4,
        crashing_cpu=2,
        rip=crashing.rip,
        rsp=crashing.rsp,
        memory_bytes=32 * MIB - 0x61000,
        page_size=4096,
        dump_level=None,
        compression=None,
        complete=True,
        warnings=(),
    )
    as_dict = summary.to_dict()
    assert as_dict["rip"] == f"{crashing.rip:#018x}" and as_dict["warnings"] == []


def test_wrong_uts_offset_is_not_assumed() -> None:
    """Reading at offset 4 (what pre-1.6.9 makedumpfile did) would give a shifted name."""
    kernel = build_kernel(uts_name_offset=0, **SMALL)
    text = kernel.vmcoreinfo.replace("OFFSET(uts_namespace.name)=0", "OFFSET(uts_namespace.name)=4")
    _renote(kernel, text, kernel.prstatus)
    summary = _summary(kernel)
    assert (summary.machine, summary.nodename) == ("64", "hbox")  # every field shifted by 4
    assert summary.release == "6.1.0-13-amd64"
    assert "utsname release '0-13-amd64' differs from OSRELEASE: used OSRELEASE" in summary.warnings


def test_empty_utsname_falls_back_to_osrelease() -> None:
    kernel = build_kernel(empty_utsname=True, **SMALL)
    summary = _summary(kernel, utsname=("", "", "", ""))
    assert summary.release == "6.1.0-13-amd64" and summary.machine is None
    assert "utsname in memory is empty (init_uts_ns.name)" in summary.warnings


def test_no_vmcoreinfo() -> None:
    kernel = build_kernel(with_vmcoreinfo=False, **SMALL)
    summary = _summary(kernel, utsname=("6.1.0-13-amd64", "x86_64", "h", "#1"), timestamp=17)
    assert summary.release == "6.1.0-13-amd64" and summary.panic is None
    assert summary.crash_time == "1970-01-01T00:00:17Z" and summary.cpus == 2
    assert summary.crashing_cpu == 1  # the only note with a task: pid 1234
    assert summary.rip == kernel.prstatus[1].rip
    warnings = "\n".join(summary.warnings)
    assert re.search(r"^no VMCOREINFO note: .* -device vmcoreinfo\)$", warnings, re.M)
    assert "utsname taken from the memory header" in warnings
    assert "assumed CPU 1 crashed" in warnings
    with pytest.raises(NotThisFormatError, match=r"no VMCOREINFO note in the notes"):
        read_kernel_log(kernel.source)


def test_container_phys_base_disagreeing_with_vmcoreinfo() -> None:
    kernel = build_kernel(**SMALL)
    summary = _summary(kernel, phys_base=0x4000000)
    assert summary.panic is not None
    assert re.search(
        r"memory header phys_base 0x4000000 disagrees with VMCOREINFO NUMBER\(phys_base\) "
        r"0x400000; used VMCOREINFO",
        "\n".join(summary.warnings),
    )


def test_phys_base_from_the_container_when_vmcoreinfo_lacks_it() -> None:
    kernel = build_kernel(**SMALL)
    _renote(kernel, re.sub(r"NUMBER\(phys_base\)=.*\n", "", kernel.vmcoreinfo), kernel.prstatus)
    summary = _summary(kernel, phys_base=0x400000)
    assert summary.release == "6.1.0-13-amd64" and summary.panic is not None
    assert (
        "VMCOREINFO has no usable NUMBER(phys_base): used the memory header's" in summary.warnings
    )
    bare = _summary(kernel)
    assert bare.panic is None and bare.release == "6.1.0-13-amd64"  # from OSRELEASE
    assert any(w.startswith("kernel memory is unreadable: cannot locate") for w in bare.warnings)


def test_oops_without_panic_and_qemu_style_pids() -> None:
    records = [
        LogRecord(b"BUG: kernel NULL pointer dereference, address: 0000000000000008", 10),
        LogRecord(b"Oops: 0002 [#1] PREEMPT SMP NOPTI", 11),
        LogRecord(b"CPU: 1 PID: 77 Comm: modprobe Not tainted 6.1.0-13-amd64 #1", 12),
        LogRecord(b"RIP: 0010:oops_init+0x11/0x1000 [oops]", 13),
    ]
    kernel = build_kernel(records=records, **SMALL)
    qemu = [PrStatus.from_registers(i + 1, rip=0x1000 * (i + 1), rsp=0x2000) for i in range(2)]
    _renote(kernel, kernel.vmcoreinfo, qemu)
    summary = _summary(kernel)
    assert summary.panic == "BUG: kernel NULL pointer dereference, address: 0000000000000008"
    assert (summary.crashing_cpu, summary.rip) == (1, 0x2000)
    assert summary.warnings == ()


def test_init_crashing_under_qemu_is_not_matched_by_pid() -> None:
    """Found on a real guest: init (pid 1) panicked on CPU 1, and QEMU's note 0 has pr_pid 1."""
    records = [
        LogRecord(b"Kernel panic - not syncing: sysrq triggered crash", 10),
        LogRecord(b"CPU: 1 PID: 1 Comm: init Not tainted 6.1.0-56-amd64 #1  Debian 6.1.192-2", 11),
    ]
    kernel = build_kernel(records=records, **SMALL)
    qemu = [PrStatus.from_registers(i + 1, rip=0x100 + i) for i in range(2)]
    _renote(kernel, kernel.vmcoreinfo, qemu)
    assert (_summary(kernel).crashing_cpu, _summary(kernel).rip) == (1, 0x101)
    kdump = [PrStatus.from_registers(0, rip=0x200), PrStatus.from_registers(1, rip=0x201)]
    _renote(kernel, kernel.vmcoreinfo, kdump)  # the kernel's own notes: idle CPU 0 has pid 0
    assert (_summary(kernel).crashing_cpu, _summary(kernel).rip) == (1, 0x201)


def test_cpu_line_matched_by_pid_and_missing_note() -> None:
    records = [
        LogRecord(b"Kernel panic - not syncing: Fatal exception", 10),
        LogRecord(b"CPU: 7 UID: 0 PID: 4242 Comm: kworker/7:1 Tainted: G      D", 11),
    ]
    kernel = build_kernel(records=records, **SMALL)
    notes = [PrStatus.from_registers(0, rip=1), PrStatus.from_registers(4242, rip=2)]
    _renote(kernel, kernel.vmcoreinfo, notes)
    assert (_summary(kernel).crashing_cpu, _summary(kernel).rip) == (7, 2)
    _renote(kernel, kernel.vmcoreinfo, notes[:1])
    summary = _summary(kernel)
    assert (summary.crashing_cpu, summary.rip) == (7, None)
    assert "CPU 7 of the panic report has no NT_PRSTATUS note" in summary.warnings


def test_live_dump_has_no_crashing_cpu() -> None:
    kernel = build_kernel(records=[LogRecord(b"hello", 1)], **SMALL)
    text = re.sub(r"CRASHTIME=.*\n", "", kernel.vmcoreinfo)
    _renote(kernel, text, kernel.prstatus)
    summary = _summary(kernel)
    assert (summary.panic, summary.crashing_cpu, summary.rip, summary.crash_time) == (None,) * 4
    assert summary.warnings == (
        "no panic or oops in the kernel log (a live dump?): no crashing CPU",
        "no CRASHTIME in VMCOREINFO: not written by a kdump crash (live dump?)",
    )


def test_absurd_crashtime_is_a_warning() -> None:
    kernel = build_kernel(crash_time=10**20, **SMALL)
    summary = _summary(kernel)
    assert summary.crash_time is None
    assert f"crash time {10**20} is not a representable date" in summary.warnings


def test_incomplete_dump_and_unreadable_log() -> None:
    kernel = build_kernel(**SMALL)
    ring_pfn = (32 * MIB - MIB) // 4096
    kernel.source.exclude(ring_pfn, ring_pfn + 256)
    kernel.source.incomplete = True
    summary = _summary(kernel)
    assert not summary.complete and summary.panic is None and summary.release is not None
    assert summary.warnings[0] == "the dump is incomplete: some pages were never written"
    assert any(
        w.startswith("kernel log unreadable: page not in the dump") for w in summary.warnings
    )


def test_records_passed_in_are_used() -> None:
    kernel = build_kernel(**SMALL)
    records = list(read_kernel_log(kernel.source))
    assert summarize(kernel.source, records=records[:1]).panic is None
    assert summarize(kernel.source).format == "inmemorysource"


def _kexec_style_elf(kernel: SyntheticKernel) -> bytes:
    """PT_NOTE, the kernel-text PT_LOAD (as kexec writes it), then the RAM PT_LOADs."""
    ram = [(r.start_pfn * 4096, r.end_pfn * 4096) for r in kernel.source.ram_runs()]
    loads = [(kernel.kernel_start, kernel.kernel_start + IMAGE_SIZE), *ram]
    phnum = 1 + len(loads)
    offset = Elf64Ehdr.SIZE + phnum * Elf64Phdr.SIZE
    notes = kernel.source.notes
    headers = [Elf64Phdr(4, 0, offset, 0, 0, len(notes), len(notes), 0)]
    body = [notes]
    offset += len(notes)
    text_vaddr = kernel.symbols["_stext"]
    for index, (start, end) in enumerate(loads):
        vaddr = text_vaddr if index == 0 else kernel.spec.page_offset_base + start
        headers.append(Elf64Phdr(1, 7, offset, vaddr, start, end - start, end - start, 0))
        body.append(bytes(kernel.source.memory[start:end]))
        offset += end - start
    head = Elf64Ehdr.for_core(phnum=phnum).pack() + b"".join(h.pack() for h in headers)
    return head + b"".join(body)


def test_elf_container_with_kernel_text_segment() -> None:
    kernel = build_kernel(**SMALL)
    with ElfVmcore.from_bytes(_kexec_style_elf(kernel)) as elf:
        box = container_info(elf)
        assert box == ContainerInfo(format="elf", compression="none", phys_base=0x400000)
        summary = summarize(elf)
    assert summary.format == "elf" and summary.warnings == () and summary.cpus == 2
    assert kernel.symbols["_stext"] > START_KERNEL_MAP


def test_detect_and_open_each_container(tmp_path: Path) -> None:
    kernel = build_kernel(**SMALL)
    elf = tmp_path / "vmcore.elf"
    with elf.open("wb") as f:
        write_elf(kernel.source, f)
    tool = need_tool("makedumpfile")
    kdump, flat = tmp_path / "vmcore.kdump", tmp_path / "vmcore.flat"
    subprocess.run([tool, "-l", "-d", "1", str(elf), str(kdump)], check=True, capture_output=True)
    with flat.open("wb") as out:
        subprocess.run(
            [tool, "-F", "-d", "1", str(elf)], check=True, stdout=out, stderr=subprocess.PIPE
        )
    expected = {
        elf: ("elf", "none", None),
        kdump: ("kdump", "lzo", 1),
        flat: ("kdump-flattened", "none", 1),
    }
    for path, facts in expected.items():
        assert detect_format(path) == VmcoreFormat(facts[0])
        with opened_vmcore(path) as source:
            summary = summarize(source)
        assert (summary.format, summary.compression, summary.dump_level) == facts
        assert summary.panic == kernel.panic_line and summary.warnings == ()


def test_not_a_vmcore(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00ELF" + bytes(100))
    with pytest.raises(NotThisFormatError, match=rf"not a vmcore .* at offset 0x0 on {junk}"):
        detect_format(junk)
    device = next((p for p in sorted(Path("/dev").glob("loop[0-9]*")) if p.is_block_device()), None)
    need(device is not None, "no block device node (/dev/loop*) to probe")
    with pytest.raises(NotThisFormatError, match=r"is a block device, not a vmcore file on /dev/"):
        detect_format(device)  # type: ignore[arg-type]


#: /init of a guest that panics at once (the VM harness's common.sh loads qemu_fw_cfg)
_PANIC_INIT = b"""#!/bin/sh
. /etc/common.sh
setup_base
say "crashing now on $(uname -r)"
echo c > /proc/sysrq-trigger
"""


@pytest.mark.vm
@pytest.mark.slow
@pytest.mark.parametrize("series", ["6.1", "6.12"])
def test_real_sysrq_panic(series: str, tmp_path: Path) -> None:
    """A Debian guest panics by sysrq and stays in panic(); QEMU dumps it over QMP.

    The summary must find the panic line and the CPU of the console's panic
    report, with that CPU's registers; our log must equal makedumpfile's.
    """
    need(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86 is not installed")
    from diskdump.vm.assets import fetch_busybox, fetch_kernel
    from diskdump.vm.initramfs import Initramfs, guest_script
    from diskdump.vm.kmod import resolve_modules
    from diskdump.vm.qemu import Guest, GuestSpec
    from diskdump.vm.vmcores import GUEST_MODULES

    kernel = fetch_kernel(series)
    image = Initramfs()
    image.add_busybox(fetch_busybox())
    image.add_modules(resolve_modules(kernel.modules, list(GUEST_MODULES)))
    image.add_bytes("/etc/common.sh", guest_script("common.sh"))
    image.add_bytes("/init", _PANIC_INIT, 0o755)
    image.write(tmp_path / "initrd.img")
    append = "console=ttyS0 panic=0 quiet loglevel=4"  # panic=0: stay in panic() for the dump
    spec = GuestSpec(kernel.vmlinuz, tmp_path / "initrd.img", append, memory_mib=256)
    with Guest(spec, tmp_path) as guest:
        report = guest.wait_for(r"^\[[ .0-9]+\] CPU: (\d+) (UID: \d+ )?PID: \d+ ", 240)
        guest.wait_for(r"end Kernel panic - not syncing", 180)
        guest.dump_memory(tmp_path / "panic.elf")
    with opened_vmcore(tmp_path / "panic.elf") as source:
        summary = summarize(source)
        notes = prstatus_notes(source.notes)
        ours = format_dmesg(read_kernel_log(source))
        with (tmp_path / "copy.elf").open("wb") as f:
            write_elf(source, f)
    assert summary.panic == "Kernel panic - not syncing: sysrq triggered crash"
    assert summary.crashing_cpu == int(report.group(1))
    assert summary.rip == notes[summary.crashing_cpu].rip
    assert summary.release == kernel.release and summary.cpus == 2
    tool = need_tool("makedumpfile")
    subprocess.run(
        [tool, "--dump-dmesg", str(tmp_path / "copy.elf"), str(tmp_path / "dmesg")],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "dmesg").read_text() == ours
    assert "sysrq: Trigger a crash" in ours


@pytest.mark.vm
@pytest.mark.slow
def test_real_qemu_flattened_dump_warns_about_phys_base() -> None:
    need(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86 is not installed")
    from diskdump.vm import qmp_vmcores

    dumps = qmp_vmcores("6.1")
    with opened_vmcore(dumps.kdump_flat) as source:
        flat = summarize(source)
    with opened_vmcore(dumps.elf) as source:
        elf = summarize(source)
    assert flat.release == elf.release == dumps.release and flat.machine == "x86_64"
    assert flat.format == "kdump-flattened" and flat.compression == "zlib"
    assert any("disagrees with VMCOREINFO NUMBER(phys_base)" in w for w in flat.warnings)
    assert flat.memory_bytes == elf.memory_bytes and flat.cpus == elf.cpus == 2


_FUZZ = build_kernel(**SMALL)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 200), st.sampled_from(["", "-1", "0", "zz", "ffffffffffffffff"])),
        max_size=4,
    ),
    note_cut=st.integers(0, 40),
)
def test_summary_never_raises_on_damaged_vmcoreinfo(edits: list[tuple[int, str]], note_cut: int):
    """Any VMCOREINFO value broken, or the note blob cut short: a summary with warnings."""
    lines = _FUZZ.vmcoreinfo.splitlines()
    for index, value in edits:
        key = lines[index % len(lines)].split("=", 1)[0]
        lines[index % len(lines)] = f"{key}={value}"
    saved = _FUZZ.source.notes
    try:
        _renote(_FUZZ, "".join(line + "\n" for line in lines), _FUZZ.prstatus)
        if note_cut:
            _FUZZ.source.notes = _FUZZ.source.notes[:-note_cut]
        summary = summarize(_FUZZ.source)
    finally:
        _FUZZ.source.notes = saved
    assert summary.memory_bytes == 32 * MIB - 0x61000
    assert summary.warnings or (not edits and not note_cut) or summary.panic is not None
