# SPDX-License-Identifier: GPL-2.0-or-later
"""Kernels and tools for the QEMU tier, fetched once into a cache directory.

The cache is ``$DISKDUMP_CACHE`` or ``~/.cache/diskdump``, never inside the git
tree. Debian packages are fetched with ``apt-get download`` and unpacked with
``dpkg -x`` (nothing is installed into the host's /boot)::

    ~/.cache/diskdump/
        .lock                      fcntl lock: one fetch at a time across processes
        debs/*.deb                 what apt-get download fetched
        kernels/<release>/         dpkg -x of linux-image-<release>
            boot/vmlinuz-<release>
            lib/modules/<release>/
        kernels/<release>-dbg/vmlinux-<release>   the debug vmlinux only (for crash)
        busybox/bin/busybox        dpkg -x of busybox-static
        vmcores/                   QMP dumps, keyed by kernel release (vmcores.py)

Kernel series: "6.1" is the ABI that Debian 12's ``linux-image-amd64`` depends
on; "6.12" is the newest ``linux-image-6.12.*+deb12-amd64`` apt knows.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from diskdump.errors import VMError

__all__ = [
    "KernelAssets",
    "cache_dir",
    "cache_lock",
    "fetch_busybox",
    "fetch_debug_vmlinux",
    "fetch_kernel",
    "kernel_package",
]

log = logging.getLogger(__name__)

#: environment variable that moves the cache
CACHE_ENV = "DISKDUMP_CACHE"
#: Debian 12's kernel meta-package; its dependency names the current 6.1 ABI
_META_PACKAGE = "linux-image-amd64"
#: 6.1 ABI packages (linux-image-6.1.0-56-amd64) and bookworm's 6.12 packages
_SERIES_PATTERNS = {
    "6.1": re.compile(r"^linux-image-(6\.1\.0-(\d+)-amd64)$"),
    "6.12": re.compile(r"^linux-image-(6\.12\.(\d+)\+deb12-amd64)$"),
}
#: marker written once a package is completely unpacked
_COMPLETE = ".complete"
#: seconds allowed for apt-get download of one package
_DOWNLOAD_TIMEOUT = 1800


def cache_dir() -> Path:
    """The cache directory (created if needed): ``$DISKDUMP_CACHE`` or ``~/.cache/diskdump``."""
    env = os.environ.get(CACHE_ENV)
    path = Path(env) if env else Path.home() / ".cache" / "diskdump"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def cache_lock(name: str = "assets") -> Iterator[None]:
    """Hold an exclusive fcntl lock on ``<cache>/.<name>.lock`` (blocks until free)."""
    lock_path = cache_dir() / f".{name}.lock"
    with open(lock_path, "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True, slots=True)
class KernelAssets:
    """An unpacked Debian kernel package.

    :param release: ``uname -r`` of the kernel (``6.1.0-56-amd64``)
    :param root: the ``dpkg -x`` directory
    """

    release: str
    root: Path

    @property
    def vmlinuz(self) -> Path:
        """The bzImage."""
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def config(self) -> Path:
        """The kernel's build configuration."""
        return self.root / "boot" / f"config-{self.release}"

    @property
    def system_map(self) -> Path:
        """System.map of the kernel."""
        return self.root / "boot" / f"System.map-{self.release}"

    @property
    def modules(self) -> Path:
        """``lib/modules/<release>`` inside the unpacked package."""
        return self.root / "lib" / "modules" / self.release


def _run(argv: list[str], *, cwd: Path | None = None, timeout: float = 120) -> str:
    try:
        proc = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise VMError(f"cannot run {argv[0]}: {err}", hint="make deps installs it") from err
    if proc.returncode != 0:
        raise VMError(
            f"{' '.join(argv[:2])} failed",
            found=proc.stderr.strip()[-400:] or f"exit {proc.returncode}",
        )
    return proc.stdout


def kernel_package(series: str) -> str:
    """Name of the Debian 12 package of kernel ``series`` ("6.1" or "6.12"), asking apt-cache.

    :raises VMError: unknown series, or apt knows no such package
    """
    pattern = _SERIES_PATTERNS.get(series)
    if pattern is None:
        raise VMError(
            "unknown kernel series", field="kernel", expected=sorted(_SERIES_PATTERNS), found=series
        )
    if series == "6.1":
        names = re.findall(r"Depends: (\S+)", _run(["apt-cache", "depends", _META_PACKAGE]))
    else:
        names = _run(["apt-cache", "pkgnames", "linux-image-6.12."]).split()
    found = [(int(m.group(2)), m.group(0)) for n in names if (m := pattern.match(n))]
    if not found:
        raise VMError(
            f"no linux-image package for kernel {series} is known to apt",
            hint="run apt-get update (bookworm and bookworm-security sources)",
        )
    return max(found)[1]


def _unpack(package: str, dest: Path) -> None:
    """apt-get download ``package`` and dpkg -x it into ``dest`` (atomically)."""
    deb = _download(package)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
    try:
        _run(["dpkg-deb", "-x", str(deb), str(tmp)], timeout=600)
        (tmp / _COMPLETE).write_text(deb.name + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def fetch_kernel(series: str = "6.1") -> KernelAssets:
    """Download and unpack the Debian kernel of ``series`` unless cached; idempotent and locked.

    :param series: "6.1" or "6.12"
    :return: the unpacked kernel
    :raises VMError: apt-get or dpkg failed, or the package lacks a bzImage
    """
    package = kernel_package(series)
    release = package.removeprefix("linux-image-")
    root = cache_dir() / "kernels" / release
    root.parent.mkdir(parents=True, exist_ok=True)
    with cache_lock():
        if not (root / _COMPLETE).exists():
            _unpack(package, root)
    assets = KernelAssets(release=release, root=root)
    if not assets.vmlinuz.is_file():
        raise VMError("kernel package holds no bzImage", path=str(assets.vmlinuz))
    return assets


def fetch_busybox() -> Path:
    """Path of a static busybox from Debian's busybox-static package (fetched once).

    :raises VMError: apt-get or dpkg failed
    """
    root = cache_dir() / "busybox"
    with cache_lock():
        if not (root / _COMPLETE).exists():
            _unpack("busybox-static", root)
    binary = root / "bin" / "busybox"
    if not binary.is_file():
        raise VMError("busybox-static holds no /bin/busybox", path=str(binary))
    return binary


def _download(package: str) -> Path:
    debs = cache_dir() / "debs"
    debs.mkdir(exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        log.info("downloading %s", package)
        _run(["apt-get", "download", package], cwd=debs, timeout=_DOWNLOAD_TIMEOUT)
        found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        raise VMError("apt-get download left no package file", path=str(debs), found=package)
    return found[-1]


def fetch_debug_vmlinux(series: str = "6.1") -> Path:
    """The debug vmlinux of kernel ``series`` (for crash), extracted alone from its -dbg package.

    The -dbg package is about 860 MB (5.6 GB installed); only
    ``usr/lib/debug/boot/vmlinux-<release>`` (about 630 MB) is extracted, once.

    :raises VMError: apt-get, dpkg-deb or tar failed
    """
    release = kernel_package(series).removeprefix("linux-image-")
    dest = cache_dir() / "kernels" / f"{release}-dbg" / f"vmlinux-{release}"
    with cache_lock():
        if dest.is_file():
            return dest
        deb = _download(f"linux-image-{release}-dbg")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
        member = f"./usr/lib/debug/boot/vmlinux-{release}"
        try:
            _extract_member(deb, member, tmp)
            (tmp / member).rename(dest)
            deb.unlink()  # 860 MB; only the vmlinux is kept
        finally:
            shutil.rmtree(tmp)
    return dest


def _extract_member(deb: Path, member: str, into: Path) -> None:
    # dpkg-deb --fsys-tarfile DEB | tar -x MEMBER, without a shell
    try:
        with subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE
        ) as src:
            done = subprocess.run(
                ["tar", "-x", "-C", str(into), member],
                stdin=src.stdout,
                capture_output=True,
                timeout=_DOWNLOAD_TIMEOUT,
                check=False,
            )
            if src.stdout is not None:
                src.stdout.close()
    except (OSError, subprocess.TimeoutExpired) as err:
        raise VMError(f"cannot extract {member}: {err}", path=str(deb)) from err
    if done.returncode != 0 or src.returncode != 0:
        raise VMError(f"cannot extract {member}", path=str(deb), found=done.stderr.decode()[-300:])
