# SPDX-License-Identifier: GPL-2.0-or-later
"""The panic-time writer: the seed's dump sequence, one device after another.

::

    prepare    codec loaded, metadata packed, windows planned  (before crash-dump mode)
               encrypted: one fresh dump key per device, its cipher built and
               the metadata sealed (formats/encrypted.py)
    enter      crash-dump mode (panic/crashmode.py)
    select     pass 1 sane + pattern, pass 2 maybe (panic/select.py), lazily
    per device quiesce
               leading header, status INCOMPLETE                 lba R
               metadata: notes, RAM runs, panic string, kernel log
               chunks, most valuable first (panic/layout.py), compressed by workers,
               handed to the I/O thread in 1 MiB batches, two deep (panic/ioworker.py;
               verify = "written": each block compared with its pattern first)
               flush
               trailing header COMPLETE, flush                   lba N-1
               leading header rewritten COMPLETE, flush          lba R
               shutdown (always)
    on a write error, an I/O stall or a block that fails its pattern: the next
               candidate device, flag FALLBACK
    on a full device: stop at the last whole chunk, flag TRUNCATED (exit 4)

With a public key (``WriterSettings.public_key``), the dump is encrypted:
flag ENCRYPTED, the key envelope and the sealed metadata records, and every
chunk sealed by the compression worker that built it. Each device attempt
gets its own dump key, drawn before crash-dump mode, so a chunk sequence
(the nonce) is never used twice with one key even when a fallback device
rewrites the dump.

Every block goes through one :class:`~diskdump.devices.base.BlockIO` whose
range is the dump area ``[reserve_blocks, block_count)``: the label and the
reserve cannot be written even by a bug in this module. Memory in flight is
bounded by ``2 * threads`` chunks (at most ``chunk_pages`` pages each), one
write batch and the two queued writes, whatever the size of the dumped memory.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace

from diskdump._binary import checksum32
from diskdump.devices.base import BlockIO, DumpDevice, Health
from diskdump.errors import (
    DeviceIOError,
    DeviceRefusedError,
    DeviceTooSmallError,
    DiskdumpError,
    DumpAbortedError,
    NoDumpDeviceError,
)
from diskdump.formats.chunk import PageState
from diskdump.formats.codecs import Codec, get_codec
from diskdump.formats.crypt import ChunkCipher
from diskdump.formats.dumpheader import (
    DumpFlag,
    DumpHeader,
    DumpStatus,
    header_block,
    pack_metadata,
)
from diskdump.formats.encrypted import DumpSealer, header_identity, seal_metadata
from diskdump.formats.filtered import FilteredSource
from diskdump.formats.memsource import MemorySource, PfnRun, runs_page_count
from diskdump.formats.partition import BlockPattern
from diskdump.panic.compress import ChunkJob, CompressorPool
from diskdump.panic.crashmode import CrashMode
from diskdump.panic.ioworker import VERIFY_BLOCKS, IoWorker
from diskdump.panic.layout import (
    DEFAULT_CHUNK_PAGES,
    DumpLayout,
    Window,
    kernel_image_pfns,
    plan_layout,
    plan_windows,
)
from diskdump.panic.select import Candidate, Selection
from diskdump.panic.source import SystemState
from diskdump.runtime import core as runtime
from diskdump.runtime.core import Timer

__all__ = ["DumpResult", "ProgressInfo", "WriterSettings", "write_dump"]

log = logging.getLogger(__name__)

#: makedumpfile -d bit 1: exclude pages filled with zeros (the only bit applied at panic time)
LEVEL_ZERO = 1
#: errors that move the dump to the next device
_ABANDON = (DeviceIOError, DeviceRefusedError, DumpAbortedError, DeviceTooSmallError)
#: runs of a window at most this many excluded pages apart are read with one call
#: (_DeviceDump._segments); reading a whole window regardless (all 8 GiB of the bench
#: image, to keep 762 MiB) took 2.5 s more than a read per run
SPAN_READ_MAX_GAP = 8
_PRESENT = bytes([PageState.PRESENT])
#: chunks go to the device in requests of at least this size: a level-31 dump's chunks
#: average 25 KiB (8 GiB bench image), and one O_DIRECT request per chunk, plus the read
#: that verifies it, cost a device round trip each (5.4 s of a 6.2 s dump)
WRITE_BATCH_BYTES = 1 << 20
#: windows announced to a file source ahead of the one being read (_DeviceDump._prefetched)
PREFETCH_WINDOWS = 8
#: seconds between two progress reports
PROGRESS_PERIOD = 1.0


@dataclass(frozen=True, slots=True)
class ProgressInfo:
    """One progress report: pages handled so far on the current device."""

    device: str
    pages_done: int
    pages_total: int
    bytes_written: int
    elapsed: float  #: seconds since this device was started

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate, or None before any page."""
        if self.pages_done == 0:
            return None
        return self.elapsed * (self.pages_total - self.pages_done) / self.pages_done


@dataclass(frozen=True, slots=True)
class WriterSettings:
    """Everything the writer needs, resolved before the dump.

    :param level: makedumpfile -d bits requested; the writer itself applies bit 1 (zero pages)
    :param type_level: the type bits (2-16) the source was already filtered by
        (:func:`diskdump.formats.filtered.filter_source`, applied in :mod:`diskdump.panic.run`)
    :param threads: compression workers (0: compress on the writer thread)
    :param sample_every: device selection verifies every block (1) or every N-th
    :param verify_writes: compare every block with its pattern just before overwriting it
        (``verify = "written"``; :class:`~diskdump.panic.ioworker.IoWorker`)
    :param io_timeout: seconds an rw_block or flush may take before the device is abandoned
    :param progress: called about once a second from the polling loop
    :param public_key: encrypt the dump to this key (formats/encrypted.read_public_key);
        None: a clear dump
    """

    level: int = 1
    type_level: int = 0
    codec: str = "zstd"
    threads: int = 0
    io_timeout: float = 30.0
    chunk_pages: int = DEFAULT_CHUNK_PAGES
    allow_maybe: bool = False
    sample_every: int = 1
    verify_writes: bool = False
    unarmed: bool = False
    lock_memory: bool = True
    progress: Callable[[ProgressInfo], None] | None = None
    public_key: object | None = None


@dataclass(frozen=True, slots=True)
class DumpResult:
    """What was written where, and what happened on the way (in words)."""

    device: str
    header: DumpHeader
    bytes_written: int
    elapsed: float
    events: tuple[str, ...] = field(default=())

    @property
    def complete(self) -> bool:
        """True when every planned page is on the device."""
        return self.header.complete


def write_dump(
    source: MemorySource,
    state: SystemState,
    devices: Sequence[DumpDevice],
    settings: WriterSettings,
    *,
    events: Sequence[str] = (),
) -> DumpResult:
    """Write ``source`` to the first device that takes it.

    :param devices: opened devices, in configuration order
    :param events: what already happened (devices that could not be opened), reported along

    :raises NoDumpDeviceError: no device could take the dump (every reason in the message)
    :raises DumpInProgressError: called while a dump runs in this process
    :raises CodecUnavailableError: the codec's library is missing
    """
    plan = _plan(source, state, settings, attempts=len(devices))
    given = list(events)  # devices that could not even be opened
    failures: list[str] = []
    events = [*events, *state.warnings]
    flags = DumpFlag.UNARMED if settings.unarmed else DumpFlag.NONE
    if source.incomplete:
        flags |= DumpFlag.SOURCE_SHORT
    if plan.sealers:
        flags |= DumpFlag.ENCRYPTED
    with CrashMode(lock_memory=settings.lock_memory) as mode:
        events.append("crash-dump mode: " + ", ".join(mode.report))
        selection = Selection(devices, settings.allow_maybe, settings.sample_every)
        for attempt, candidate in enumerate(selection):
            if candidate.health is Health.MAYBE:
                flags |= DumpFlag.MAYBE_DEVICE
            job = _DeviceDump(candidate, plan, flags, attempt)
            try:
                result = job.run()
            except _ABANDON as err:
                events.append(f"{candidate.device.name}: abandoned: {err}")
                failures.append(events[-1])
                log.warning("%s: abandoned (%s); trying the next device", job.name, err)
                flags = (flags & ~DumpFlag.MAYBE_DEVICE) | DumpFlag.FALLBACK
                continue
            events.extend(f"{r.device}: skipped: {r.reason}" for r in selection.rejected)
            events.append(_coverage(candidate, job.verified_blocks))
            return replace(result, events=tuple(events))
        reasons = [*given, *(f"{r.device}: {r.reason}" for r in selection.rejected), *failures]
    raise NoDumpDeviceError(
        f"no device could take the dump ({len(devices)} configured)",
        hint="; ".join(reasons) or "no dump device configured",
    )


def _coverage(candidate: Candidate, written_checked: int) -> str:
    """The pattern check's coverage on the device that took the dump, in words."""
    before = candidate.verify
    text = (
        f"{candidate.device.name}: pattern checked on {before.checked_blocks} of "
        f"{before.data_blocks} blocks before the dump"
    )
    if before.sample_every > 1:
        text += f" (every {before.sample_every}th and the last)"
    if written_checked:
        text += f"; {written_checked} blocks read back and compared before being overwritten"
    return text


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything prepared before crash-dump mode, shared by every device attempt."""

    source: MemorySource
    state: SystemState
    settings: WriterSettings
    codec: Codec
    meta: bytes
    priority: PfnRun | None
    #: one id for the dump on every device it touches: savecore recognises the same dump
    dump_id: bytes
    #: the header facts common to every device (placement and status are filled per device)
    template: DumpHeader
    #: encrypted dumps: one dump key per device attempt, and the metadata sealed with it
    sealers: tuple[DumpSealer, ...] = ()
    sealed_metas: tuple[bytes, ...] = ()

    def for_attempt(self, attempt: int) -> tuple[bytes, ChunkCipher | None]:
        """The metadata and chunk cipher of device attempt ``attempt`` (0, 1, ...)."""
        if not self.sealers:
            return self.meta, None
        return self.sealed_metas[attempt], self.sealers[attempt].cipher


def _plan(
    source: MemorySource, state: SystemState, settings: WriterSettings, *, attempts: int
) -> _Plan:
    codec = get_codec(settings.codec)
    codec.check_available()
    vmcoreinfo = state.vmcoreinfo.decode("ascii", "replace")
    metadata = state.metadata(source)
    template = _template(source, state, settings, codec)
    sealers: tuple[DumpSealer, ...] = ()
    if settings.public_key is not None:
        # every key drawn and every cipher built now: nothing is imported in crash-dump mode
        sealers = tuple(DumpSealer.fresh(settings.public_key) for _ in range(max(1, attempts)))
    identity = header_identity(template)
    return _Plan(
        source=source,
        state=state,
        settings=settings,
        codec=codec,
        meta=pack_metadata(metadata),
        priority=kernel_image_pfns(vmcoreinfo, source.page_size),
        dump_id=template.dump_id,
        template=template,
        sealers=sealers,
        sealed_metas=tuple(seal_metadata(metadata, sealer, identity) for sealer in sealers),
    )


def _template(
    source: MemorySource, state: SystemState, settings: WriterSettings, codec: Codec
) -> DumpHeader:
    """The header facts every device attempt shares; placement fields are zero here."""
    return DumpHeader(
        dump_id=uuid.UUID(bytes=os.urandom(16), version=4).bytes,
        partition_uuid=bytes(16),
        block_size=0,
        page_size=source.page_size,
        device_blocks=0,
        header_lba=0,
        meta_lba=0,
        meta_size=0,
        meta_crc=0,
        codec=int(codec.flag),
        data_lba=0,
        data_end_lba=0,
        max_chunk_blocks=0,
        pages_planned=runs_page_count(source.data_runs()),
        max_pfn=source.max_pfn,
        phys_base=state.phys_base & ((1 << 64) - 1),
        crash_time=state.crash_time,
        nr_cpus=state.nr_cpus,
        crashing_cpu=state.crashing_cpu,
        dump_level=settings.level,
        applied_level=(settings.level & LEVEL_ZERO) | settings.type_level,
        utsname=state.utsname,
    )


class _Batch:
    """Consecutive chunks that go to the device in one request (WRITE_BATCH_BYTES)."""

    __slots__ = ("lba", "pages", "parts", "size")

    def __init__(self, lba: int) -> None:
        self.lba = lba
        self.parts: list[bytes] = []
        self.size = 0
        self.pages = 0

    def add(self, data: bytes, pages: int) -> None:
        self.parts.append(data)
        self.size += len(data)
        self.pages += pages


class _DeviceDump:
    """One attempt on one device; :meth:`run` returns or raises, and always shuts it down."""

    def __init__(self, candidate: Candidate, plan: _Plan, flags: DumpFlag, attempt: int) -> None:
        self.device = candidate.device
        self.name = candidate.device.name
        self.label = candidate.label
        self.source = plan.source
        self.state = plan.state
        self.meta, self.cipher = plan.for_attempt(attempt)
        self.codec = plan.codec
        self.settings = plan.settings
        self.priority = plan.priority
        self.dump_id = plan.dump_id
        self.template = plan.template
        self.flags = flags
        self.page_size = self.source.page_size
        self.pages_total = runs_page_count(self.source.data_runs())
        self.pages_done = 0
        self.bytes_written = 0
        self.started = time.monotonic()
        self._zero_page = bytes(self.page_size)
        # a dump level's view of the source: its excluded pages can be read through
        # (and dropped) to read nearby runs with one call (_segments)
        self._unfiltered = self.source.source if isinstance(self.source, FilteredSource) else None
        # the windows come from the view's own data runs, so its per-read check that the
        # pages are kept is redundant: read through (a third of the read cost at -d 31)
        self._reader = (self._unfiltered or self.source).read_pages
        self._ticker = Timer(self._tick)
        self.verified_blocks = 0  #: blocks read back and compared before being overwritten

    def run(self) -> DumpResult:
        label = self.label
        geo = self.device.geometry
        layout = plan_layout(
            reserve_blocks=label.reserve_blocks,
            block_count=label.block_count,
            block_size=geo.block_size,
            meta_size=len(self.meta),
            chunk_pages=self.settings.chunk_pages,
            page_size=self.page_size,
            device=self.name,
        )
        with ExitStack() as stack:
            stack.callback(self.device.shutdown)
            self.device.quiesce()
            pattern = BlockPattern(label, VERIFY_BLOCKS) if self.settings.verify_writes else None
            io = IoWorker(
                BlockIO(self.device, label.reserve_blocks, label.block_count),
                self.settings.io_timeout,
                pattern,
            )
            stack.callback(io.close)
            stack.callback(lambda: setattr(self, "verified_blocks", io.verified_blocks))
            runtime.mod_timer(self._ticker, time.monotonic() + PROGRESS_PERIOD)
            stack.callback(runtime.del_timer, self._ticker)
            header = self._first_header(layout)
            self._write(io, layout.header_lba, header_block(header))
            self._write_meta(io, layout.meta_lba, geo.block_size)
            end_lba, chunks, truncated = self._stream(io, layout, header.dump_id)
            io.flush()
            final = header.finished(
                status=DumpStatus.COMPLETE,
                flags=self.flags | (DumpFlag.TRUNCATED if truncated else DumpFlag.NONE),
                data_end_lba=end_lba,
                chunk_count=chunks,
                pages_written=self.pages_done,
                dump_end_time=int(time.time()),
            )
            block = header_block(final)
            self._write(io, layout.trailer_lba, block)
            io.flush()
            self._write(io, layout.header_lba, block, fresh=False)  # ours since the start
            io.flush()
            self._report()
        return DumpResult(self.name, final, self.bytes_written, time.monotonic() - self.started)

    def _first_header(self, layout: DumpLayout) -> DumpHeader:
        geo = self.device.geometry
        return self.template.finished(
            partition_uuid=self.label.uuid.bytes,
            block_size=geo.block_size,
            device_blocks=geo.block_count,
            header_lba=layout.header_lba,
            meta_lba=layout.meta_lba,
            meta_size=len(self.meta),
            meta_crc=checksum32(self.meta),
            data_lba=layout.data_lba,
            data_end_lba=layout.data_lba,
            max_chunk_blocks=layout.max_chunk_blocks,
            status=DumpStatus.INCOMPLETE,
            flags=self.flags,
            dump_start_time=int(time.time()),
        )

    def _write_meta(self, io: IoWorker, lba: int, block_size: int) -> None:
        # the whole blocks straight from the packed metadata, then the padded last block:
        # no padded copy of a record list that can be megabytes (one run per 16 bytes)
        whole = len(self.meta) - len(self.meta) % block_size
        self._write(io, lba, memoryview(self.meta)[:whole])
        tail = self.meta[whole:]
        self._write(io, lba + whole // block_size, tail + bytes(-len(tail) % block_size))

    def _write(
        self, io: IoWorker, lba: int, data: bytes | memoryview, *, fresh: bool = True
    ) -> None:
        if data:
            io.write(lba, data, fresh=fresh)
            self.bytes_written += len(data)

    def _stream(self, io: IoWorker, layout: DumpLayout, dump_id: bytes) -> tuple[int, int, bool]:
        """Write every window as a chunk; return (end lba, chunk count, truncated)."""
        bs = self.device.geometry.block_size
        threads = self.settings.threads
        pool = CompressorPool(
            self.codec, threads, dump_id=dump_id, block_size=bs, cipher=self.cipher
        )
        windows = self._prefetched(
            plan_windows(self.source.data_runs(), self.settings.chunk_pages, self.priority)
        )
        in_flight = max(2, 2 * pool.threads)
        submitted = written = 0
        lba = layout.data_lba
        exhausted = False
        batch = _Batch(lba)
        try:
            while True:
                while not exhausted and submitted - written < in_flight:
                    window = next(windows, None)
                    if window is None:
                        exhausted = True
                        break
                    pool.submit(self._job(submitted, window))
                    submitted += 1
                    runtime.run_pending()
                if written == submitted:
                    self._flush_batch(io, batch)
                    return lba, written, False
                chunk = pool.take(written)
                blocks = len(chunk.data) // bs
                if lba + blocks > layout.trailer_lba:
                    self._flush_batch(io, batch)
                    log.warning("%s: full after %d chunks; dump truncated", self.name, written)
                    return lba, written, True
                batch.add(chunk.data, chunk.held_pages)
                lba += blocks
                written += 1
                if batch.size >= WRITE_BATCH_BYTES:
                    self._flush_batch(io, batch)
                    batch = _Batch(lba)
        finally:
            pool.close()

    def _prefetched(self, windows: Iterator[Window]) -> Iterator[Window]:
        """``windows``, each announced to the source PREFETCH_WINDOWS windows ahead.

        Only a source that can take the hint (an ELF file read with pread:
        :meth:`~diskdump.formats.elf.ElfVmcore.prefetch_pages`) gets it.
        """
        prefetch = getattr(self._unfiltered or self.source, "prefetch_pages", None)
        if not callable(prefetch):
            yield from windows
            return
        ahead: deque[Window] = deque()
        for window in windows:
            first = window.segments[0][0]
            last_pfn, last_count = window.segments[-1]
            prefetch(first, last_pfn + last_count - first)
            ahead.append(window)
            if len(ahead) > PREFETCH_WINDOWS:
                yield ahead.popleft()
        yield from ahead

    def _flush_batch(self, io: IoWorker, batch: _Batch) -> None:
        """Hand the batched chunks to the device as one request."""
        if batch.parts:
            data = batch.parts[0] if len(batch.parts) == 1 else b"".join(batch.parts)
            self._write(io, batch.lba, data)
            self.pages_done += batch.pages
            batch.parts = []

    def _job(self, sequence: int, window: Window) -> ChunkJob:
        ps = self.page_size
        states = bytearray(window.page_count)
        parts: list[bytes] = []
        exclude_zero = bool(self.settings.level & LEVEL_ZERO)
        held = 0
        for pfn, count, data in self._segments(window):
            if data is None:
                continue
            base = pfn - window.start_pfn
            if not exclude_zero:
                states[base : base + count] = _PRESENT * count
                parts.append(data)
            else:
                for i in range(count):
                    page = data[i * ps : (i + 1) * ps]
                    if page == self._zero_page:
                        states[base + i] = PageState.ZERO
                    else:
                        states[base + i] = PageState.PRESENT
                        parts.append(page)
            held += count
        return ChunkJob(sequence, window.start_pfn, bytes(states), b"".join(parts), held)

    def _segments(self, window: Window) -> Iterator[tuple[int, int, bytes | None]]:
        """``(pfn, count, contents)`` of each segment of ``window``; None if unreadable.

        A level-31 dump keeps one run per two pages or so (334,590 runs in the 8 GiB
        bench image), and a read per run cost more than the pages themselves. Segments
        of a filtered view less than SPAN_READ_MAX_GAP excluded pages apart are read
        with one call through the view (its underlying source holds the excluded pages
        unchanged) and cut apart: copying a few excluded pages is cheaper than a system
        call. A group whose read fails (a hole between two PT_LOADs) is read run by run.
        """
        segments = window.segments
        ps = self.page_size
        i = 0
        while i < len(segments):
            first, count = segments[i]
            j, end = i + 1, first + count
            if self._unfiltered is not None:
                while j < len(segments) and segments[j][0] - end <= SPAN_READ_MAX_GAP:
                    end = segments[j][0] + segments[j][1]
                    j += 1
            span: bytes | None = None
            if j - i > 1:
                assert self._unfiltered is not None
                try:
                    span = self._unfiltered.read_pages(first, end - first)
                except (DiskdumpError, OSError):
                    span = None
            for pfn, n in segments[i:j]:
                if span is not None:
                    offset = (pfn - first) * ps
                    yield pfn, n, span[offset : offset + n * ps]
                    continue
                try:
                    yield pfn, n, self._reader(pfn, n)
                except (DiskdumpError, OSError) as err:
                    log.warning("%s: pages %#x+%d unreadable: %s", self.name, pfn, n, err)
                    self.flags |= DumpFlag.SOURCE_SHORT
                    yield pfn, n, None
            i = j

    def _progress(self) -> ProgressInfo:
        return ProgressInfo(
            self.name,
            self.pages_done,
            self.pages_total,
            self.bytes_written,
            time.monotonic() - self.started,
        )

    def _tick(self) -> None:
        # a private timer in crash-dump mode: runs from the polling loop, re-arms itself
        self._report()
        runtime.mod_timer(self._ticker, time.monotonic() + PROGRESS_PERIOD)

    def _report(self) -> None:
        if self.settings.progress is not None:
            self.settings.progress(self._progress())
