# SPDX-License-Identifier: GPL-2.0-or-later
"""The newc writer and reader, against each other (hypothesis) and against GNU cpio."""

from __future__ import annotations

import io
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskdump.errors import BadMagicError, CorruptDataError, TruncatedError
from diskdump.vm.cpio import HEADER_SIZE, CpioEntry, CpioWriter, iter_entries
from tests.conftest import need_tool

_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)
_PATHS = st.lists(_NAME, min_size=1, max_size=3).map("/".join)
_FILES = st.dictionaries(_PATHS, st.binary(max_size=300), min_size=1, max_size=8)


def _archive(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with CpioWriter(out) as cpio:
        for name, data in files.items():
            cpio.add_file(name, data, 0o640)
    return out.getvalue()


def _no_prefix_clash(files: dict[str, bytes]) -> bool:
    # a file may not also be a parent directory of another file
    return not any(other.startswith(name + "/") for name in files for other in files)


@settings(max_examples=60, deadline=None)
@given(_FILES.filter(_no_prefix_clash))
def test_round_trip_files(files: dict[str, bytes]) -> None:
    entries = list(iter_entries(_archive(files)))
    regular = {e.name: e.data for e in entries if stat.S_ISREG(e.mode)}
    assert regular == files
    assert all(stat.S_IMODE(e.mode) == 0o640 for e in entries if stat.S_ISREG(e.mode))
    dirs = {e.name for e in entries if stat.S_ISDIR(e.mode)}
    assert dirs == {"/".join(n.split("/")[:i]) for n in files for i in range(1, n.count("/") + 1)}


@settings(max_examples=60, deadline=None)
@given(
    name=_PATHS,
    mode=st.sampled_from([stat.S_IFREG | 0o755, stat.S_IFLNK | 0o777, stat.S_IFCHR | 0o600]),
    data=st.binary(max_size=64),
    rdev=st.tuples(st.integers(0, 255), st.integers(0, 255)),
)
def test_entry_pack_unpack(name: str, mode: int, data: bytes, rdev: tuple[int, int]) -> None:
    entry = CpioEntry(name, mode, data, rdevmajor=rdev[0], rdevminor=rdev[1])
    packed = entry.pack(ino=7)
    assert len(packed) % 4 == 0
    trailer = CpioEntry("TRAILER!!!", 0).pack(ino=0)
    assert list(iter_entries(packed + trailer)) == [entry]


def test_gnu_cpio_reads_ours(tmp_path: Path) -> None:
    cpio_tool = need_tool("cpio")
    out = io.BytesIO()
    with CpioWriter(out) as cpio:
        cpio.add_file("bin/tool", b"#!/bin/sh\necho hi\n", 0o755)
        cpio.add_symlink("bin/sh", "busybox")
        cpio.add_file("etc/conf", b"x" * 5001)
    listing = subprocess.run(
        [cpio_tool, "-t", "--quiet"], input=out.getvalue(), capture_output=True, check=True
    ).stdout.decode()
    assert listing.split() == ["bin", "bin/tool", "bin/sh", "etc", "etc/conf"]
    subprocess.run([cpio_tool, "-id", "--quiet"], input=out.getvalue(), cwd=tmp_path, check=True)
    assert (tmp_path / "etc/conf").read_bytes() == b"x" * 5001
    assert (tmp_path / "bin/sh").readlink() == Path("busybox")
    assert (tmp_path / "bin/tool").stat().st_mode & 0o777 == 0o755


def test_we_read_gnu_cpio(tmp_path: Path) -> None:
    cpio_tool = need_tool("cpio")
    (tmp_path / "d").mkdir()
    (tmp_path / "d/a").write_bytes(b"alpha\n")
    (tmp_path / "d/b").write_bytes(bytes(range(256)) * 3)
    made = subprocess.run(
        [cpio_tool, "-o", "-H", "newc", "--quiet"],
        input=b"d\nd/a\nd/b\n",
        cwd=tmp_path,
        capture_output=True,
        check=True,
    ).stdout
    got = {e.name: e.data for e in iter_entries(made) if stat.S_ISREG(e.mode)}
    assert got == {"d/a": b"alpha\n", "d/b": bytes(range(256)) * 3}


def test_bad_magic() -> None:
    data = bytearray(_archive({"a": b"1"}))
    data[0:6] = b"070707"  # the old ASCII format
    with pytest.raises(
        BadMagicError,
        match=r"bad cpio magic at offset 0x0 on x.cpio: expected b.070701., got b.070707.",
    ):
        list(iter_entries(bytes(data), path="x.cpio"))


def test_truncated() -> None:
    data = _archive({"a": b"1" * 100})
    with pytest.raises(TruncatedError, match=r"cpio data extends past the end at offset 0x"):
        list(iter_entries(data[: HEADER_SIZE + 2 + 50]))
    with pytest.raises(TruncatedError, match=r"cpio header extends past the end"):
        list(iter_entries(data[:-80]))  # inside the trailer header


def test_non_hex_field() -> None:
    data = bytearray(_archive({"a": b"1"}))
    data[6:14] = b"zzzzzzzz"
    with pytest.raises(CorruptDataError, match=r"cpio header field is not hexadecimal"):
        list(iter_entries(bytes(data)))


def test_writer_refuses_bad_paths_and_writes_after_close() -> None:
    cpio = CpioWriter(io.BytesIO())
    with pytest.raises(ValueError, match=r"bad archive path '\.\./etc'"):
        cpio.add_file("../etc", b"")
    cpio.close()
    with pytest.raises(ValueError, match="already closed"):
        cpio.add_file("x", b"")
