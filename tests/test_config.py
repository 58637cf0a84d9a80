# SPDX-License-Identifier: GPL-2.0-or-later
"""The configuration file (config.py): a full file, and each error naming the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from diskdump.config import (
    DEFAULT_CAPTURE_APPEND,
    WRITTEN_SAMPLE_EVERY,
    FinalAction,
    load_config,
    parse_size,
)
from diskdump.errors import ConfigError

FULL = """
[[device]]
path = "/dev/vdb"
driver = "block"

[[device]]
path = "/var/dump.img"

[dump]
allow_maybe = true
verify = "sample:64"
level = 31
compress = "lzo"
threads = 2
final_action = "poweroff"

[savecore]
dir = "/srv/crash"
format = "elf"
min_free = "2G"
max_dumps = 3

[capture]
kernel = "/boot/vmlinuz-test"

[erase]
symbols = ["init_net", "secret:64"]
system_map = "/boot/System.map"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "diskdump.toml"
    path.write_text(text)
    return path


def test_full_file(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, FULL), required=True)
    assert [d.path for d in config.devices] == ["/dev/vdb", "/var/dump.img"]
    assert [d.driver for d in config.devices] == ["block", "auto"]
    assert config.dump.level == 31 and config.dump.sample_every == 64
    assert config.dump.final_action is FinalAction.POWEROFF
    assert config.savecore.min_free == 2 << 30 and config.savecore.compress == "zlib"
    assert config.capture.kernel == "/boot/vmlinuz-test"
    assert config.capture.append == DEFAULT_CAPTURE_APPEND and config.capture.load
    assert config.erase_symbols == ("init_net", "secret:64")
    assert config.erase_system_map == "/boot/System.map"
    assert config.with_devices(["/dev/x"]).devices[0].path == "/dev/x"


@pytest.mark.parametrize(
    ("verify", "sample", "writes", "arm"),
    [
        ("written", WRITTEN_SAMPLE_EVERY, True, 1),
        ("full", 1, False, 1),
        ("sample:64", 64, False, 64),
    ],
)
def test_verify_modes(tmp_path: Path, verify: str, sample: int, writes: bool, arm: int) -> None:
    config = load_config(_write(tmp_path, f"[dump]\nverify = '{verify}'\n"), required=True)
    assert config.dump.sample_every == sample
    assert config.dump.verify_writes is writes
    assert config.dump.arm_sample_every == arm


def test_default_verification_checks_what_is_written(tmp_path: Path) -> None:
    dump = load_config(_write(tmp_path, ""), required=True).dump
    assert dump.verify == "written" and dump.verify_writes


def test_missing_file(tmp_path: Path) -> None:
    assert load_config(tmp_path / "none.toml").devices == ()
    with pytest.raises(ConfigError, match=r"configuration file does not exist on .*none\.toml"):
        load_config(tmp_path / "none.toml", required=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[dump\n", r"not valid TOML"),
        ("[dumps]\n", r"unknown configuration key in field dumps"),
        ("[dump]\nlevel = 32\n", r"dump level out of range in field dump\.level"),
        ("[dump]\ncompress = 'gzip'\n", r"unknown compression in field dump\.compress"),
        ("[savecore]\ncompress = 'gzip'\n", r"unknown compression in field savecore\.compress"),
        ("[savecore]\nformat = 'lkcd'\n", r"unknown output format in field savecore\.format"),
        ("[dump]\nverify = 'sample:0'\n", r"bad verification coverage in field dump\.verify"),
        ("[dump]\nfinal_action = 'explode'\n", r"unknown final action"),
        ("[[device]]\ndriver = 'block'\n", r"each device needs a path in field device\[0\]\.path"),
        ("[[device]]\npath = '/x'\ndriver = 'nfs'\n", r"unknown driver"),
        ("[capture]\nload = 'yes'\n", r"must be true or false in field capture\.load"),
        ("[erase]\nsymbols = 'init_net'\n", r"must be a list of strings in field erase\.symbols"),
        ("[savecore]\nmin_free = 'lots'\n", r"not a size in field savecore\.min_free"),
    ],
)
def test_bad_values_name_the_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert err.value.path == str(path)


@pytest.mark.parametrize(
    ("value", "size"), [(0, 0), ("512", 512), ("1K", 1024), ("1.5G", 3 << 29), ("2GiB", 2 << 30)]
)
def test_parse_size(value: str | int, size: int) -> None:
    assert parse_size(value) == size
