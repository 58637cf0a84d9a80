# SPDX-License-Identifier: GPL-2.0-or-later
"""The kernel log (dmesg) of a crashed kernel, with VMCOREINFO alone (no debug info).

Spec: kernel/printk/printk_ringbuffer.h and .c (Linux >= 5.10, the lockless
ring buffer: ``desc_read``, ``get_data``, ``is_blk_wrapped``) and
kernel/printk/printk.c (``log_buf_vmcoreinfo_setup``: the exported sizes and
offsets); the variable-length ``struct printk_log`` buffer of Linux 3.5-5.9.
The text output is that of makedumpfile's ``--dump-dmesg`` (printk.c
``dump_record``, makedumpfile.c ``dump_log_entry``). Handled: Linux 3.5-5.9
and >= 5.10 including the 2025 ``is_blk_wrapped`` change; checked against
makedumpfile 1.7.2 on real Debian 6.1 and 6.12 kernels (docs/dmesg.md).

Lockless ring (every size and offset is taken from VMCOREINFO)::

    SYMBOL(prb) --> *prb --> struct printk_ringbuffer
                               desc_ring:      count_bits, descs, infos, head_id, tail_id
                               text_data_ring: size_bits, data, head_lpos, tail_lpos

    descs[id % count]   state_var = state << 62 | id     text_blk_lpos = {begin, next}
                        state 0 reserved, 1 committed, 2 finalized, 3 reusable
    infos[id % count]   seq u64 | ts_nsec u64 | text_len u16 | facility u8 |
                        flags:5 level:3 u8 | caller_id u32 | dev_info
    data[size]          blocks: id u64 then text, 8-byte aligned; lpos bit 0 set =
                        data-less (0x1 text lost, 0x3 empty record)

    regular block   begin and next-1 in the same lap: text at data[begin % size + 8]
    wrapped block   the writer left the ring's tail unused and stored the block
                    (id again, then text) at data[0]: text at data[8], next % size - 8 bytes

Records are read for id = tail_id .. head_id; a slot whose state_var holds
another id was reused and is skipped, as are reserved and reusable slots.
Legacy buffer (3.5-5.9)::

    log_buf[log_buf_len]: struct printk_log {ts_nsec u64, len u16, text_len u16,
    dict_len u16, facility u8, flags:5 level:3}, text, dict, padding; records from
    log_first_idx to log_next_idx; a record with len 0 means "continue at 0"
"""

from __future__ import annotations

import enum
import logging
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from diskdump.errors import CorruptDataError
from diskdump.formats.vmcoreinfo import VmcoreInfo
from diskdump.formats.x86_64 import KernelMemory

__all__ = [
    "PrintkRecord",
    "RecordFlag",
    "format_dmesg",
    "format_record",
    "iter_printk_records",
]

log = logging.getLogger(__name__)

# kernel/printk/printk_ringbuffer.h
_DESC_FLAGS_SHIFT = 62
_DESC_ID_MASK = (1 << _DESC_FLAGS_SHIFT) - 1
_U64 = (1 << 64) - 1
#: a data-less lpos has bit 0 set: FAILED_LPOS 0x1, NO_LPOS 0x3
_LPOS_DATALESS = 0x1
_FAILED_LPOS = 0x1
#: the data block starts with the descriptor id, an unsigned long
_BLOCK_ID_SIZE = 8
#: LOG_BUF_LEN_MAX in kernel/printk/printk.c: the ring is never larger than 2 GiB
_MAX_SIZE_BITS = 31
#: no printk structure is anywhere near a page; a larger SIZE() is corrupt VMCOREINFO
_MAX_STRUCT_SIZE = 4096
#: caller_id bit 31 set: the id is a CPU number (kernel/printk/printk.c printk_caller_id)
_CALLER_CPU = 0x80000000
#: makedumpfile's PID_CHARS_DEFAULT: the caller id is right-aligned in 8 columns
_CALLER_WIDTH = 8
#: printk_log records are aligned to __alignof__(struct printk_log), 8 on x86_64
_LOG_ALIGN = 8
_NSEC_PER_SEC = 1_000_000_000
_NSEC_PER_USEC = 1_000


class _State(enum.IntEnum):
    RESERVED = 0
    COMMITTED = 1
    FINALIZED = 2
    REUSABLE = 3


class RecordFlag(enum.IntFlag):
    """What the reader had to make of a record's text."""

    NONE = 0
    #: no text block (NO_LPOS: an empty record)
    DATALESS = enum.auto()
    #: the writer could not allocate the text (FAILED_LPOS); the text is lost
    LOST = enum.auto()
    #: text_len is larger than the block: only the block's bytes are returned
    TRUNCATED = enum.auto()
    #: begin/next do not describe a legal block; the text is not returned
    BAD_BLOCK = enum.auto()


@dataclass(frozen=True, slots=True)
class PrintkRecord:
    """One kernel log record.

    :param seq: sequence number (Linux 3.5-5.9: the position from the oldest record kept,
        as VMCOREINFO does not export log_first_seq)
    :param ts_nsec: timestamp, nanoseconds since boot (local_clock)
    :param level: log level 0 (emerg) .. 7 (debug)
    :param facility: syslog facility (0 = kernel)
    :param caller_id: task id, or CPU number with bit 31 set; None if the kernel does not
        export OFFSET(printk_info.caller_id)
    :param text: the text as stored, lines separated by ``\\n``, no trailing newline
    :param flags: :class:`RecordFlag` bits
    """

    seq: int
    ts_nsec: int
    level: int
    facility: int
    caller_id: int | None
    text: bytes
    flags: RecordFlag = RecordFlag.NONE

    @property
    def has_text(self) -> bool:
        """False for records without a text block (data-less, lost or illegal)."""
        return not self.flags & (RecordFlag.DATALESS | RecordFlag.LOST | RecordFlag.BAD_BLOCK)

    @property
    def message(self) -> str:
        """The text decoded as UTF-8 (undecodable bytes replaced)."""
        return self.text.decode("utf-8", "replace")

    @property
    def caller(self) -> str | None:
        """``T<pid>`` or ``C<cpu>`` as the kernel prints it, or None."""
        if self.caller_id is None:
            return None
        kind = "C" if self.caller_id & _CALLER_CPU else "T"
        return f"{kind}{self.caller_id & ~_CALLER_CPU}"


def iter_printk_records(kmem: KernelMemory, vmcoreinfo: VmcoreInfo) -> Iterator[PrintkRecord]:
    """Yield the kernel log records, oldest first.

    Uses the lockless ring buffer when VMCOREINFO has ``SYMBOL(prb)`` (Linux >= 5.10),
    else the ``struct printk_log`` buffer (``SYMBOL(log_buf)``, Linux 3.5-5.9).

    :raises CorruptDataError: VMCOREINFO describes no log, or the ring's sizes or ids
        are absurd (the message names the field)
    :raises ExcludedPageError: the log lies in pages the dump does not hold
    """
    if "SYMBOL(prb)" in vmcoreinfo:
        yield from _LocklessRing(kmem, vmcoreinfo).records()
    elif "SYMBOL(log_buf)" in vmcoreinfo:
        yield from _iter_printk_log(kmem, vmcoreinfo)
    else:
        raise CorruptDataError(
            "vmcoreinfo describes no kernel log",
            field="SYMBOL(prb)",
            expected="SYMBOL(prb) (Linux >= 5.10) or SYMBOL(log_buf) (3.5-5.9)",
        )


@dataclass(frozen=True, slots=True)
class _RecordLayout:
    """Offsets of the fields read per record, checked against their structures' sizes."""

    desc_size: int
    state_var: int
    begin: int
    next: int
    info_size: int
    seq: int
    ts_nsec: int
    text_len: int
    caller_id: int | None

    @classmethod
    def from_vmcoreinfo(cls, info: VmcoreInfo) -> _RecordLayout:
        desc_size = _struct_size(info, "prb_desc")
        info_size = _struct_size(info, "printk_info")
        lpos = info.offset("prb_desc.text_blk_lpos")
        has_caller = "OFFSET(printk_info.caller_id)" in info
        return cls(
            desc_size=desc_size,
            state_var=_member(info, desc_size, "prb_desc.state_var", 8),
            begin=_member(info, desc_size, "prb_data_blk_lpos.begin", 8, lpos),
            next=_member(info, desc_size, "prb_data_blk_lpos.next", 8, lpos),
            info_size=info_size,
            seq=_member(info, info_size, "printk_info.seq", 8),
            ts_nsec=_member(info, info_size, "printk_info.ts_nsec", 8),
            # text_len u16, then facility u8 and flags:5 level:3 u8 (not exported)
            text_len=_member(info, info_size, "printk_info.text_len", 4),
            caller_id=_member(info, info_size, "printk_info.caller_id", 4) if has_caller else None,
        )


class _LocklessRing:
    """The ring's geometry and arrays, read once; records decoded on demand."""

    def __init__(self, kmem: KernelMemory, info: VmcoreInfo) -> None:
        self.layout = _RecordLayout.from_vmcoreinfo(info)
        ring = kmem.read_u64(info.symbol("prb"))
        rb_size = _struct_size(info, "printk_ringbuffer")
        rb = kmem.read_virt(ring, rb_size)
        desc_ring = info.offset("printk_ringbuffer.desc_ring")
        data_ring = info.offset("printk_ringbuffer.text_data_ring")
        counter = info.offset("atomic_long_t.counter")

        def field(member: str, width: int, base: int, extra: int = 0) -> int:
            at = _member(info, rb_size, member, width + extra, base) + extra
            return int.from_bytes(rb[at : at + width], "little")

        count_bits = field("prb_desc_ring.count_bits", 4, desc_ring)
        size_bits = field("prb_data_ring.size_bits", 4, data_ring)
        ram_size = kmem.source.max_pfn * kmem.page_size
        _check_bits("prb_desc_ring.count_bits", count_bits, self.layout.info_size, ring, ram_size)
        _check_bits("prb_data_ring.size_bits", size_bits, 1, ring, ram_size)
        self.count, self.size, self.size_bits = 1 << count_bits, 1 << size_bits, size_bits
        self.head_id = field("prb_desc_ring.head_id", 8, desc_ring, counter)
        self.tail_id = field("prb_desc_ring.tail_id", 8, desc_ring, counter)
        descs = field("prb_desc_ring.descs", 8, desc_ring)
        infos = field("prb_desc_ring.infos", 8, desc_ring)
        data = field("prb_data_ring.data", 8, data_ring)
        log.debug("printk ring at %#x: %d descriptors, %d text bytes", ring, self.count, self.size)
        self.descs = kmem.read_virt(descs, self.count * self.layout.desc_size)
        self.infos = kmem.read_virt(infos, self.count * self.layout.info_size)
        self.data = kmem.read_virt(data, self.size)

    def records(self) -> Iterator[PrintkRecord]:
        span = (self.head_id - self.tail_id) & _DESC_ID_MASK
        if span >= self.count or self.head_id > _DESC_ID_MASK or self.tail_id > _DESC_ID_MASK:
            # the kernel keeps head - tail below the descriptor count; more is a cycle
            raise CorruptDataError(
                "printk descriptor ids are inconsistent",
                field="prb_desc_ring.head_id",
                expected=f"head_id - tail_id < {self.count}",
                found=f"tail_id {self.tail_id:#x}, head_id {self.head_id:#x}",
            )
        for step in range(span + 1):
            record = self._record((self.tail_id + step) & _DESC_ID_MASK)
            if record is not None:
                yield record

    def _record(self, rid: int) -> PrintkRecord | None:
        lay = self.layout
        desc = (rid % self.count) * lay.desc_size
        state_var = _u64(self.descs, desc + lay.state_var)
        state = state_var >> _DESC_FLAGS_SHIFT
        if state_var & _DESC_ID_MASK != rid or state not in (_State.COMMITTED, _State.FINALIZED):
            return None  # reused slot, or a writer had not committed
        begin, next_lpos = _u64(self.descs, desc + lay.begin), _u64(self.descs, desc + lay.next)
        text, flags = self._text(rid, begin, next_lpos)
        inf = (rid % self.count) * lay.info_size
        text_len, facility, level_flags = struct.unpack_from("<HBB", self.infos, inf + lay.text_len)
        if len(text) > text_len:
            text = text[:text_len]
        elif flags == RecordFlag.NONE and text_len > len(text):
            flags = RecordFlag.TRUNCATED
        return PrintkRecord(
            seq=_u64(self.infos, inf + lay.seq),
            ts_nsec=_u64(self.infos, inf + lay.ts_nsec),
            level=level_flags >> 5,
            facility=facility,
            caller_id=None if lay.caller_id is None else _u32(self.infos, inf + lay.caller_id),
            text=text,
            flags=flags,
        )

    def _text(self, rid: int, begin: int, next_lpos: int) -> tuple[bytes, RecordFlag]:
        """The block's bytes after its id, by the kernel's get_data rule."""
        if begin & _LPOS_DATALESS and next_lpos & _LPOS_DATALESS:
            lost = begin == _FAILED_LPOS and next_lpos == _FAILED_LPOS
            return b"", RecordFlag.LOST if lost else RecordFlag.DATALESS
        # get_data, with "begin < next" taken modulo 2**64: lpos values start at -size
        # (BLK0_LPOS), so a block ending exactly at the end of the first lap has next == 0
        span = (next_lpos - begin) & _U64
        if not self._wrapped(begin, next_lpos) and 0 < span <= self.size:
            start, end = begin % self.size, begin % self.size + span
        elif not self._wrapped((begin + self.size) & _U64, next_lpos):
            start, end = 0, next_lpos % self.size
        else:
            log.warning("printk record %#x: illegal block %#x..%#x", rid, begin, next_lpos)
            return b"", RecordFlag.BAD_BLOCK
        if end - start < _BLOCK_ID_SIZE or end > self.size:
            log.warning("printk record %#x: block %#x..%#x too small", rid, begin, next_lpos)
            return b"", RecordFlag.BAD_BLOCK
        return self.data[start + _BLOCK_ID_SIZE : end], RecordFlag.NONE

    def _wrapped(self, begin: int, next_lpos: int) -> bool:
        # is_blk_wrapped (2025): next_lpos - 1 is the block's last byte. Blocks of older
        # kernels never end exactly at the end of the ring, so the rule reads them too.
        return begin >> self.size_bits != ((next_lpos - 1) & _U64) >> self.size_bits


def format_record(record: PrintkRecord, *, show_caller: bool = False) -> str:
    """One record as makedumpfile ``--dump-dmesg`` prints it, with its newline.

    ``[%5lu.%06lu] `` from ts_nsec, optionally the caller right-aligned in 8 columns
    (makedumpfile >= 1.7.5 when the kernel exports the caller offset), then the text;
    continuation lines are indented under the text, printable ASCII and white space are
    copied, other bytes are written ``\\xNN`` as C's ``sprintf("%02x", (char)b)`` does
    (so bytes >= 0x80 appear sign-extended, ``\\xffffffc3``).
    """
    seconds, rest = divmod(record.ts_nsec, _NSEC_PER_SEC)
    prefix = f"[{seconds:5d}.{rest // _NSEC_PER_USEC:06d}] "
    if show_caller and record.caller is not None:
        prefix += f"[{record.caller:>{_CALLER_WIDTH}}] "
    newline = "\n" + " " * len(prefix)
    return prefix + "".join(newline if b == 0x0A else _CHARS[b] for b in record.text) + "\n"


def format_dmesg(records: Iterable[PrintkRecord], *, show_caller: bool = False) -> str:
    """The whole log as ``makedumpfile --dump-dmesg`` writes it.

    Records without a text block are left out, as makedumpfile does.
    """
    return "".join(
        format_record(record, show_caller=show_caller) for record in records if record.has_text
    )


def _char(byte: int) -> str:
    # C locale isprint() (0x20..0x7e) or isspace() (\t \n \v \f \r and space)
    if 0x20 <= byte <= 0x7E or byte in b"\t\n\v\f\r":
        return chr(byte)
    signed = byte - 0x100 if byte >= 0x80 else byte
    return f"\\x{signed & 0xFFFFFFFF:02x}"


_CHARS: tuple[str, ...] = tuple(_char(b) for b in range(256))


def _u64(buf: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<Q", buf, offset)[0]
    return value


def _u32(buf: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<I", buf, offset)[0]
    return value


def _check_bits(field: str, bits: int, entry_size: int, ring: int, ram_size: int) -> None:
    # the kernel caps the text ring at LOG_BUF_LEN_MAX; neither array can exceed RAM
    if not 0 < bits <= _MAX_SIZE_BITS or (1 << bits) * entry_size > ram_size:
        raise CorruptDataError(
            f"printk ring at {ring:#x} has an absurd size",
            field=field,
            expected=f"1..{_MAX_SIZE_BITS} bits, within {ram_size:#x} bytes of RAM",
            found=bits,
        )


def _struct_size(info: VmcoreInfo, name: str) -> int:
    size = info.size(name)
    if not 0 < size <= _MAX_STRUCT_SIZE:
        raise CorruptDataError(
            "vmcoreinfo size is absurd",
            field=f"SIZE({name})",
            expected=f"1..{_MAX_STRUCT_SIZE}",
            found=size,
        )
    return size


def _member(info: VmcoreInfo, struct_size: int, member: str, width: int, base: int = 0) -> int:
    """``base + OFFSET(member)``, checked to leave ``width`` bytes inside the structure."""
    offset = base + info.offset(member)
    if offset + width > struct_size:
        raise CorruptDataError(
            "vmcoreinfo offset lies outside its structure",
            field=f"OFFSET({member})",
            expected=f"<= {struct_size - width - base}",
            found=offset - base,
        )
    return offset


def _iter_printk_log(kmem: KernelMemory, info: VmcoreInfo) -> Iterator[PrintkRecord]:
    """Linux 3.5-5.9: variable-length ``struct printk_log`` records in ``log_buf``."""
    buf_len = kmem.read_u32(info.symbol("log_buf_len"))
    if not 0 < buf_len <= min(1 << _MAX_SIZE_BITS, kmem.source.max_pfn * kmem.page_size):
        raise CorruptDataError(
            "printk log buffer has an absurd size", field="log_buf_len", found=buf_len
        )
    buf = kmem.read_virt(kmem.read_u64(info.symbol("log_buf")), buf_len)
    idx = kmem.read_u32(info.symbol("log_first_idx"))
    end = kmem.read_u32(info.symbol("log_next_idx"))
    seq = 0  # log_first_seq is not exported: number the records from the oldest kept
    header = _struct_size(info, "printk_log")
    at_len = _member(info, header, "printk_log.len", 2)
    at_text_len = _member(info, header, "printk_log.text_len", 2)
    at_ts = _member(info, header, "printk_log.ts_nsec", 8)
    # facility and flags:5/level:3 follow dict_len (struct printk_log, not exported)
    at_facility = _member(info, header, "printk_log.dict_len", 4) + 2
    wrapped = False
    for _ in range(buf_len // _LOG_ALIGN + 1):  # each record takes >= 8 bytes: bounded
        if idx == end:
            return
        if idx + header > buf_len:
            raise _log_error("printk_log header runs past log_buf", "log_first_idx", idx, buf_len)
        length = struct.unpack_from("<H", buf, idx + at_len)[0]
        if length == 0:  # "wrap to offset 0" marker
            if wrapped:
                raise _log_error("printk_log records loop", "printk_log.len", idx, buf_len)
            idx, wrapped = 0, True
            continue
        text_len = struct.unpack_from("<H", buf, idx + at_text_len)[0]
        if idx + header + text_len > buf_len or length < header:
            raise _log_error("printk_log record runs past log_buf", "printk_log.len", idx, buf_len)
        yield PrintkRecord(
            seq=seq,
            ts_nsec=_u64(buf, idx + at_ts),
            level=buf[at_facility + idx + 1] >> 5,
            facility=buf[at_facility + idx],
            caller_id=None,
            text=buf[idx + header : idx + header + text_len],
        )
        seq += 1
        idx += length
    raise _log_error("printk_log records loop", "log_next_idx", idx, buf_len)


def _log_error(what: str, field: str, idx: int, buf_len: int) -> CorruptDataError:
    return CorruptDataError(
        what, field=field, expected=f"index < {buf_len:#x}", found=f"index {idx:#x}"
    )
