# SPDX-License-Identifier: GPL-2.0-or-later
"""The output policy of savecore: where saved dumps go and how they get there safely.

Layout of the crash directory (``[savecore] dir``, ``/var/crash`` by default)::

    /var/crash/                       root-owned, not group/world-writable, opened by fd
        .lock                         flock()ed by the running savecore (one at a time)
        .<name>.partial/              0700, a save under way (removed on failure and at
                                      the start of the next run if a run was killed)
        <host>-<YYYYmmdd-HHMMSS>/     0700, a complete save, renamed into place atomically
            vmcore | vmcore.encrypted 0600
            dmesg.txt                 0600
            info.json                 0600, carries ``dump_id`` (idempotence) and ``saved_at``
            info.txt                  0600
        latest -> <host>-<...>        symlink, replaced atomically (rename over it)

The rules are those of FreeBSD savecore (sbin/savecore/savecore.c: minfree,
temp file + rename, ``*.last`` link) made safe against a hostile crash directory:

* the crash directory is opened once with ``O_DIRECTORY | O_NOFOLLOW`` and every
  later operation is relative to that descriptor (``dir_fd=``), never following
  a symlink inside it (``O_NOFOLLOW``, ``follow_symlinks=False``, ``lstat``);
* a crash directory writable by group or others, or owned by another user than
  root or the caller, is refused (:class:`UnsafeOutputError`);
* a save goes into ``.<name>.partial`` (created 0700), files are created 0600
  with ``O_EXCL``, every file and the directory are fsynced, then the directory
  is renamed into place and the crash directory fsynced; only then is ``latest``
  updated and old saves pruned (``max_dumps``);
* free space is checked against the ``min_free`` reserve before writing (an
  estimate) and again while writing; on failure the partial output is removed
  and :class:`InsufficientSpaceError` gives the numbers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from diskdump.config import SavecoreOptions
from diskdump.errors import (
    InsufficientSpaceError,
    OutputExistsError,
    SaveError,
    UnsafeOutputError,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = [
    "INFO_JSON",
    "LATEST_LINK",
    "PARTIAL_SUFFIX",
    "TOOL_NAME",
    "CrashDirectory",
    "PartialSave",
    "SavedDump",
    "SpaceGuardedFile",
    "StorePolicy",
    "free_size",
    "require_space",
]

_log = logging.getLogger(__name__)
#: the configuration's defaults (config.py), the one place they are written
_DEFAULTS = SavecoreOptions()

#: name of the symlink to the newest save (FreeBSD savecore's ``*.last`` idea)
LATEST_LINK = "latest"
#: suffix of the hidden directory a save is written into before the rename
PARTIAL_SUFFIX = ".partial"
#: the file whose presence (with ``tool`` = :data:`TOOL_NAME`) marks a complete save
INFO_JSON = "info.json"
#: value of info.json's ``tool`` key; only such directories are ever pruned
TOOL_NAME = "diskdump"
#: lock file inside the crash directory; one savecore at a time
_LOCK_NAME = ".lock"
#: temporary name of the new ``latest`` link before it is renamed over the old one
_LATEST_TMP = ".latest.tmp"
#: mode of every saved directory: a dump holds every secret the machine held
_DIR_MODE = 0o700
#: mode of every saved file
_FILE_MODE = 0o600
#: re-check free space after this many bytes written to one file
_RECHECK_SIZE = 8 << 20
#: info.json larger than this is not ours (a few KiB in practice); read no more
_INFO_MAX_SIZE = 1 << 20
#: errno values that mean "the filesystem is full"
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class StorePolicy:
    """What the crash directory must keep free and how many saves it keeps.

    :param min_free: bytes that must stay free on the crash filesystem after a save
    :param max_dumps: complete saves kept; older ones are removed (0 = keep all)
    """

    min_free: int = _DEFAULTS.min_free
    max_dumps: int = _DEFAULTS.max_dumps


@dataclass(frozen=True, slots=True)
class SavedDump:
    """A complete save found in the crash directory.

    :param name: directory name inside the crash directory
    :param dump_id: the on-partition dump id recorded in info.json ("" if none)
    :param saved_at: ISO 8601 UTC time of the save, from info.json
    """

    name: str
    dump_id: str
    saved_at: str


class SpaceGuardedFile(io.FileIO):
    """A file in a partial save that keeps the ``min_free`` reserve while it grows.

    Free space is checked before the first write and again every
    :data:`_RECHECK_SIZE` bytes; a full filesystem (``ENOSPC``/``EDQUOT``) is
    reported as :class:`InsufficientSpaceError` too. Closing fsyncs the file.
    """

    def __init__(self, fd: int, *, path: str, dir_fd: int, min_free: int) -> None:
        super().__init__(fd, "wb", closefd=True)
        self.path = path
        self._dir_fd = dir_fd
        self._min_free = min_free
        self._unchecked = _RECHECK_SIZE  # check before the first write

    def write(self, b: ReadableBuffer, /) -> int:
        size = memoryview(b).nbytes
        self._unchecked += size
        if self._unchecked >= _RECHECK_SIZE:
            require_space(self._dir_fd, size, self._min_free, path=self.path)
            self._unchecked = 0
        try:
            return super().write(b)
        except OSError as err:
            if err.errno in _FULL_ERRNOS:
                raise _full_error(self.path, err) from err
            raise

    def close(self) -> None:
        if not self.closed:
            try:
                os.fsync(self.fileno())
            except OSError as err:
                super().close()
                if err.errno in _FULL_ERRNOS:
                    raise _full_error(self.path, err) from err
                raise
        super().close()


def free_size(dir_fd: int) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``dir_fd``."""
    st = os.fstatvfs(dir_fd)
    return st.f_bavail * st.f_frsize


def require_space(dir_fd: int, size: int, min_free: int, *, path: str) -> None:
    """Raise unless writing ``size`` more bytes keeps ``min_free`` bytes free.

    :param dir_fd: any descriptor on the crash filesystem
    :param size: bytes about to be written
    :param min_free: the reserve, in bytes
    :param path: shown in the message
    :raises InsufficientSpaceError: the write would cross the reserve
    """
    available = free_size(dir_fd)
    if available - size < min_free:
        raise InsufficientSpaceError(
            "saving would cross the free-space reserve",
            path=path,
            expected=f"{size} bytes to write + {min_free} bytes reserve = {size + min_free}",
            found=f"{available} bytes available",
            hint="free space, lower [savecore] min_free, or point --dir elsewhere",
        )


def _full_error(path: str, err: OSError) -> InsufficientSpaceError:
    return InsufficientSpaceError(
        f"filesystem full while saving ({err.strerror})",
        path=path,
        hint="free space, or point --dir at a larger filesystem",
    )


class PartialSave:
    """A save under way in ``.<name>.partial``; becomes ``<name>`` on :meth:`commit`.

    Use it as a context manager: leaving the block by an exception removes the
    partial directory, so a failed save leaves nothing behind.
    """

    def __init__(self, crash: CrashDirectory, name: str) -> None:
        self.crash = crash
        self.name = name
        self.partial_name = f".{name}{PARTIAL_SUFFIX}"
        os.mkdir(self.partial_name, _DIR_MODE, dir_fd=crash.fd)
        self.fd = os.open(self.partial_name, _OPEN_DIR, dir_fd=crash.fd)
        os.fchmod(self.fd, _DIR_MODE)  # mkdir's mode is filtered by the umask
        self.committed = False

    @property
    def path(self) -> str:
        """Path of the partial directory (for messages)."""
        return os.path.join(self.crash.path, self.partial_name)

    def create(self, filename: str) -> SpaceGuardedFile:
        """Create ``filename`` (mode 0600, must not exist) and return it open for writing.

        :raises OutputExistsError: the file already exists
        """
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(filename, flags, _FILE_MODE, dir_fd=self.fd)
        except FileExistsError:
            raise OutputExistsError(
                "output file already exists", path=os.path.join(self.path, filename)
            ) from None
        os.fchmod(fd, _FILE_MODE)
        return SpaceGuardedFile(
            fd,
            path=os.path.join(self.path, filename),
            dir_fd=self.fd,
            min_free=self.crash.policy.min_free,
        )

    def guard_progress(
        self, progress: Callable[[int, int], None] | None
    ) -> Callable[[int, int], None]:
        """A ``progress(done, total)`` callback that also keeps the ``min_free`` reserve.

        Writers that use ``pwrite`` on the descriptor bypass
        :class:`SpaceGuardedFile`; they all report progress, so the reserve is
        re-checked from there, every :data:`_RECHECK_SIZE` bytes of progress.

        :param progress: the caller's callback, chained (may be None)
        :raises InsufficientSpaceError: from the callback, once the reserve is crossed
        """
        last = [0]

        def check(done: int, total: int) -> None:
            if done - last[0] >= _RECHECK_SIZE or done >= total:
                last[0] = done
                require_space(self.fd, 0, self.crash.policy.min_free, path=self.path)
            if progress is not None:
                progress(done, total)

        return check

    def write_file(self, filename: str, data: bytes) -> None:
        """Write ``data`` as ``filename`` (0600), fsynced."""
        with self.create(filename) as out:
            view = memoryview(data)
            while view:
                done = out.write(view)
                view = view[done:]

    def write_json(self, filename: str, obj: Mapping[str, Any]) -> None:
        """Write ``obj`` as indented JSON text."""
        text = json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
        self.write_file(filename, text.encode("utf-8"))

    def commit(self) -> str:
        """Make the save durable and visible; returns its final directory name.

        fsync the partial directory, rename it to its final name (refusing to
        replace anything), fsync the crash directory.
        """
        os.fsync(self.fd)
        self.crash.rename_new(self.partial_name, self.name)
        self.committed = True
        os.close(self.fd)
        return self.name

    def abort(self) -> None:
        """Remove the partial directory and everything in it."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if not self.committed:
            self.crash.remove_tree(self.partial_name)

    def __enter__(self) -> PartialSave:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None and self.committed:
            return
        self.abort()
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            raise _full_error(self.path, exc) from exc


class CrashDirectory:
    """The crash directory, opened by descriptor, locked, and checked for safety.

    :param path: the crash directory; created (0700, parents as needed) when missing
    :param policy: free-space reserve and retention
    :raises UnsafeOutputError: a symlink, not a directory, group- or world-writable,
        or owned by another user
    :raises SaveError: another savecore holds the lock
    """

    def __init__(self, path: str, policy: StorePolicy) -> None:
        self.path = path
        self.policy = policy
        if not os.path.lexists(path):
            os.makedirs(path, mode=_DIR_MODE, exist_ok=True)
        try:
            self.fd = os.open(path, _OPEN_DIR)
        except OSError as err:
            raise self._open_error(err) from err
        try:
            self._check_safe()
            self._lock()
        except BaseException:
            os.close(self.fd)
            raise

    def _open_error(self, err: OSError) -> SaveError:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            return UnsafeOutputError(
                "crash directory is a symlink or not a directory",
                path=self.path,
                hint="give the real directory, not a symlink to it",
            )
        return SaveError(f"cannot open crash directory: {err.strerror}", path=self.path)

    def _check_safe(self) -> None:
        st = os.fstat(self.fd)
        loose = stat.S_IMODE(st.st_mode) & (stat.S_IWGRP | stat.S_IWOTH)
        if loose:
            raise UnsafeOutputError(
                "crash directory is writable by group or others",
                path=self.path,
                field="mode",
                expected="no group/other write bit (e.g. 0700)",
                found=oct(stat.S_IMODE(st.st_mode)),
                hint=f"chmod go-w {self.path}",
            )
        if st.st_uid not in (0, os.geteuid()):
            raise UnsafeOutputError(
                "crash directory is owned by another user",
                path=self.path,
                field="owner",
                expected=f"uid 0 or {os.geteuid()}",
                found=f"uid {st.st_uid}",
            )

    def _lock(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self._lock_fd = os.open(_LOCK_NAME, flags, _FILE_MODE, dir_fd=self.fd)
        except OSError as err:
            raise UnsafeOutputError(
                f"cannot open the lock file: {err.strerror}",
                path=os.path.join(self.path, _LOCK_NAME),
            ) from err
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SaveError(
                "another savecore is running on this crash directory", path=self.path
            ) from None

    def close(self) -> None:
        """Release the lock and the descriptor."""
        if self.fd >= 0:
            os.close(self._lock_fd)
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> CrashDirectory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inspection ---------------------------------------------------------

    def _entries(self) -> Iterator[tuple[str, os.stat_result]]:
        for name in sorted(os.listdir(self.fd)):
            try:
                yield name, os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            except FileNotFoundError:
                continue

    def saves(self) -> list[SavedDump]:
        """Complete saves made by diskdump, oldest first (by ``saved_at``, then name)."""
        found = []
        for name, st in self._entries():
            if name.startswith(".") or not stat.S_ISDIR(st.st_mode):
                continue
            info = self.read_info(name)
            if info is None or info.get("tool") != TOOL_NAME:
                continue
            found.append(SavedDump(name, str(info.get("dump_id", "")), str(info.get("saved_at"))))
        return sorted(found, key=lambda s: (s.saved_at, s.name))

    def read_info(self, name: str) -> dict[str, Any] | None:
        """info.json of the save ``name`` (never following a symlink), or None."""
        try:
            sub = os.open(name, _OPEN_DIR, dir_fd=self.fd)
        except OSError:
            return None
        try:
            fd = os.open(INFO_JSON, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sub)
        except OSError:
            return None
        finally:
            os.close(sub)
        with open(fd, "rb") as file:
            try:
                data = json.loads(file.read(_INFO_MAX_SIZE))
            except (ValueError, UnicodeDecodeError):
                _log.warning("ignoring %s/%s: not valid JSON", name, INFO_JSON)
                return None
        return data if isinstance(data, dict) else None

    def find_dump(self, dump_id: str) -> SavedDump | None:
        """The complete save of the dump ``dump_id``, if one exists."""
        return next((s for s in self.saves() if dump_id and s.dump_id == dump_id), None)

    # -- changes ------------------------------------------------------------

    def clean_partials(self) -> list[str]:
        """Remove ``.*.partial`` leftovers of a killed run; returns their names."""
        removed = []
        for name, _st in self._entries():
            if name.startswith(".") and name.endswith(PARTIAL_SUFFIX):
                _log.warning("removing %s left by an interrupted savecore", name)
                self.remove_tree(name)
                removed.append(name)
        if removed:
            os.fsync(self.fd)
        return removed

    def remove_tree(self, name: str) -> None:
        """Remove ``name`` inside the crash directory; a symlink is unlinked, not followed."""
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=self.fd)
        else:
            os.unlink(name, dir_fd=self.fd)

    def check_space(self, estimate_size: int) -> None:
        """Refuse a save of about ``estimate_size`` bytes that would cross ``min_free``.

        :raises InsufficientSpaceError: with the numbers
        """
        require_space(self.fd, estimate_size, self.policy.min_free, path=self.path)

    def unused_name(self, base: str) -> str:
        """``base``, or ``base-1``, ``base-2``... whichever names nothing (not even a link)."""
        candidate, number = base, 0
        while self._exists(candidate) or self._exists(f".{candidate}{PARTIAL_SUFFIX}"):
            number += 1
            candidate = f"{base}-{number}"
        return candidate

    def _exists(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def begin(self, base: str) -> PartialSave:
        """Start a save named ``base`` (or the first free ``base-N``)."""
        return PartialSave(self, self.unused_name(base))

    def rename_new(self, old: str, new: str) -> None:
        """Rename ``old`` to ``new`` inside the directory, refusing to replace anything."""
        if self._exists(new):
            raise OutputExistsError("save directory already exists", path=self.path, found=new)
        os.rename(old, new, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        os.fsync(self.fd)

    def update_latest(self, name: str) -> None:
        """Point ``latest`` at ``name`` atomically (a symlink renamed over the old one)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_LATEST_TMP, dir_fd=self.fd)
        os.symlink(name, _LATEST_TMP, dir_fd=self.fd)
        try:
            os.rename(_LATEST_TMP, LATEST_LINK, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError as err:
            os.unlink(_LATEST_TMP, dir_fd=self.fd)
            raise UnsafeOutputError(
                f"cannot replace {LATEST_LINK}: {err.strerror}",
                path=os.path.join(self.path, LATEST_LINK),
                hint="something that is not a symlink is in its place",
            ) from err
        os.fsync(self.fd)

    def prune(self, keep: str) -> list[str]:
        """Remove the oldest complete saves beyond ``max_dumps``; never ``keep``.

        :return: names of the removed saves
        """
        if self.policy.max_dumps <= 0:
            return []
        saves = [s for s in self.saves() if s.name != keep]
        excess = len(saves) + 1 - self.policy.max_dumps
        removed = []
        for old in saves[: max(excess, 0)]:
            _log.info("retention: removing %s (max_dumps %d)", old.name, self.policy.max_dumps)
            self.remove_tree(old.name)
            removed.append(old.name)
        if removed:
            os.fsync(self.fd)
        return removed
