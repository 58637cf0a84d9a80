# SPDX-License-Identifier: GPL-2.0-or-later
"""Dump-device drivers and their registry. Drivers move blocks and know no formats.

Drivers register in the ``diskdump.devices`` entry-point group
(``pyproject.toml`` declares ``file`` and ``block``); :func:`open_device`
resolves the group when the configuration is read, never at panic time, so the
panic path only walks the list of already-open devices. ``driver="auto"``
picks ``block`` for a block device and ``file`` for anything else.

The memory and fault-injecting devices are for tests and dry runs and are not
registered: build them directly (:class:`~diskdump.devices.memory.MemoryDevice`,
:class:`~diskdump.devices.fault.FaultDevice`).
"""

from __future__ import annotations

import logging
import os
import stat
from importlib import import_module
from typing import Any

from diskdump.devices.base import DumpDevice
from diskdump.errors import ConfigError, DeviceNotReadyError

__all__ = ["ENTRY_POINT_GROUP", "available_drivers", "open_device", "resolve_driver"]

log = logging.getLogger(__name__)

#: the entry-point group drivers register in
ENTRY_POINT_GROUP = "diskdump.devices"


#: the drivers this package registers (pyproject.toml), found without reading the
#: installed distributions' metadata: importlib.metadata costs 22 ms and 2 MiB of
#: imports (email, csv, zipfile) on a path that runs in the capture kernel
_BUILTIN = {
    "file": ("diskdump.devices.file", "FileDevice"),
    "block": ("diskdump.devices.block", "BlockDevice"),
}


def available_drivers() -> list[str]:
    """Names of the registered drivers, sorted."""
    from importlib.metadata import entry_points  # slow: see _BUILTIN

    return sorted({*_BUILTIN, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})


def resolve_driver(name: str) -> type[DumpDevice]:
    """The driver class registered under ``name``.

    :raises ConfigError: no driver of that name is registered (the message lists those that are)
    """
    if name in _BUILTIN:
        module, attr = _BUILTIN[name]
        builtin: type[DumpDevice] = getattr(import_module(module), attr)
        return builtin
    from importlib.metadata import entry_points  # slow: see _BUILTIN

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, DumpDevice)):
                raise ConfigError("entry point is not a DumpDevice class", field=name, found=cls)
            return cls
    raise ConfigError(
        "unknown device driver", field="driver", expected=available_drivers(), found=name
    )


def open_device(
    path: str | os.PathLike[str],
    driver: str = "auto",
    *,
    writable: bool = False,
    **options: Any,
) -> DumpDevice:
    """Open ``path`` with the named driver (``"auto"``: by what the path is).

    :param path: a block device or an image file
    :param driver: a registered driver name, or ``"auto"``
    :param writable: open for writing (format, dump, re-initialise)
    :param options: driver-specific keyword options (``[[device]] options`` in the config)
    :raises DeviceNotReadyError: the path does not exist or the driver cannot open it
    :raises ConfigError: unknown driver or option
    """
    name = os.fspath(path)
    if driver == "auto":
        try:
            mode = os.stat(name).st_mode
        except OSError as err:
            raise DeviceNotReadyError(f"cannot open: {err.strerror}", device=name) from err
        driver = "block" if stat.S_ISBLK(mode) else "file"
    cls = resolve_driver(driver)
    log.debug("%s: driver %s (%s)", name, driver, cls.__qualname__)
    try:
        return cls(name, writable=writable, **options)  # type: ignore[call-arg]
    except TypeError as err:
        raise ConfigError(f"bad options for driver {driver}: {err}", device=name) from err
