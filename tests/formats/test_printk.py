# SPDX-License-Identifier: GPL-2.0-or-later
"""The kernel log from built kernels: lockless ring (>= 5.10) and printk_log (3.5-5.9)."""

from __future__ import annotations

import re
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diskdump.errors import CorruptDataError, DiskdumpError, ExcludedPageError
from diskdump.formats.printk import (
    PrintkRecord,
    RecordFlag,
    format_dmesg,
    format_record,
    iter_printk_records,
)
from diskdump.formats.vmcoreinfo import VmcoreInfo
from diskdump.formats.x86_64 import KernelMemory
from tests.builders.kernel import (
    MIB,
    PAGE_SIZE,
    ExpectedRecord,
    LogRecord,
    SyntheticKernel,
    build_kernel,
)

#: a small machine keeps each build fast (hypothesis builds many)
SMALL = {
    "ram_size": 32 * MIB,
    "phys_base": 0x400000,
    "kernel_offset": 0,
    "random_fraction": 0.0,
    "text_fraction": 0.0,
}


def _read(kernel: SyntheticKernel, text: str | None = None) -> list[PrintkRecord]:
    info = VmcoreInfo(text if text is not None else kernel.vmcoreinfo)
    return list(iter_printk_records(KernelMemory(kernel.source, info), info))


def _as_expected(records: list[PrintkRecord]) -> list[ExpectedRecord]:
    return [
        ExpectedRecord(r.seq, r.ts_nsec, r.level, r.facility, r.caller_id, r.text, not r.has_text)
        for r in records
    ]


def test_default_log_wraps_and_matches() -> None:
    kernel = build_kernel()
    records = _read(kernel)
    assert _as_expected(records) == kernel.expected
    assert records[0].seq > 0  # the rings wrapped: the oldest records are gone
    assert format_dmesg(records) == kernel.expected_dmesg
    assert any(b"\n" in r.text for r in records)
    panic = [r for r in records if r.text.startswith(b"Kernel panic")]
    assert panic[0].level == 0 and panic[0].caller == "T1234"


def test_data_less_lost_and_truncated_records() -> None:
    records = [
        LogRecord(b"first", 1000, caller_id=0x80000001),
        LogRecord(b"", 2000),
        LogRecord(b"allocation failed", 3000, lost=True),
        LogRecord(b"0123456789abcdefXYZ", 4000, truncate_to=5),
        LogRecord(b"last", 5000),
    ]
    kernel = build_kernel(records=records, desc_count_bits=4, **SMALL)
    got = _read(kernel)
    assert _as_expected(got) == kernel.expected
    flags = [r.flags for r in got]
    assert flags[1:4] == [RecordFlag.DATALESS, RecordFlag.LOST, RecordFlag.TRUNCATED]
    assert got[0].caller == "C1"
    # the truncated record returns the stored bytes and the block's padding, as the kernel does
    assert got[3].text == b"01234\0\0\0"  # 5 bytes in a 16-byte block: 8 after the id
    out = format_dmesg(got)
    assert out.startswith("[    0.000001] first\n[    0.000004] 01234")
    assert "allocation failed" not in out and out.endswith("[    0.000005] last\n")


@pytest.mark.parametrize(
    "knob",
    [{"torn_head": True}, {"reserved_head": True}, {"last_committed": False}],
    ids=["torn-head", "reserved-head", "all-finalized"],
)
def test_head_states(knob: dict[str, bool]) -> None:
    kernel = build_kernel(**knob, **SMALL)
    records = _read(kernel)
    assert _as_expected(records) == kernel.expected
    assert records[-1].text.startswith(b"Kernel Offset:")


@pytest.mark.parametrize("fix", [False, True], ids=["pre-2025", "is_blk_wrapped"])
def test_block_ending_at_ring_end(fix: bool) -> None:
    # 128-byte ring, 64-byte blocks: "b" ends exactly at the end of the ring. Before the
    # 2025 fix the writer wraps it to data[0] (evicting "a"), and "c" then evicts "b" too;
    # with is_blk_wrapped "b" stays in place and only "a" is evicted by "c".
    records = [LogRecord(b"a" * 56, 1), LogRecord(b"b" * 56, 2), LogRecord(b"c" * 8, 3)]
    kernel = build_kernel(records=records, text_size_bits=7, perfect_fit_fix=fix, **SMALL)
    got = _read(kernel)
    assert _as_expected(got) == kernel.expected
    assert [r.text[:1] for r in got] == ([b"b", b"c"] if fix else [b"c"])


def test_legacy_printk_log() -> None:
    kernel = build_kernel(legacy_printk=True, text_size_bits=11, release="5.4.0-200-generic")
    records = _read(kernel)
    assert _as_expected(records) == kernel.expected
    assert len(records) < 60 and records[0].caller_id is None
    assert format_dmesg(records) == kernel.expected_dmesg


def test_legacy_printk_log_loop_and_overrun() -> None:
    kernel = build_kernel(legacy_printk=True, text_size_bits=10, **SMALL)
    kmem = KernelMemory(kernel.source, VmcoreInfo(kernel.vmcoreinfo))
    buf = kernel.virt_to_phys(kmem.read_u64(kernel.symbols["log_buf"]))
    first_idx = kernel.virt_to_phys(kernel.symbols["log_first_idx"])
    memory = kernel.source.memory
    saved = bytes(memory[buf : buf + 1024])
    memory[buf : buf + 1024] = bytes(1024)  # every len 0: wrap markers forever
    with pytest.raises(CorruptDataError, match=r"printk_log records loop in field printk_log.len"):
        _read(kernel)
    memory[buf : buf + 1024] = saved
    struct.pack_into("<I", memory, first_idx, 1020)
    with pytest.raises(
        CorruptDataError,
        match=r"printk_log header runs past log_buf in field "
        r"log_first_idx: expected 'index < 0x400', got 'index 0x3fc'",
    ):
        _read(kernel)
    struct.pack_into("<I", memory, first_idx, 0)
    struct.pack_into("<H", memory, buf + 10, 2000)  # text_len of the record at 0
    with pytest.raises(CorruptDataError, match=r"printk_log record runs past log_buf"):
        _read(kernel)
    memory[buf : buf + 1024] = saved
    struct.pack_into("<I", memory, first_idx - 4, 0x7FFFFFFF)  # log_buf_len
    with pytest.raises(
        CorruptDataError,
        match=r"printk log buffer has an absurd size in field "
        r"log_buf_len: got 0x7fffffff",
    ):
        _read(kernel)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(st.binary(min_size=0, max_size=200), min_size=1, max_size=60),
    count_bits=st.integers(2, 6),
    size_bits=st.integers(9, 12),
    fix=st.booleans(),
    head=st.sampled_from(["finalized", "committed", "torn", "reserved"]),
    data=st.data(),
)
def test_random_logs_match_the_writer(
    texts: list[bytes], count_bits: int, size_bits: int, fix: bool, head: str, data: st.DataObject
) -> None:
    """Whatever the kernel's writer leaves behind, the reader returns exactly its live records."""
    lost = data.draw(st.sets(st.integers(0, len(texts) - 1), max_size=3))
    cut = data.draw(st.sets(st.integers(0, len(texts) - 1), max_size=3))
    records = [
        LogRecord(
            text,
            1_000_003 * i,
            i % 8,
            i % 3,
            1 + i,
            lost=i in lost,
            truncate_to=len(text) // 2 if i in cut else None,
        )
        for i, text in enumerate(texts)
    ]
    kernel = build_kernel(
        records=records,
        desc_count_bits=count_bits,
        text_size_bits=size_bits,
        perfect_fit_fix=fix,
        last_committed=head == "committed",
        torn_head=head == "torn",
        reserved_head=head == "reserved",
        **SMALL,
    )
    assert _as_expected(_read(kernel)) == kernel.expected


def test_format_record_matches_makedumpfile_rules() -> None:
    record = PrintkRecord(7, 123_456_789_012_345, 4, 0, 1234, b"a\x01b\xc3\xa9\tc\x7f\nnext")
    prefix = "[123456.789012] "
    expected = prefix + "a\\x01b\\xffffffc3\\xffffffa9\tc\\x7f\n" + " " * len(prefix) + "next\n"
    assert format_record(record) == expected
    early = PrintkRecord(0, 999, 6, 0, 0x80000003, b"x")
    assert format_record(early) == "[    0.000000] x\n"
    assert format_record(early, show_caller=True) == "[    0.000000] [      C3] x\n"
    assert format_record(record, show_caller=True).startswith(prefix + "[   T1234] a")
    assert format_record(PrintkRecord(1, 0, 6, 0, None, b"y"), show_caller=True).endswith("] y\n")


def _replace(text: str, key: str, value: object) -> str:
    return re.sub(rf"^{re.escape(key)}=.*$", f"{key}={value}", text, flags=re.M)


def _poke_ring(kernel: SyntheticKernel, offset: int, fmt: str, value: int) -> None:
    paddr = kernel.virt_to_phys(kernel.symbols["printk_rb_dynamic"]) + offset
    struct.pack_into(fmt, kernel.source.memory, paddr, value)


@pytest.mark.parametrize(("offset", "bits"), [(0, 40), (0, 20), (48, 0)])
def test_absurd_ring_sizes(offset: int, bits: int) -> None:
    kernel = build_kernel(**SMALL)
    _poke_ring(kernel, offset, "<I", bits)  # desc_ring.count_bits or text_data_ring.size_bits
    name = "prb_desc_ring.count_bits" if offset == 0 else "prb_data_ring.size_bits"
    message = (
        rf"printk ring at 0x[0-9a-f]+ has an absurd size in field {name}: "
        rf"expected '1..31 bits, within 0x2000000 bytes of RAM', got {bits:#x}"
    ).replace("got 0x0", "got 0")
    with pytest.raises(CorruptDataError, match=message):
        _read(kernel)


def test_inconsistent_ids() -> None:
    kernel = build_kernel(**SMALL)
    _poke_ring(kernel, 24, "<Q", 1 << 40)  # head_id far beyond tail_id
    with pytest.raises(
        CorruptDataError,
        match=r"printk descriptor ids are inconsistent in field "
        r"prb_desc_ring.head_id: expected 'head_id - tail_id < 32'",
    ):
        _read(kernel)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "OFFSET(printk_info.caller_id)",
            86,
            r"offset lies outside its structure in field "
            r"OFFSET\(printk_info.caller_id\): expected '<= 84', got 0x56",
        ),
        ("OFFSET(prb_data_blk_lpos.next)", 16, r"field OFFSET\(prb_data_blk_lpos.next\)"),
        ("OFFSET(prb_desc_ring.tail_id)", 85, r"field OFFSET\(prb_desc_ring.tail_id\)"),
        ("SIZE(printk_info)", 10**6, r"vmcoreinfo size is absurd in field SIZE\(printk_info\)"),
        ("SIZE(prb_desc)", 0, r"vmcoreinfo size is absurd in field SIZE\(prb_desc\)"),
    ],
)
def test_vmcoreinfo_layout_is_checked(key: str, value: int, message: str) -> None:
    kernel = build_kernel(**SMALL)
    with pytest.raises(CorruptDataError, match=message):
        _read(kernel, _replace(kernel.vmcoreinfo, key, value))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=40),
    legacy=st.booleans(),
)
def test_corrupt_log_memory_never_hangs_or_crashes(hits: list[tuple[int, int]], legacy: bool):
    """Random bytes over the ring (or log_buf) and its control structure: records or an error."""
    kernel = _CORRUPTIBLE[legacy]
    memory = kernel.source.memory
    ring_base = 31 * MIB  # the builder's printk buffers
    control = kernel.virt_to_phys(kernel.symbols["log_buf" if legacy else "printk_rb_dynamic"])
    saved = bytes(memory[ring_base : ring_base + (1 << 16)]), bytes(memory[control : control + 96])
    try:
        for where, value in hits:
            target = control + where % 96 if where % 5 == 0 else ring_base + where
            memory[target] = value
        try:
            records = _read(kernel)
        except DiskdumpError:
            return
        assert len(records) <= (1 << 16)
        format_dmesg(records)
    finally:
        memory[ring_base : ring_base + (1 << 16)] = saved[0]
        memory[control : control + 96] = saved[1]


_CORRUPTIBLE = {
    False: build_kernel(desc_count_bits=8, text_size_bits=13, boot_records=400, **SMALL),
    True: build_kernel(legacy_printk=True, text_size_bits=13, boot_records=400, **SMALL),
}


def test_illegal_block_is_flagged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    kernel = build_kernel(records=[LogRecord(b"one", 1), LogRecord(b"two", 2)], **SMALL)
    kmem = KernelMemory(kernel.source, VmcoreInfo(kernel.vmcoreinfo))
    descs = kernel.virt_to_phys(kmem.read_u64(kernel.symbols["printk_rb_dynamic"] + 8))
    # record 0 sits in slot 0: make next lie two laps after begin
    begin = struct.unpack_from("<Q", kernel.source.memory, descs + 8)[0]
    struct.pack_into("<Q", kernel.source.memory, descs + 16, (begin + 3 * 4096) % 2**64)
    got = _read(kernel)
    assert got[0].flags == RecordFlag.BAD_BLOCK and got[0].text == b""
    assert got[1].text == b"two"
    assert format_dmesg(got) == "[    0.000000] two\n"
    assert "illegal block" in caplog.text


def test_no_log_in_vmcoreinfo() -> None:
    kernel = build_kernel(**SMALL)
    text = re.sub(r"^SYMBOL\(prb\)=.*\n", "", kernel.vmcoreinfo, flags=re.M)
    with pytest.raises(
        CorruptDataError,
        match=r"vmcoreinfo describes no kernel log in field "
        r"SYMBOL\(prb\)",
    ):
        _read(kernel, text)


def test_offsets_come_from_vmcoreinfo() -> None:
    """A wrong exported offset changes what is read: nothing is hard-coded."""
    kernel = build_kernel(**SMALL)
    text = _replace(kernel.vmcoreinfo, "OFFSET(printk_info.ts_nsec)", 0)
    assert [r.ts_nsec for r in _read(kernel, text)] == [r.seq for r in _read(kernel)]


def test_log_in_excluded_pages() -> None:
    kernel = build_kernel(**SMALL)
    ring_pfn = (kernel.spec.ram_size - MIB) // PAGE_SIZE
    kernel.source.exclude(ring_pfn, ring_pfn + 1)
    with pytest.raises(ExcludedPageError, match=r"page not in the dump"):
        _read(kernel)
