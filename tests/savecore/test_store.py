# SPDX-License-Identifier: GPL-2.0-or-later
"""The savecore output policy: modes, atomic rename, symlinks, reserve, retention."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diskdump.errors import (
    InsufficientSpaceError,
    OutputExistsError,
    SaveError,
    UnsafeOutputError,
)
from diskdump.savecore.store import (
    INFO_JSON,
    LATEST_LINK,
    TOOL_NAME,
    CrashDirectory,
    StorePolicy,
)
from tests.conftest import need_root, need_tool

NO_RESERVE = StorePolicy(min_free=0, max_dumps=0)


@pytest.fixture
def crash(tmp_path: Path) -> Path:
    path = tmp_path / "crash"
    path.mkdir(mode=0o700)
    path.chmod(0o700)
    return path


def _save(cd: CrashDirectory, base: str, dump_id: str, saved_at: str, body: bytes = b"x") -> str:
    with cd.begin(base) as part:
        part.write_file("vmcore", body)
        part.write_json(INFO_JSON, {"tool": TOOL_NAME, "dump_id": dump_id, "saved_at": saved_at})
        return part.commit()


def test_save_is_renamed_into_place_with_private_modes(crash: Path) -> None:
    with CrashDirectory(str(crash), NO_RESERVE) as cd:
        name = _save(cd, "host-20260101-000000", "id1", "2026-01-01T00:00:00Z", b"core")
        cd.update_latest(name)
    saved = crash / name
    assert name == "host-20260101-000000"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o700
    for file in saved.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    assert (saved / "vmcore").read_bytes() == b"core"
    assert os.readlink(crash / LATEST_LINK) == name
    assert [p.name for p in crash.iterdir() if p.name.endswith(".partial")] == []


def test_modes_hold_under_a_permissive_umask(crash: Path) -> None:
    old = os.umask(0)
    try:
        with CrashDirectory(str(crash), NO_RESERVE) as cd:
            name = _save(cd, "h", "id", "t")
    finally:
        os.umask(old)
    assert stat.S_IMODE((crash / name).stat().st_mode) == 0o700
    assert stat.S_IMODE((crash / name / "vmcore").stat().st_mode) == 0o600


def test_missing_crash_directory_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "var" / "crash"
    with CrashDirectory(str(path), NO_RESERVE):
        pass
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_failed_save_leaves_nothing(crash: Path) -> None:
    with CrashDirectory(str(crash), NO_RESERVE) as cd:
        with pytest.raises(RuntimeError), cd.begin("h") as part:
            part.write_file("vmcore", b"half")
            raise RuntimeError("converter failed")
        assert cd.saves() == []
    assert sorted(p.name for p in crash.iterdir()) == [".lock"]


def test_stale_partial_is_removed_and_a_planted_link_not_followed(
    crash: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    stale = crash / ".h-1.partial"
    stale.mkdir()
    (stale / "vmcore").write_bytes(b"killed half way")
    (crash / ".h-2.partial").symlink_to(victim)
    with CrashDirectory(str(crash), NO_RESERVE) as cd:
        removed = cd.clean_partials()
    assert sorted(removed) == [".h-1.partial", ".h-2.partial"]
    assert (victim / "precious").read_text() == "keep me"
    assert not stale.exists() and not (crash / ".h-2.partial").is_symlink()


def test_symlinked_crash_directory_is_refused(crash: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(crash)
    with pytest.raises(UnsafeOutputError, match=r"crash directory is a symlink .* on .*/link$"):
        CrashDirectory(str(link), NO_RESERVE)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702, 0o1777])
def test_group_or_world_writable_directory_is_refused(crash: Path, mode: int) -> None:
    crash.chmod(mode)
    with pytest.raises(
        UnsafeOutputError,
        match=r"crash directory is writable by group or others in field mode "
        r".*got '0o1?7[0-7][0-7]'",
    ):
        CrashDirectory(str(crash), NO_RESERVE)
    assert not (crash / ".lock").exists()


def test_directory_owned_by_another_user_is_refused(crash: Path) -> None:
    need_root()
    os.chown(crash, 4242, 4242)
    with pytest.raises(UnsafeOutputError, match=r"owned by another user .*got 'uid 4242'"):
        CrashDirectory(str(crash), NO_RESERVE)


def test_planted_latest_link_is_replaced_not_followed(crash: Path, tmp_path: Path) -> None:
    victim = tmp_path / "etc"
    victim.mkdir()
    (crash / LATEST_LINK).symlink_to(victim)
    (crash / ".latest.tmp").symlink_to(victim / "passwd")
    with CrashDirectory(str(crash), NO_RESERVE) as cd:
        name = _save(cd, "h", "id", "t")
        cd.update_latest(name)
    assert list(victim.iterdir()) == []
    assert os.readlink(crash / LATEST_LINK) == name


def test_latest_that_is_a_directory_is_refused(crash: Path) -> None:
    (crash / LATEST_LINK).mkdir()
    (crash / LATEST_LINK / "x").write_text("x")
    with CrashDirectory(str(crash), NO_RESERVE) as cd:
        name = _save(cd, "h", "id", "t")
        with pytest.raises(UnsafeOutputError, match=r"cannot replace latest: .* on .*/latest$"):
            cd.update_latest(name)


def test_planted_link_at_the_save_name_is_left_alone(crash: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (crash / "h").symlink_to(victim)
    with CrashDirectory(str(crash), NO_RESERVE) as cd:
        name = _save(cd, "h", "id", "t")
    assert name == "h-1"
    assert list(victim.iterdir()) == []
    assert (crash / "h").is_symlink()


def test_existing_names_are_never_replaced(crash: Path) -> None:
    with CrashDirectory(str(crash), NO_RESERVE) as cd:
        (crash / "other").mkdir()
        with pytest.raises(OutputExistsError, match=r"save directory already exists on .*: got"):
            cd.rename_new("missing", "other")
        exists = pytest.raises(OutputExistsError, match=r"output file already exists on .*vmcore$")
        with exists, cd.begin("h") as part:
            part.write_file("vmcore", b"1")
            part.write_file("vmcore", b"2")


def test_second_savecore_is_locked_out(crash: Path) -> None:
    locked = pytest.raises(SaveError, match=r"another savecore is running .* on .*crash$")
    with CrashDirectory(str(crash), NO_RESERVE), locked:
        CrashDirectory(str(crash), NO_RESERVE)
    with CrashDirectory(str(crash), NO_RESERVE):
        pass


def test_retention_removes_only_the_oldest_diskdump_saves(crash: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (crash / "zz-not-ours").mkdir()
    (crash / "zz-link").symlink_to(victim)
    policy = StorePolicy(min_free=0, max_dumps=2)
    with CrashDirectory(str(crash), policy) as cd:
        _save(cd, "b", "id-b", "2026-01-02T00:00:00Z")
        _save(cd, "a", "id-a", "2026-01-03T00:00:00Z")
        newest = _save(cd, "c", "id-c", "2026-01-01T00:00:00Z")
        assert cd.prune(keep=newest) == ["b"]
        assert [s.name for s in cd.saves()] == ["c", "a"]
        assert cd.find_dump("id-a") is not None and cd.find_dump("id-b") is None
        assert cd.find_dump("") is None
    assert (crash / "zz-not-ours").is_dir() and (crash / "zz-link").is_symlink()


def test_max_dumps_zero_keeps_everything(crash: Path) -> None:
    with CrashDirectory(str(crash), NO_RESERVE) as cd:
        for i in range(4):
            _save(cd, f"s{i}", f"id{i}", f"t{i}")
        assert cd.prune(keep="s3") == []
        assert len(cd.saves()) == 4


def test_estimate_crossing_the_reserve_is_refused(crash: Path) -> None:
    with (
        CrashDirectory(str(crash), StorePolicy(min_free=1 << 60)) as cd,
        pytest.raises(
            InsufficientSpaceError,
            match=r"saving would cross the free-space reserve on .*crash: expected '4096 bytes "
            r"to write \+ 1152921504606846976 bytes reserve = \d+', got '\d+ bytes available'",
        ),
    ):
        cd.check_space(4096)


@given(info=st.dictionaries(st.text(min_size=1), st.one_of(st.integers(), st.text(), st.none())))
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_info_json_round_trips(crash: Path, info: dict[str, object]) -> None:
    with CrashDirectory(str(crash), NO_RESERVE) as cd:
        with cd.begin("rt") as part:
            part.write_json(INFO_JSON, info)
            name = part.commit()
        assert cd.read_info(name) == info
        cd.remove_tree(name)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    need_root()
    need_tool("mount")
    path.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_reserve_checked_again_while_writing_on_a_small_filesystem(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "small", "16m") as crash:
        policy = StorePolicy(min_free=4 << 20, max_dumps=0)
        with CrashDirectory(str(crash), policy) as cd:
            cd.check_space(1 << 20)  # the estimate says 1 MiB: fits
            with (
                pytest.raises(
                    InsufficientSpaceError,
                    match=r"cross the free-space reserve on .*vmcore: expected",
                ),
                cd.begin("h") as part,
                part.create("vmcore") as out,
            ):
                for _ in range(64):
                    out.write(b"\xaa" * (1 << 20))
            assert cd.saves() == []
        assert sorted(p.name for p in crash.iterdir()) == [".lock"]


def test_full_filesystem_is_reported_and_cleaned_up(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "tiny", "2m") as crash:
        full = pytest.raises(
            InsufficientSpaceError, match=r"filesystem full while saving \(No space left"
        )
        # small writes: the first fits, the filesystem fills before the next re-check
        with (
            CrashDirectory(str(crash), NO_RESERVE) as cd,
            full,
            cd.begin("h") as part,
            part.create("vmcore") as out,
        ):
            for _ in range(64):
                out.write(b"\x55" * (64 << 10))
        assert sorted(p.name for p in crash.iterdir()) == [".lock"]


def test_pwrite_writers_are_stopped_by_the_progress_guard(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "small", "16m") as crash:
        with CrashDirectory(str(crash), StorePolicy(min_free=8 << 20, max_dumps=0)) as cd:
            seen: list[tuple[int, int]] = []
            with (
                pytest.raises(
                    InsufficientSpaceError,
                    match=r"cross the free-space reserve on .*\.h\.partial: ",
                ),
                cd.begin("h") as part,
                part.create("vmcore") as out,
            ):
                guard = part.guard_progress(lambda done, total: seen.append((done, total)))
                step = 1 << 20
                for i in range(16):  # a pwrite writer, as the kdump writer is
                    os.pwrite(out.fileno(), b"\x11" * step, i * step)
                    guard((i + 1) * step, 16 * step)
            assert seen and seen[-1][0] < 16 << 20  # stopped before the end
        assert sorted(p.name for p in crash.iterdir()) == [".lock"]
