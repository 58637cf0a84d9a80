# SPDX-License-Identifier: GPL-2.0-or-later
"""ELF notes of a vmcore: the note blob, NT_PRSTATUS and the VMCOREINFO note.

Spec: the System V gABI note section (``Elf64_Nhdr``), as the Linux kernel
writes it (``kernel/crash_core.c`` ``append_elf_note``, ``crash_save_cpu``;
``fs/proc/vmcore.c`` merges the per-CPU buffers) and as crash (``netdump.c``),
libkdumpfile (``notes.c``) and drgn read it. x86_64 (LP64, little endian) only.

One note::

    offset  size                    field
    0       4                       n_namesz   name length incl. the NUL
    4       4                       n_descsz   descriptor length (not padded)
    8       4                       n_type     NT_PRSTATUS = 1, VMCOREINFO = 0, ...
    12      align4(n_namesz)        name       b"CORE\\0" / b"VMCOREINFO\\0"
    ..      align4(n_descsz)        desc

Notes follow each other without gaps. A header with ``n_namesz == 0`` ends
the blob (the kernel's per-CPU buffers end with an all-zero header; crash
stops there too). Every size is checked against the blob: a descriptor that
runs past the end is an error, never a short read. The padding after the
*last* descriptor may be missing (some writers size the segment exactly).

NT_PRSTATUS descriptor (``struct elf_prstatus``, x86_64, 336 bytes)::

    0    12   pr_info      si_signo, si_code, si_errno (int each)
    12   2    pr_cursig    (short) + 2 bytes padding
    16   8    pr_sigpend
    24   8    pr_sighold
    32   16   pr_pid, pr_ppid, pr_pgrp, pr_sid (int each)
    48   64   pr_utime, pr_stime, pr_cutime, pr_cstime (struct timeval: 2 x long)
    112  216  pr_reg       27 x u64, order in PRSTATUS_REGISTERS
    328  4    pr_fpvalid   (int) + 4 bytes padding
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

from diskdump._binary import align_up
from diskdump.errors import CorruptDataError, TruncatedError

__all__ = [
    "CORE_NOTE_NAME",
    "NOTE_HEADER_SIZE",
    "PRSTATUS_REGISTERS",
    "VMCOREINFO_NOTE_NAME",
    "Note",
    "NoteType",
    "PrStatus",
    "find_vmcoreinfo",
    "iter_notes",
    "pack_note",
    "prstatus_notes",
]

log = logging.getLogger(__name__)

#: ``Elf64_Nhdr``: n_namesz, n_descsz, n_type
_NHDR = struct.Struct("<III")
NOTE_HEADER_SIZE = _NHDR.size
#: name and descriptor are each padded to 4 bytes (gABI, and the kernel's ``append_elf_note``)
NOTE_ALIGN = 4

#: owner name of the kernel's per-CPU NT_PRSTATUS notes (``KEXEC_CORE_NOTE_NAME``)
CORE_NOTE_NAME = "CORE"
#: owner name of the VMCOREINFO note (``VMCOREINFO_NOTE_NAME`` in include/linux/vmcore_info.h)
VMCOREINFO_NOTE_NAME = "VMCOREINFO"


class NoteType(IntEnum):
    """``n_type`` values seen in vmcores (include/uapi/linux/elf.h)."""

    #: VMCOREINFO notes carry type 0
    VMCOREINFO = 0
    NT_PRSTATUS = 1
    NT_PRFPREG = 2
    NT_PRPSINFO = 3
    #: live dumps (name ``SNAP``)
    NT_TASKSTRUCT = 4
    #: device dumps appended by /proc/vmcore
    NT_VMCOREDD = 0x700


assert NOTE_HEADER_SIZE == 12


@dataclass(frozen=True, slots=True)
class Note:
    """One note from a blob.

    :param name: owner name without its NUL (``"CORE"``), decoded as latin-1
    :param type: ``n_type``
    :param desc: the descriptor, exactly ``n_descsz`` bytes
    :param desc_offset: byte offset of ``desc`` inside the blob
    """

    name: str
    type: int
    desc: bytes
    desc_offset: int


def _note_error(
    what: str, base_offset: int, offset: int, field_name: str, size: int, end: int, path: str | None
) -> TruncatedError:
    # offset, end and size are relative to the blob; the message shows file offsets
    return TruncatedError(
        what,
        path=path,
        offset=base_offset + offset,
        field=field_name,
        expected=f"end <= {base_offset + end:#x}",
        found=f"{size:#x} bytes ending at {base_offset + offset + size:#x}",
    )


def iter_notes(
    blob: bytes | bytearray | memoryview, *, path: str | None = None, base_offset: int = 0
) -> Iterator[Note]:
    """Yield the notes of ``blob`` in order, checking every size against the blob.

    :param blob: the note segment (a PT_NOTE's contents, a kdump note area)
    :param path: file named in error messages
    :param base_offset: file offset of ``blob[0]``, added to offsets in error messages
    :raises TruncatedError: a header, name or descriptor runs past the end of ``blob``
    """
    view = memoryview(blob).cast("B")
    end = len(view)
    offset = 0
    while offset < end:
        if offset + NOTE_HEADER_SIZE > end:
            if any(view[offset:]):
                raise _note_error(
                    "note header is cut short",
                    base_offset,
                    offset,
                    "n_namesz",
                    NOTE_HEADER_SIZE,
                    end,
                    path,
                )
            return
        namesz, descsz, ntype = _NHDR.unpack_from(view, offset)
        if namesz == 0:
            # crash and the kernel's per-CPU buffers: an empty name ends the notes
            log.debug("note blob ends at %#x (n_namesz 0)", base_offset + offset)
            return
        name_off = offset + NOTE_HEADER_SIZE
        if name_off + namesz > end:
            raise _note_error(
                "note name runs past the end of the notes",
                base_offset,
                name_off,
                "n_namesz",
                namesz,
                end,
                path,
            )
        desc_off = name_off + align_up(namesz, NOTE_ALIGN)
        if desc_off + descsz > end:
            raise _note_error(
                "note descriptor runs past the end of the notes",
                base_offset,
                desc_off,
                "n_descsz",
                descsz,
                end,
                path,
            )
        raw_name = bytes(view[name_off : name_off + namesz])
        name = raw_name.split(b"\0", 1)[0].decode("latin-1")
        yield Note(name, ntype, bytes(view[desc_off : desc_off + descsz]), desc_off)
        offset = desc_off + align_up(descsz, NOTE_ALIGN)


def pack_note(name: str, type: int, desc: bytes | bytearray | memoryview) -> bytes:
    """Encode one note: header, NUL-terminated name and descriptor, each padded to 4 bytes.

    :param name: owner name, without the NUL (``"CORE"``, ``"VMCOREINFO"``)
    :param type: ``n_type``
    :param desc: descriptor bytes; ``n_descsz`` is their exact length
    """
    raw_name = name.encode("latin-1") + b"\0"
    desc = bytes(desc)
    name_pad = align_up(len(raw_name), NOTE_ALIGN) - len(raw_name)
    desc_pad = align_up(len(desc), NOTE_ALIGN) - len(desc)
    return b"".join(
        (
            _NHDR.pack(len(raw_name), len(desc), type),
            raw_name,
            b"\0" * name_pad,
            desc,
            b"\0" * desc_pad,
        )
    )


#: names of the 27 ``pr_reg`` slots (``struct user_regs_struct``, arch/x86/include/asm/user_64.h)
PRSTATUS_REGISTERS: tuple[str, ...] = (
    "r15",
    "r14",
    "r13",
    "r12",
    "rbp",
    "rbx",
    "r11",
    "r10",
    "r9",
    "r8",
    "rax",
    "rcx",
    "rdx",
    "rsi",
    "rdi",
    "orig_rax",
    "rip",
    "cs",
    "eflags",
    "rsp",
    "ss",
    "fs_base",
    "gs_base",
    "ds",
    "es",
    "fs",
    "gs",
)
_NREGS = len(PRSTATUS_REGISTERS)
_RIP = PRSTATUS_REGISTERS.index("rip")
_RSP = PRSTATUS_REGISTERS.index("rsp")

# pr_info (3 int), pr_cursig (short) + pad, pr_sigpend, pr_sighold, 4 pid_t,
# 4 struct timeval (2 long each), pr_reg, pr_fpvalid + pad
_PRSTATUS = struct.Struct(f"<3ih2xQQ4i8q{_NREGS}Qi4x")
assert _PRSTATUS.size == 336


@dataclass(frozen=True, slots=True)
class PrStatus:
    """The x86_64 NT_PRSTATUS descriptor (``struct elf_prstatus``).

    Timevals are kept as (seconds, microseconds) pairs; ``pr_reg`` holds the 27
    registers in the order of :data:`PRSTATUS_REGISTERS`.
    """

    SIZE = _PRSTATUS.size

    pr_pid: int = 0
    pr_reg: tuple[int, ...] = (0,) * _NREGS
    si_signo: int = 0
    si_code: int = 0
    si_errno: int = 0
    pr_cursig: int = 0
    pr_sigpend: int = 0
    pr_sighold: int = 0
    pr_ppid: int = 0
    pr_pgrp: int = 0
    pr_sid: int = 0
    pr_utime: tuple[int, int] = (0, 0)
    pr_stime: tuple[int, int] = (0, 0)
    pr_cutime: tuple[int, int] = (0, 0)
    pr_cstime: tuple[int, int] = (0, 0)
    pr_fpvalid: int = 0

    def __post_init__(self) -> None:
        if len(self.pr_reg) != _NREGS:
            raise ValueError(f"pr_reg needs {_NREGS} registers, got {len(self.pr_reg)}")

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview, *, offset: int = 0) -> PrStatus:
        """Decode a descriptor of exactly :attr:`SIZE` bytes.

        :param offset: file offset of ``buf``, for error messages
        :raises CorruptDataError: ``buf`` is not 336 bytes long
        """
        if len(buf) != cls.SIZE:
            raise CorruptDataError(
                "NT_PRSTATUS descriptor has the wrong size for x86_64",
                offset=offset,
                field="n_descsz",
                expected=cls.SIZE,
                found=len(buf),
            )
        v = _PRSTATUS.unpack(buf)
        return cls(
            si_signo=v[0],
            si_code=v[1],
            si_errno=v[2],
            pr_cursig=v[3],
            pr_sigpend=v[4],
            pr_sighold=v[5],
            pr_pid=v[6],
            pr_ppid=v[7],
            pr_pgrp=v[8],
            pr_sid=v[9],
            pr_utime=(v[10], v[11]),
            pr_stime=(v[12], v[13]),
            pr_cutime=(v[14], v[15]),
            pr_cstime=(v[16], v[17]),
            pr_reg=tuple(v[18 : 18 + _NREGS]),
            pr_fpvalid=v[18 + _NREGS],
        )

    def pack(self) -> bytes:
        """Encode to the 336-byte descriptor (padding bytes zero)."""
        return _PRSTATUS.pack(
            self.si_signo,
            self.si_code,
            self.si_errno,
            self.pr_cursig,
            self.pr_sigpend,
            self.pr_sighold,
            self.pr_pid,
            self.pr_ppid,
            self.pr_pgrp,
            self.pr_sid,
            *self.pr_utime,
            *self.pr_stime,
            *self.pr_cutime,
            *self.pr_cstime,
            *self.pr_reg,
            self.pr_fpvalid,
        )

    @classmethod
    def from_registers(cls, pr_pid: int, **registers: int) -> PrStatus:
        """Build a note for ``pr_pid`` from named registers (others 0): ``rip=..., rsp=...``."""
        unknown = set(registers) - set(PRSTATUS_REGISTERS)
        if unknown:
            raise ValueError(f"unknown x86_64 registers: {sorted(unknown)}")
        return cls(pr_pid=pr_pid, pr_reg=tuple(registers.get(n, 0) for n in PRSTATUS_REGISTERS))

    @property
    def registers(self) -> dict[str, int]:
        """The registers by name."""
        return dict(zip(PRSTATUS_REGISTERS, self.pr_reg, strict=True))

    @property
    def rip(self) -> int:
        """Instruction pointer."""
        return self.pr_reg[_RIP]

    @property
    def rsp(self) -> int:
        """Stack pointer."""
        return self.pr_reg[_RSP]


def find_vmcoreinfo(
    blob: bytes | bytearray | memoryview, *, path: str | None = None, base_offset: int = 0
) -> tuple[int, int] | None:
    """Locate the first VMCOREINFO note's text inside ``blob``.

    :return: ``(desc_offset, desc_size)`` relative to ``blob`` (what a kdump
        header's offset_vmcoreinfo/size_vmcoreinfo need), or None
    :raises TruncatedError: a note size runs past the end of ``blob``
    """
    for note in iter_notes(blob, path=path, base_offset=base_offset):
        if note.name == VMCOREINFO_NOTE_NAME:
            return note.desc_offset, len(note.desc)
    return None


def prstatus_notes(
    blob: bytes | bytearray | memoryview, *, path: str | None = None, base_offset: int = 0
) -> list[PrStatus]:
    """The ``CORE``/NT_PRSTATUS notes of ``blob``, in order (= CPU order).

    :raises TruncatedError: a note size runs past the end of ``blob``
    :raises CorruptDataError: a PRSTATUS descriptor is not 336 bytes
    """
    return [
        PrStatus.unpack(note.desc, offset=base_offset + note.desc_offset)
        for note in iter_notes(blob, path=path, base_offset=base_offset)
        if note.name == CORE_NOTE_NAME and note.type == NoteType.NT_PRSTATUS
    ]
