# SPDX-License-Identifier: GPL-2.0-or-later
"""``make bench``: every benchmark, each figure a ratio against dd, cp or makedumpfile
measured side by side in the same run on the same input; a table on stdout and
JSON in bench/results/.

Each benchmark module in this directory exposes ``main() -> dict`` returning
``{"rows": [{"name", "ours_s", "ref_name", "ref_s", "ratio", ...}], ...}``.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
#: benchmark modules in the order they run (bench/<name>.py); dump also times savecore vs cp
BENCHMARKS = ("partition", "dump")


def main() -> int:
    sys.path.insert(0, str(ROOT))
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary: dict[str, object] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    failed = False
    for name in BENCHMARKS:
        if not (ROOT / "bench" / f"{name}.py").exists():
            print(f"bench: {name}: no benchmark module yet", file=sys.stderr)
            continue
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name}", flush=True)
        try:
            summary[name] = module.main()
        except Exception as err:  # a benchmark failing must not hide the others
            print(f"bench: {name} failed: {err}", file=sys.stderr)
            summary[name] = {"error": str(err)}
            failed = True
    _print_table(summary)
    out = RESULTS / "bench.json"
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"results: {out}")
    return 1 if failed else 0


def _print_table(summary: dict[str, object]) -> None:
    print()
    print(f"{'benchmark':38} {'ours s':>9} {'reference':>28} {'ref s':>9} {'ratio':>7}")
    for name, result in summary.items():
        if not isinstance(result, dict):
            continue
        for row in result.get("rows", []):
            print(
                f"{name + ': ' + row['name']:38} {row['ours_s']:9.2f} "
                f"{row['ref_name']:>28} {row['ref_s']:9.2f} {row['ratio']:7.2f}"
            )


if __name__ == "__main__":
    sys.exit(main())
