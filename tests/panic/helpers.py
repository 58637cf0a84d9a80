# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared test helpers for the panic writer: formatted devices, vmcore files, read-back checks."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path

from diskdump.devices.base import BlockIO, DumpDevice
from diskdump.devices.memory import MemoryDevice
from diskdump.formats.dumpimage import DumpImage, open_dump
from diskdump.formats.memsource import MemorySource, PfnRun, merge_runs
from diskdump.formats.partition import PartitionLabel
from diskdump.panic.layout import kernel_image_pfns
from diskdump.panic.source import SystemState, collect_state
from diskdump.panic.writer import WriterSettings
from diskdump.partition.ops import format_device
from tests.builders.elfcore import segments_from_source, write_elfcore
from tests.builders.kernel import SyntheticKernel, build_kernel

#: page size of the synthetic kernel
PAGE = 4096
#: blocks of a device that takes a whole 64 MiB synthetic kernel with room to spare
ROOMY_BLOCKS = 20000


@functools.cache
def kernel(ram_mib: int = 64) -> SyntheticKernel:
    """The synthetic kernel (built once per size and shared: tests never modify it)."""
    return build_kernel(ram_size=ram_mib << 20)


@functools.cache
def state(ram_mib: int = 64) -> SystemState:
    """The system state of :func:`kernel`."""
    return collect_state(kernel(ram_mib).source, "synthetic kernel")


@functools.cache
def _template(blocks: int) -> tuple[bytes, PartitionLabel]:
    dev = MemoryDevice(blocks, name="template")
    label = format_device(dev, check=False)
    return bytes(dev.data), label


def formatted(
    blocks: int = ROOMY_BLOCKS, name: str = "mem0"
) -> tuple[MemoryDevice, PartitionLabel]:
    """A formatted in-memory dump partition (a copy of one real format run per size)."""
    data, label = _template(blocks)
    return MemoryDevice(blocks, name=name, data=data), label


def settings(**kw: object) -> WriterSettings:
    """Writer settings for tests: no mlockall (the test process is large), fast codec."""
    base: dict[str, object] = {"codec": "zstd", "threads": 2, "lock_memory": False}
    base.update(kw)
    return WriterSettings(**base)  # type: ignore[arg-type]


def read_back(dev: DumpDevice, label: PartitionLabel) -> DumpImage:
    """Open the dump on ``dev`` the way savecore does (whole device, read only)."""
    if isinstance(dev, MemoryDevice):
        dev.reopen()
    return open_dump(BlockIO(dev), label.reserve_blocks, name=dev.name)


def assert_pages_match(image: DumpImage, source: MemorySource) -> int:
    """Every page the dump holds equals the source's; return how many were compared."""
    compared = 0
    for run in image.data_runs():
        assert image.read_pages(run.start_pfn, run.pages) == source.read_pages(
            run.start_pfn, run.pages
        ), f"pages differ in [{run.start_pfn:#x}, {run.end_pfn:#x})"
        compared += run.pages
    return compared


def device_digest(dev: MemoryDevice) -> str:
    """SHA-256 of a memory device's whole medium."""
    return hashlib.sha256(dev.data).hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_vmcore(path: Path, ram_mib: int = 64) -> Path:
    """The synthetic kernel as an ELF vmcore file, as /proc/vmcore would show it."""
    src = kernel(ram_mib).source
    return write_elfcore(path, segments_from_source(src), src.notes)


class SubsetSource:
    """A real MemorySource restricted to some pfn runs (a filtered view, as makedumpfile -d
    leaves): keeps tests that write many dumps small. Reads outside raise like the source."""

    def __init__(self, source: MemorySource, keep: list[PfnRun]) -> None:
        self.source = source
        self._data = merge_runs(
            [
                PfnRun(max(r.start_pfn, k.start_pfn), min(r.end_pfn, k.end_pfn))
                for r in source.data_runs()
                for k in keep
                if max(r.start_pfn, k.start_pfn) < min(r.end_pfn, k.end_pfn)
            ]
        )
        self.page_size = source.page_size
        self.max_pfn = source.max_pfn
        self.notes = source.notes
        self.incomplete = source.incomplete

    def ram_runs(self) -> Sequence[PfnRun]:
        return self.source.ram_runs()

    def data_runs(self) -> Sequence[PfnRun]:
        return self._data

    def read_pages(self, pfn: int, count: int) -> bytes:
        return self.source.read_pages(pfn, count)


def small_source(mib: int = 6) -> SubsetSource:
    """The synthetic kernel's image plus its first ``mib`` MiB of RAM."""
    k = kernel()
    image = kernel_image_pfns(k.vmcoreinfo, PAGE)
    assert image is not None
    return SubsetSource(k.source, [PfnRun(0, (mib << 20) // PAGE), image])
