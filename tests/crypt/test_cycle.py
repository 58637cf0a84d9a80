# SPDX-License-Identifier: GPL-2.0-or-later
"""Encrypted dumps through the commands: dump --encrypt-to, savecore, info, decrypt.

The memory is the synthetic 6.1 kernel (64 MiB) as an ELF vmcore file; the
dump partition is a formatted image file. Every command runs in process
through ``diskdump.cli.main.main`` and is checked by its exit status and
its output; pages are compared with the source through our kdump and ELF
readers (the real vmcore and the external readers are in test_real.py).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from diskdump.cli.main import main
from diskdump.formats.codecs import CompressFlag
from diskdump.formats.detect import opened_vmcore
from diskdump.formats.dumpfile import opened_dump_file, write_dump_file
from diskdump.formats.dumpheader import DumpFlag
from diskdump.formats.printk import format_dmesg
from diskdump.formats.summary import read_kernel_log
from tests.crypt.conftest import KeyPair, dump_to_image, fix_chunk_crcs
from tests.panic.helpers import kernel, write_vmcore
from tests.savecore.conftest import make_image, saves

#: image of the dump partition: the 64 MiB synthetic kernel is ~17 MiB with zstd
IMAGE_SIZE = 64 << 20
#: pages compared per read
_BATCH = 256


@pytest.fixture(scope="module")
def vmcore(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_vmcore(tmp_path_factory.mktemp("src") / "src.elf")


def _dump_and_save(tmp_path: Path, vmcore: Path, keys: KeyPair, *save_args: str) -> Path:
    image = tmp_path / "dump.img"
    make_image(image, IMAGE_SIZE)
    rc = main(
        [
            "dump",
            "--unarmed",
            "--no-mlock",
            "-q",
            "--device",
            str(image),
            "--source",
            str(vmcore),
            "--encrypt-to",
            str(keys.public_pem),
        ]
    )
    assert rc == 0
    crash = tmp_path / "crash"
    crash.mkdir(mode=0o700, exist_ok=True)
    rc = main(
        [
            "savecore",
            "--device",
            str(image),
            "--dir",
            str(crash),
            "--min-free",
            "0",
            "--quiet",
            *save_args,
        ]
    )
    assert rc == 0
    (saved,) = saves(crash)
    return saved


def _compare(source: Path, vmcore: Path) -> int:
    compared = 0
    with opened_vmcore(source) as src, opened_vmcore(vmcore) as out:
        for run in src.data_runs():
            for pfn in range(run.start_pfn, run.end_pfn, _BATCH):
                count = min(_BATCH, run.end_pfn - pfn)
                assert out.read_pages(pfn, count) == src.read_pages(pfn, count), hex(pfn)
                compared += count
    return compared


def _distinctive_page(source: Path) -> bytes:
    with opened_vmcore(source) as src:
        run = src.data_runs()[-1]
        for pfn in range(run.end_pfn - 1, run.start_pfn, -1):
            page = src.read_pages(pfn, 1)
            if len(set(page)) > 64:
                return page
    raise AssertionError("no distinctive page")


def test_saved_encrypted_then_decrypted_with_either_key(
    tmp_path: Path, vmcore: Path, keys: KeyPair, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = _dump_and_save(tmp_path, vmcore, keys)
    names = sorted(p.name for p in saved.iterdir())
    assert names == ["info.json", "info.txt", "vmcore.encrypted"]  # no dmesg.txt: log sealed
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in saved.iterdir())
    info = json.loads((saved / "info.json").read_text())
    assert info["status"] == "COMPLETE" and "ENCRYPTED" in info["flags"]
    assert info["encryption"]["saved_decrypted"] is False
    assert info["vmcore"]["file"] == "vmcore.encrypted"
    assert info["panic_string"].startswith("Kernel panic - not syncing")
    assert "no dmesg.txt" in (saved / "info.txt").read_text()
    sealed = (saved / "vmcore.encrypted").read_bytes()
    assert _distinctive_page(vmcore) not in sealed
    assert kernel().expected_dmesg.splitlines()[5].encode() not in sealed
    assert main(["check", str(tmp_path / "dump.img"), "--quiet"]) == 0  # re-initialised
    capsys.readouterr()

    assert main(["info", "--json", str(saved / "vmcore.encrypted")]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["encrypted"] is True and facts["release"] == "6.1.0-13-amd64"
    assert facts["key_id"] == info["encryption"]["key_id"]
    assert facts["panic"].startswith("Kernel panic - not syncing")
    assert main(["info", str(saved / "vmcore.encrypted")]) == 0
    text = capsys.readouterr().out
    assert (
        "key id:       " + facts["key_id"] in text and "crash time:   2025-11-24T16:00:00Z" in text
    )
    assert main(["info", "--dmesg", str(saved / "vmcore.encrypted")]) == 1
    assert "error: the kernel log of this dump is encrypted" in capsys.readouterr().err

    out = tmp_path / "vmcore"
    sealed_path = str(saved / "vmcore.encrypted")
    assert main(["decrypt", "--quiet", "--key", str(keys.private_pem), sealed_path, str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert _compare(vmcore, out) > 10_000
    capsys.readouterr()
    before = out.stat().st_mtime_ns
    argv = [
        "decrypt",
        "--quiet",
        "--key",
        str(keys.private_pem),
        str(saved / "vmcore.encrypted"),
        str(out),
    ]
    assert main(argv) == 1
    assert "error: output exists" in capsys.readouterr().err and out.stat().st_mtime_ns == before
    assert main([*argv, "--force"]) == 0
    with opened_vmcore(out) as core:
        assert format_dmesg(read_kernel_log(core)) == kernel().expected_dmesg
    elf = tmp_path / "vmcore.elf"
    capsys.readouterr()
    assert (
        main(
            [
                "decrypt",
                "--json",
                "--key",
                str(keys.private_pem),
                "--format",
                "elf",
                str(saved / "vmcore.encrypted"),
                str(elf),
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "elf" and report["size"] == elf.stat().st_size
    assert _compare(vmcore, elf) == report["pages"] > 10_000


def test_savecore_decrypt_with_writes_a_normal_vmcore(
    tmp_path: Path, vmcore: Path, x25519_keys: KeyPair
) -> None:
    saved = _dump_and_save(
        tmp_path, vmcore, x25519_keys, "--decrypt-with", str(x25519_keys.private_pem)
    )
    assert sorted(p.name for p in saved.iterdir()) == [
        "dmesg.txt",
        "info.json",
        "info.txt",
        "vmcore",
    ]
    assert (saved / "dmesg.txt").read_text() == kernel().expected_dmesg
    info = json.loads((saved / "info.json").read_text())
    assert info["encryption"]["saved_decrypted"] is True
    assert info["summary"]["release"] == "6.1.0-13-amd64"
    assert _compare(vmcore, saved / "vmcore") > 10_000


def test_the_configuration_names_both_keys(
    tmp_path: Path, vmcore: Path, x25519_keys: KeyPair
) -> None:
    image = tmp_path / "dump.img"
    make_image(image, IMAGE_SIZE)
    crash = tmp_path / "crash"
    crash.mkdir(mode=0o700)
    config = tmp_path / "diskdump.toml"
    config.write_text(
        f'[[device]]\npath = "{image}"\n[dump]\nencrypt_to = "{x25519_keys.public_pem}"\n'
        f'[savecore]\ndir = "{crash}"\nmin_free = 0\n'
        f'decrypt_with = "{x25519_keys.private_pem}"\n'
    )
    assert (
        main(
            [
                "dump",
                "--config",
                str(config),
                "--unarmed",
                "--no-mlock",
                "-q",
                "--source",
                str(vmcore),
            ]
        )
        == 0
    )
    assert main(["savecore", "--config", str(config), "--quiet", "--keep"]) == 0
    (saved,) = saves(crash)
    assert (saved / "vmcore").is_file()
    assert json.loads((saved / "info.json").read_text())["encryption"]["encrypted"] is True


def test_savecore_with_the_wrong_key_leaves_the_dump(
    tmp_path: Path,
    vmcore: Path,
    x25519_keys: KeyPair,
    other_keys: KeyPair,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = tmp_path / "dump.img"
    dump_to_image(image, vmcore, x25519_keys)
    crash = tmp_path / "crash"
    crash.mkdir(mode=0o700)
    capsys.readouterr()
    rc = main(
        [
            "savecore",
            "--device",
            str(image),
            "--dir",
            str(crash),
            "--min-free",
            "0",
            "--quiet",
            "--decrypt-with",
            str(other_keys.private_pem),
        ]
    )
    assert rc == 1
    assert "wrong key: the dump was encrypted to another public key" in capsys.readouterr().err
    assert saves(crash) == [] and not [n for n in os.listdir(crash) if n != ".lock"]
    assert main(["check", str(image), "--quiet"]) == 1  # still holds the dump


@pytest.fixture
def saved_encrypted(tmp_path: Path, vmcore: Path, x25519_keys: KeyPair) -> Path:
    return _dump_and_save(tmp_path, vmcore, x25519_keys) / "vmcore.encrypted"


def test_decrypt_with_the_wrong_key_fails_and_writes_nothing(
    tmp_path: Path, saved_encrypted: Path, other_keys: KeyPair, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "vmcore"
    out.parent.mkdir()
    assert (
        main(["decrypt", "--key", str(other_keys.private_pem), str(saved_encrypted), str(out)]) == 1
    )
    err = capsys.readouterr().err
    assert "error: wrong key: the dump was encrypted to another public key in field key_id" in err
    assert os.listdir(out.parent) == []


def _chunk_offsets(path: Path, key: object) -> list[tuple[int, int, int]]:
    """(chunk offset, payload size, sequence) of the zstd chunks that hold pages."""
    with opened_dump_file(str(path), private_key=key) as image:
        bs = image.header.block_size
        return [
            (r.lba * bs, r.header.payload_size, r.header.sequence)
            for r in image.chunks
            if r.header.present_count and r.header.codec is CompressFlag.ZSTD
        ]


@pytest.mark.parametrize("where", ["header", "payload", "tag"])
def test_decrypt_reports_a_changed_byte_in_any_chunk(
    tmp_path: Path,
    saved_encrypted: Path,
    x25519_keys: KeyPair,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    chunks = _chunk_offsets(saved_encrypted, x25519_keys.private)
    at, size, seq = chunks[len(chunks) // 2]
    # header: the codec field, zstd (0x20) becomes zlib (0x01): still a valid header
    offset, mask = {
        "header": (10, 0x21),
        "payload": (512 + size // 3, 0x80),
        "tag": (512 + size - 1, 0x80),
    }[where]
    offset += at
    data = bytearray(saved_encrypted.read_bytes())
    data[offset] ^= mask
    fix_chunk_crcs(data, at, payload=True, header=True)  # a deliberate tamperer
    bad = tmp_path / "bad.encrypted"
    bad.write_bytes(bytes(data))
    out = tmp_path / "dec" / "vmcore"
    out.parent.mkdir()
    assert (
        main(["decrypt", "--quiet", "--key", str(x25519_keys.private_pem), str(bad), str(out)]) == 1
    )
    err = capsys.readouterr().err
    assert (
        f"error: chunk {seq} fails authentication (tampered or corrupt) at offset {at + 512:#x}"
        in err
    )
    assert os.listdir(out.parent) == []  # the temporary file is gone too
    # without the crc fix the damage is told apart: a storage error, not a tag failure
    data = bytearray(saved_encrypted.read_bytes())
    data[at + 512 + size // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    assert (
        main(["decrypt", "--quiet", "--key", str(x25519_keys.private_pem), str(bad), str(out)]) == 1
    )
    assert (
        f"chunk {seq} payload checksum mismatch (stored bytes damaged)" in capsys.readouterr().err
    )


def test_decrypt_refuses_a_clear_dump_and_an_existing_output(
    tmp_path: Path, vmcore: Path, x25519_keys: KeyPair, capsys: pytest.CaptureFixture[str]
) -> None:
    from diskdump.devices import open_device
    from diskdump.devices.base import BlockIO
    from diskdump.formats.dumpimage import open_dump

    image = tmp_path / "dump.img"
    label = dump_to_image(image, vmcore, None)
    clear = tmp_path / "clear.dump"
    with open_device(image) as device, clear.open("wb") as out:
        dump = open_dump(BlockIO(device), label.reserve_blocks, name=str(image))
        assert not dump.header.flags & DumpFlag.ENCRYPTED
        write_dump_file(dump, out)
    capsys.readouterr()
    target = tmp_path / "vmcore"
    assert main(["decrypt", "--key", str(x25519_keys.private_pem), str(clear), str(target)]) == 1
    assert (
        "error: not an encrypted dump: nothing to decrypt in field flags" in capsys.readouterr().err
    )
    # the clear dump file is a readable image on its own: every page, no key
    with opened_dump_file(str(clear)) as dump:
        assert not dump.locked and dump.pages_held > 10_000
    assert not target.exists()
