# SPDX-License-Identifier: GPL-2.0-or-later
"""savecore: find dumps on the dump devices, save them, re-initialise the partitions.

The sequence for each device, with the step names the test hook uses
(``DISKDUMP_SAVECORE_KILL_AT=<step>`` makes the process SIGKILL itself right
after that step; the kill tests run savecore in a subprocess with it)::

    cleaned          crash directory opened by fd, locked; stale .partial removed
    scanned          device opened read-only; headers validated (scan.py)
      dedup          a complete save with this dump id exists -> skip to "finished"
    space-checked    estimate + min_free <= free space
    partial-created  .<name>.partial/ (0700)
    vmcore-written   vmcore (kdump or ELF), 0600, fsynced
    files-written    dmesg.txt, info.txt, info.json (the dump id), fsynced
    renamed          rename to <name>, crash directory fsynced: the save is durable
    finished         latest -> newest save; retention (max_dumps)
    reinit-data      the blocks the dump used (metadata, chunks) get their pattern back
    reinit-trailer   the trailing header block gets its pattern back
    reinitialised    the leading header block last: the device is ready again

Why this order never loses a dump and never saves one twice: the leading
header, which carries the dump id, is the last block re-initialised, and it
is touched only after the save is durable; a rerun that finds a dump whose id
a complete save already records skips straight to the re-initialisation
(scan.py reads only the header blocks before that decision). A run killed
before the rename leaves only a ``.partial`` directory, removed by the next run.

An encrypted dump (savecore/encrypted.py) is saved the same way, steps and
all: without a private key as ``vmcore.encrypted`` with info.json and
info.txt (no dmesg.txt: the log is sealed); with ``decrypt_with`` as a
normal vmcore and dmesg.txt, every chunk authenticated on the way.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, BinaryIO

from diskdump.config import DeviceSpec, SavecoreOptions, resolve_threads
from diskdump.devices import open_device
from diskdump.devices.base import BlockIO, DumpDevice
from diskdump.errors import ConfigError, DiskdumpError, NotThisFormatError
from diskdump.formats.codecs import CompressFlag, get_codec
from diskdump.formats.detect import ContainerInfo
from diskdump.formats.dumpfile import write_dump_file
from diskdump.formats.dumpheader import DumpFlag
from diskdump.formats.dumpimage import DumpImage, open_dump
from diskdump.formats.encrypted import read_private_key
from diskdump.formats.erase import erase_source, eraseinfo_text
from diskdump.formats.kdump_write import DUMP_LEVEL_ZERO, write_kdump
from diskdump.formats.memsource import MemorySource, merge_runs, runs_page_count
from diskdump.formats.partition import BlockExtent, PartitionLabel
from diskdump.formats.printk import PrintkRecord, format_dmesg
from diskdump.formats.summary import read_kernel_log, summarize
from diskdump.partition.label import read_label
from diskdump.partition.ops import reinit_blocks
from diskdump.savecore.convert import EraseOptions, convert, source_utsname
from diskdump.savecore.encrypted import (
    ENCRYPTED_FORMAT,
    ENCRYPTED_NAME,
    SEALED_LOG_NOTE,
    encrypted_file_size,
    encryption_info,
    verify_unread_chunks,
)
from diskdump.savecore.info import VMCORE_NAME, build_info, render_info_text
from diskdump.savecore.scan import FoundDump, scan_device
from diskdump.savecore.store import (
    INFO_JSON,
    CrashDirectory,
    PartialSave,
    StorePolicy,
)

__all__ = [
    "DMESG_NAME",
    "INFO_TXT",
    "KILL_HOOK_ENV",
    "STEPS",
    "VMCORE_NAME",
    "DeviceReport",
    "Outcome",
    "SaveOptions",
    "build_info",
    "render_info_text",
    "reports_to_exit_kind",
    "run_savecore",
    "save_name",
]

_log = logging.getLogger(__name__)
#: the configuration's defaults (config.py), the one place they are written
_DEFAULTS = SavecoreOptions()

#: test-only hook: the name of a step after which the process SIGKILLs itself
KILL_HOOK_ENV = "DISKDUMP_SAVECORE_KILL_AT"
#: the named steps of one save, in order (see the module docstring)
STEPS = (
    "cleaned",
    "scanned",
    "space-checked",
    "partial-created",
    "vmcore-written",
    "files-written",
    "renamed",
    "finished",
    "reinit-data",
    "reinit-trailer",
    "reinitialised",
)
#: output formats of the vmcore
FORMATS = ("kdump", "elf")
#: characters kept from the crashed kernel's nodename in a directory name
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")
#: longest host part of a save's directory name
_MAX_HOST_LEN = 64

#: page_desc_t size in a kdump file (makedumpfile diskdump_mod.h)
_KDUMP_DESC_SIZE = 24
#: Elf64_Phdr size
_ELF_PHDR_SIZE = 56
#: pages of fixed headers in either format (main + sub header, ELF header, alignment)
_HEADER_PAGES = 4
#: dump level of ELF output: keep zero pages (ELF cannot share them like kdump)
_ELF_LEVEL = 0
#: container name the summary reports for a dump read from a partition
_CONTAINER_FORMAT = "diskdump-partition"
#: names of the files of a save
DMESG_NAME = "dmesg.txt"
INFO_TXT = "info.txt"

ProgressCallback = Callable[[int, int], None]


def _step(name: str) -> None:
    """Mark a step as done; the test hook may kill the process here."""
    _log.debug("savecore step %s", name)
    if os.environ.get(KILL_HOOK_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


class Outcome(Enum):
    """What savecore did with one device."""

    SAVED = "saved"  #: a complete dump was saved
    SAVED_INCOMPLETE = "saved-incomplete"  #: a dump cut short was saved, marked INCOMPLETE
    ALREADY_SAVED = "already-saved"  #: a save with this dump id existed (a rerun)
    NO_DUMP = "no-dump"  #: the device holds no dump
    FAILED = "failed"  #: an error; the dump (if any) is left on the device


@dataclass(frozen=True, slots=True)
class SaveOptions:
    """Options of one savecore run (flags override the ``[savecore]`` table).

    :param dir: the crash directory
    :param format: ``"kdump"`` (kdump-compressed) or ``"elf"``
    :param compress: page codec of a kdump vmcore (zlib, zstd, lzo, snappy, none)
    :param keep: leave the dump on the device (no re-initialisation)
    :param min_free: bytes that must stay free on the crash filesystem
    :param max_dumps: saves kept (0 = all)
    :param hostname: host part of the directory name; default: the crashed kernel's nodename
    :param decrypt_with: private key (PEM) that opens encrypted dumps; "" keeps them encrypted
    :param erase: kernel symbols overwritten with the erase filler in the vmcore (``[erase]``)
    :param threads: page-compression workers of a kdump vmcore; 0 = one per CPU (zlib, zstd
        and lzo release the GIL, so N workers compress about N times as fast)
    """

    dir: str = "/var/crash"
    format: str = "kdump"
    compress: str = "zlib"
    keep: bool = False
    min_free: int = _DEFAULTS.min_free
    max_dumps: int = _DEFAULTS.max_dumps
    hostname: str = ""
    decrypt_with: str = ""
    erase: EraseOptions = field(default_factory=EraseOptions)
    threads: int = 0

    @property
    def workers(self) -> int:
        """The number of compression workers ``threads`` asks for."""
        return resolve_threads(self.threads)

    def validate(self) -> None:
        """Raise for a bad option, before any I/O.

        :raises ConfigError: unknown format or codec, negative sizes, no directory
        :raises CodecUnavailableError: the codec's optional library is not installed
        """
        if self.format not in FORMATS:
            raise ConfigError(
                "unknown output format", field="format", expected=list(FORMATS), found=self.format
            )
        if self.threads < 0:
            raise ConfigError("threads must not be negative", field="threads", found=self.threads)
        if self.min_free < 0 or self.max_dumps < 0:
            raise ConfigError(
                "min_free and max_dumps must not be negative",
                field="min_free/max_dumps",
                found=(self.min_free, self.max_dumps),
            )
        if not self.dir:
            raise ConfigError("no crash directory given", field="dir")
        if self.format == "kdump":
            get_codec(self.compress).check_available()  # ConfigError, CodecUnavailableError


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """The result for one device, rendered by the CLI (text and ``--json``)."""

    device: str
    outcome: Outcome
    dump_id: str = ""
    directory: str = ""
    reinitialised: bool = False
    problems: tuple[str, ...] = ()
    reason: str = ""
    error: DiskdumpError | None = None
    vmcore_size: int = 0
    elapsed: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        out: dict[str, Any] = {"device": self.device, "outcome": self.outcome.value}
        for key in ("dump_id", "directory", "reason"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        out["reinitialised"] = self.reinitialised
        if self.problems:
            out["problems"] = list(self.problems)
        if self.vmcore_size:
            out["vmcore_size"] = self.vmcore_size
        out["seconds"] = round(self.elapsed, 3)
        if self.error is not None:
            out["error"] = self.error.to_dict()
        return out


def save_name(nodename: str, crash_time: int, fallback_host: str | None = None) -> str:
    """``<host>-<YYYYmmdd-HHMMSS>`` (UTC) for a save's directory.

    The crashed kernel's nodename is untrusted: anything but letters, digits,
    ``_``, ``.`` and ``-`` becomes ``_``, a leading dot is dropped, and the
    length is capped, so a name like ``../../etc`` can never leave the crash
    directory or hide as a dot file.

    :param nodename: the crashed kernel's utsname nodename
    :param crash_time: seconds since the epoch; 0 (unknown) means now
    :param fallback_host: used when ``nodename`` is empty (default: this host's name)
    """
    host = nodename or fallback_host or socket.gethostname()
    host = _UNSAFE_NAME.sub("_", host).lstrip(".")[:_MAX_HOST_LEN] or "unknown"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(crash_time or time.time()))
    return f"{host}-{stamp}"


def reports_to_exit_kind(reports: Sequence[DeviceReport]) -> str:
    """``"error"``, ``"incomplete"`` or ``"ok"`` from the per-device outcomes.

    An error on any device wins (the dump stays there for the next run); else
    a dump saved incomplete; else success, which includes "nothing found".
    """
    if any(r.outcome is Outcome.FAILED for r in reports):
        return "error"
    if any(r.outcome is Outcome.SAVED_INCOMPLETE for r in reports):
        return "incomplete"
    return "ok"


def run_savecore(
    devices: Sequence[DeviceSpec],
    options: SaveOptions,
    *,
    progress: ProgressCallback | None = None,
) -> list[DeviceReport]:
    """Save the dump of every device in ``devices`` into ``options.dir``.

    Devices are handled one after the other; an error on one is reported in
    its :class:`DeviceReport` and the others are still saved.

    :param devices: the dump devices, in configuration order
    :param options: see :class:`SaveOptions`
    :param progress: ``progress(done_bytes, total_bytes)`` while a vmcore is written
    :return: one report per device
    :raises ConfigError: a bad option (before any I/O)
    :raises UnsafeOutputError: the crash directory is unsafe
    :raises SaveError: the crash directory cannot be opened or is locked
    :raises CryptoError: ``decrypt_with`` is not a readable private key (before any I/O)
    """
    options.validate()
    key = read_private_key(options.decrypt_with) if options.decrypt_with else None
    if not devices:
        raise ConfigError(
            "no dump device given",
            field="device",
            hint="--device DEV, or [[device]] in /etc/diskdump.toml",
        )
    policy = StorePolicy(min_free=options.min_free, max_dumps=options.max_dumps)
    with CrashDirectory(options.dir, policy) as crash:
        crash.clean_partials()
        _step("cleaned")
        return [_save_device(spec, crash, options, progress, key) for spec in devices]


def _save_device(
    spec: DeviceSpec,
    crash: CrashDirectory,
    options: SaveOptions,
    progress: ProgressCallback | None,
    key: object | None,
) -> DeviceReport:
    started = time.monotonic()
    try:
        report = _save_one(spec, crash, options, progress, key)
    except DiskdumpError as err:
        _log.error("%s: %s", spec.path, err)
        report = DeviceReport(spec.path, Outcome.FAILED, error=err)
    return replace(report, elapsed=time.monotonic() - started)


def _save_one(
    spec: DeviceSpec,
    crash: CrashDirectory,
    options: SaveOptions,
    progress: ProgressCallback | None,
    key: object | None,
) -> DeviceReport:
    with _open(spec, writable=False) as device:
        try:
            label = read_label(device)
        except NotThisFormatError as err:
            # never formatted (or formatted over): no dump can be there, and the panic
            # writer skips such a device too; say so without failing the run
            _log.warning("%s: not a dump partition: %s", spec.path, err)
            return DeviceReport(spec.path, Outcome.NO_DUMP, reason=f"not a dump partition: {err}")
        result = scan_device(device, label)
        _step("scanned")
        if result.dump is None:
            return DeviceReport(spec.path, Outcome.NO_DUMP, reason=result.reason)
        found = result.dump
        existing = crash.find_dump(found.dump_id)
        if existing is not None:
            _log.info("%s: dump %s already saved as %s", spec.path, found.dump_id, existing.name)
            extents = _extents_of(device, found, crash.read_info(existing.name))
            report = DeviceReport(spec.path, Outcome.ALREADY_SAVED, found.dump_id, existing.name)
        else:
            report, extents = _write_save(device, found, crash, options, progress, key)
    if report.directory:
        _finish(crash, report.directory)
    if options.keep:
        return report
    try:
        _reinitialise(spec, label, found, extents)
    except DiskdumpError as err:
        # the save is durable; the next run finds its dump id and retries only this part
        _log.error("%s: saved, but re-initialisation failed: %s", spec.path, err)
        return replace(report, outcome=Outcome.FAILED, error=err)
    return replace(report, reinitialised=True)


def _extents_of(
    device: DumpDevice, found: FoundDump, info: Mapping[str, Any] | None
) -> list[BlockExtent]:
    """The blocks to re-initialise for a dump saved earlier.

    The save recorded them in info.json (``device_extents``) when it read the
    chunk stream; the header's own estimate is the fallback.
    """
    recorded = (info or {}).get("device_extents")
    if isinstance(recorded, list) and all(
        isinstance(e, list) and len(e) == 2 and all(isinstance(v, int) for v in e) for e in recorded
    ):
        return [BlockExtent(lba, blocks) for lba, blocks in recorded]
    _log.warning(
        "%s: no extents recorded for dump %s; using the header's", device.name, found.dump_id
    )
    return [BlockExtent(lba, blocks) for lba, blocks in found.header.extents()]


def _finish(crash: CrashDirectory, directory: str) -> None:
    """Point ``latest`` at the newest save and apply retention (idempotent)."""
    saves = crash.saves()
    if saves:
        crash.update_latest(saves[-1].name)
    crash.prune(keep=directory)
    _step("finished")


def _reinitialise(
    spec: DeviceSpec, label: PartitionLabel, found: FoundDump, extents: Sequence[BlockExtent]
) -> int:
    """Give the dump's blocks their pattern back, the leading header last.

    :return: blocks rewritten
    """
    header = found.header
    lead, trail = header.header_lba, header.trailer_lba
    data = _without_blocks(extents, (lead, trail))
    with _open(spec, writable=True) as device:
        device.quiesce()
        done = reinit_blocks(device, label, data)
        _step("reinit-data")
        done += reinit_blocks(device, label, [BlockExtent(trail, 1)])
        _step("reinit-trailer")
        done += reinit_blocks(device, label, [BlockExtent(lead, 1)])
    _step("reinitialised")
    _log.info("%s: %d blocks re-initialised", spec.path, done)
    return done


def _without_blocks(extents: Sequence[BlockExtent], skip: Sequence[int]) -> list[BlockExtent]:
    """``extents`` with the single blocks ``skip`` cut out."""
    out: list[BlockExtent] = []
    for ext in extents:
        start = ext.start_lba
        for lba in sorted(b for b in skip if ext.start_lba <= b < ext.end_lba):
            if lba > start:
                out.append(BlockExtent(start, lba - start))
            start = lba + 1
        if start < ext.end_lba:
            out.append(BlockExtent(start, ext.end_lba - start))
    return out


def _write_save(
    device: DumpDevice,
    found: FoundDump,
    crash: CrashDirectory,
    options: SaveOptions,
    progress: ProgressCallback | None,
    key: object | None = None,
) -> tuple[DeviceReport, list[BlockExtent]]:
    """Convert the dump into a new save directory; return the report and the blocks used."""
    try:
        image = open_dump(
            BlockIO(device), found.label.reserve_blocks, name=device.name, private_key=key
        )
    except NotThisFormatError as err:
        # a header and nothing readable behind it: cut short before its metadata
        _log.warning("%s: nothing to save: %s", device.name, err)
        report = DeviceReport(
            found.device, Outcome.NO_DUMP, found.dump_id, reason=f"unusable dump: {err.what}"
        )
        return report, [BlockExtent(lba, n) for lba, n in found.header.extents()]
    extents = [BlockExtent(lba, blocks) for lba, blocks in image.used_extents()]
    problems = [*found.problems, *_missing(image)]  # scan.py already names header oddities
    locked = image.locked
    estimate = encrypted_file_size(image) if locked else _estimate_size(image, options.format)
    crash.check_space(estimate)
    _step("space-checked")
    base = save_name(found.header.utsname.nodename, found.header.crash_time, options.hostname)
    write = _write_locked_files if locked else _write_files
    with crash.begin(base) as part:
        _step("partial-created")
        info = write(part, found, image, options, problems, extents, progress)
        _step("files-written")
        name = part.commit()
    _step("renamed")
    incomplete = bool(info["incomplete"])
    outcome = Outcome.SAVED_INCOMPLETE if incomplete else Outcome.SAVED
    report = DeviceReport(
        found.device,
        outcome,
        found.dump_id,
        name,
        problems=tuple(problems),
        vmcore_size=info["vmcore"]["size"],
    )
    return report, extents


def _write_files(
    part: PartialSave,
    found: FoundDump,
    image: DumpImage,
    options: SaveOptions,
    problems: list[str],
    extents: Sequence[BlockExtent],
    progress: ProgressCallback | None,
) -> dict[str, Any]:
    """vmcore, dmesg.txt, info.json, info.txt of a clear (or decrypted) dump."""
    with part.create(VMCORE_NAME) as out:
        if image.encrypted:
            verify_unread_chunks(image)  # the chunks no page read authenticates
        erased = _write_vmcore(image, out, options, part.guard_progress(progress))
        vmcore_size = os.fstat(out.fileno()).st_size
    _step("vmcore-written")
    dmesg, records, dmesg_problem = _dmesg(image)
    problems += [dmesg_problem] if dmesg_problem else []
    info = build_info(found, image, options, problems, extents, vmcore_size)
    info["erased"] = list(erased)
    if image.encrypted:
        info["encryption"] = encryption_info(image, decrypted=True)
    info["summary"] = summarize(image, container=_container(image), records=records).to_dict()
    part.write_file(DMESG_NAME, dmesg.encode("utf-8"))
    part.write_file(INFO_TXT, render_info_text(info).encode("utf-8"))
    part.write_json(INFO_JSON, info)
    return info


def _write_locked_files(
    part: PartialSave,
    found: FoundDump,
    image: DumpImage,
    options: SaveOptions,
    problems: list[str],
    extents: Sequence[BlockExtent],
    progress: ProgressCallback | None,
) -> dict[str, Any]:
    """vmcore.encrypted, info.json, info.txt of an encrypted dump saved without its key."""
    with part.create(ENCRYPTED_NAME) as out:
        write_dump_file(image, out, progress=part.guard_progress(progress))
        size = os.fstat(out.fileno()).st_size
    _step("vmcore-written")
    info = build_info(found, image, options, problems, extents, size)
    info["vmcore"] = {
        "file": ENCRYPTED_NAME,
        "format": ENCRYPTED_FORMAT,
        "compress": _codec_name(image),
        "size": size,
    }
    info["encryption"] = {**encryption_info(image, decrypted=False), "note": SEALED_LOG_NOTE}
    part.write_file(INFO_TXT, render_info_text(info).encode("utf-8"))
    part.write_json(INFO_JSON, info)
    return info


def _codec_name(image: DumpImage) -> str:
    flag = CompressFlag(image.header.codec)
    return (flag.name or "none").lower()


def _missing(image: DumpImage) -> list[str]:
    """What an incomplete dump lacks, in words (empty for a complete one)."""
    out = []
    if image.stop_reason:
        out.append(f"chunk stream cut short: {image.stop_reason}")
    head = image.header
    if head.flags & DumpFlag.TRUNCATED:
        out.append("the device filled up: the writer stopped before the last planned pages")
    if head.flags & DumpFlag.SOURCE_SHORT:
        out.append("the memory source itself was incomplete")
    planned = merge_runs(image.metadata.data_runs)
    held = runs_page_count(image.data_runs())
    lost = runs_page_count(planned) - held
    if planned and lost > 0:
        out.append(
            f"{lost} of {runs_page_count(planned)} planned pages missing "
            f"({lost * head.page_size} bytes); they are holes, not zeros"
        )
    return out


def _estimate_size(image: DumpImage, fmt: str) -> int:
    """The vmcore's expected size, in bytes, for the check before writing.

    ELF holds every page raw: the figure is exact but for the headers. A kdump
    file holds compressed pages; the figure is what the device holds (the
    chunks' payloads) plus the bitmaps and 24-byte descriptors (makedumpfile
    layout). It is an estimate: the reserve is checked again while writing.
    """
    ps = image.page_size
    pages = image.pages_held
    overhead = len(image.notes) + _HEADER_PAGES * ps
    if fmt == "elf":
        return pages * ps + overhead + _ELF_PHDR_SIZE * len(image.data_runs())
    stored = sum(ref.header.payload_size for ref in image.chunks)
    bitmaps = 2 * -(-image.max_pfn // 8)
    return stored + bitmaps + pages * _KDUMP_DESC_SIZE + overhead


def _open(spec: DeviceSpec, *, writable: bool) -> DumpDevice:
    return open_device(spec.path, spec.driver, writable=writable, **dict(spec.options))


def _write_vmcore(
    image: DumpImage, out: BinaryIO, options: SaveOptions, progress: ProgressCallback
) -> tuple[str, ...]:
    """Write the vmcore in the chosen format (holes stay holes: never zero-filled).

    Every page the dump holds is in the vmcore and reads back: kdump stores
    the zero pages once (the shared zero page of dump level 1); ELF, which has
    no such sharing, writes them out (level 0), so that no reader meets a hole
    where the dump knows the contents. Erase rules overwrite their symbols.

    :return: one ``erase <symbol> size <n>`` line per erased symbol
    """
    if options.format == "elf":
        result = convert(
            image, out, format="elf", level=_ELF_LEVEL, progress=progress, erase=options.erase
        )
        return result.erased
    source: MemorySource = image
    erase_info = None
    if options.erase.rules:
        source = erase_source(
            image,
            options.erase.rules,
            system_map=options.erase.system_map,
            vmlinux=options.erase.vmlinux,
        )
        erase_info = eraseinfo_text(source.ranges).encode()
    write_kdump(
        source,
        out,
        compress=options.compress,
        level=DUMP_LEVEL_ZERO,
        utsname=source_utsname(image),
        progress=progress,
        erase_info=erase_info,
        threads=options.workers,
    )
    return tuple(erase_info.decode().splitlines()) if erase_info else ()


def _container(image: DumpImage) -> ContainerInfo:
    """What the dump header records, for the summary's cross-checks."""
    head = image.header
    uts = head.utsname
    return ContainerInfo(
        format=_CONTAINER_FORMAT,
        dump_level=head.applied_level,
        compression=None,
        phys_base=head.phys_base,
        utsname=(uts.release, uts.machine, uts.nodename, uts.version),
        timestamp=head.crash_time or None,
        nr_cpus=head.nr_cpus,
    )


def _dmesg(image: DumpImage) -> tuple[str, list[PrintkRecord], str]:
    """The kernel log as ``makedumpfile --dump-dmesg`` prints it, its records, and a problem.

    The log is read from the dumped memory through VMCOREINFO (as makedumpfile
    does); when that fails (pages lost in an incomplete dump, no VMCOREINFO),
    the copy the panic writer put in the metadata is used and the reason noted.
    """
    try:
        records = read_kernel_log(image, container=_container(image))
    except DiskdumpError as err:
        problem = f"kernel log unreadable from memory ({err}); dmesg.txt is the panic-time copy"
        return image.metadata.kernel_log, [], problem
    return format_dmesg(records), records, ""
