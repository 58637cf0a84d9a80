# SPDX-License-Identifier: GPL-2.0-or-later
"""Coverage-guided fuzzing of every parser (atheris/libFuzzer), and replay of past findings.

``make test`` runs each target for 60 s, two at a time, from a fixed libFuzzer
seed (so CI replays the sequence verified before submitting); ``make fuzz``
(``--fuzz-seconds``) runs them for 10 minutes each from random seeds.
A reader may raise only diskdump's own errors; it must not hang (libFuzzer
``-timeout``) or allocate in proportion to an unchecked length field
(``-malloc_limit_mb``). Each finding is kept under ``regressions/<target>/``
and replayed by :func:`test_regressions` from then on.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from diskdump.errors import DiskdumpError
from tests.conftest import need
from tests.fuzz.targets import SEEDS, TARGETS

ROOT = Path(__file__).resolve().parents[2]
REGRESSIONS = Path(__file__).resolve().parent / "regressions"
DEFAULT_SECONDS = 60.0
STATS = re.compile(r"stat::number_of_executed_units:\s*(\d+)")


def _seconds(config: pytest.Config) -> float:
    value = config.getoption("--fuzz-seconds")
    return float(value) if value is not None else DEFAULT_SECONDS


#: libFuzzer seed of the short runs in `make test`: the same mutation sequence every run, so
#: CI replays what was verified before submitting; `make fuzz` (--fuzz-seconds) is random
SMOKE_SEED = 1


def _start(name: str, workdir: Path, seconds: float, seed: int) -> subprocess.Popen[bytes]:
    corpus = workdir / name / "corpus"
    corpus.mkdir(parents=True)
    for i, sample in enumerate(SEEDS[name]()):
        (corpus / f"seed-{i}").write_bytes(sample)
    args = [
        sys.executable,
        "-m",
        "tests.fuzz.runner",
        name,
        f"-max_total_time={int(seconds)}",
        "-timeout=30",
        "-rss_limit_mb=3072",
        "-malloc_limit_mb=512",
        "-print_final_stats=1",
        "-max_len=262144",
        f"-artifact_prefix={workdir / name}/",
        str(corpus),
    ]
    # Output goes to a file, never a pipe: a pipe nobody drains while the other target
    # runs fills up and stalls the fuzzer (libFuzzer then reports a bogus timeout).
    with (workdir / name / "log").open("wb") as log:
        return subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"},
        )


def test_fuzz_all_targets(tmp_path: Path, pytestconfig: pytest.Config) -> None:
    """Every target runs clean for the time budget; executions are recorded."""
    need(_has_atheris(), "atheris is not installed (pip install atheris)")
    seconds = _seconds(pytestconfig)
    seed = SMOKE_SEED if pytestconfig.getoption("--fuzz-seconds") is None else 0
    names = sorted(TARGETS)
    results: dict[str, dict[str, object]] = {}
    failures: list[str] = []
    for pair in (names[i : i + 2] for i in range(0, len(names), 2)):
        procs = {name: _start(name, tmp_path, seconds, seed) for name in pair}
        for name, proc in procs.items():
            proc.wait(timeout=seconds * 3 + 120)
            out = (tmp_path / name / "log").read_text(errors="replace")
            match = STATS.search(out)
            results[name] = {
                "executions": int(match.group(1)) if match else 0,
                "seconds": seconds,
                "exit": proc.returncode,
            }
            if proc.returncode != 0:
                found = sorted(p.name for p in (tmp_path / name).glob("*-*") if p.is_file())
                failures.append(f"{name}: exit {proc.returncode}, artefacts {found}\n{out[-3000:]}")
    report = ROOT / "artefacts" / "fuzz.json"
    report.parent.mkdir(exist_ok=True)
    report.write_text(json.dumps(results, indent=2) + "\n")
    assert not failures, "\n\n".join(failures)
    for name, res in results.items():
        assert res["executions"], f"{name}: libFuzzer ran no input"


def _has_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def _regression_cases() -> list[tuple[str, Path]]:
    return [
        (d.name, f)
        for d in sorted(REGRESSIONS.iterdir())
        if d.is_dir()
        for f in sorted(d.iterdir())
        if f.is_file()
    ]


@pytest.mark.parametrize(("name", "path"), _regression_cases(), ids=lambda v: str(v)[-40:])
def test_regressions(name: str, path: Path) -> None:
    """A past finding now raises at most a DiskdumpError."""
    try:
        TARGETS[name](path.read_bytes())
    except DiskdumpError:
        pass


def test_seeds_parse_cleanly() -> None:
    """The seeds are valid inputs: each target accepts them without any error."""
    for name, seeds in SEEDS.items():
        for seed in seeds():
            TARGETS[name](seed)
