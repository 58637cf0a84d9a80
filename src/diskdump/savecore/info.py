# SPDX-License-Identifier: GPL-2.0-or-later
"""The info files of a save: ``info.json`` (for tools) and ``info.txt`` (for people).

Both say the same: what was saved, from which device, whether the dump is
complete and what is missing, the crashed kernel's utsname, panic line and
crash time, the dump id (which makes reruns idempotent) and the device
extents to re-initialise; for an encrypted dump, the ``encryption`` entry
(savecore/encrypted.py). Written by savecore/save.py.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from diskdump import __version__
from diskdump.formats.dumpheader import DumpFlag
from diskdump.formats.dumpimage import DumpImage
from diskdump.formats.partition import BlockExtent
from diskdump.savecore.scan import FoundDump
from diskdump.savecore.store import TOOL_NAME

if TYPE_CHECKING:
    from diskdump.savecore.save import SaveOptions

__all__ = ["VMCORE_NAME", "build_info", "render_info_text"]

#: the vmcore file of a save
VMCORE_NAME = "vmcore"
#: utsname fields, in struct new_utsname order
_UTS_KEYS = ("sysname", "nodename", "release", "version", "machine", "domainname")


def build_info(
    found: FoundDump,
    image: DumpImage,
    options: SaveOptions,
    problems: Sequence[str],
    extents: Sequence[BlockExtent],
    vmcore_size: int,
) -> dict[str, Any]:
    """The content of info.json (info.txt renders the same mapping).

    ``dump_id`` makes reruns idempotent; ``device_extents`` are the blocks
    re-initialised after the save (also by a rerun after a kill).
    """
    head = image.header
    uts = head.utsname
    incomplete = image.incomplete or not found.complete
    return {
        "tool": TOOL_NAME,
        "tool_version": __version__,
        "dump_id": found.dump_id,
        "status": "INCOMPLETE" if incomplete else "COMPLETE",
        "incomplete": incomplete,
        "missing": list(problems),
        "saved_at": _iso(time.time()),
        "crash_time": _iso(head.crash_time) if head.crash_time else None,
        "dump_start_time": _iso(head.dump_start_time) if head.dump_start_time else None,
        "dump_end_time": _iso(head.dump_end_time) if head.dump_end_time else None,
        "panic_string": image.metadata.panic_string,
        "utsname": {name: getattr(uts, name) for name in _UTS_KEYS},
        "nr_cpus": head.nr_cpus,
        "crashing_cpu": head.crashing_cpu,
        "page_size": head.page_size,
        "max_pfn": head.max_pfn,
        "phys_base": hex(head.phys_base),
        "dump_level": head.dump_level,
        "applied_level": head.applied_level,
        "flags": [f.name for f in DumpFlag if f and f in head.flags and f.name],
        "pages_planned": head.pages_planned,
        "pages_written": head.pages_written,
        "pages_held": image.pages_held,
        "source": image.metadata.source,
        "device": found.device,
        "partition_uuid": str(found.label.uuid),
        "device_extents": [[e.start_lba, e.block_count] for e in extents],
        "vmcore": {
            "file": VMCORE_NAME,
            "format": options.format,
            "compress": options.compress if options.format == "kdump" else "none",
            "size": vmcore_size,
        },
    }


def render_info_text(info: Mapping[str, Any]) -> str:
    """info.txt: the same facts as info.json, one ``key: value`` per line."""
    uts = info["utsname"]
    vmcore = info["vmcore"]
    lines = [
        f"dump status:    {info['status']}",
        f"dump id:        {info['dump_id']}",
        f"host:           {uts['nodename']}",
        f"kernel:         {uts['sysname']} {uts['release']} {uts['version']} {uts['machine']}",
        f"panic:          {info['panic_string'].strip() or '(unknown)'}",
        f"crash time:     {info['crash_time'] or '(unknown)'}",
        f"saved at:       {info['saved_at']}",
        f"cpus:           {info['nr_cpus']} (crashing cpu {info['crashing_cpu']})",
        f"pages:          {info['pages_held']} held, {info['pages_planned']} planned, "
        f"page size {info['page_size']}, max pfn {info['max_pfn']:#x}",
        f"dump level:     {info['dump_level']} requested, {info['applied_level']} applied",
        f"flags:          {', '.join(info['flags']) or '-'}",
        f"device:         {info['device']} (partition {info['partition_uuid']})",
        f"vmcore:         {vmcore['file']} ({vmcore['format']}, {vmcore['compress']}, "
        f"{vmcore['size']} bytes)",
        f"saved by:       diskdump {info['tool_version']}",
    ]
    if info.get("erased"):
        lines.append(f"erased:         {'; '.join(info['erased'])}")
    summary = info.get("summary") or {}
    if summary:
        lines += [
            f"panic line:     {summary.get('panic') or '(none in the kernel log)'}",
            f"crashing cpu:   {summary.get('crashing_cpu')} rip {summary.get('rip')} "
            f"rsp {summary.get('rsp')}",
        ]
    crypt = info.get("encryption")
    if crypt:
        state = "decrypted with the private key" if crypt["saved_decrypted"] else "kept encrypted"
        lines.append(
            f"encryption:     {crypt['cipher']}, key {crypt['key_id']} "
            f"({crypt['key_wrap']}), {state}"
        )
        if crypt.get("note"):
            lines.append(f"                {crypt['note']}")
    if info["missing"]:
        lines.append("missing or odd:")
        lines.extend(f"  - {text}" for text in info["missing"])
    if summary.get("warnings"):
        lines.append("summary warnings:")
        lines.extend(f"  - {text}" for text in summary["warnings"])
    return "\n".join(lines) + "\n"


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
