#!/usr/bin/env python3
"""Time `make test` and the demo on this machine; write the result where the docs cite it.

    python scripts/measure_wall_times.py [--out docs/measurements] [--skip-test] [--skip-demo]

Writes ``<out>/wall_times.json`` (per command: the command line, wall seconds,
exit status, the load average before and after, since the machine may be
shared) and copies the demo's own ``metrics.json`` of both paths to
``<out>/demo/{offline,live}_metrics.json``. The README's and docs/demo.md's
wall times and demo numbers come from these files. Run it on a built tree
(`make setup` first): set-up time is not measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def timed(command: str) -> dict[str, Any]:
    """Run ``command`` in bash at the workspace root; its wall time, status and the load around it."""
    load_before = os.getloadavg()
    start = time.monotonic()
    result = subprocess.run(["bash", "-c", command], cwd=ROOT)
    seconds = time.monotonic() - start
    return {"command": command, "seconds": round(seconds, 1), "exit_status": result.returncode,
            "load_average_1_5_15_before": [round(v, 2) for v in load_before],
            "load_average_1_5_15_after": [round(v, 2) for v in os.getloadavg()]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "measurements")
    parser.add_argument("--skip-test", action="store_true")
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "HEAD"), "tree_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "cpus": os.cpu_count(), "python": platform.python_version(), "commands": {},
    }
    if not args.skip_test:
        report["commands"]["make test"] = timed("make test")
    if not args.skip_demo:
        with tempfile.TemporaryDirectory(prefix="measure_demo_") as work:
            demo = Path(work) / "demo"
            report["commands"]["make demo"] = timed(f"source scripts/env.sh && python scripts/demo.py --out {demo}")
            (args.out / "demo").mkdir(parents=True, exist_ok=True)
            for path in ("offline", "live"):
                source = demo / path / "metrics.json"
                if source.is_file():
                    shutil.copyfile(source, args.out / "demo" / f"{path}_metrics.json")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "wall_times.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["commands"], indent=2))
    return max((c["exit_status"] for c in report["commands"].values()), default=0)


if __name__ == "__main__":
    sys.exit(main())
