"""Re-run committed measurements with the commands they record.

Every bench JSON under ``docs/measurements/`` holds the command that wrote it,
and so do the held-out camera reports (``cameras.json``, written by
``python -m model_tools.eval_cameras``) and the range corrections (a YAML's
``source.command``, written by ``python -m model_tools.depth_range_fit``).
After a change of a default (a costmap parameter, a model), the numbers the
docs quote must all be measured again with the same commands; this runs them,
several at once, from the repository root:

    python bench/rerun_measurements.py docs/measurements/costmap_bench*.json --skip-refused --jobs 8
    python bench/rerun_measurements.py docs/measurements/depth_steps.json --dry-run
    python bench/rerun_measurements.py config/range_correction/*.yaml models/reports/depth_cameras*/cameras.json

A file whose command writes somewhere else (``--out`` naming another file, as
a one-off record made on another machine does) is refused rather than
silently left stale: by default nothing runs then; ``--skip-refused`` names
each refused file and runs the rest, so that a glob over the folder works.
A variant of committed benches (another model, an option changed) is measured
with ``--into DIR`` (each bench writes ``DIR/<file name>`` instead, the record
stays as it is) and ``--append "ARGS"`` (arguments added to every command):

    python bench/rerun_measurements.py models/reports/range_correction/without_correction/*.json \
        --into run26_without_correction --append "--interpolate-levels false" --jobs 16

Each command's output goes to ``<file stem>.log`` in ``--log-dir``
(``<folder>_<stem>.log`` where files of one run share a stem); a failed
command is named and makes the exit status non-zero, and the others still run.
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
# Tools run as `python -m MODULE ... --out X`: the file that X names (eval_cameras writes a folder).
MODULE_OUTS = {
    "model_tools.eval_cameras": lambda out: out / "cameras.json",
    "model_tools.depth_range_fit": lambda out: out,
}


class RerunError(ValueError):
    """A measurement file whose command cannot be re-run (naming the file and why)."""


def _command_text(path: Path) -> str:
    """The command a record holds: a JSON's ``command``, a range correction YAML's ``source.command``.

    Only the command is read (not the whole correction through its loader): a correction whose curves are broken
    is just what re-running its fit mends.
    """
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            command = yaml.safe_load(path.read_text())["source"]["command"]
        except yaml.YAMLError as error:
            raise ValueError(f"not YAML ({str(error).splitlines()[0]})") from error
    else:
        command = json.loads(path.read_text())["command"]
    if not isinstance(command, str):
        raise TypeError(f"the command is {type(command).__name__}, not a string")
    return command


def recorded_command(path: Path) -> list[str]:
    """The command that wrote ``path``, checked to write that very file again."""
    try:
        command = _command_text(path)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RerunError(f"{path}: no recorded 'command' ({error})") from error
    words = shlex.split(command)
    out = Path(words[words.index("--out") + 1]) if "--out" in words[:-1] else None
    if len(words) >= 3 and words[:2] == ["python", "-m"] and words[2] in MODULE_OUTS:
        out = MODULE_OUTS[words[2]](out) if out is not None else None
    elif len(words) >= 2 and words[0] == "python" and words[1].startswith("bench/"):
        out = out or DEFAULT_OUTS.get(words[1])
    else:
        raise RerunError(f"{path}: command is not 'python bench/...' or 'python -m {{{', '.join(MODULE_OUTS)}}}': "
                         f"{command!r}")
    if out is None or (ROOT / out).resolve() != path.resolve():
        raise RerunError(f"{path}: its command writes {out}, not this file: {command!r}")
    return [sys.executable, *words[1:]]


def redirected(command: list[str], path: Path, into: Path, extra: list[str]) -> list[str]:
    """A bench's recorded ``command`` writing ``into / path.name`` instead of ``path``, with ``extra`` appended.

    Only ``bench/`` commands: a module's ``--out`` may name a folder (eval_cameras), which a file name cannot stand
    in for.
    """
    if len(command) < 2 or not command[1].startswith("bench/"):
        raise RerunError(f"{path}: --into takes bench commands only, not {shlex.join(command[1:])!r}")
    words = list(command)
    target = str(into / path.name)
    if "--out" in words[:-1]:
        words[words.index("--out") + 1] = target
    else:
        words += ["--out", target]
    return [*words, *extra]


def log_names(paths: list[Path]) -> dict[Path, str]:
    """Each file's stem, with its folder's name in front where files of one run share a stem (every camera report
    is cameras.json; a bench and its without-correction twin share theirs), so no two commands write one log."""
    stems = [path.stem for path in paths]
    return {path: path.stem if stems.count(path.stem) == 1 else f"{path.parent.name}_{path.stem}" for path in paths}


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
    parser.add_argument("--into", type=Path,
                        help="write each bench's result into this folder (same file name), not over the record")
    parser.add_argument("--append", default="", help="arguments added to every command (one string, shell-quoted)")
    parser.add_argument("--skip-refused", action="store_true",
                        help="name and skip files that cannot be re-run (one-off records) instead of running nothing")
    args = parser.parse_intermixed_args(argv)
    commands: dict[Path, list[str]] = {}
    refused = []
    extra = shlex.split(args.append)
    if extra and args.into is None:
        parser.error("--append changes what a record measured: give --into too, so that the record is not overwritten")
    for path in args.files:
        try:
            command = recorded_command(path)
            commands[path] = redirected(command, path, args.into, extra) if args.into is not None else command
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
    if args.into is not None:
        (ROOT / args.into).mkdir(parents=True, exist_ok=True)
    logs = {path: args.log_dir / f"{name}.log" for path, name in log_names(list(commands)).items()}
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        codes = dict(zip(commands, pool.map(run_one, commands.values(), logs.values()), strict=True))
    failed = [path for path, code in codes.items() if code != 0]
    for path, code in codes.items():
        print(f"{'ok  ' if code == 0 else f'FAIL (exit {code})'} {path}  (log {logs[path]})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
