# SPDX-License-Identifier: GPL-2.0-or-later
"""A synthetic x86_64 kernel memory image, built in memory for tests.

The image is what a crashed Linux 6.x kernel leaves in RAM, reduced to what
dump readers look at, and laid out as the real kernel lays it out:

    physical memory (default 64 MiB, a hole at 0x9f000..0x100000 like e820)
    ------------------------------------------------------------------------
    kstart = PHYSICAL_START + kernel_offset + phys_base    (2 MiB aligned)
    kstart + 0x000000  _stext: "code" (random bytes), mapped by one 2 MiB page
    kstart + 0x200000  init_top_pgt (= swapper_pg_dir), then the page-table pool;
                       this second 2 MiB of the image is mapped with 4 KiB pages
    kstart + 0x280000  init_uts_ns (name at OFFSET(uts_namespace.name))
    kstart + 0x281000  prb (pointer), printk_rb_dynamic, printk_rb_static, clear_seq
    kstart + 0x282000  node_online_map, mem_section (NULL), kallsyms_* (absent)
    ram_end - 1 MiB    printk descs, infos and text data ring (memblock memory,
                       reached through the direct map at page_offset_base)

    virtual: 0xffffffff80000000 + x -> phys_base + x          (kernel image)
             page_offset_base + p   -> p   (1 GiB pages, or 2 MiB + 4 KiB pages)

The printk ring is filled by a small simulation of the kernel's writer
(kernel/printk/printk_ringbuffer.c: desc_reserve, data_alloc, get_next_lpos,
data_push_tail, desc_push_tail), so wrapped blocks, reused slots and evicted
records arise the way they do in a kernel, and the simulation's bookkeeping
(not a second decoder) says which records a reader must return.

Every knob is a field of :class:`KernelSpec`; :func:`build_kernel` returns a
:class:`SyntheticKernel` with an :class:`InMemorySource` and the facts tests
assert against.
"""

from __future__ import annotations

import dataclasses
import os
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diskdump.errors import ExcludedPageError
from diskdump.formats.elf_write import write_elf
from diskdump.formats.memsource import PfnRun, merge_runs
from diskdump.formats.notes import VMCOREINFO_NOTE_NAME, NoteType, PrStatus, pack_note

PAGE_SIZE = 4096
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
#: __START_KERNEL_map (arch/x86/include/asm/page_64_types.h)
START_KERNEL_MAP = 0xFFFFFFFF80000000
#: CONFIG_PHYSICAL_START default: vmlinux is linked at START_KERNEL_MAP + 16 MiB
PHYSICAL_START = 0x1000000
#: KERNEL_IMAGE_SIZE with KASLR (arch/x86/include/asm/page_64_types.h)
KERNEL_IMAGE_SIZE = 1 * GIB
IMAGE_SIZE = 4 * MIB
#: page-table entry bits (arch/x86/include/asm/pgtable_types.h)
PTE_PRESENT, PTE_RW, PTE_ACCESSED, PTE_DIRTY, PTE_PSE, PTE_GLOBAL = 1, 2, 0x20, 0x40, 0x80, 0x100
PTE_NX = 1 << 63
PTE_ADDR_MASK = 0x000F_FFFF_FFFF_F000
PT_ENTRIES = 512
#: KASLR places page_offset_base at a 1 GiB boundary from __PAGE_OFFSET_BASE_L4 upwards
#: (arch/x86/mm/kaslr.c); the builder keeps below the vmalloc area's default base
DIRECT_MAP_LOW, DIRECT_MAP_SLOTS = 0xFFFF888000000000, 0x4000

# offsets inside the kernel image (from _stext), as in the module docstring
OFF_TOP_PGT, OFF_PT_POOL, PT_POOL_PAGES, OFF_UTS = 0x200000, 0x201000, 64, 0x280000
OFF_PRB, OFF_RB_DYNAMIC, OFF_RB_STATIC, OFF_CLEAR_SEQ = 0x281000, 0x281100, 0x281200, 0x281300
OFF_NODE_ONLINE_MAP = 0x282000

# printk ring buffer (kernel/printk/printk_ringbuffer.h)
DESC_ID_MASK = (1 << 62) - 1
DESC_STATE_SHIFT = 62
STATE_RESERVED, STATE_COMMITTED, STATE_FINALIZED, STATE_REUSABLE = 0, 1, 2, 3
FAILED_LPOS, NO_LPOS = 0x1, 0x3
ULONG_MASK = (1 << 64) - 1
# x86_64 layouts as in Linux 6.1 (sizes and offsets are exported in VMCOREINFO)
SIZE_PRB_DESC, SIZE_PRINTK_INFO, SIZE_DEV_PRINTK_INFO = 24, 88, 64
SIZE_PRB_DESC_RING, SIZE_PRB_DATA_RING, SIZE_PRINTK_RINGBUFFER = 48, 32, 88
CALLER_CPU_FLAG = 0x80000000
# SPARSEMEM_EXTREME (include/linux/mmzone.h; x86_64 SECTION_SIZE_BITS 27, MAX_PHYSMEM_BITS 46)
SIZE_PAGE, SIZE_MEM_SECTION = 64, 16
PAGES_PER_SECTION = (1 << 27) // PAGE_SIZE
MEM_SECTION_ROOTS = (1 << (46 - 27)) // (PAGE_SIZE // SIZE_MEM_SECTION)
#: SECTION_MARKED_PRESENT | SECTION_HAS_MEM_MAP | SECTION_IS_ONLINE | SECTION_IS_EARLY
SECTION_FLAGS = 0xF
#: utsname field length (__NEW_UTS_LEN + 1)
UTS_FIELD = 65


@dataclass(frozen=True)
class LogRecord:
    """One printk record to write: ``text`` without its trailing newline."""

    text: bytes
    ts_nsec: int = 0
    level: int = 6
    facility: int = 0
    caller_id: int = 1
    lost: bool = False  # allocation failed: FAILED_LPOS, text lost
    truncate_to: int | None = None  # store only this many bytes, keep info.text_len


@dataclass(frozen=True)
class ExpectedRecord:
    """A record a reader must return, in order (data-less ones have ``text == b""``)."""

    seq: int
    ts_nsec: int
    level: int
    facility: int
    caller_id: int | None
    text: bytes
    dataless: bool


@dataclass
class KernelSpec:
    """Knobs of the synthetic kernel (defaults: a 64 MiB, 2-CPU 6.1 kernel after a sysrq crash)."""

    ram_size: int = 64 * MIB
    ram_ranges: Sequence[tuple[int, int]] | None = None  # [start, end) bytes; None: e820-like
    phys_base: int = 0x1200000
    kernel_offset: int = 0xA00000  # KERNELOFFSET (virtual KASLR slide)
    page_offset_base: int = -1  # -1: randomised from seed like KASLR (1 GiB aligned)
    vmemmap_base: int = 0xFFFFD4A5C0000000
    pgtable_l5: bool = False
    gbpages: bool = True  # direct map with 1 GiB pages (else 2 MiB + 4 KiB pages)
    sme_mask: int = 0  # AMD SME C-bit set in every page-table entry
    release: str = "6.1.0-13-amd64"
    version: str = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1 (2023-09-29)"
    nodename: str = "crashbox"
    machine: str = "x86_64"
    uts_name_offset: int = 8  # OFFSET(uts_namespace.name); never 4 here on purpose
    empty_utsname: bool = False
    nr_cpus: int = 2
    crashing_cpu: int = 1
    crash_time: int = 1764000000
    records: Sequence[LogRecord] | None = None  # None: a boot log ending in a sysrq panic
    boot_records: int = 60  # length of the default log before the panic report
    desc_count_bits: int = 5
    text_size_bits: int = 12
    perfect_fit_fix: bool = False  # 2025 kernels: a block may end exactly at the ring end
    last_committed: bool = True  # head record committed, not finalized (open continuation)
    torn_head: bool = False  # head_id advanced but its slot still holds the old id
    reserved_head: bool = False  # a writer reserved the head slot and never committed
    legacy_printk: bool = False  # Linux 3.5-5.9: struct printk_log records in log_buf
    with_vmcoreinfo: bool = True
    with_caller_offset: bool = True  # OFFSET(printk_info.caller_id) exported
    random_fraction: float = 0.25  # share of free RAM pages filled with random bytes
    text_fraction: float = 0.15  # share filled with compressible text
    seed: int = 1


@dataclass
class SyntheticKernel:
    """The built image and the facts a reader must find in it."""

    spec: KernelSpec
    source: InMemorySource
    vmcoreinfo: str
    symbols: dict[str, int]
    expected: list[ExpectedRecord]
    prstatus: list[PrStatus]
    panic_line: str | None
    kernel_start: int  # physical address of _stext

    @property
    def notes(self) -> bytes:
        return self.source.notes

    @property
    def expected_dmesg(self) -> str:
        """The log as ``makedumpfile --dump-dmesg`` prints it (printable ASCII texts only)."""
        out = []
        for rec in self.expected:
            if rec.dataless:
                continue
            head = f"[{rec.ts_nsec // 10**9:5d}.{rec.ts_nsec % 10**9 // 1000:06d}] "
            out.append(head + rec.text.decode("ascii").replace("\n", "\n" + " " * len(head)))
        return "".join(line + "\n" for line in out)

    def write_elf(self, path: str | os.PathLike[str]) -> Path:
        """Write the image as an ELF vmcore (formats/elf.py; p_vaddr in the direct map)."""
        with open(path, "wb") as f:
            write_elf(self.source, f, page_offset=self.spec.page_offset_base)
        return Path(path)

    def virt_to_phys(self, vaddr: int) -> int:
        """Where the builder put ``vaddr`` (kernel image or direct map only)."""
        if vaddr >= START_KERNEL_MAP:
            return vaddr - START_KERNEL_MAP + self.spec.phys_base
        return vaddr - self.spec.page_offset_base


class InMemorySource:
    """A :class:`~diskdump.formats.memsource.MemorySource` over a bytearray of physical RAM.

    ``page_size``, ``notes`` and ``incomplete`` are plain attributes tests may change.
    """

    def __init__(self, memory: bytearray, ram: Sequence[PfnRun], notes: bytes) -> None:
        self.memory = memory
        self._ram = merge_runs(ram)
        self._data = list(self._ram)
        self.notes = notes
        self.incomplete = False
        self.page_size = PAGE_SIZE

    @property
    def max_pfn(self) -> int:
        return self._ram[-1].end_pfn if self._ram else 0

    def ram_runs(self) -> Sequence[PfnRun]:
        return self._ram

    def data_runs(self) -> Sequence[PfnRun]:
        return self._data

    def read_pages(self, pfn: int, count: int) -> bytes:
        for run in self._data:
            if run.start_pfn <= pfn and pfn + count <= run.end_pfn:
                start = pfn * self.page_size
                return bytes(self.memory[start : start + count * self.page_size])
        raise ExcludedPageError("page not in the dump", field="pfn", found=f"{pfn:#x}+{count}")

    def exclude(self, start_pfn: int, end_pfn: int) -> None:
        """Drop ``[start_pfn, end_pfn)`` from the held pages (a filtered or cut-short dump)."""
        kept: list[PfnRun] = []
        for run in self._data:
            if run.end_pfn <= start_pfn or run.start_pfn >= end_pfn:
                kept.append(run)
                continue
            if run.start_pfn < start_pfn:
                kept.append(PfnRun(run.start_pfn, start_pfn))
            if run.end_pfn > end_pfn:
                kept.append(PfnRun(end_pfn, run.end_pfn))
        self._data = merge_runs(kept)


class _Memory:
    """Physical RAM plus little-endian store helpers."""

    def __init__(self, size: int) -> None:
        self.buf = bytearray(size)

    def put(self, paddr: int, data: bytes) -> None:
        assert paddr >= 0 and paddr + len(data) <= len(self.buf), hex(paddr)
        self.buf[paddr : paddr + len(data)] = data

    def u64(self, paddr: int, value: int) -> None:
        self.put(paddr, struct.pack("<Q", value & ULONG_MASK))

    def get_u64(self, paddr: int) -> int:
        value: int = struct.unpack_from("<Q", self.buf, paddr)[0]
        return value


class _PageTables:
    """x86_64 4- or 5-level page tables written into :class:`_Memory`."""

    def __init__(self, mem: _Memory, root: int, pool: int, pool_pages: int, spec: KernelSpec):
        self.mem, self.root, self.sme = mem, root, spec.sme_mask
        self.shifts = (48, 39, 30, 21, 12) if spec.pgtable_l5 else (39, 30, 21, 12)
        self._next, self._end = pool, pool + pool_pages * PAGE_SIZE
        mem.put(root, bytes(PAGE_SIZE))

    def _alloc(self) -> int:
        assert self._next < self._end, "page-table pool exhausted"
        table, self._next = self._next, self._next + PAGE_SIZE
        self.mem.put(table, bytes(PAGE_SIZE))
        return table

    def map(self, vaddr: int, paddr: int, page_size: int, *, nx: bool = False) -> None:
        leaf = {4 * KIB: 12, 2 * MIB: 21, 1 * GIB: 30}[page_size]
        assert vaddr % page_size == 0 and paddr % page_size == 0
        table = self.root
        for shift in self.shifts:
            slot = table + ((vaddr >> shift) % PT_ENTRIES) * 8
            if shift == leaf:
                flags = PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_DIRTY | PTE_GLOBAL
                flags |= (PTE_PSE if shift > 12 else 0) | (PTE_NX if nx else 0)
                self.mem.u64(slot, paddr | self.sme | flags)
                return
            entry = self.mem.get_u64(slot)
            if not entry & PTE_PRESENT:
                entry = self._alloc() | self.sme | PTE_PRESENT | PTE_RW | PTE_ACCESSED
                self.mem.u64(slot, entry)
            table = entry & ~self.sme & PTE_ADDR_MASK


@dataclass
class _Slot:
    state_var: int
    begin: int
    next: int
    info: bytes = bytes(SIZE_PRINTK_INFO)


@dataclass
class _Live:
    """Simulation bookkeeping for one written record."""

    id: int
    seq: int
    rec: LogRecord
    begin: int
    next: int
    evicted: bool = False


class _PrintkSim:
    """The kernel's ring-buffer writer, single-threaded (printk_ringbuffer.c)."""

    def __init__(self, count_bits: int, size_bits: int, perfect_fit_fix: bool) -> None:
        self.count, self.size, self.size_bits = 1 << count_bits, 1 << size_bits, size_bits
        self.fix = perfect_fit_fix
        desc0 = (-(self.count + 1)) & DESC_ID_MASK  # DESC0_ID
        self.slots = [_Slot(0, 0, 0) for _ in range(self.count)]
        self.slots[-1] = _Slot(_sv(desc0, STATE_REUSABLE), FAILED_LPOS, FAILED_LPOS)
        self.slots[0].info = _pack_info((-self.count) & ULONG_MASK, 0, 0, 0, 0, 0, 0)
        self.head_id = self.tail_id = desc0
        self.head_lpos = self.tail_lpos = (-self.size) & ULONG_MASK  # BLK0_LPOS
        self.data = bytearray(self.size)
        self.seq = 0
        self.live: dict[int, _Live] = {}  # by id
        self.blocks: list[_Live] = []  # data blocks from tail to head

    def _wraps(self, lpos: int) -> int:
        return lpos >> self.size_bits

    def _wrapped(self, begin: int, next_lpos: int) -> bool:
        end = next_lpos - 1 if self.fix else next_lpos
        return self._wraps(begin) != self._wraps(end & ULONG_MASK)

    def _evict(self, live: _Live) -> None:
        live.evicted = True
        slot = self.slots[live.id % self.count]
        if slot.state_var & DESC_ID_MASK == live.id:
            slot.state_var = _sv(live.id, STATE_REUSABLE)

    def _push_data_tail(self, lpos: int) -> None:
        # data_push_tail: evict blocks until tail_lpos >= lpos (wrap-aware compare)
        while ((lpos - self.tail_lpos) & ULONG_MASK) - 1 < self.size and self.blocks:
            blk = self.blocks.pop(0)
            self._evict(blk)
            self.tail_lpos = blk.next
        if ((lpos - self.tail_lpos) & ULONG_MASK) - 1 < self.size:
            self.tail_lpos = lpos

    def reserve_id(self) -> int:
        new_id = (self.head_id + 1) & DESC_ID_MASK
        if (new_id - self.count) & DESC_ID_MASK == self.tail_id:  # desc_push_tail
            old = self.live.get(self.tail_id)
            if old is not None and not old.evicted:
                self._evict(old)
                if old in self.blocks:  # its data leaves with it
                    self._push_data_tail(old.next)
            self.tail_id = (self.tail_id + 1) & DESC_ID_MASK
        self.head_id = new_id
        return new_id

    def _alloc(self, size: int, rid: int) -> tuple[int, int, int]:
        """data_alloc: return (begin, next, index of the text) for ``size`` text bytes."""
        blk = (size + 8 + 7) // 8 * 8  # to_blk_size: ID + data, 8-byte aligned
        if blk > self.size - 8:  # data_check_size
            return FAILED_LPOS, FAILED_LPOS, -1
        begin = self.head_lpos
        nxt = (begin + blk) & ULONG_MASK
        if self._wrapped(begin, nxt):  # get_next_lpos
            nxt = ((nxt & ~(self.size - 1)) + blk) & ULONG_MASK
        self._push_data_tail((nxt - self.size) & ULONG_MASK)
        self.head_lpos = nxt
        idx = begin % self.size
        struct.pack_into("<Q", self.data, idx, rid)
        if self._wrapped(begin, nxt):
            idx = 0
            struct.pack_into("<Q", self.data, 0, rid)
        return begin, nxt, idx + 8

    def write(self, rec: LogRecord, state: int) -> _Live:
        rid = self.reserve_id()
        stored = rec.text if rec.truncate_to is None else rec.text[: rec.truncate_to]
        if rec.lost:
            begin = nxt = FAILED_LPOS
        elif not stored:
            begin = nxt = NO_LPOS
        else:
            begin, nxt, idx = self._alloc(len(stored), rid)
            if idx >= 0:
                self.data[idx : idx + len(stored)] = stored
        text_len = 0 if rec.lost else len(rec.text)
        ts = 0 if rec.lost else rec.ts_nsec
        info = _pack_info(self.seq, ts, text_len, rec.facility, rec.level, 0, rec.caller_id)
        self.slots[rid % self.count] = _Slot(_sv(rid, state), begin, nxt, info)
        live = _Live(rid, self.seq, rec, begin, nxt)
        self.live[rid] = live
        if not begin & 1:
            self.blocks.append(live)
        self.seq += 1
        return live

    def expected(self) -> list[ExpectedRecord]:
        """Records between tail and head, from the writer's bookkeeping."""
        out = []
        rid = self.tail_id
        while True:
            live = self.live.get(rid)
            slot = self.slots[rid % self.count]
            visible = slot.state_var >> DESC_STATE_SHIFT in (STATE_COMMITTED, STATE_FINALIZED)
            if live is not None and not live.evicted and visible:
                out.append(self._expected_one(live))
            if rid == self.head_id:
                return out
            rid = (rid + 1) & DESC_ID_MASK

    def _expected_one(self, live: _Live) -> ExpectedRecord:
        rec = live.rec
        dataless = bool(live.begin & 1)
        text = b"" if dataless else rec.text
        if rec.truncate_to is not None and not dataless:
            # the reader gets min(text_len, block space): stored bytes plus block padding
            wrapped = self._wrapped(live.begin, live.next)
            start = 8 if wrapped else live.begin % self.size + 8
            end = live.next % self.size if wrapped else start - 8 + (live.next - live.begin)
            text = bytes(self.data[start : min(end, start + len(rec.text))])
        ts = 0 if rec.lost else rec.ts_nsec
        return ExpectedRecord(live.seq, ts, rec.level, rec.facility, rec.caller_id, text, dataless)


class _LegacyLog:
    """The 3.5-5.9 writer (kernel/printk/printk.c log_store, log_make_free_space, log_next)."""

    HEADER = 16  # sizeof(struct printk_log) without CONFIG_PRINTK_CALLER

    def __init__(self, size: int) -> None:
        self.buf, self.size = bytearray(size), size
        self.first_idx = self.next_idx = self.first_seq = self.next_seq = 0
        self.stored: dict[int, LogRecord] = {}

    def _next(self, idx: int) -> int:
        length = struct.unpack_from("<H", self.buf, idx + 8)[0]
        return idx + length if length else struct.unpack_from("<H", self.buf, 8)[0]

    def _has_space(self, size: int, empty: bool) -> bool:
        if self.next_idx > self.first_idx or empty:
            free = max(self.size - self.next_idx, self.first_idx)
        else:
            free = self.first_idx - self.next_idx
        return free >= size + self.HEADER  # room for the wrap marker too

    def store(self, rec: LogRecord) -> None:
        size = (self.HEADER + len(rec.text) + 7) // 8 * 8
        while self.first_seq < self.next_seq and not self._has_space(size, False):
            self.first_idx = self._next(self.first_idx)
            self.first_seq += 1
        assert self._has_space(size, self.first_seq == self.next_seq), "record too large"
        if self.next_idx + size + self.HEADER > self.size:
            self.buf[self.next_idx : self.next_idx + self.HEADER] = bytes(self.HEADER)
            self.next_idx = 0
        header = struct.pack(
            "<QHHHBB", rec.ts_nsec, size, len(rec.text), 0, rec.facility, rec.level << 5 | 2
        )
        body = (header + rec.text).ljust(size, b"\0")
        self.buf[self.next_idx : self.next_idx + size] = body
        self.stored[self.next_seq] = rec
        self.next_idx += size
        self.next_seq += 1

    def expected(self) -> list[ExpectedRecord]:
        return [
            # numbered from the oldest kept record: VMCOREINFO has no log_first_seq
            ExpectedRecord(
                seq - self.first_seq, r.ts_nsec, r.level, r.facility, None, r.text, False
            )
            for seq in range(self.first_seq, self.next_seq)
            for r in (self.stored[seq],)
        ]


def _write_legacy_log(
    mem: _Memory, spec: KernelSpec, sym: dict[str, int], buf_paddr: int
) -> list[ExpectedRecord]:
    log = _LegacyLog(1 << spec.text_size_bits)
    for rec in list(spec.records) if spec.records is not None else default_log(spec):
        log.store(rec)
    mem.put(buf_paddr, bytes(log.buf))
    image = sym["log_buf"] - START_KERNEL_MAP + spec.phys_base
    mem.u64(image, spec.page_offset_base + buf_paddr)
    mem.put(image + 8, struct.pack("<III", log.size, log.first_idx, log.next_idx))
    return log.expected()


def _sv(rid: int, state: int) -> int:
    return (state << DESC_STATE_SHIFT) | (rid & DESC_ID_MASK)


def _pack_info(
    seq: int, ts: int, text_len: int, facility: int, level: int, flags: int, caller: int
) -> bytes:
    # struct printk_info: seq, ts_nsec, text_len, facility, flags:5 level:3, caller_id, dev_info
    head = struct.pack("<QQHBBI", seq, ts, text_len, facility, (level << 5) | flags, caller)
    return head + bytes(SIZE_DEV_PRINTK_INFO)


def default_log(spec: KernelSpec) -> list[LogRecord]:
    """A Debian 6.1 boot log of ``spec.boot_records`` lines ending in a sysrq panic report."""
    rng = random.Random(spec.seed)
    ts = 0
    recs = [
        LogRecord(
            f"Linux version {spec.release} (debian-kernel@lists.debian.org) "
            f"(gcc-12 (Debian 12.2.0-14) 12.2.0) {spec.version}".encode(),
            0,
            5,
            0,
            0,
        ),
        LogRecord(b"Command line: console=ttyS0 crashkernel=192M panic=1", 0, 6, 0, 0),
    ]
    for i in range(spec.boot_records - len(recs)):
        ts += rng.randrange(1000, 40_000_000)
        text = f"virtio_blk virtio{i % 3}: [vd{chr(97 + i % 26)}] {rng.randrange(1, 10**6)} blocks"
        recs.append(LogRecord(text.encode(), ts, rng.choice((4, 6, 6, 7)), 0, 1 + i % 300))
    pid, cpu = 1234, spec.crashing_cpu
    caller = pid
    ts += 2_000_000_000
    report = [
        (b"sysrq: Trigger a crash", 6),
        (b"Kernel panic - not syncing: sysrq triggered crash", 0),
        (
            f"CPU: {cpu} PID: {pid} Comm: sh Kdump: loaded Not tainted {spec.release} "
            f"{spec.version.split(' ', 1)[0]}  Debian 6.1.55-1".encode(),
            4,
        ),
        (b"Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1", 4),
        (
            b"Call Trace:\n <TASK>\n dump_stack_lvl+0x44/0x5c\n panic+0x118/0x2ec\n"
            b" sysrq_handle_crash+0x16/0x20\n </TASK>",
            4,
        ),
        (b"", 4),
        (
            b"Kernel Offset: 0x%x from 0xffffffff81000000 (relocation range: "
            b"0xffffffff80000000-0xffffffffbfffffff)" % spec.kernel_offset,
            0,
        ),
    ]
    for text, level in report:
        ts += rng.randrange(1000, 900_000)
        recs.append(LogRecord(text, ts, level, 0, caller))
    return recs


def _ram_ranges(spec: KernelSpec) -> list[tuple[int, int]]:
    if spec.ram_ranges is not None:
        return [tuple(r) for r in spec.ram_ranges]  # type: ignore[misc]
    return [(0, 0x9F000), (0x100000, spec.ram_size)]


def _fill(mem: _Memory, spec: KernelSpec, ranges: list[tuple[int, int]], busy: range) -> None:
    """Random and text pages in free RAM (outside ``busy``); the rest stays zero."""
    rng = random.Random(spec.seed ^ 0x5EED)
    phrase = b"the quick brown fox jumps over the lazy dog; " * 100
    for start, end in ranges:
        for paddr in range(start, end - PAGE_SIZE + 1, PAGE_SIZE):
            if paddr in busy:
                continue
            pick = rng.random()
            if pick < spec.random_fraction:
                mem.put(paddr, rng.randbytes(PAGE_SIZE))
            elif pick < spec.random_fraction + spec.text_fraction:
                mem.put(paddr, phrase[:PAGE_SIZE])


def _map_kernel(pt: _PageTables, spec: KernelSpec, kstart: int) -> None:
    # level2_kernel_pgt: 2 MiB pages, then the second half of the image with 4 KiB pages
    vstart = kstart - spec.phys_base + START_KERNEL_MAP
    pt.map(vstart, kstart, 2 * MIB)
    for off in range(2 * MIB, IMAGE_SIZE, PAGE_SIZE):
        pt.map(vstart + off, kstart + off, 4 * KIB, nx=True)


def _map_direct(pt: _PageTables, spec: KernelSpec, ranges: list[tuple[int, int]]) -> None:
    base = spec.page_offset_base
    if spec.gbpages:
        top = max(end for _, end in ranges)
        for paddr in range(0, top, GIB):
            pt.map(base + paddr, paddr, GIB, nx=True)
        return
    for start, end in ranges:
        paddr = start
        while paddr < end:
            size = 2 * MIB if paddr % (2 * MIB) == 0 and paddr + 2 * MIB <= end else PAGE_SIZE
            pt.map(base + paddr, paddr, size, nx=True)
            paddr += size


def _write_uts(mem: _Memory, spec: KernelSpec, paddr: int) -> None:
    fields = ["Linux", spec.nodename, spec.release, spec.version, spec.machine, "(none)"]
    if spec.empty_utsname:
        fields = [""] * 6
    mem.put(paddr, bytes(spec.uts_name_offset))  # user_ns, ucounts, ... before name
    for i, value in enumerate(fields):
        raw = value.encode()[: UTS_FIELD - 1]
        mem.put(paddr + spec.uts_name_offset + i * UTS_FIELD, raw.ljust(UTS_FIELD, b"\0"))


def _write_printk(mem: _Memory, spec: KernelSpec, sym: dict[str, int], buf_paddr: int) -> Any:
    sim = _PrintkSim(spec.desc_count_bits, spec.text_size_bits, spec.perfect_fit_fix)
    records = list(spec.records) if spec.records is not None else default_log(spec)
    for i, rec in enumerate(records):
        last = i == len(records) - 1
        sim.write(rec, STATE_COMMITTED if last and spec.last_committed else STATE_FINALIZED)
    if spec.reserved_head:
        rid = sim.reserve_id()
        sim.slots[rid % sim.count].state_var = _sv(rid, STATE_RESERVED)
    if spec.torn_head:
        sim.reserve_id()
    descs, infos = buf_paddr, buf_paddr + sim.count * SIZE_PRB_DESC
    data = infos + sim.count * SIZE_PRINTK_INFO
    for i, slot in enumerate(sim.slots):
        mem.put(
            descs + i * SIZE_PRB_DESC, struct.pack("<QQQ", slot.state_var, slot.begin, slot.next)
        )
        mem.put(infos + i * SIZE_PRINTK_INFO, slot.info)
    mem.put(data, bytes(sim.data))
    direct = spec.page_offset_base
    ring = struct.pack(
        "<I4xQQQQQ",
        spec.desc_count_bits,
        direct + descs,
        direct + infos,
        sim.head_id,
        sim.tail_id,
        0,
    )
    ring += struct.pack(
        "<I4xQQQ", spec.text_size_bits, direct + data, sim.head_lpos, sim.tail_lpos
    ) + bytes(8)
    assert len(ring) == SIZE_PRINTK_RINGBUFFER
    to_phys = sym["prb"] - START_KERNEL_MAP + spec.phys_base
    mem.u64(to_phys, sym["printk_rb_dynamic"])
    mem.put(sym["printk_rb_dynamic"] - START_KERNEL_MAP + spec.phys_base, ring)
    return sim


def _write_mem_section(
    mem: _Memory,
    pt: _PageTables,
    spec: KernelSpec,
    sym: dict[str, int],
    ranges: list[tuple[int, int]],
    meta: int,
) -> None:
    """SPARSEMEM_EXTREME: the mem_section root array, its section arrays, and mem_map.

    SYMBOL(mem_section) is the root array's address (VMCOREINFO_SYMBOL_ARRAY);
    each present section's section_mem_map is the encoded vmemmap address
    (``mem_map - section_start_pfn``, include/linux/mmzone.h) with its flags.
    """
    top = max(end for _, end in ranges)
    max_pfn = top // PAGE_SIZE
    memmap_size = -(-max_pfn * SIZE_PAGE // PAGE_SIZE) * PAGE_SIZE
    memmap = (meta - memmap_size) // (2 * MIB) * (2 * MIB)
    assert memmap >= top - 8 * MIB, "RAM too small for the builder's metadata"
    mem.put(meta, bytes(MEM_SECTION_ROOTS * 8 + PAGE_SIZE))
    mem.put(memmap, bytes(memmap_size))
    for off in range(0, memmap_size, PAGE_SIZE):
        pt.map(spec.vmemmap_base + off, memmap + off, 4 * KIB, nx=True)
    per_root = PAGE_SIZE // SIZE_MEM_SECTION
    sections = -(-max_pfn // PAGES_PER_SECTION)
    assert sections <= per_root, "one section root page is enough for the builder"
    section_array = meta + MEM_SECTION_ROOTS * 8
    mem.u64(meta, spec.page_offset_base + section_array)
    for nr in range(sections):
        mem.u64(section_array + nr * SIZE_MEM_SECTION, spec.vmemmap_base | SECTION_FLAGS)
    sym["mem_section"] = spec.page_offset_base + meta


#: VMCOREINFO keys of a 6.1 x86_64 kernel that do not depend on the build (decimal values)
_MM_KEYS = """
SIZE(mem_section)=16 OFFSET(mem_section.section_mem_map)=0 NUMBER(SECTION_SIZE_BITS)=27
NUMBER(MAX_PHYSMEM_BITS)=46 SIZE(nodemask_t)=128 SIZE(page)=64 OFFSET(page.flags)=0
OFFSET(page._refcount)=52 OFFSET(page.mapping)=24 OFFSET(page.lru)=8 OFFSET(page._mapcount)=48
OFFSET(page.private)=40 NUMBER(PG_lru)=4 NUMBER(PG_private)=13 NUMBER(PG_swapcache)=10
NUMBER(PG_swapbacked)=19 NUMBER(PG_slab)=9 NUMBER(PG_head_mask)=65536
NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129 NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)=-257
"""
#: kernel/printk/printk.c log_buf_vmcoreinfo_setup (Linux >= 5.10)
_PRB_KEYS = """
SIZE(printk_ringbuffer)=88 OFFSET(printk_ringbuffer.desc_ring)=0
OFFSET(printk_ringbuffer.text_data_ring)=48 OFFSET(printk_ringbuffer.fail)=80
SIZE(prb_desc_ring)=48 OFFSET(prb_desc_ring.count_bits)=0 OFFSET(prb_desc_ring.descs)=8
OFFSET(prb_desc_ring.infos)=16 OFFSET(prb_desc_ring.head_id)=24 OFFSET(prb_desc_ring.tail_id)=32
SIZE(prb_desc)=24 OFFSET(prb_desc.state_var)=0 OFFSET(prb_desc.text_blk_lpos)=8
SIZE(prb_data_blk_lpos)=16 OFFSET(prb_data_blk_lpos.begin)=0 OFFSET(prb_data_blk_lpos.next)=8
SIZE(printk_info)=88 OFFSET(printk_info.seq)=0 OFFSET(printk_info.ts_nsec)=8
OFFSET(printk_info.text_len)=16 {caller}OFFSET(printk_info.dev_info)=24
SIZE(dev_printk_info)=64 OFFSET(dev_printk_info.subsystem)=0 LENGTH(printk_info_subsystem)=16
OFFSET(dev_printk_info.device)=16 LENGTH(printk_info_device)=48 SIZE(prb_data_ring)=32
OFFSET(prb_data_ring.size_bits)=0 OFFSET(prb_data_ring.data)=8 OFFSET(prb_data_ring.head_lpos)=16
OFFSET(prb_data_ring.tail_lpos)=24 SIZE(atomic_long_t)=8 OFFSET(atomic_long_t.counter)=0
SIZE(latched_seq)=24 OFFSET(latched_seq.val)=8
"""
#: the same function in Linux 3.5-5.9 (struct printk_log)
_LOG_KEYS = """
SIZE(printk_log)=16 OFFSET(printk_log.ts_nsec)=0 OFFSET(printk_log.len)=8
OFFSET(printk_log.text_len)=10 OFFSET(printk_log.dict_len)=12
"""


def _vmcoreinfo(spec: KernelSpec, sym: dict[str, int]) -> str:
    def symbols(*names: str) -> list[str]:
        return [f"SYMBOL({name})={sym[name]:x}" for name in names]

    lines = [
        f"OSRELEASE={spec.release}",
        "BUILD-ID=" + random.Random(spec.seed).randbytes(20).hex(),
        f"PAGESIZE={PAGE_SIZE}",
        *symbols("init_uts_ns"),
        f"OFFSET(uts_namespace.name)={spec.uts_name_offset}",
        *symbols("node_online_map", "swapper_pg_dir", "_stext"),
        "NUMBER(VMALLOC_START)=0xffffc90000000000",
        *symbols("mem_section"),
        f"LENGTH(mem_section)={MEM_SECTION_ROOTS}",
        *_MM_KEYS.split(),
    ]
    if spec.legacy_printk:
        lines += symbols("log_buf", "log_buf_len", "log_first_idx", "log_next_idx")
        lines += _LOG_KEYS.split()
    else:
        lines += symbols("prb", "printk_rb_static", "clear_seq")
        caller = "OFFSET(printk_info.caller_id)=20 " if spec.with_caller_offset else ""
        lines += _PRB_KEYS.format(caller=caller).split()
    lines += [
        f"NUMBER(phys_base)={spec.phys_base}",
        *symbols("init_top_pgt"),
        f"NUMBER(pgtable_l5_enabled)={int(spec.pgtable_l5)}",
        f"KERNELOFFSET={spec.kernel_offset:x}",
        f"NUMBER(KERNEL_IMAGE_SIZE)={KERNEL_IMAGE_SIZE}",
        f"NUMBER(sme_mask)={spec.sme_mask}",
        f"CRASHTIME={spec.crash_time}",
    ]
    return "".join(line + "\n" for line in lines)


def _prstatus(spec: KernelSpec, sym: dict[str, int]) -> list[PrStatus]:
    rng = random.Random(spec.seed ^ 0xC0DE)
    out = []
    for cpu in range(spec.nr_cpus):
        crashing = cpu == spec.crashing_cpu
        rip = sym["_stext"] + (0x1A1236 if crashing else 0x9E5F0 + cpu * 0x40)
        rsp = spec.page_offset_base + 0x3F00000 - cpu * 0x4000 + rng.randrange(0, 0x3F00, 8)
        regs = {
            "rip": rip,
            "rsp": rsp,
            "rbp": rsp + 0x58,
            "cs": 0x10,
            "ss": 0x18,
            "eflags": 0x246,
            "rax": rng.getrandbits(64),
            "gs_base": rng.getrandbits(47),
        }
        out.append(PrStatus.from_registers(1234 if crashing else 0, **regs))
    return out


def build_kernel(spec: KernelSpec | None = None, **knobs: Any) -> SyntheticKernel:
    """Build the image: ``build_kernel(ram_size=..., torn_head=True)`` or from a spec."""
    spec = spec if spec is not None else KernelSpec(**knobs)
    if spec.page_offset_base == -1:
        slot = random.Random(spec.seed ^ 0xBA5E).randrange(DIRECT_MAP_SLOTS)
        spec = dataclasses.replace(spec, page_offset_base=DIRECT_MAP_LOW + slot * GIB)
    ranges = _ram_ranges(spec)
    top = max(end for _, end in ranges)
    mem = _Memory(top)
    kstart = PHYSICAL_START + spec.kernel_offset + spec.phys_base
    buf_paddr = max(end for _, end in ranges) - 1 * MIB
    assert kstart % (2 * MIB) == 0 and kstart + IMAGE_SIZE <= buf_paddr, hex(kstart)
    vtext = kstart - spec.phys_base + START_KERNEL_MAP
    sym = {
        "_stext": vtext,
        "init_top_pgt": vtext + OFF_TOP_PGT,
        "swapper_pg_dir": vtext + OFF_TOP_PGT,
        "init_uts_ns": vtext + OFF_UTS,
        "prb": vtext + OFF_PRB,
        "printk_rb_dynamic": vtext + OFF_RB_DYNAMIC,
        "printk_rb_static": vtext + OFF_RB_STATIC,
        "clear_seq": vtext + OFF_CLEAR_SEQ,
        "node_online_map": vtext + OFF_NODE_ONLINE_MAP,
    }
    _fill(mem, spec, ranges, range(kstart, kstart + IMAGE_SIZE))
    mem.put(kstart, random.Random(spec.seed).randbytes(2 * MIB - PAGE_SIZE))  # "code"
    mem.put(kstart + OFF_TOP_PGT, bytes(IMAGE_SIZE - OFF_TOP_PGT))  # data and bss
    mem.put(buf_paddr, bytes(1 * MIB))
    pt = _PageTables(mem, kstart + OFF_TOP_PGT, kstart + OFF_PT_POOL, PT_POOL_PAGES, spec)
    _map_kernel(pt, spec, kstart)
    _map_direct(pt, spec, ranges)
    _write_uts(mem, spec, kstart + OFF_UTS)
    mem.u64(kstart + OFF_NODE_ONLINE_MAP, 1)
    _write_mem_section(mem, pt, spec, sym, ranges, buf_paddr - 1 * MIB)
    if spec.legacy_printk:
        sym.update(log_buf=vtext + OFF_PRB, log_buf_len=vtext + OFF_PRB + 8)
        sym.update(log_first_idx=vtext + OFF_PRB + 12, log_next_idx=vtext + OFF_PRB + 16)
        expected = _write_legacy_log(mem, spec, sym, buf_paddr)
    else:
        expected = _write_printk(mem, spec, sym, buf_paddr).expected()
    vmcoreinfo = _vmcoreinfo(spec, sym)
    prstatus = _prstatus(spec, sym)
    notes = b"".join(pack_note("CORE", NoteType.NT_PRSTATUS, p.pack()) for p in prstatus)
    if spec.with_vmcoreinfo:
        notes += pack_note(VMCOREINFO_NOTE_NAME, NoteType.VMCOREINFO, vmcoreinfo.encode())
    runs = [PfnRun(s // PAGE_SIZE, e // PAGE_SIZE) for s, e in ranges]
    panic = next((r.text.decode() for r in expected if r.text.startswith(b"Kernel panic")), None)
    return SyntheticKernel(
        spec,
        InMemorySource(mem.buf, runs, notes),
        vmcoreinfo,
        sym,
        expected,
        prstatus,
        panic,
        kstart,
    )
