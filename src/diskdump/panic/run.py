# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump dump`` as a library call: self-check, open, collect, write.

The order is the seed's: the manifest is verified before anything is opened
for writing; on a mismatch nothing is written and every difference is named.
Devices and the memory source are opened (and the codec imported) before
the writer enters crash-dump mode; so is the public key of an encrypted dump
(``[dump] encrypt_to`` / ``--encrypt-to``), with the cryptography package.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from diskdump.config import Config, resolve_threads
from diskdump.devices import open_device
from diskdump.devices.base import DumpDevice
from diskdump.errors import DiskdumpError, ManifestError
from diskdump.formats.detect import container_info, opened_vmcore
from diskdump.formats.encrypted import read_public_key
from diskdump.formats.filtered import filter_source
from diskdump.formats.memsource import MemorySource
from diskdump.formats.vmcoreinfo import vmcoreinfo_from_notes
from diskdump.panic.manifest import (
    DEFAULT_MANIFEST_PATH,
    Manifest,
    read_manifest,
    verify_manifest,
)
from diskdump.panic.source import collect_state
from diskdump.panic.writer import DumpResult, ProgressInfo, WriterSettings, write_dump

__all__ = ["DEFAULT_SOURCE", "DumpRequest", "check_manifest", "resolve_threads", "run_dump"]

log = logging.getLogger(__name__)

#: the crashed kernel's memory, as the capture kernel sees it
DEFAULT_SOURCE = "/proc/vmcore"


@dataclass(frozen=True, slots=True)
class DumpRequest:
    """One ``diskdump dump`` invocation, options resolved.

    :param config: configuration (``--device`` flags already merged into ``devices``)
    :param unarmed: skip the manifest check (recorded in the dump header)
    """

    config: Config
    source: str = DEFAULT_SOURCE
    unarmed: bool = False
    manifest: str = str(DEFAULT_MANIFEST_PATH)
    progress: Callable[[ProgressInfo], None] | None = None
    lock_memory: bool = True


def check_manifest(path: str, config: str | None) -> Manifest:
    """Verify the writer against the armed manifest.

    :return: the manifest (its ``encrypt_to`` applies when the configuration has none)
    :raises ManifestError: no manifest, or any file differs (all of them in the hint)
    """
    manifest = read_manifest(path)
    problems = verify_manifest(manifest, config=config)
    if problems:
        raise ManifestError(
            f"the dump writer does not match its manifest ({len(problems)} differences); "
            "refusing to write",
            path=path,
            hint="; ".join(problems),
        )
    return manifest


def _open_devices(config: Config, events: list[str]) -> list[DumpDevice]:
    devices: list[DumpDevice] = []
    for spec in config.devices:
        try:
            devices.append(open_device(spec.path, spec.driver, writable=True, **dict(spec.options)))
        except DiskdumpError as err:
            events.append(f"{spec.path}: cannot open: {err}")
            log.warning("%s: cannot open: %s", spec.path, err)
    return devices


#: dump-level bit 1 (zero pages), which the writer applies itself
_LEVEL_ZERO = 1


def _apply_level(source: MemorySource, level: int, events: list[str]) -> tuple[MemorySource, int]:
    """Filter ``source`` by the type bits of ``level`` (2, 4, 8, 16), before crash-dump mode.

    At panic time a level that cannot be honoured (no VMCOREINFO, an unknown
    struct page layout) must not cost the dump: the dump goes on at the zero-page
    level, and the event is recorded in the header's event list and logged.
    """
    types = level & ~_LEVEL_ZERO
    if not types:
        return source, 0
    try:
        info = vmcoreinfo_from_notes(source.notes)
        # use_numpy=False: the panic path is the standard library plus the codec (the
        # capture initramfs has no NumPy; on a host that has it, importing it costs 11 MiB)
        filtered = filter_source(source, types, info, use_numpy=False)
        filtered.drop_excluded_runs()  # the writer needs the kept runs only
        return filtered, types
    except DiskdumpError as err:
        message = f"dump level {level} cannot be honoured ({err}); writing level {level & 1}"
        events.append(message)
        log.warning("%s", message)
        return source, 0


def run_dump(request: DumpRequest) -> DumpResult:
    """Run the panic path for ``request``.

    :raises ManifestError: the self-check failed (nothing was opened for writing)
    :raises NoDumpDeviceError: no device took the dump
    :raises FormatError: the source is not a readable vmcore
    :raises CryptoError: ``encrypt_to`` is set and the key cannot be loaded (nothing written)
    """
    config = request.config
    opts = config.dump
    if not request.unarmed:
        armed = check_manifest(request.manifest, config.path)
        if not opts.encrypt_to and armed.encrypt_to:  # `diskdump arm --encrypt-to`
            opts = replace(opts, encrypt_to=armed.encrypt_to)
    settings = WriterSettings(
        level=opts.level,
        codec=opts.compress,
        threads=resolve_threads(opts.threads),
        io_timeout=opts.io_timeout,
        allow_maybe=opts.allow_maybe,
        sample_every=opts.sample_every,
        verify_writes=opts.verify_writes,
        unarmed=request.unarmed,
        lock_memory=request.lock_memory,
        progress=request.progress,
        public_key=read_public_key(opts.encrypt_to) if opts.encrypt_to else None,
    )
    events: list[str] = []
    with ExitStack() as stack:
        source = stack.enter_context(opened_vmcore(request.source))
        described = f"{Path(request.source)} ({container_info(source).format})"
        state = collect_state(source, described)
        source, type_level = _apply_level(source, opts.level, events)
        settings = replace(settings, type_level=type_level)
        devices = _open_devices(config, events)
        for device in devices:
            stack.callback(device.shutdown)
        return write_dump(source, state, devices, settings, events=events)
