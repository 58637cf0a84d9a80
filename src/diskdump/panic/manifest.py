# SPDX-License-Identifier: GPL-2.0-or-later
"""The writer's self-check: a manifest of SHA-256 digests of every file the writer executes.

The 2004 diskdump module checksummed its own code at init and refused to
dump on a mismatch. Here ``diskdump arm`` records, and ``diskdump dump``
recomputes before it writes anything::

    {
      "format": "diskdump-manifest", "version": 1,
      "created": 1767225600,                   seconds since the epoch
      "python": "3.11.2 (main, ...)",
      "config": "/etc/diskdump.toml" | null,
      "codec": "zstd",
      "devices": ["/dev/disk/by-partlabel/dump0", ...],
      "estimate_size": 1073741824,             bytes a dump of this machine may need
      "encrypt_to": "/etc/diskdump/dump.pub.pem" | null,   public key of encrypted dumps
      "files": {"/usr/bin/python3.11": "<sha256 hex>", ...}
    }

``files`` holds: every module of the diskdump package (the dump command
imports the package's CLI and formats as well as the writer), the
interpreter binary, the files of the codec library, and the configuration;
with ``encrypt_to``, also the public key file and the cryptography package
(the writer seals chunks with it).
A file that changed, vanished or appeared in the package is a mismatch.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from diskdump.errors import ManifestError

__all__ = [
    "DEFAULT_MANIFEST_PATH",
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "Manifest",
    "build_manifest",
    "read_manifest",
    "verify_manifest",
    "write_manifest",
    "writer_files",
]

#: where ``arm`` writes the manifest and ``dump``/``status`` read it
DEFAULT_MANIFEST_PATH = Path("/var/lib/diskdump/manifest.json")
MANIFEST_FORMAT = "diskdump-manifest"
MANIFEST_VERSION = 1
#: the diskdump package directory (this file is diskdump/panic/manifest.py)
PACKAGE_DIR = Path(__file__).resolve().parent.parent
#: import name of the library behind each codec (None: built into the interpreter)
_CODEC_MODULES: Mapping[str, str | None] = {
    "none": None,
    "zlib": "zlib",
    "lzo": "lzo",
    "snappy": "snappy",
    "zstd": "zstandard",
}
_CODE_SUFFIXES = (".py", ".so")
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class Manifest:
    """What ``arm`` recorded.

    :param files: absolute path -> SHA-256 hex digest
    :param estimate_size: bytes a dump of the armed machine may need (from /proc/meminfo)
    """

    files: Mapping[str, str]
    config: str | None = None
    codec: str = "zstd"
    devices: tuple[str, ...] = ()
    estimate_size: int = 0
    created: int = 0
    python: str = field(default_factory=lambda: sys.version)
    encrypt_to: str | None = None  #: public key file of encrypted dumps (absolute)

    def to_json(self) -> str:
        """The manifest file's text."""
        doc = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "created": self.created,
            "python": self.python,
            "config": self.config,
            "codec": self.codec,
            "devices": list(self.devices),
            "estimate_size": self.estimate_size,
            "encrypt_to": self.encrypt_to,
            "files": dict(sorted(self.files.items())),
        }
        return json.dumps(doc, indent=2) + "\n"


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _package_files(root: Path) -> list[str]:
    return sorted(
        str(p)
        for p in root.rglob("*")
        if p.suffix in _CODE_SUFFIXES and "__pycache__" not in p.parts and p.is_file()
    )


def _codec_files(codec: str) -> list[str]:
    name = _CODEC_MODULES.get(codec)
    if name is None:
        return []
    module = importlib.import_module(name)
    origin = getattr(module, "__file__", None)
    if origin is None:
        return []  # built into the interpreter binary, which is hashed anyway
    path = Path(origin).resolve()
    if path.name == "__init__.py":
        return _package_files(path.parent)
    return [str(path)]


def writer_files(
    config: str | None,
    codec: str,
    *,
    package_dir: Path = PACKAGE_DIR,
    encrypt_to: str | None = None,
) -> list[str]:
    """Every file the writer executes or reads as code: package, interpreter, codec, config.

    :param config: the configuration file, if one is used
    :param codec: codec name; its library's files are included
    :param encrypt_to: public key file of encrypted dumps; it and the cryptography
        package are included
    """
    files = _package_files(package_dir)
    files.append(os.path.realpath(sys.executable))
    files.extend(_codec_files(codec))
    if config is not None:
        files.append(os.path.abspath(config))
    if encrypt_to is not None:
        files.append(os.path.abspath(encrypt_to))
        files.extend(_crypto_files())
    return sorted(set(files))


def _crypto_files() -> list[str]:
    import cryptography

    return _package_files(Path(cryptography.__file__).resolve().parent)


def build_manifest(
    *,
    config: str | None,
    codec: str,
    devices: Sequence[str] = (),
    estimate_size: int = 0,
    package_dir: Path = PACKAGE_DIR,
    encrypt_to: str | None = None,
) -> Manifest:
    """Hash every writer file now.

    :param encrypt_to: public key file of encrypted dumps (recorded, and hashed)
    :raises ManifestError: a file cannot be read
    """
    files: dict[str, str] = {}
    for path in writer_files(config, codec, package_dir=package_dir, encrypt_to=encrypt_to):
        try:
            files[path] = _sha256(path)
        except OSError as err:
            raise ManifestError(f"cannot hash a writer file: {err.strerror}", path=path) from err
    return Manifest(
        files=files,
        config=None if config is None else os.path.abspath(config),
        codec=codec,
        devices=tuple(devices),
        estimate_size=estimate_size,
        created=int(time.time()),
        encrypt_to=None if encrypt_to is None else os.path.abspath(encrypt_to),
    )


def write_manifest(manifest: Manifest, path: str | os.PathLike[str]) -> None:
    """Write ``manifest`` atomically (temporary file, fsync, rename), mode 0644."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(manifest.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a manifest file.

    :raises ManifestError: missing, unreadable or not a manifest
    """
    name = os.fspath(path)
    try:
        doc = json.loads(Path(name).read_text())
    except FileNotFoundError:
        raise ManifestError(
            "no manifest: the dump writer was never armed", path=name, hint="diskdump arm"
        ) from None
    except (OSError, ValueError) as err:
        raise ManifestError(f"manifest unreadable: {err}", path=name) from err
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise ManifestError("not a diskdump manifest", path=name, field="format")
    if doc.get("version") != MANIFEST_VERSION:
        raise ManifestError(
            "unsupported manifest version",
            path=name,
            field="version",
            expected=MANIFEST_VERSION,
            found=doc.get("version"),
        )
    files = doc.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ManifestError("manifest has no file list", path=name, field="files")
    return Manifest(
        files=files,
        config=doc.get("config"),
        codec=str(doc.get("codec", "zstd")),
        devices=tuple(doc.get("devices", ())),
        estimate_size=int(doc.get("estimate_size", 0)),
        created=int(doc.get("created", 0)),
        python=str(doc.get("python", "")),
        encrypt_to=doc.get("encrypt_to") if isinstance(doc.get("encrypt_to"), str) else None,
    )


def verify_manifest(
    manifest: Manifest, *, config: str | None, package_dir: Path = PACKAGE_DIR
) -> list[str]:
    """Recompute every digest; return the mismatches in words (empty: all match).

    :param config: the configuration file this run uses (must be the armed one)
    """
    problems: list[str] = []
    wanted = None if config is None else os.path.abspath(config)
    if wanted != manifest.config:
        problems.append(f"configuration {wanted} is not the armed one ({manifest.config})")
    for path, digest in sorted(manifest.files.items()):
        try:
            actual = _sha256(path)
        except OSError as err:
            problems.append(f"{path}: cannot read ({err.strerror})")
            continue
        if actual != digest:
            problems.append(f"{path}: sha256 {actual[:16]}..., armed {digest[:16]}...")
    for path in _package_files(package_dir):
        if path not in manifest.files:
            problems.append(f"{path}: not in the manifest (added after arm)")
    return problems
