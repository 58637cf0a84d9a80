# SPDX-License-Identifier: GPL-2.0-or-later
"""Debian's python3 with a pruned standard library, for the capture initramfs.

The capture kernel's reserved memory (``crashkernel=``) holds the compressed
initramfs and, once unpacked, its files: every megabyte counts. The full 3.11
stdlib is 39 MB unpacked (vm-notes.md); the writer needs a small part of it.

Which stdlib modules go in is *measured*: :class:`modulefinder.ModuleFinder`
scans the byte code of every module of the ``diskdump`` package (the CLI
imports all command modules, so everything the ``dump`` command can reach is
covered) and follows every import statement, including those inside
functions. The closure is a superset of what ``diskdump dump`` imports at run
time, never a subset. Third-party modules other than the codec library
(zstandard) are left out: they are optional by design (house-style 6.9).

Layout inside the image::

    /usr/bin/python3                  the host's interpreter (+ ldd libraries)
    /usr/lib/python3.11/<module>.pyc  stdlib, sourceless, unchecked-hash byte code
    /usr/lib/python3.11/lib-dynload/  the extension modules the closure names
    /usr/lib/diskdump/diskdump/...    the package: .py and unchecked-hash .pyc
    /usr/lib/diskdump/zstandard/...   the codec library, C backend stripped
    /usr/sbin/diskdump                #!/usr/bin/python3 -SE launcher

Byte code is compiled with ``PycInvalidationMode.UNCHECKED_HASH``: the archive
sets every mtime to 0, which would invalidate timestamp-based .pyc files and
make the capture kernel recompile under TCG.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import logging
import modulefinder
import py_compile
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from diskdump.errors import VMError
from diskdump.vm.initramfs import Initramfs, library_closure

__all__ = ["PythonClosure", "add_python", "python_closure"]

log = logging.getLogger(__name__)

#: where the package goes inside the image
PACKAGE_ROOT = "/usr/lib/diskdump"
#: the interpreter copied into the image (Debian's, same 3.11 ABI as the venv)
SYSTEM_PYTHON = Path("/usr/bin/python3")
#: third-party packages the panic path may import (the codec library)
THIRD_PARTY = ("zstandard",)
#: modules Python needs at start-up before any import statement runs
_STARTUP = (
    "encodings",
    "encodings.aliases",
    "encodings.utf_8",
    "encodings.ascii",
    "encodings.latin_1",
    "codecs",
    "io",
    "abc",
)
#: stdlib packages a capture kernel does not need, pruned where only other stdlib modules
#: import them (a module the diskdump package imports itself is always kept)
_EXCLUDES = (
    "tkinter",
    "unittest",
    "pydoc",
    "pydoc_data",
    "doctest",
    "idlelib",
    "lib2to3",
    "ensurepip",
    "distutils",
    "test",
    "sqlite3",
    "curses",
    "xmlrpc",
    "http",
    "urllib.request",
    "asyncio",
    "multiprocessing",
    "concurrent.futures.process",
    "ctypes",
    "pdb",
    "bdb",
    # hashlib falls back to the interpreter's built-in _sha256/_md5 without these, and
    # leaving them out saves libcrypto (4.6 MB) and libssl
    "_hashlib",
    "_ssl",
    "ssl",
)
#: files of the zstandard package the C backend needs
_ZSTD_FILES = ("__init__.py",)
_LAUNCHER = b"""#!/usr/bin/python3 -SE
# diskdump launcher of the capture initramfs (written by diskdump.vm.pyenv)
import sys
sys.path.insert(0, "/usr/lib/diskdump")
from diskdump.cli.main import main
sys.exit(main())
"""


@dataclass(frozen=True, slots=True)
class PythonClosure:
    """What the writer needs from the host's Python installation.

    :param stdlib: stdlib source files (``.py``), by module name
    :param extensions: stdlib extension modules (``.so``) in lib-dynload
    """

    stdlib: dict[str, Path]
    extensions: tuple[Path, ...]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise VMError(f"python package {name} is not installed", hint="make venv installs it")
    return Path(spec.origin).parent


def _entry_script(package: Path) -> str:
    modules = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules.append(".".join(parts))
    return "".join(f"import {name}\n" for name in [*modules, *_STARTUP])


def _direct_imports(package: Path) -> set[str]:
    """Every module name the package's own code imports (absolute imports, all levels)."""
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    expanded = set(names)
    for name in names:
        parts = name.split(".")
        expanded.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return expanded


def python_closure() -> PythonClosure:
    """Measure the stdlib modules the ``diskdump`` package can import (modulefinder).

    :raises VMError: the package or the stdlib cannot be found
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    package = _package_dir("diskdump")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "entry.py"
        script.write_text(_entry_script(package))
        path = [str(package.parent), str(stdlib), str(stdlib / "lib-dynload")]
        # prune only what the stdlib drags in: never a module the package imports itself
        excludes = [name for name in _EXCLUDES if name not in _direct_imports(package)]
        finder = modulefinder.ModuleFinder(path=path, excludes=excludes)
        finder.run_script(str(script))
    sources: dict[str, Path] = {}
    extensions: list[Path] = []
    for name, module in finder.modules.items():
        file = getattr(module, "__file__", None)
        if file is None:
            continue  # built into the interpreter
        where = Path(file)
        if where.is_relative_to(stdlib / "lib-dynload"):
            extensions.append(where)
        elif where.is_relative_to(stdlib) and where.suffix == ".py":
            sources[name] = where
    log.info("stdlib closure: %d modules, %d extensions", len(sources), len(extensions))
    return PythonClosure(stdlib=sources, extensions=tuple(sorted(extensions)))


def _compile(source: Path, *, dfile: str, text: bytes | None = None) -> bytes:
    """Byte code of ``source``, or of ``text`` (the bytes already put in the image) if given."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "out.pyc"
        if text is not None:
            source = Path(tmp) / source.name
            source.write_bytes(text)
        try:
            py_compile.compile(
                str(source),
                cfile=str(target),
                dfile=dfile,
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
        except py_compile.PyCompileError as err:
            raise VMError(f"cannot compile: {err.msg}", path=str(source)) from err
        return target.read_bytes()


def _strip(library: Path) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / library.name
        try:
            subprocess.run(
                ["strip", "--strip-unneeded", "-o", str(out), str(library)],
                check=True,
                capture_output=True,
                timeout=60,
            )
        except (OSError, subprocess.SubprocessError) as err:
            raise VMError(f"cannot strip: {err}", path=str(library)) from err
        return out.read_bytes()


def _add_package(image: Initramfs, package: Path) -> None:
    tag = sys.implementation.cache_tag
    for source in sorted(package.rglob("*")):
        if "__pycache__" in source.parts or not source.is_file():
            continue
        rel = source.relative_to(package.parent)
        dest = f"{PACKAGE_ROOT}/{rel}"
        image.add_host_file(dest, source, 0o644)
        if source.suffix == ".py":
            pyc = f"{PACKAGE_ROOT}/{rel.parent}/__pycache__/{source.stem}.{tag}.pyc"
            # compiled from the very bytes stored (and hashed by the manifest)
            image.add_bytes(pyc, _compile(source, dfile=dest, text=image.read(dest)))


def _add_metadata(image: Initramfs) -> None:
    # device drivers register as entry points (devices/__init__.py): importlib.metadata
    # finds them through a dist-info directory on sys.path
    dist = importlib.metadata.distribution("diskdump")
    info = f"{PACKAGE_ROOT}/diskdump-{dist.version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: diskdump\nVersion: {dist.version}\n"
    image.add_bytes(f"{info}/METADATA", metadata.encode())
    image.add_bytes(f"{info}/entry_points.txt", (dist.read_text("entry_points.txt") or "").encode())


def add_python(image: Initramfs, closure: PythonClosure | None = None) -> None:
    """Add the interpreter, the pruned stdlib, zstandard and the diskdump package to ``image``.

    :param closure: the stdlib closure (measured with :func:`python_closure` when ``None``)
    """
    closure = closure if closure is not None else python_closure()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    image.add_binary(SYSTEM_PYTHON)
    for source in closure.stdlib.values():
        rel = source.relative_to(stdlib).with_suffix(".pyc")
        dest = f"{stdlib}/{rel}"
        image.add_bytes(dest, _compile(source, dfile=f"{stdlib}/{rel.with_suffix('.py')}"))
    for extension in closure.extensions:
        image.add_binary(extension)
    _add_package(image, _package_dir("diskdump"))
    _add_metadata(image)
    zstd = _package_dir("zstandard")
    for name in _ZSTD_FILES:
        source = zstd / name
        image.add_bytes(f"{PACKAGE_ROOT}/zstandard/{name}", source.read_bytes())
        image.add_bytes(
            f"{PACKAGE_ROOT}/zstandard/__pycache__/__init__.{sys.implementation.cache_tag}.pyc",
            _compile(source, dfile=f"{PACKAGE_ROOT}/zstandard/{name}"),
        )
    for backend in zstd.glob("backend_c.*.so"):
        image.add_bytes(f"{PACKAGE_ROOT}/zstandard/{backend.name}", _strip(backend), 0o755)
        for lib in library_closure(backend):
            image.add_host_file(str(lib), lib, 0o755)
    image.add_bytes("/usr/sbin/diskdump", _LAUNCHER, 0o755)
