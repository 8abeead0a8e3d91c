"""Re-run committed measurements with the commands they record.

Every bench JSON under ``docs/measurements/`` holds the command that wrote it.
After a change of a default (a costmap parameter, a model), the numbers the
docs quote must all be measured again with the same commands; this runs them,
several at once, from the repository root:

    python bench/rerun_measurements.py docs/measurements/costmap_bench*.json --skip-refused --jobs 8
    python bench/rerun_measurements.py docs/measurements/depth_steps.json --dry-run

A file whose command writes somewhere else (``--out`` naming another file, as
a one-off record made on another machine does) is refused rather than
silently left stale: by default nothing runs then; ``--skip-refused`` names
each refused file and runs the rest, so that a glob over the folder works.
Each command's output goes to ``<json stem>.log`` in
``--log-dir``; a failed command is named and makes the exit status non-zero,
and the others still run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A recorded command without --out wrote to its bench's default file.
DEFAULT_OUTS = {"bench/bench_costmap.py": ROOT / "docs" / "measurements" / "costmap_bench.json"}


class RerunError(ValueError):
    """A measurement file whose command cannot be re-run (naming the file and why)."""


def recorded_command(path: Path) -> list[str]:
    """The command that wrote ``path``, checked to write that very file again."""
    try:
        command = json.loads(path.read_text())["command"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RerunError(f"{path}: no recorded 'command' ({error})") from error
    words = shlex.split(command)
    if len(words) < 2 or words[0] != "python" or not words[1].startswith("bench/"):
        raise RerunError(f"{path}: command is not 'python bench/...': {command!r}")
    out = Path(words[words.index("--out") + 1]) if "--out" in words[:-1] else DEFAULT_OUTS.get(words[1])
    if out is None or (ROOT / out).resolve() != path.resolve():
        raise RerunError(f"{path}: its command writes {out}, not this file: {command!r}")
    return [sys.executable, *words[1:]]


def run_one(command: list[str], log: Path) -> int:
    """Run one command from the repository root, its output into ``log``."""
    with log.open("w") as stream:
        return subprocess.run(command, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", type=Path, nargs="+", help="measurement JSONs to write again")
    parser.add_argument("--jobs", type=int, default=1, help="commands run at once")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/rerun_measurements"),
                        help="folder for each command's output")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--skip-refused", action="store_true",
                        help="name and skip files that cannot be re-run (one-off records) instead of running nothing")
    args = parser.parse_intermixed_args(argv)
    commands: dict[Path, list[str]] = {}
    refused = []
    for path in args.files:
        try:
            commands[path] = recorded_command(path)
        except RerunError as error:
            print(f"rerun_measurements: {'skipped: ' if args.skip_refused else ''}{error}", file=sys.stderr)
            refused.append(path)
    if refused and not args.skip_refused:
        return 2
    if args.dry_run:
        for command in commands.values():
            print(shlex.join(command))
        return 0
    args.log_dir.mkdir(parents=True, exist_ok=True)
    logs = {path: args.log_dir / f"{path.stem}.log" for path in commands}
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        codes = dict(zip(commands, pool.map(run_one, commands.values(), logs.values()), strict=True))
    failed = [path for path, code in codes.items() if code != 0]
    for path, code in codes.items():
        print(f"{'ok  ' if code == 0 else f'FAIL (exit {code})'} {path}  (log {logs[path]})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
