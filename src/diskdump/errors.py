# SPDX-License-Identifier: GPL-2.0-or-later
"""The single exception tree of diskdump.

Every error carries its context in keyword-only fields (``path``, ``device``,
``offset``, ``field``, ``lba``, ``expected``, ``found``) and builds its message
from them, so messages stay uniform::

    bad magic in field signature at offset 0x0 on /dev/sdb2: expected b'KDUMP   ', got b'ELF'

Tree::

    DiskdumpError
    ├── FormatError
    │   ├── NotThisFormatError        (no dump / not this format: distinct from corrupt)
    │   ├── TruncatedError
    │   ├── BadMagicError
    │   ├── UnsupportedVersionError
    │   ├── ChecksumError
    │   ├── HeaderMismatchError
    │   ├── CorruptDataError
    │   └── ExcludedPageError
    ├── DeviceError
    │   ├── DeviceNotReadyError
    │   ├── DeviceTooSmallError
    │   ├── DeviceIOError
    │   ├── DeviceRefusedError     (foreign signature, mounted, in use: format/dump refuse)
    │   └── OutOfBoundsError
    ├── DumpError
    │   ├── NoDumpDeviceError
    │   ├── DumpInProgressError
    │   ├── DumpAbortedError
    │   └── ManifestError
    ├── SaveError
    │   ├── NoDumpFoundError
    │   ├── InsufficientSpaceError
    │   ├── OutputExistsError
    │   └── UnsafeOutputError
    ├── ConfigError
    ├── CodecUnavailableError
    ├── CryptoError
    └── VMError
"""

from __future__ import annotations

__all__ = [
    "BadMagicError",
    "ChecksumError",
    "CodecUnavailableError",
    "ConfigError",
    "CorruptDataError",
    "CryptoError",
    "DeviceError",
    "DeviceIOError",
    "DeviceNotReadyError",
    "DeviceRefusedError",
    "DeviceTooSmallError",
    "DiskdumpError",
    "DumpAbortedError",
    "DumpError",
    "DumpInProgressError",
    "ExcludedPageError",
    "FormatError",
    "HeaderMismatchError",
    "InsufficientSpaceError",
    "ManifestError",
    "NoDumpDeviceError",
    "NoDumpFoundError",
    "NotThisFormatError",
    "OutOfBoundsError",
    "OutputExistsError",
    "SaveError",
    "TruncatedError",
    "UnsafeOutputError",
    "UnsupportedVersionError",
    "VMError",
]

_UNSET: object = object()


class DiskdumpError(Exception):
    """Root of every error diskdump raises.

    :param what: a short lowercase description, without context
        (``"bad magic"``, ``"page descriptor points past the end of the file"``)
    :param path: file the error concerns
    :param device: device the error concerns (printed in preference to ``path``)
    :param offset: byte offset in ``device``/``path``
    :param lba: block address on ``device``
    :param field: on-disk field name, spelled as in the spec
    :param expected: what the field should hold
    :param found: what the field holds
    :param hint: a likely cause or remedy, shown by the CLI on its own line
    """

    def __init__(
        self,
        what: str,
        *,
        path: str | None = None,
        device: str | None = None,
        offset: int | None = None,
        lba: int | None = None,
        field: str | None = None,
        expected: object = _UNSET,
        found: object = _UNSET,
        hint: str | None = None,
    ) -> None:
        self.what = what
        self.path = path
        self.device = device
        self.offset = offset
        self.lba = lba
        self.field = field
        self.expected = None if expected is _UNSET else expected
        self.found = None if found is _UNSET else found
        self._has_expected = expected is not _UNSET
        self._has_found = found is not _UNSET
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [self.what]
        if self.field is not None:
            parts.append(f" in field {self.field}")
        if self.offset is not None:
            parts.append(f" at offset {self.offset:#x}")
        if self.lba is not None:
            parts.append(f" (lba {self.lba})")
        where = self.device if self.device is not None else self.path
        if where is not None:
            parts.append(f" on {where}")
        if self._has_expected and self._has_found:
            parts.append(f": expected {_show(self.expected)}, got {_show(self.found)}")
        elif self._has_found:
            parts.append(f": got {_show(self.found)}")
        elif self._has_expected:
            parts.append(f": expected {_show(self.expected)}")
        return "".join(parts)

    def to_dict(self) -> dict[str, object]:
        """Structured form for ``--json`` output."""
        out: dict[str, object] = {"error": type(self).__name__, "message": str(self)}
        for key in ("path", "device", "offset", "lba", "field", "hint"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self._has_expected:
            out["expected"] = _show(self.expected)
        if self._has_found:
            out["found"] = _show(self.found)
        return out


def _show(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value > 9:
        return f"{value:#x}"
    return repr(value) if isinstance(value, bytes | str) else str(value)


class FormatError(DiskdumpError):
    """Bytes on disk or in a file do not follow their format."""


class NotThisFormatError(FormatError):
    """The input is not this format at all (no dump here), as opposed to corrupt."""


class TruncatedError(FormatError):
    """A structure or the data it points to extends past the end of its container."""


class BadMagicError(FormatError):
    """A signature or magic number does not match."""


class UnsupportedVersionError(FormatError):
    """A format version this build does not read."""


class ChecksumError(FormatError):
    """A stored checksum does not match the data."""


class HeaderMismatchError(FormatError):
    """Two copies of a header (leading and trailing) disagree."""


class CorruptDataError(FormatError):
    """Data are present but inconsistent (bad lengths, overlapping ranges, loops)."""


class ExcludedPageError(FormatError):
    """A page was asked for that the dump does not hold (filtered out or not written)."""


class DeviceError(DiskdumpError):
    """A dump device cannot be used or failed."""


class DeviceNotReadyError(DeviceError):
    """The device exists but is not in a state to take a dump."""


class DeviceTooSmallError(DeviceError):
    """The device is smaller than what is needed."""


class DeviceIOError(DeviceError):
    """A read, write or flush on the device failed."""


class DeviceRefusedError(DeviceError):
    """The device holds something that is not ours (a filesystem, swap, a partition table)."""


class OutOfBoundsError(DeviceError):
    """An I/O request lies outside the range its caller may touch."""


class DumpError(DiskdumpError):
    """The panic-time writer could not complete."""


class NoDumpDeviceError(DumpError):
    """No configured device is usable."""


class DumpInProgressError(DumpError):
    """A dump was started while one is already in progress (re-entry)."""


class DumpAbortedError(DumpError):
    """The dump was abandoned part-way (watchdog, abort callback)."""


class ManifestError(DumpError):
    """The writer's self-check against the armed manifest failed or no manifest exists."""


class SaveError(DiskdumpError):
    """savecore could not save a dump."""


class NoDumpFoundError(SaveError):
    """No dump is present on the device (a clean, formatted partition)."""


class InsufficientSpaceError(SaveError):
    """Saving would cross the free-space reserve."""


class OutputExistsError(SaveError):
    """The output already exists and will not be overwritten."""


class UnsafeOutputError(SaveError):
    """The output directory is unsafe (group/world-writable, a symlink)."""


class ConfigError(DiskdumpError):
    """The configuration file or the options are invalid."""


class CodecUnavailableError(DiskdumpError):
    """A page codec's library is not installed; the message names the extra to install."""


class CryptoError(DiskdumpError):
    """Encryption or decryption failed (wrong key, tampered data)."""


class VMError(DiskdumpError):
    """The QEMU harness failed (boot, QMP, time-out)."""
