# SPDX-License-Identifier: GPL-2.0-or-later
"""The capture initramfs, unpacked and run in a chroot on the host (no QEMU needed).

The chroot proves what the capture kernel relies on: the pruned stdlib holds
every module the diskdump package imports, the interpreter, kexec and the codec
find their libraries, the device drivers resolve through their entry points,
and the manifest written into the image matches the files as stored there.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import zstandard

from diskdump.cli.main import main
from diskdump.vm.assets import fetch_busybox, fetch_kernel
from diskdump.vm.capture import IMAGE_MANIFEST_PATH, CaptureOptions, build_capture_initramfs
from tests.conftest import need_root, need_tool
from tests.vm.conftest import need_vm_tools

pytestmark = [pytest.mark.vm, pytest.mark.root]

#: compressed size the image must stay below (measured 7.1 MiB; crash memory is scarce)
MAX_IMAGE_SIZE = 10 << 20
_IN_CHROOT = """
import sys
sys.path.insert(0, "/usr/lib/diskdump")
import importlib, json, os
names = []
for top, _dirs, files in os.walk("/usr/lib/diskdump/diskdump"):
    package = os.path.relpath(top, "/usr/lib/diskdump").replace("/", ".")
    names += [package + "." + f[:-3] for f in files if f.endswith(".py") and f != "__init__.py"]
for name in names:
    importlib.import_module(name)
from diskdump.panic.manifest import DEFAULT_MANIFEST_PATH, read_manifest, verify_manifest
from diskdump.devices import available_drivers
import zstandard
manifest = read_manifest(DEFAULT_MANIFEST_PATH)
print(json.dumps({
    "imported": len(names),
    "problems": verify_manifest(manifest, config="/etc/diskdump.toml"),
    "drivers": available_drivers(),
    "zstd_backend": zstandard.backend,
    "files": len(manifest.files),
}))
"""


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The capture image for Debian's 6.12 kernel (xz modules) and its unpacked tree."""
    need_root()
    need_vm_tools()
    cpio_tool = need_tool("cpio")
    kernel = fetch_kernel("6.12")
    work = tmp_path_factory.mktemp("initramfs")
    image = work / "capture.img"
    config = work / "diskdump.toml"
    config.write_text('[[device]]\npath = "/dev/vdb"\n\n[dump]\ncompress = "zstd"\n')
    options = CaptureOptions(
        modules_dir=kernel.modules,
        busybox=fetch_busybox(),
        config=config,
        manifest_copy=work / "manifest.json",
    )
    build_capture_initramfs(image, options)
    root = work / "root"
    root.mkdir()
    archive = zstandard.ZstdDecompressor().decompressobj().decompress(image.read_bytes())
    subprocess.run([cpio_tool, "-id", "--quiet"], input=archive, cwd=root, check=True)
    return image, root


def _chroot(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["chroot", str(root), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


def test_size_and_layout(unpacked: tuple[Path, Path]) -> None:
    image, root = unpacked
    assert image.stat().st_size < MAX_IMAGE_SIZE
    assert (root / "init").stat().st_mode & 0o111
    assert (root / "dev/console").is_char_device()
    assert (root / "bin/sh").readlink() == Path("/bin/busybox")
    # 6.12 builds virtio/virtio_pci in and ships virtio_blk as .ko.xz: decompressed here
    order = (root / "etc/modules.order").read_text().split()
    assert order == ["virtio_blk"]
    assert (root / "lib/modules/virtio_blk.ko").read_bytes().startswith(b"\x7fELF")
    assert "FINAL_ACTION=reboot" in (root / "etc/diskdump-init.env").read_text()


def test_every_module_imports_and_manifest_verifies(unpacked: tuple[Path, Path]) -> None:
    image, root = unpacked
    proc = _chroot(root, "/usr/bin/python3", "-SE", "-c", _IN_CHROOT)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["imported"] > 50
    assert facts["problems"] == []
    assert facts["drivers"] == ["block", "file"]
    assert facts["zstd_backend"] == "cext"
    copy = json.loads((image.parent / "manifest.json").read_text())
    assert copy == json.loads((root / IMAGE_MANIFEST_PATH.lstrip("/")).read_text())
    assert "/usr/bin/python3" in copy["files"] and "/etc/diskdump.toml" in copy["files"]


def test_cli_and_kexec_run(unpacked: tuple[Path, Path]) -> None:
    _image, root = unpacked
    proc = _chroot(root, "/usr/sbin/diskdump", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "savecore" in proc.stdout
    kexec = _chroot(root, "/usr/sbin/kexec", "--version")
    assert kexec.returncode == 0, kexec.stderr
    assert "kexec-tools" in kexec.stdout + kexec.stderr


def test_tampered_file_is_reported(unpacked: tuple[Path, Path]) -> None:
    _image, root = unpacked
    target = root / "usr/lib/diskdump/diskdump/panic/writer.py"
    original = target.read_bytes()
    try:
        target.write_bytes(original + b"\n# tampered\n")
        proc = _chroot(root, "/usr/bin/python3", "-SE", "-c", _IN_CHROOT)
        assert proc.returncode == 0, proc.stderr
        problems = json.loads(proc.stdout)["problems"]
        assert any(
            p.startswith("/usr/lib/diskdump/diskdump/panic/writer.py: sha256") for p in problems
        )
    finally:
        target.write_bytes(original)


def test_cli_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need_vm_tools()
    kernel = fetch_kernel("6.1")
    out = tmp_path / "capture.img"
    argv = ["initramfs", "build", "--output", str(out), "--json", "--config", os.devnull]
    code = main([*argv, "--modules-dir", str(kernel.modules), "--busybox", str(fetch_busybox())])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["size"] == out.stat().st_size < MAX_IMAGE_SIZE
    assert report["unpacked_size"] > report["size"]
