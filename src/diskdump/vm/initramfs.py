# SPDX-License-Identifier: GPL-2.0-or-later
"""Assemble initramfs images: busybox, kernel modules, host binaries with their libraries.

An :class:`Initramfs` collects members in memory-light form (host paths, small
byte strings) and writes one zstd-compressed newc archive (the Debian kernels
have CONFIG_RD_ZSTD=y). Host binaries are copied with every library ``ldd``
lists and the dynamic loader; ``ldd`` output is parsed in Python (vm-notes.md:
a mawk script with ``\\s`` once dropped kexec's libraries silently).

Guest scripts live beside this module as package data (``*.sh``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import zstandard

from diskdump.errors import VMError
from diskdump.vm.cpio import CpioWriter
from diskdump.vm.kmod import KernelModule

__all__ = ["Initramfs", "guest_script", "library_closure"]

log = logging.getLogger(__name__)

#: zstd level for archives: good ratio, still fast to build; the kernel decompresses any level
ZSTD_LEVEL = 12
#: /dev/console is character device 5:1 (Documentation/admin-guide/devices.txt)
CONSOLE_MAJOR, CONSOLE_MINOR = 5, 1
#: ldd lines: "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-... (0x...)"
_LDD_PATH = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")
#: directories every init expects
_BASE_DIRS = ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "run", "mnt", "root", "var")


def guest_script(name: str) -> bytes:
    """Contents of the guest script ``name`` shipped in the ``diskdump.vm`` package."""
    return resources.files("diskdump.vm").joinpath(name).read_bytes()


def library_closure(binary: Path) -> list[Path]:
    """Shared libraries and dynamic loader ``binary`` needs, as ``ldd`` lists them.

    :raises VMError: ldd fails or names a library that does not exist
    """
    try:
        proc = subprocess.run(
            ["ldd", str(binary)], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise VMError(f"cannot run ldd: {err}", path=str(binary)) from err
    if proc.returncode != 0:
        if "not a dynamic executable" in proc.stdout + proc.stderr:
            return []
        raise VMError("ldd failed", path=str(binary), found=proc.stderr.strip())
    libs = [Path(m.group(1)) for m in _LDD_PATH.finditer(proc.stdout)]
    for lib in libs:
        if not lib.exists():
            raise VMError("library listed by ldd does not exist", path=str(lib))
    return libs


@dataclass
class Initramfs:
    """Members of an initramfs image, written with :meth:`write`.

    Archive paths are absolute guest paths (``/bin/busybox``).
    """

    #: contents are read when a file is added: the manifest and the archive must see the
    #: same bytes even if the source tree changes while the image is built
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)

    def add_bytes(self, dest: str, data: bytes, perm: int = 0o644) -> None:
        """Add a file whose contents are ``data``."""
        self.files[dest] = (data, perm)

    def add_host_file(self, dest: str, source: Path, perm: int | None = None) -> None:
        """Add host file ``source`` (symlinks resolved) as ``dest``."""
        real = source.resolve()
        if not real.is_file():
            raise VMError("file for the initramfs does not exist", path=str(source))
        mode = stat.S_IMODE(real.stat().st_mode) if perm is None else perm
        self.files[dest] = (real.read_bytes(), mode)

    def add_symlink(self, dest: str, target: str) -> None:
        """Add a symbolic link."""
        self.symlinks[dest] = target

    def add_binary(self, source: Path, dest: str | None = None) -> None:
        """Add an executable and every library it links against, at their host paths."""
        self.add_host_file(dest or str(source), source, 0o755)
        for lib in library_closure(source):
            self.add_host_file(str(lib), lib, 0o755)

    def add_busybox(self, busybox: Path) -> None:
        """Add a static busybox as /bin/busybox with a link for each of its applets."""
        self.add_host_file("/bin/busybox", busybox, 0o755)
        try:
            listing = subprocess.run(
                [str(busybox), "--list-full"], capture_output=True, text=True, check=True
            ).stdout
        except (OSError, subprocess.CalledProcessError) as err:
            raise VMError(f"cannot list busybox applets: {err}", path=str(busybox)) from err
        for applet in listing.split():
            if applet != "bin/busybox":
                self.symlinks.setdefault("/" + applet, "/bin/busybox")

    def add_modules(self, modules: list[KernelModule]) -> None:
        """Add modules as /lib/modules/<name>.ko and their load order in /etc/modules.order."""
        for module in modules:
            self.add_bytes(f"/lib/modules/{module.name}.ko", module.data)
        order = "".join(f"{m.name}\n" for m in modules)
        self.add_bytes("/etc/modules.order", order.encode())

    def read(self, dest: str) -> bytes:
        """Contents of member ``dest``."""
        return self.files[dest][0]

    @property
    def unpacked_size(self) -> int:
        """Sum of the file sizes, in bytes (what the image occupies once unpacked)."""
        return sum(len(data) for data, _perm in self.files.values())

    def write(self, output: Path, *, level: int = ZSTD_LEVEL) -> int:
        """Write the zstd-compressed newc archive to ``output`` (atomically).

        Archives stay compressed even when their files are: Linux 6.1 fails to find
        an uncompressed archive appended to a zstd one ("invalid magic at start of
        compressed archive").

        :param level: zstd level; a low one for archives of already-compressed files
        :return: the size written in bytes
        """
        tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
        with contextlib.ExitStack() as stack:
            raw = stack.enter_context(open(tmp, "wb"))
            compressor = zstandard.ZstdCompressor(level=level)
            out = stack.enter_context(compressor.stream_writer(raw, closefd=False))
            cpio = stack.enter_context(CpioWriter(out))
            for name in _BASE_DIRS:
                cpio.add_dir(name)
            cpio.add_chardev("dev/console", CONSOLE_MAJOR, CONSOLE_MINOR)
            for dest in sorted(self.files):
                cpio.add_file(dest, self.read(dest), self.files[dest][1])
            for dest in sorted(self.symlinks):
                cpio.add_symlink(dest, self.symlinks[dest])
        tmp.rename(output)
        size = output.stat().st_size
        log.info("wrote %s: %d bytes (%d unpacked)", output, size, self.unpacked_size)
        return size
