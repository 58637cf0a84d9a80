# SPDX-License-Identifier: GPL-2.0-or-later
"""The configuration file, ``/etc/diskdump.toml`` (stdlib tomllib).

Every option also has a command-line flag; flags override the file. Example::

    # devices are tried in this order; the first sane one whose pattern verifies wins
    [[device]]
    path = "/dev/disk/by-partlabel/dump0"
    driver = "block"            # "block" or "file"; default: by what path is

    [[device]]
    path = "/var/dump/dump.img"
    driver = "file"

    [dump]
    allow_maybe = false         # second pass over devices whose sanity_check says "maybe"
    verify = "written"          # "written": each block checked just before it is overwritten,
                                # after a sampled check (every 4096th block) of the whole area;
                                # "full": every block before the dump; "sample:N": every N-th
    level = 1                   # makedumpfile -d bits: 1 zero, 2/4 page cache, 8 user, 16 free
    compress = "zstd"           # zstd, zlib, lzo, snappy, none
    threads = 0                 # compression workers; 0 = one per online CPU
    final_action = "reboot"     # reboot, poweroff, halt, shell
    io_timeout = 30.0           # seconds before a stalled device is abandoned
    encrypt_to = ""             # public key (PEM) to encrypt dumps to; "" = no encryption

    [savecore]
    dir = "/var/crash"
    format = "kdump"            # kdump or elf
    compress = "zlib"           # zlib opens everywhere; Debian's makedumpfile/crash lack zstd
    min_free = "1G"             # free-space reserve on the crash filesystem (bytes, or K/M/G/T)
    max_dumps = 5               # older saved dumps beyond this number are removed (0 = keep all)
    decrypt_with = ""           # private key (PEM) to decrypt encrypted dumps while saving
    threads = 0                 # page-compression workers; 0 = one per CPU

    [capture]                   # what `diskdump arm` loads with kexec -p
    kernel = ""                 # capture kernel; "" = /boot/vmlinuz-$(uname -r)
    initrd = "/var/lib/diskdump/capture.img"   # `diskdump initramfs build` writes it
    append = "irqpoll nr_cpus=1 reset_devices" # added to the running kernel's command line
    load = true                 # false: arm leaves loading to another tool (kdump-tools)

    [erase]                     # symbols whose memory is overwritten in saved vmcores
    symbols = ["init_net"]      # "name" or "name:size"
    system_map = ""             # System.map of the kernel, for symbols VMCOREINFO lacks
    vmlinux = ""                # or its vmlinux (addresses and sizes)
"""

from __future__ import annotations

import enum
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from diskdump.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "WRITTEN_SAMPLE_EVERY",
    "CaptureOptions",
    "Config",
    "DeviceSpec",
    "DumpOptions",
    "FinalAction",
    "SavecoreOptions",
    "load_config",
    "parse_config",
    "parse_size",
    "resolve_threads",
]

DEFAULT_CONFIG_PATH = Path("/etc/diskdump.toml")

_COMPRESSORS = ("zstd", "zlib", "lzo", "snappy", "none")
#: ``verify = "written"``: the sample checked before the dump (one block in 4096, 16 MiB
#: apart; a whole-area foreign filesystem or partition is caught before anything is written)
WRITTEN_SAMPLE_EVERY = 4096
_SIZE_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class FinalAction(enum.Enum):
    """What the capture environment does once the dump is written."""

    REBOOT = "reboot"
    POWEROFF = "poweroff"
    HALT = "halt"
    SHELL = "shell"


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One entry of the ordered device list."""

    path: str
    driver: str = "auto"  #: "block", "file", or "auto" (by what the path is)
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DumpOptions:
    """Options of the panic-time writer."""

    allow_maybe: bool = False
    verify: str = "written"
    level: int = 1
    compress: str = "zstd"
    threads: int = 0
    final_action: FinalAction = FinalAction.REBOOT
    io_timeout: float = 30.0
    encrypt_to: str = ""

    @property
    def sample_every(self) -> int:
        """Blocks between two checked ones before the dump: 1 for ``full``, N for ``sample:N``.

        ``written`` samples (:data:`WRITTEN_SAMPLE_EVERY`) and checks the rest as it writes.
        """
        if self.verify == "full":
            return 1
        if self.verify == "written":
            return WRITTEN_SAMPLE_EVERY
        return int(self.verify.split(":", 1)[1])

    @property
    def verify_writes(self) -> bool:
        """Compare every block with its pattern just before overwriting it (``written``)."""
        return self.verify == "written"

    @property
    def arm_sample_every(self) -> int:
        """What ``arm`` checks: every block, unless ``sample:N`` asks for a sample."""
        return 1 if self.verify in ("full", "written") else self.sample_every


@dataclass(frozen=True, slots=True)
class SavecoreOptions:
    """Options of savecore."""

    dir: str = "/var/crash"
    format: str = "kdump"
    #: zlib, because Debian 12's makedumpfile and some crash builds have no zstd (formats.md 1.9)
    compress: str = "zlib"
    min_free: int = 1 << 30  #: bytes
    max_dumps: int = 5
    decrypt_with: str = ""
    threads: int = 0  #: page-compression workers; 0 = one per CPU


#: where `diskdump initramfs build` puts the capture initramfs by default
DEFAULT_CAPTURE_INITRD = "/var/lib/diskdump/capture.img"
#: appended to the capture kernel's command line (as kdump-tools and kexec-tools advise)
DEFAULT_CAPTURE_APPEND = "irqpoll nr_cpus=1 reset_devices"


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    """The capture kernel `diskdump arm` loads (``kexec -p``)."""

    kernel: str = ""  #: "" = /boot/vmlinuz-<running release>
    initrd: str = DEFAULT_CAPTURE_INITRD
    append: str = DEFAULT_CAPTURE_APPEND
    load: bool = True


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration, resolved and validated."""

    devices: tuple[DeviceSpec, ...] = ()
    dump: DumpOptions = DumpOptions()
    savecore: SavecoreOptions = SavecoreOptions()
    capture: CaptureOptions = CaptureOptions()
    erase_symbols: tuple[str, ...] = ()
    erase_system_map: str = ""
    erase_vmlinux: str = ""
    path: str | None = None  #: file it was read from, if any

    def with_devices(self, paths: list[str]) -> Config:
        """A copy whose device list is ``paths`` (``--device`` flags override the file)."""
        return replace(self, devices=tuple(DeviceSpec(p) for p in paths))


def resolve_threads(threads: int) -> int:
    """A ``threads`` option as a worker count: 0 means one per CPU this process may run on."""
    if threads > 0:
        return threads
    return max(1, len(os.sched_getaffinity(0)))


def parse_size(value: str | int, *, field_name: str = "size", path: str | None = None) -> int:
    """``"1G"`` -> 1073741824; plain integers are bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError("size must not be negative", path=path, field=field_name, found=value)
        return value
    text = str(value).strip().upper().removesuffix("IB").removesuffix("B")
    suffix = text[-1:] if text[-1:] in _SIZE_SUFFIX else ""
    number = text[: len(text) - len(suffix)] if suffix else text
    try:
        amount = float(number)
    except ValueError:
        raise ConfigError(
            "not a size",
            path=path,
            field=field_name,
            expected="bytes or a K/M/G/T suffix",
            found=value,
        ) from None
    if amount < 0:
        raise ConfigError("size must not be negative", path=path, field=field_name, found=value)
    return int(amount * _SIZE_SUFFIX[suffix])


def load_config(path: str | Path | None = None, *, required: bool = False) -> Config:
    """Read and validate the configuration file.

    :param path: file to read; ``None`` means :data:`DEFAULT_CONFIG_PATH`
    :param required: raise if the file does not exist (``--config`` given explicitly)
    :raises ConfigError: unreadable file, TOML syntax error, unknown key or bad value
    """
    file = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        if required:
            raise ConfigError("configuration file does not exist", path=str(file)) from None
        return Config()
    except OSError as err:
        raise ConfigError(f"cannot read configuration: {err.strerror}", path=str(file)) from err
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"configuration is not valid TOML: {err}", path=str(file)) from err
    return replace(parse_config(data, source=str(file)), path=str(file))


def parse_config(data: Mapping[str, Any], *, source: str = "<config>") -> Config:
    """Validate an already-parsed TOML mapping into a :class:`Config`."""
    _only(data, {"device", "dump", "savecore", "capture", "erase"}, "", source)
    devices = tuple(_device(d, i, source) for i, d in enumerate(data.get("device", [])))
    dump = _dump(data.get("dump", {}), source)
    save = _savecore(data.get("savecore", {}), source)
    erase = data.get("erase", {})
    _only(erase, {"symbols", "system_map", "vmlinux"}, "erase", source)
    symbols = erase.get("symbols", [])
    if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
        raise ConfigError("must be a list of strings", path=source, field="erase.symbols")
    paths = {key: erase.get(key, "") for key in ("system_map", "vmlinux")}
    for key, value in paths.items():
        if not isinstance(value, str):
            raise ConfigError("must be a path string", path=source, field=f"erase.{key}")
    return Config(
        devices=devices,
        dump=dump,
        savecore=save,
        capture=_capture(data.get("capture", {}), source),
        erase_symbols=tuple(symbols),
        erase_system_map=paths["system_map"],
        erase_vmlinux=paths["vmlinux"],
    )


def _only(table: Mapping[str, Any], allowed: set[str], prefix: str, source: str) -> None:
    if not isinstance(table, Mapping):
        raise ConfigError("must be a table", path=source, field=prefix or "<top>")
    for key in table:
        if key not in allowed:
            name = f"{prefix}.{key}" if prefix else key
            raise ConfigError(
                "unknown configuration key", path=source, field=name, expected=sorted(allowed)
            )


def _device(entry: Mapping[str, Any], index: int, source: str) -> DeviceSpec:
    where = f"device[{index}]"
    _only(entry, {"path", "driver", "options"}, where, source)
    path = entry.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError("each device needs a path", path=source, field=f"{where}.path")
    driver = entry.get("driver", "auto")
    if driver not in ("auto", "block", "file"):
        raise ConfigError(
            "unknown driver",
            path=source,
            field=f"{where}.driver",
            expected="block, file or auto",
            found=driver,
        )
    return DeviceSpec(path=path, driver=driver, options=dict(entry.get("options", {})))


def _dump(table: Mapping[str, Any], source: str) -> DumpOptions:
    _only(table, set(DumpOptions.__dataclass_fields__), "dump", source)
    opts = DumpOptions()
    values = dict(table)
    if "final_action" in values:
        try:
            values["final_action"] = FinalAction(values["final_action"])
        except ValueError:
            raise ConfigError(
                "unknown final action",
                path=source,
                field="dump.final_action",
                expected=[a.value for a in FinalAction],
                found=values["final_action"],
            ) from None
    opts = replace(opts, **values)
    validate_dump_options(opts, source=source)
    return opts


def _check_codec(name: str, field_name: str, source: str) -> None:
    if name not in _COMPRESSORS:
        raise ConfigError(
            "unknown compression",
            path=source,
            field=field_name,
            expected=list(_COMPRESSORS),
            found=name,
        )


def validate_dump_options(opts: DumpOptions, *, source: str = "<options>") -> None:
    """Raise :class:`ConfigError` for an out-of-range dump option."""
    if not 0 <= opts.level <= 31:
        raise ConfigError(
            "dump level out of range",
            path=source,
            field="dump.level",
            expected="0-31",
            found=opts.level,
        )
    _check_codec(opts.compress, "dump.compress", source)
    if opts.verify not in ("full", "written"):
        head, _, tail = opts.verify.partition(":")
        if head != "sample" or not tail.isdigit() or int(tail) < 1:
            raise ConfigError(
                "bad verification coverage",
                path=source,
                field="dump.verify",
                expected="written, full or sample:N",
                found=opts.verify,
            )
    if opts.threads < 0 or opts.io_timeout <= 0:
        raise ConfigError(
            "threads must be >= 0 and io_timeout > 0", path=source, field="dump.threads/io_timeout"
        )


def _capture(table: Mapping[str, Any], source: str) -> CaptureOptions:
    _only(table, set(CaptureOptions.__dataclass_fields__), "capture", source)
    opts = replace(CaptureOptions(), **table)
    for key in ("kernel", "initrd", "append"):
        if not isinstance(getattr(opts, key), str):
            raise ConfigError("must be a string", path=source, field=f"capture.{key}")
    if not isinstance(opts.load, bool):
        raise ConfigError("must be true or false", path=source, field="capture.load")
    return opts


def _savecore(table: Mapping[str, Any], source: str) -> SavecoreOptions:
    _only(table, set(SavecoreOptions.__dataclass_fields__), "savecore", source)
    values = dict(table)
    if "min_free" in values:
        values["min_free"] = parse_size(
            values["min_free"], field_name="savecore.min_free", path=source
        )
    opts = replace(SavecoreOptions(), **values)
    if opts.format not in ("kdump", "elf"):
        raise ConfigError(
            "unknown output format",
            path=source,
            field="savecore.format",
            expected="kdump or elf",
            found=opts.format,
        )
    _check_codec(opts.compress, "savecore.compress", source)
    if opts.max_dumps < 0:
        raise ConfigError("max_dumps must be >= 0", path=source, field="savecore.max_dumps")
    if not isinstance(opts.threads, int) or opts.threads < 0:
        raise ConfigError(
            "threads must be an integer >= 0",
            path=source,
            field="savecore.threads",
            found=opts.threads,
        )
    return opts
