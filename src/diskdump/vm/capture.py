# SPDX-License-Identifier: GPL-2.0-or-later
"""The capture initramfs: what the capture kernel runs after a panic.

Contents (one zstd-compressed newc archive)::

    /init                          capture-init.sh: mounts, insmod, `diskdump dump`, final action
    /etc/common.sh                 shell helpers shared with the QEMU guests
    /etc/diskdump-init.env         FINAL_ACTION (from the configuration), WAIT_DISK
    /etc/diskdump.toml             the configuration (devices, dump options)
    /var/lib/diskdump/manifest.json   SHA-256 of every writer file *as stored in the image*
                                   (panic/manifest.py format; `dump` verifies it first)
    /etc/modules.order, /lib/modules/*.ko   storage modules, decompressed, in load order
    /bin/busybox + applet links    static busybox (Debian's busybox-static)
    /usr/sbin/kexec + libraries    kexec-tools (arming from the image, reboot -f)
    /usr/bin/python3 + pruned stdlib + diskdump + zstandard   (pyenv.py)

The image is used as-is by ``diskdump arm`` on a real host and by the QEMU
harness, which appends a second archive for its first-stage role (cycle.py).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from diskdump.config import DEFAULT_CONFIG_PATH, Config, load_config, parse_config
from diskdump.errors import VMError
from diskdump.panic.manifest import DEFAULT_MANIFEST_PATH, Manifest
from diskdump.vm.initramfs import Initramfs, guest_script
from diskdump.vm.kmod import resolve_modules
from diskdump.vm.pyenv import PACKAGE_ROOT, SYSTEM_PYTHON, PythonClosure, add_python

__all__ = [
    "CAPTURE_MODULES",
    "IMAGE_CONFIG_PATH",
    "IMAGE_MANIFEST_PATH",
    "CaptureImage",
    "CaptureOptions",
    "build_capture_initramfs",
]

log = logging.getLogger(__name__)

#: storage and firmware modules for a QEMU/KVM guest (virtio); a host adds its own
CAPTURE_MODULES = ("virtio_pci", "virtio_blk")
#: where the configuration sits inside the image (capture-init.sh passes it to `dump`)
IMAGE_CONFIG_PATH = "/etc/diskdump.toml"
#: where the manifest sits inside the image (where `dump` looks for it)
IMAGE_MANIFEST_PATH = str(DEFAULT_MANIFEST_PATH)
#: image paths of the writer's files the manifest covers (panic/manifest.py: writer_files)
_WRITER_PREFIXES = (f"{PACKAGE_ROOT}/diskdump/", f"{PACKAGE_ROOT}/zstandard/")
_WRITER_SUFFIXES = (".py", ".so")
#: codecs the image carries: zstandard, and zlib/none from the interpreter
_IMAGE_CODECS = ("zstd", "zlib", "none")
#: the image's interpreter is the host's /usr/bin/python3 (same minor version as this one)
_SYSTEM_PYTHON_VERSION = sys.version
#: kexec-tools' binary on Debian
KEXEC = Path("/usr/sbin/kexec")


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    """What goes into a capture initramfs.

    :param modules_dir: ``lib/modules/<release>`` of the capture kernel (None: no modules)
    :param modules: module names to load, dependencies resolved
    :param config: configuration file (None: /etc/diskdump.toml if it exists, else defaults)
    :param config_text: configuration contents, instead of ``config``
    :param manifest_copy: also write the image's manifest to this file
    :param busybox: static busybox (None: the host's ``busybox``)
    :param wait_disk: block device /init waits for before running the writer
    """

    modules_dir: Path | None = None
    modules: tuple[str, ...] = CAPTURE_MODULES
    config: Path | None = None
    config_text: str | None = None
    manifest_copy: Path | None = None
    busybox: Path | None = None
    wait_disk: str = ""


@dataclass(frozen=True, slots=True)
class CaptureImage:
    """A built capture initramfs.

    :param size: compressed size in bytes (what ``kexec -p`` loads into crash memory)
    :param unpacked_size: size of its files in bytes (what the capture kernel's rootfs holds)
    """

    path: Path
    size: int
    unpacked_size: int
    stdlib_modules: int
    files: int


def _config(options: CaptureOptions) -> tuple[Config, bytes]:
    if options.config_text is not None:
        text = options.config_text
        try:
            parsed = parse_config(tomllib.loads(text), source="<harness>")
        except tomllib.TOMLDecodeError as err:
            raise VMError(f"harness configuration is not TOML: {err}") from err
        return parsed, text.encode()
    path = options.config
    if path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    if path is None:
        return Config(), b"# defaults: no /etc/diskdump.toml on the host\n"
    return load_config(path, required=True), path.read_bytes()


def _busybox(options: CaptureOptions) -> Path:
    if options.busybox is not None:
        return options.busybox
    found = shutil.which("busybox")
    if found is None:
        raise VMError("busybox is not installed", hint="apt-get install busybox-static")
    return Path(found)


def _is_writer_file(dest: str) -> bool:
    if dest in (str(SYSTEM_PYTHON), IMAGE_CONFIG_PATH):
        return True
    return (
        dest.startswith(_WRITER_PREFIXES)
        and dest.endswith(_WRITER_SUFFIXES)
        and "/__pycache__/" not in dest
    )


def _manifest(image: Initramfs, config: Config) -> str:
    """The manifest of the writer's files as the capture kernel will see them."""
    if config.dump.compress not in _IMAGE_CODECS:
        raise VMError(
            "codec not available in the capture initramfs",
            field="dump.compress",
            expected=sorted(_IMAGE_CODECS),
            found=config.dump.compress,
        )
    files = {
        dest: hashlib.sha256(image.read(dest)).hexdigest()
        for dest in image.files
        if _is_writer_file(dest)
    }
    manifest = Manifest(
        files=files,
        config=IMAGE_CONFIG_PATH,
        codec=config.dump.compress,
        devices=tuple(d.path for d in config.devices),
        created=int(time.time()),
        python=_SYSTEM_PYTHON_VERSION,
    )
    return manifest.to_json()


def build_capture_initramfs(
    output: Path, options: CaptureOptions, closure: PythonClosure | None = None
) -> CaptureImage:
    """Build the capture initramfs into ``output``.

    :param closure: the measured stdlib closure (measured here when ``None``)
    :raises VMError: a tool, module or file is missing
    :raises ConfigError: the configuration is invalid
    """
    config, config_bytes = _config(options)
    image = Initramfs()
    image.add_busybox(_busybox(options))
    if KEXEC.exists():
        image.add_binary(KEXEC)
    else:
        log.warning("%s not found: the image cannot arm itself", KEXEC)
    if options.modules_dir is not None and options.modules:
        image.add_modules(resolve_modules(options.modules_dir, list(options.modules)))
    add_python(image, closure)
    image.add_bytes(IMAGE_CONFIG_PATH, config_bytes, 0o600)
    manifest = _manifest(image, config)
    image.add_bytes(IMAGE_MANIFEST_PATH, manifest.encode())
    if options.manifest_copy is not None:
        options.manifest_copy.write_text(manifest)
    env = f"FINAL_ACTION={config.dump.final_action.value}\nWAIT_DISK={options.wait_disk}\n"
    image.add_bytes("/etc/diskdump-init.env", env.encode())
    image.add_bytes("/etc/common.sh", guest_script("common.sh"))
    image.add_bytes("/init", guest_script("capture-init.sh"), 0o755)
    size = image.write(output)
    stdlib_count = sum(1 for name in image.files if name.startswith("/usr/lib/python3"))
    return CaptureImage(
        path=output,
        size=size,
        unpacked_size=image.unpacked_size,
        stdlib_modules=stdlib_count,
        files=len(image.files) + len(image.symlinks),
    )
