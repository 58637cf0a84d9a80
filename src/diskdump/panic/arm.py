# SPDX-License-Identifier: GPL-2.0-or-later
"""Readiness: ``diskdump arm`` (check, estimate, record the manifest) and ``diskdump status``.

A crash is captured only if all of these hold at the moment of the crash::

    manifest   present, and every writer file still has its armed SHA-256
    devices    at least one configured device is formatted, holds no uncleared
               dump, verifies its pattern and has room for this machine's memory
    capture    a capture kernel is loaded (/sys/kernel/kexec_crash_loaded = 1)
    key        with ``[dump] encrypt_to``, the public key loads (X25519 or RSA >= 3072
               bits); arm records it in the manifest, which hashes it

Size estimate: the dump of a machine with ``MemTotal`` bytes (from
/proc/meminfo) needs at most the memory itself uncompressed, plus one chunk
header block per chunk, the two headers and an allowance for the metadata
(notes, RAM map and the kernel log). Compression and zero-page exclusion only
make it smaller, so this bound is what ``arm`` demands; a smaller device
still takes a truncated dump at panic time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from diskdump.config import Config
from diskdump.devices import open_device
from diskdump.errors import ConfigError, DiskdumpError, DumpError
from diskdump.formats.encrypted import read_public_key
from diskdump.formats.partition import BLOCK_SIZE
from diskdump.panic.kexec import load_capture
from diskdump.panic.layout import DEFAULT_CHUNK_PAGES
from diskdump.panic.manifest import (
    Manifest,
    build_manifest,
    read_manifest,
    verify_manifest,
    write_manifest,
)
from diskdump.partition.check import CheckStatus, check_device

__all__ = [
    "ArmReport",
    "DeviceReadiness",
    "Readiness",
    "arm",
    "capture_kernel_loaded",
    "estimate_dump_size",
    "load_capture_kernel",
    "readiness",
]

log = logging.getLogger(__name__)

MEMINFO_PATH = "/proc/meminfo"
KEXEC_CRASH_LOADED = "/sys/kernel/kexec_crash_loaded"
#: bytes allowed for the metadata: notes, RAM runs and a kernel log (the largest
#: printk ring, CONFIG_LOG_BUF_SHIFT=25, is 32 MiB of text)
METADATA_ALLOWANCE = 32 << 20
#: the leading and trailing header blocks
HEADER_BLOCKS = 2
_MEMTOTAL = re.compile(r"^MemTotal:\s+(\d+) kB$", re.MULTILINE)
_KIB = 1024


def estimate_dump_size(meminfo_path: str = MEMINFO_PATH, *, page_size: int = BLOCK_SIZE) -> int:
    """Upper bound, in bytes, of a dump of this machine (see the module docstring).

    :raises DiskdumpError: /proc/meminfo unreadable or without MemTotal
    """
    try:
        text = Path(meminfo_path).read_text()
    except OSError as err:
        raise DiskdumpError(f"cannot read memory size: {err.strerror}", path=meminfo_path) from err
    match = _MEMTOTAL.search(text)
    if match is None:
        raise DiskdumpError("no MemTotal line", path=meminfo_path, field="MemTotal")
    memory = int(match.group(1)) * _KIB
    pages = -(-memory // page_size)
    chunks = -(-pages // DEFAULT_CHUNK_PAGES)
    return memory + chunks * BLOCK_SIZE + HEADER_BLOCKS * BLOCK_SIZE + METADATA_ALLOWANCE


@dataclass(frozen=True, slots=True)
class DeviceReadiness:
    """One device's verdict: usable now, and whether a full dump fits.

    :param capacity: bytes of the dump area
    :param shortfall: bytes missing for the estimated dump (0 when it fits)
    """

    device: str
    usable: bool
    reason: str
    capacity: int = 0
    shortfall: int = 0

    @property
    def ready(self) -> bool:
        """Usable and big enough."""
        return self.usable and self.shortfall == 0

    def to_dict(self) -> dict[str, object]:
        """Plain data for ``--json``."""
        return {
            "device": self.device,
            "ready": self.ready,
            "usable": self.usable,
            "reason": self.reason,
            "capacity": self.capacity,
            "shortfall": self.shortfall,
        }


def check_devices(config: Config, needed: int) -> list[DeviceReadiness]:
    """Open each configured device read-only and judge it as the panic writer would."""
    out = []
    for spec in config.devices:
        try:
            with open_device(spec.path, spec.driver, **dict(spec.options)) as device:
                result = check_device(device, config.dump.arm_sample_every)
        except DiskdumpError as err:
            out.append(DeviceReadiness(spec.path, False, f"cannot check: {err}"))
            continue
        if result.status is not CheckStatus.READY or result.label is None:
            out.append(DeviceReadiness(spec.path, False, result.reason))
            continue
        label = result.label
        capacity = (label.data_blocks - HEADER_BLOCKS) * label.block_size
        short = max(0, needed - capacity)
        why = result.reason if not short else f"too small by {short} bytes"
        out.append(DeviceReadiness(spec.path, True, why, capacity, short))
    return out


def capture_kernel_loaded(path: str = KEXEC_CRASH_LOADED) -> bool:
    """True when the kernel reports a loaded crash (capture) kernel."""
    try:
        return Path(path).read_text().strip() == "1"
    except OSError:
        return False


#: signature of the capture-kernel loader: takes the configuration, returns what it did
CaptureLoader = Callable[[Config], str]


def load_capture_kernel(config: Config) -> str:
    """Load the capture kernel and initramfs of ``[capture]`` with ``kexec -p``.

    :raises DumpError: the machine cannot take a capture kernel now (see
        :mod:`diskdump.panic.kexec`); ``[capture] load = false`` only reports the state
    """
    if not config.capture.load:
        state = "loaded" if capture_kernel_loaded() else "not loaded"
        return f"loading left to another tool ([capture] load = false); capture kernel {state}"
    return load_capture(config.capture)


@dataclass(frozen=True, slots=True)
class ArmReport:
    """What ``arm`` checked and recorded."""

    estimate_size: int
    devices: tuple[DeviceReadiness, ...]
    manifest_path: str
    manifest: Manifest | None
    capture: str
    capture_error: str = ""

    @property
    def armed(self) -> bool:
        """True when the manifest was written (some device is ready)."""
        return self.manifest is not None

    def shortfall(self) -> int:
        """Bytes the best usable device misses (0 if one fits)."""
        usable = [d.shortfall for d in self.devices if d.usable]
        return min(usable) if usable else self.estimate_size


def arm(
    config: Config,
    manifest_path: str,
    *,
    meminfo_path: str = MEMINFO_PATH,
    loader: CaptureLoader = load_capture_kernel,
) -> ArmReport:
    """Check every device, and write the manifest if at least one can take a full dump.

    :raises ConfigError: no device configured
    :raises CryptoError: ``encrypt_to`` is set and the key does not load (nothing armed)
    """
    if not config.devices:
        raise ConfigError(
            "no dump device configured",
            path=config.path,
            field="device",
            hint="add [[device]] entries or pass --device",
        )
    encrypt_to = config.dump.encrypt_to or None
    if encrypt_to is not None:
        read_public_key(encrypt_to)  # the dump loads it again before crash-dump mode
    needed = estimate_dump_size(meminfo_path)
    devices = tuple(check_devices(config, needed))
    if not any(d.ready for d in devices):
        return ArmReport(needed, devices, manifest_path, None, "not attempted")
    manifest = build_manifest(
        config=config.path,
        codec=config.dump.compress,
        devices=[d.device for d in devices],
        estimate_size=needed,
        encrypt_to=encrypt_to,
    )
    write_manifest(manifest, manifest_path)
    try:
        return ArmReport(needed, devices, manifest_path, manifest, loader(config))
    except DumpError as err:
        log.warning("capture kernel not loaded: %s", err)
        return ArmReport(needed, devices, manifest_path, manifest, "not loaded", str(err))


@dataclass(frozen=True, slots=True)
class Readiness:
    """``status``: ready only when no reason is left."""

    reasons: tuple[str, ...]
    devices: tuple[DeviceReadiness, ...] = field(default=())
    capture_loaded: bool = False
    manifest_path: str = ""

    @property
    def ready(self) -> bool:
        """True when a crash now would be captured."""
        return not self.reasons

    def to_dict(self) -> dict[str, object]:
        """Plain data for ``--json``."""
        return {
            "ready": self.ready,
            "reasons": list(self.reasons),
            "manifest": self.manifest_path,
            "capture_kernel_loaded": self.capture_loaded,
            "devices": [d.to_dict() for d in self.devices],
        }


def readiness(
    config: Config,
    manifest_path: str,
    *,
    meminfo_path: str = MEMINFO_PATH,
    kexec_path: str = KEXEC_CRASH_LOADED,
) -> Readiness:
    """Every reason a crash now would not be captured (none: ready)."""
    reasons: list[str] = []
    try:
        problems = verify_manifest(read_manifest(manifest_path), config=config.path)
        reasons.extend(f"manifest: {p}" for p in problems)
    except DiskdumpError as err:
        reasons.append(f"manifest: {err}")
    if not config.devices:
        reasons.append("no dump device configured")
    devices = tuple(check_devices(config, estimate_dump_size(meminfo_path)))
    if config.devices and not any(d.ready for d in devices):
        reasons.extend(f"{d.device}: {d.reason}" for d in devices)
    loaded = capture_kernel_loaded(kexec_path)
    if not loaded:
        reasons.append(f"no capture kernel loaded ({kexec_path} is not 1)")
    return Readiness(tuple(reasons), devices, loaded, manifest_path)
