# SPDX-License-Identifier: GPL-2.0-or-later
"""The whole kdump cycle on real Debian kernels under QEMU, checked by real readers.

Boot (crashkernel=) -> `diskdump arm` + kexec -p -> workload -> `diskdump test
--force` (sysrq c) -> capture kernel runs `diskdump dump` (a blank virtio disk
first, which the pattern check must skip) -> reboot -> the first kernel finds
the dump -> `diskdump savecore` on the host -> makedumpfile, crash, drgn and
libkdumpfile read the saved vmcore. Phase timings go to artefacts/vm/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from diskdump.cli.main import main
from diskdump.formats.detect import opened_vmcore
from diskdump.vm.cycle import CycleOptions, CycleResult, run_cycle
from tests.differential.readers import (
    crash_osrelease,
    drgn_compare,
    libkdumpfile_compare,
    makedumpfile_dmesg,
)
from tests.vm.conftest import ARTEFACTS, KERNELS, keep_on_failure, need_vm_tools

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(1500)]

PANIC_LINE = "Kernel panic - not syncing: sysrq triggered crash"
WORKLOAD_LINE = "diskdump-vm: workload ready"


def _record(name: str, result: CycleResult) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    facts = {
        "release": result.release,
        "phases_s": {k: round(v, 1) for k, v in result.phases.items()},
        "total_s": round(sum(result.phases.values()), 1),
        "capture_initramfs_bytes": result.capture.size,
        "capture_initramfs_unpacked_bytes": result.capture.unpacked_size,
    }
    (ARTEFACTS / f"{name}.json").write_text(json.dumps(facts, indent=2) + "\n")


@pytest.mark.parametrize("kernel", KERNELS)
def test_cycle(kernel: str, tmp_path: Path) -> None:
    need_vm_tools()
    work = tmp_path / "cycle"
    with keep_on_failure(work, f"cycle-{kernel}"):
        result = run_cycle(CycleOptions(kernel=kernel, workdir=work))
        _record(f"cycle-{kernel}", result)
        console = result.console_log.read_text(errors="replace")
        assert result.dump_status == 0
        # the blank disk came first; the writer skipped it and used the formatted one
        assert re.search(r"/dev/vda: skipped: not a usable dump partition", console)
        assert re.search(r"dump [0-9a-f]{32} complete on /dev/vdb", console)
        assert result.vmcore is not None and result.vmcore.is_absolute()
        dmesg = makedumpfile_dmesg(result.vmcore, tmp_path)
        assert PANIC_LINE in dmesg
        assert WORKLOAD_LINE in dmesg
        assert crash_osrelease(result.vmcore) == result.release
        with opened_vmcore(result.vmcore) as ours:
            drgn_pages = drgn_compare(result.vmcore, ours)
            lkf_pages, facts = libkdumpfile_compare(result.vmcore, ours, tmp_path)
        assert drgn_pages == lkf_pages > 10_000
        assert facts["release"] == result.release
        assert result.savecore_dir is not None
        info = json.loads((result.savecore_dir / "info.json").read_text())
        assert PANIC_LINE in json.dumps(info)


def test_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`diskdump demo` (what `make demo` runs): exit 0, the panic line, `vmcore: PATH`."""
    need_vm_tools()
    work = tmp_path / "demo"
    with keep_on_failure(work, "demo"):
        code = main(["demo", "--workdir", str(work)])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "sysrq triggered crash" in out
        match = re.search(r"^vmcore: (/\S+)$", out, re.MULTILINE)
        assert match is not None, out
        vmcore = Path(match.group(1))
        assert vmcore.is_file()
        summary = json.loads(_info_json(vmcore, capsys))
        assert summary["panic"] == PANIC_LINE
        assert summary["complete"] is True


def _info_json(vmcore: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["info", "--json", str(vmcore)]) == 0
    return capsys.readouterr().out
