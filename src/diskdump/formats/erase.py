# SPDX-License-Identifier: GPL-2.0-or-later
"""Erase rules: overwrite named kernel symbols with a fixed filler in saved vmcores.

The makedumpfile ``--config`` idea (its erase_info.c): the memory of a symbol
(a key, a password buffer) is overwritten in the output and the fact is
recorded, so an analyst knows what was erased and never mistakes the filler
for data. A rule is ``"name"`` or ``"name:size"`` (size in bytes, decimal or
0x-hex).

Resolution, first match wins:

1. ``SYMBOL(name)`` in VMCOREINFO (runtime address, KASLR applied); a size is
   then required in the rule, VMCOREINFO carries none;
2. a System.map (``ADDR TYPE NAME`` lines, link-time addresses): the runtime
   address adds ``KERNELOFFSET``; a missing size is the distance to the next
   higher symbol;
3. a vmlinux symbol table (pyelftools): ``st_value`` + ``KERNELOFFSET``, size
   ``st_size``.

Kernel-image addresses translate to physical ones by the x86_64 formula
``paddr = vaddr - __START_KERNEL_map + phys_base``; any other address needs a
page-table walk, supplied by the caller as ``virt_to_phys``.

The record written into outputs (kdump ``eraseinfo``, info.json) is one line
per rule: ``erase <symbol> size <n>``, as makedumpfile writes it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from diskdump.errors import ConfigError
from diskdump.formats.memsource import MemorySource, SourceView

__all__ = [
    "ERASE_FILLER",
    "EraseRange",
    "EraseRule",
    "ErasedSource",
    "erase_source",
    "eraseinfo_text",
    "parse_rules",
    "resolve_rules",
]

#: filler byte, as makedumpfile's default erase character 'X'
ERASE_FILLER: Final = 0x58
#: x86_64 __START_KERNEL_map: base of the kernel-image mapping
START_KERNEL_MAP: Final = 0xFFFF_FFFF_8000_0000
#: default KERNEL_IMAGE_SIZE with KASLR (1 GiB)
KERNEL_IMAGE_SIZE: Final = 1 << 30
#: an erase rule larger than this is a typo, not a symbol
MAX_ERASE_SIZE: Final = 1 << 30


@dataclass(frozen=True, slots=True)
class EraseRule:
    """``name`` or ``name:size`` from the configuration."""

    symbol: str
    size: int | None = None


@dataclass(frozen=True, slots=True)
class EraseRange:
    """A resolved rule: where the symbol is and how many bytes to overwrite."""

    symbol: str
    vaddr: int
    paddr: int
    size: int


def parse_rules(texts: Iterable[str]) -> list[EraseRule]:
    """Parse ``["name", "name:size", ...]``.

    :raises ConfigError: empty name, bad or out-of-range size
    """
    rules = []
    for text in texts:
        name, sep, size_text = text.partition(":")
        if not name.strip():
            raise ConfigError("erase rule has no symbol name", field="erase.symbols", found=text)
        size = None
        if sep:
            try:
                size = int(size_text, 0)
            except ValueError:
                raise ConfigError(
                    "erase size is not a number", field="erase.symbols", found=text
                ) from None
            if not 0 < size <= MAX_ERASE_SIZE:
                raise ConfigError(
                    "erase size out of range",
                    field="erase.symbols",
                    expected=f"1..{MAX_ERASE_SIZE}",
                    found=size,
                )
        rules.append(EraseRule(name.strip(), size))
    return rules


class _SymbolTable:
    """Link-time symbols from a System.map or a vmlinux, sorted by address."""

    def __init__(self, entries: dict[str, tuple[int, int | None]]) -> None:
        self.entries = entries
        self.addresses = sorted({addr for addr, _ in entries.values()})

    @classmethod
    def from_system_map(cls, path: Path) -> _SymbolTable:
        entries: dict[str, tuple[int, int | None]] = {}
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            parts = line.split()
            if len(parts) < 3:
                continue
            try:
                entries.setdefault(parts[2], (int(parts[0], 16), None))
            except ValueError:
                raise ConfigError(
                    f"System.map line {lineno} has no hex address", path=str(path), found=line[:60]
                ) from None
        return cls(entries)

    @classmethod
    def from_vmlinux(cls, path: Path) -> _SymbolTable:
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
        from elftools.elf.sections import SymbolTableSection

        entries: dict[str, tuple[int, int | None]] = {}
        try:
            with path.open("rb") as f:
                symtab = ELFFile(f).get_section_by_name(".symtab")
                if not isinstance(symtab, SymbolTableSection):
                    raise ConfigError("vmlinux has no symbol table", path=str(path))
                for sym in symtab.iter_symbols():
                    if sym.name and sym["st_value"]:
                        entries.setdefault(sym.name, (sym["st_value"], sym["st_size"] or None))
        except ELFError as err:
            raise ConfigError(f"vmlinux is not a readable ELF file: {err}", path=str(path)) from err
        return cls(entries)

    def lookup(self, name: str) -> tuple[int, int | None] | None:
        found = self.entries.get(name)
        if found is None:
            return None
        addr, size = found
        if size is None:
            i = bisect.bisect_right(self.addresses, addr)
            size = self.addresses[i] - addr if i < len(self.addresses) else None
        return addr, size


def resolve_rules(
    rules: Sequence[EraseRule],
    *,
    symbols: Callable[[str], int | None],
    kernel_offset: int,
    phys_base: int,
    system_map: Path | None = None,
    vmlinux: Path | None = None,
    virt_to_phys: Callable[[int], int] | None = None,
) -> list[EraseRange]:
    """Resolve each rule to a physical range (see the module docstring for the order).

    :param symbols: VMCOREINFO ``SYMBOL(name)`` lookup returning None when absent
    :param kernel_offset: VMCOREINFO ``KERNELOFFSET`` (KASLR slide), bytes
    :param phys_base: VMCOREINFO ``NUMBER(phys_base)``
    :raises ConfigError: a symbol that cannot be found or sized, or not translated
    """
    tables = [_SymbolTable.from_system_map(system_map)] if system_map else []
    if vmlinux:
        tables.append(_SymbolTable.from_vmlinux(vmlinux))
    out = []
    for rule in rules:
        vaddr, size = _locate(rule, symbols, tables, kernel_offset)
        if size is None or not 0 < size <= MAX_ERASE_SIZE:
            raise ConfigError(
                f"cannot size symbol {rule.symbol}",
                field="erase.symbols",
                hint="give the size as name:bytes, or pass a vmlinux",
            )
        if START_KERNEL_MAP <= vaddr < START_KERNEL_MAP + KERNEL_IMAGE_SIZE:
            paddr = vaddr - START_KERNEL_MAP + phys_base
        elif virt_to_phys is not None:
            paddr = virt_to_phys(vaddr)
        else:
            raise ConfigError(
                f"symbol {rule.symbol} is outside the kernel image and no "
                "page-table walk is available",
                found=f"{vaddr:#x}",
            )
        out.append(EraseRange(rule.symbol, vaddr, paddr, size))
    return out


def _locate(
    rule: EraseRule,
    symbols: Callable[[str], int | None],
    tables: Sequence[_SymbolTable],
    kernel_offset: int,
) -> tuple[int, int | None]:
    addr = symbols(rule.symbol)
    if addr is not None:
        return addr, rule.size
    for table in tables:
        found = table.lookup(rule.symbol)
        if found is not None:
            return found[0] + kernel_offset, rule.size if rule.size is not None else found[1]
    raise ConfigError(
        f"erase symbol {rule.symbol} not found",
        field="erase.symbols",
        hint="VMCOREINFO exports few symbols: pass --system-map or --vmlinux",
    )


def eraseinfo_text(ranges: Sequence[EraseRange]) -> str:
    """The record of what was erased, one ``erase <symbol> size <n>`` line per rule."""
    return "".join(f"erase {r.symbol} size {r.size}\n" for r in ranges)


class ErasedSource(SourceView):
    """A :class:`MemorySource` that returns the filler over every erased range."""

    def __init__(
        self, source: MemorySource, ranges: Sequence[EraseRange], filler: int = ERASE_FILLER
    ) -> None:
        super().__init__(source)
        self.ranges = sorted(ranges, key=lambda r: r.paddr)
        self.filler = filler

    def read_pages(self, pfn: int, count: int) -> bytes:
        """The source's pages with every erased byte replaced by the filler.

        :raises ExcludedPageError: as the wrapped source
        """
        data = self.source.read_pages(pfn, count)
        start = pfn * self.page_size
        end = start + len(data)
        hits = [r for r in self.ranges if r.paddr < end and r.paddr + r.size > start]
        if not hits:
            return data
        buf = bytearray(data)
        for r in hits:
            lo, hi = max(r.paddr, start) - start, min(r.paddr + r.size, end) - start
            buf[lo:hi] = bytes([self.filler]) * (hi - lo)
        return bytes(buf)


def erase_source(
    source: MemorySource,
    rules: Sequence[str],
    *,
    system_map: Path | None = None,
    vmlinux: Path | None = None,
) -> ErasedSource:
    """``source`` with ``rules`` (``"name"`` / ``"name:size"``) erased, resolved from its notes.

    Symbols come from the vmcore's own VMCOREINFO, then ``system_map`` or
    ``vmlinux``; addresses outside the kernel image are translated by a
    page-table walk of the dumped memory.

    :raises ConfigError: a rule that cannot be parsed, found, sized or translated
    :raises NotThisFormatError: the vmcore has no VMCOREINFO note
    """
    from diskdump.formats.vmcoreinfo import vmcoreinfo_from_notes
    from diskdump.formats.x86_64 import KernelMemory

    info = vmcoreinfo_from_notes(source.notes)

    def symbol(name: str) -> int | None:
        return info.symbol(name) if f"SYMBOL({name})" in info else None

    kernel_offset = info.kerneloffset if "KERNELOFFSET" in info else 0
    ranges = resolve_rules(
        parse_rules(rules),
        symbols=symbol,
        kernel_offset=kernel_offset,
        phys_base=info.phys_base,
        system_map=system_map,
        vmlinux=vmlinux,
        virt_to_phys=KernelMemory(source, info).virt_to_phys,
    )
    return ErasedSource(source, ranges)
