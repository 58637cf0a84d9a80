# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump dump``, ``arm`` and ``status`` on image files, in-process and as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diskdump.cli.exitcodes import ExitCode
from diskdump.cli.main import main
from diskdump.devices import open_device
from diskdump.devices.base import BlockIO
from diskdump.formats.dumpheader import DumpFlag
from diskdump.formats.dumpimage import open_dump
from diskdump.partition.ops import format_device, read_label
from tests.panic.helpers import assert_pages_match, file_digest, kernel, write_vmcore

MIB = 1 << 20
SRC_DIR = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def vmcore(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_vmcore(tmp_path_factory.mktemp("vmcore") / "vmcore")


def _image(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, size)
    with open_device(path, writable=True) as dev:
        format_device(dev, check=False)
    return path


def _meminfo(path: Path, kib: int) -> Path:
    path.write_text(f"MemTotal:       {kib} kB\nMemFree:        1000 kB\n")
    return path


def _read(path: Path):  # type: ignore[no-untyped-def]
    dev = open_device(path)
    label = read_label(dev)
    return open_dump(BlockIO(dev), label.reserve_blocks, name=str(path))


def test_dump_unarmed_complete(
    tmp_path: Path, vmcore: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = _image(tmp_path / "d.img", 64 * MIB)
    rc = main(
        [
            "dump",
            "--unarmed",
            "--device",
            str(img),
            "--source",
            str(vmcore),
            "--no-mlock",
            "--compress",
            "zlib",
            "--threads",
            "2",
        ]
    )
    out = capsys.readouterr()
    assert rc == ExitCode.OK
    assert " complete on " in out.out and "100.0% of 16287 pages" in out.err
    image = _read(img)
    assert image.header.flags & DumpFlag.UNARMED and not image.incomplete
    assert image.metadata.source == f"{vmcore} (elf)"
    assert_pages_match(image, kernel().source)


def test_dump_incomplete_exit_4_and_json(
    tmp_path: Path, vmcore: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = _image(tmp_path / "small.img", 8 * MIB)
    first = tmp_path / "unformatted.img"
    first.write_bytes(bytes(MIB))
    rc = main(
        [
            "dump",
            "--unarmed",
            "--device",
            str(first),
            "--device",
            str(img),
            "--source",
            str(vmcore),
            "--no-mlock",
            "--json",
        ]
    )
    assert rc == ExitCode.DUMP_INCOMPLETE == 4
    doc = json.loads(capsys.readouterr().out)
    assert doc["complete"] is False and "truncated" in doc["flags"]
    assert doc["device"] == str(img) and 0 < doc["pages_written"] < doc["pages_planned"]
    assert any(e.startswith(f"{first}: ") for e in doc["events"])
    image = _read(img)
    assert image.incomplete
    assert_pages_match(image, kernel().source)


def test_dump_without_manifest_refuses(
    tmp_path: Path, vmcore: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = _image(tmp_path / "d.img", 64 * MIB)
    before = file_digest(img)
    rc = main(
        [
            "dump",
            "--device",
            str(img),
            "--source",
            str(vmcore),
            "--manifest",
            str(tmp_path / "none.json"),
        ]
    )
    assert rc == ExitCode.FAILURE
    assert "no manifest: the dump writer was never armed" in capsys.readouterr().err
    assert file_digest(img) == before


def test_arm_status_cycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = _image(tmp_path / "d.img", 64 * MIB)
    manifest = tmp_path / "manifest.json"
    small = _meminfo(tmp_path / "meminfo", 16 * 1024)
    huge = _meminfo(tmp_path / "meminfo-huge", 64 * 1024 * 1024)
    loaded, unloaded = tmp_path / "loaded", tmp_path / "unloaded"
    loaded.write_text("1\n")
    unloaded.write_text("0\n")
    base = ["--device", str(img), "--manifest", str(manifest)]
    assert main(["arm", "--no-load", *base, "--meminfo", str(huge)]) == ExitCode.NOT_READY
    out = capsys.readouterr().out
    assert "not armed: no device can take the dump; the best usable one is short by" in out
    assert not manifest.exists()
    assert main(["arm", "--no-load", *base, "--meminfo", str(small)]) == ExitCode.OK
    assert "armed: manifest of" in capsys.readouterr().out
    doc = json.loads(manifest.read_text())
    assert str(Path(sys.executable).resolve()) in doc["files"]
    assert any(p.endswith("diskdump/panic/writer.py") for p in doc["files"])
    ok = main(["status", *base, "--meminfo", str(small), "--kexec-crash-loaded", str(loaded)])
    assert ok == ExitCode.OK, capsys.readouterr().out
    capsys.readouterr()
    rc = main(
        ["status", *base, "--meminfo", str(huge), "--kexec-crash-loaded", str(unloaded), "--json"]
    )
    assert rc == ExitCode.NOT_READY == 5
    state = json.loads(capsys.readouterr().out)
    assert state["ready"] is False
    assert any("no capture kernel loaded" in r for r in state["reasons"])
    assert any("too small by" in r for r in state["reasons"])


def _run(args: list[str], pythonpath: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    return subprocess.run(
        [sys.executable, "-m", "diskdump.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_manifest_mismatch_writes_nothing(tmp_path: Path, vmcore: Path) -> None:
    copy = tmp_path / "src"
    shutil.copytree(
        SRC_DIR / "diskdump", copy / "diskdump", ignore=shutil.ignore_patterns("__pycache__")
    )
    img = _image(tmp_path / "d.img", 64 * MIB)
    manifest = tmp_path / "m.json"
    meminfo = _meminfo(tmp_path / "meminfo", 16 * 1024)
    arm = _run(
        [
            "arm",
            "--no-load",
            "--device",
            str(img),
            "--manifest",
            str(manifest),
            "--meminfo",
            str(meminfo),
        ],
        copy,
    )
    assert arm.returncode == 0, arm.stderr
    armed = json.loads(manifest.read_text())["files"]
    assert str(copy / "diskdump" / "formats" / "chunk.py") in armed
    victim = copy / "diskdump" / "formats" / "chunk.py"
    original = victim.read_bytes()
    victim.write_bytes(original.replace(b"self-describing", b"self-describinG", 1))
    before = file_digest(img)
    dump = [
        "dump",
        "--device",
        str(img),
        "--source",
        str(vmcore),
        "--manifest",
        str(manifest),
        "--no-mlock",
    ]
    refused = _run(dump, copy)
    assert refused.returncode == ExitCode.FAILURE
    assert "does not match its manifest (1 differences); refusing to write" in refused.stderr
    assert f"{victim}: sha256 " in refused.stderr
    assert file_digest(img) == before  # not one byte written
    victim.write_bytes(original)
    done = _run(dump, copy)
    assert done.returncode == ExitCode.OK, done.stderr
    assert file_digest(img) != before
    assert not (_read(img).header.flags & DumpFlag.UNARMED)


def test_dump_with_config_file(
    tmp_path: Path, vmcore: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "corrupt.img"
    good = _image(tmp_path / "good.img", 64 * MIB)
    _image(bad, 64 * MIB)
    with open(bad, "r+b") as f:  # one block of the dump area no longer holds its pattern
        f.seek(4000 * 4096)
        f.write(b"\xff" * 16)
    config = tmp_path / "diskdump.toml"
    config.write_text(
        f'[[device]]\npath = "{bad}"\ndriver = "file"\n\n'
        f'[[device]]\npath = "{good}"\n\n'
        '[dump]\ncompress = "lzo"\nlevel = 0\nverify = "full"\n'
    )
    rc = main(
        [
            "dump",
            "--unarmed",
            "--config",
            str(config),
            "--source",
            str(vmcore),
            "--no-mlock",
            "--json",
        ]
    )
    assert rc == ExitCode.OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["device"] == str(good)
    assert any(e.startswith(f"{bad}: skipped: pattern fails on 1 of ") for e in doc["events"])
    image = _read(good)
    assert image.header.codec == 0x02 and image.header.dump_level == 0
    assert_pages_match(image, kernel().source)


def test_dump_from_a_kdump_source_with_zero_pages_filtered(tmp_path: Path, vmcore: Path) -> None:
    kdump = tmp_path / "vmcore.kdump"
    assert (
        main(
            [
                "convert",
                "--format",
                "kdump",
                "--compress",
                "zlib",
                "--level",
                "1",
                "--quiet",
                str(vmcore),
                str(kdump),
            ]
        )
        == ExitCode.OK
    )
    img = _image(tmp_path / "d.img", 64 * MIB)
    rc = main(
        [
            "dump",
            "--unarmed",
            "--device",
            str(img),
            "--source",
            str(kdump),
            "--no-mlock",
            "-q",
            "--level",
            "1",
        ]
    )
    assert rc == ExitCode.OK
    image = _read(img)
    assert image.metadata.source == f"{kdump} (kdump)"
    assert image.metadata.kernel_log == kernel().expected_dmesg
    # the kdump file left out the zero pages: the dump holds exactly what it holds
    from diskdump.formats.detect import opened_vmcore

    with opened_vmcore(kdump) as source:
        assert list(image.data_runs()) == list(source.data_runs())
        assert_pages_match(image, source)
