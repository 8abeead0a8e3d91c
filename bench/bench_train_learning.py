"""Same learning: short training runs, eager vs fast path, same seed and data; validation curves to JSON.

For each task it trains, through the ``model-tools`` CLI and the one engine:

- ``eager``: step_mode eager + data_pipeline workers (seed S),
- ``fast``: step_mode cuda_graph + data_pipeline cached (seed S),
- ``eager_seed2``: eager with seed S+1, the run-to-run noise the fast path is judged against,

all for the same number of steps with validation every ``--val-every`` epochs,
as concurrent processes spread over the visible GPUs (the curves, not the
speed, are what this measures; ``bench_train_*.py`` time the paths). The
JSON holds each run's validation curve (mIoU for segmentation, abs_rel for
depth), training loss, summary and the processes' settings.

    python bench/bench_train_learning.py --data DATA --out learning.json [--tasks seg,depth]
    python bench/bench_train_learning.py --plot learning.json docs/figures/fast_path_learning.png
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = {"eager": ("eager", "workers", 0), "fast": ("cuda_graph", "cached", 0), "eager_seed2": ("eager", "workers", 1)}
TASKS = {
    # task: (CLI group, config, headline metric, batch, lr)
    "seg": ("seg", "config/train/seg_ddrnet23s_demo.yaml", "miou", 8, 0.001),
    "depth": ("depth", "config/train/depth_levels_r18.yaml", "abs_rel", 16, 0.0006),
}


def _command(task: str, run: str, data: Path, run_dir: Path, steps: int, val_every: int, workers: int,
             extra: list[str]) -> list[str]:
    group, config, _, batch, lr = TASKS[task]
    step_mode, pipeline, seed_offset = RUNS[run]
    data_set = (f"data.sources=[{{format: synthetic, root: {data}}}]" if task == "seg" else f"data.root={data}")
    sets = [data_set, f"max_steps={steps}", "time_budget_min=0", f"batch_size={batch}", f"lr={lr}",
            f"seed={seed_offset}", f"step_mode={step_mode}", f"data_pipeline={pipeline}", f"val_every_epochs={val_every}",
            f"num_workers={workers}", "progress_bar=false", "log_every_steps=25", "checkpoint_every_steps=0",
            f"cache_dir={run_dir.parent / ('cache_' + task)}", *extra]
    return [sys.executable, "-m", "model_tools.cli", group, "train", "--config", str(REPO / config), "--run-dir", str(run_dir),
            *[arg for item in sets for arg in ("--set", item)]]


def _rows(path: Path, phase: str) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [row for row in csv.DictReader(f) if row.get("phase") == phase]


def plot(result_path: Path, png: Path) -> None:
    """Validation curves (top) and training loss (bottom) of every run, one column per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = json.loads(result_path.read_text())
    tasks = [t for t in TASKS if any(r["task"] == t for r in result["runs"].values())]
    fig, axes = plt.subplots(2, len(tasks), figsize=(6.5 * len(tasks), 7), squeeze=False)
    styles = {"eager": ("tab:blue", "-"), "fast": ("tab:red", "-"), "eager_seed2": ("tab:blue", ":")}
    labels = {"eager": "eager, seed 0", "fast": "fast path (CUDA graph + cached), seed 0", "eager_seed2": "eager, seed 1"}
    for column, task in enumerate(tasks):
        metric = TASKS[task][2]
        for run, (colour, line) in styles.items():
            entry = result["runs"].get(f"{task}_{run}", {})
            if entry.get("val"):
                xs, ys = zip(*entry["val"], strict=True)
                axes[0][column].plot(xs, ys, line, color=colour, marker="o", ms=3, label=labels[run])
            if entry.get("train_loss"):
                xs, ys = zip(*entry["train_loss"], strict=True)
                axes[1][column].plot(xs, ys, line, color=colour, lw=1, label=labels[run])
        axes[0][column].set_title(f"{task}: validation {metric}")
        axes[1][column].set_title(f"{task}: training loss")
        axes[1][column].set_yscale("log")
        if not TASKS[task][2] == "miou":
            axes[0][column].set_yscale("log")  # abs_rel falls by orders of magnitude
        for ax in axes[:, column]:
            ax.set_xlabel("optimiser step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"Same learning, eager vs fast path ({result.get('gpu', '')})")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plot", nargs=2, metavar=("JSON", "PNG"), help="only plot an earlier result")
    p.add_argument("--data", help="synthetic folder (model-tools synth) with train and val splits")
    p.add_argument("--out", help="JSON to write")
    p.add_argument("--work", default="/tmp/learning_runs", help="run folders")
    p.add_argument("--tasks", default="seg,depth")
    p.add_argument("--seg-steps", type=int, default=1000)
    p.add_argument("--depth-steps", type=int, default=400)
    p.add_argument("--val-every", type=int, default=2, help="validate every N epochs")
    p.add_argument("--workers", type=int, default=3, help="loader workers per eager run")
    p.add_argument("--gpus", type=int, default=0, help="GPUs to spread the runs over (default: all visible)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before the runs are killed")
    p.add_argument("--set-seg", action="append", default=[], help="extra key=value for the segmentation runs")
    p.add_argument("--set-depth", action="append", default=[], help="extra key=value for the depth runs")
    args = p.parse_args()
    if args.plot:
        plot(Path(args.plot[0]), Path(args.plot[1]))
        return 0
    if not args.data or not args.out:
        p.error("--data and --out are needed to train")
    import torch

    gpus = args.gpus or max(1, torch.cuda.device_count())
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    jobs = []
    for task in tasks:
        steps = args.seg_steps if task == "seg" else args.depth_steps
        for run in RUNS:
            run_dir = work / f"{task}_{run}"
            workers = args.workers if RUNS[run][1] == "workers" else 2
            extra = args.set_seg if task == "seg" else args.set_depth
            jobs.append((task, run, run_dir, _command(task, run, Path(args.data), run_dir, steps, args.val_every, workers,
                                                      extra)))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = []
    start = time.monotonic()
    for k, (task, run, _, command) in enumerate(jobs):
        log = (work / f"{task}_{run}.log").open("w")
        procs.append(subprocess.Popen(command, env={**env, "CUDA_VISIBLE_DEVICES": str(k % gpus)}, stdout=log,
                                      stderr=subprocess.STDOUT, cwd=REPO))
    deadline = start + args.timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    result: dict = {"data": args.data, "val_every_epochs": args.val_every, "wall_s": time.monotonic() - start,
                    "gpus": gpus, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                    "command": " ".join(["python", *sys.argv]), "runs": {}}
    for (task, run, run_dir, command), proc in zip(jobs, procs, strict=True):
        metric = TASKS[task][2]
        entry: dict = {"task": task, "run": run, "returncode": proc.returncode,
                       "command": " ".join(command[1:]).replace(str(REPO) + "/", "")}
        metrics = run_dir / "metrics.csv"
        if metrics.exists():
            entry["val"] = [[int(float(r["step"])), float(r[metric])] for r in _rows(metrics, "val") if r.get(metric)]
            entry["train_loss"] = [[int(float(r["step"])), float(r["loss"])] for r in _rows(metrics, "train")]
            entry["img_per_s"] = [[int(float(r["step"])), float(r["img_per_s"])] for r in _rows(metrics, "train")]
        if (run_dir / "summary.json").exists():
            entry["summary"] = json.loads((run_dir / "summary.json").read_text())
        log_text = (work / f"{task}_{run}.log").read_text(errors="replace").splitlines()
        entry["log_lines"] = [line for line in log_text if line.startswith(("train:", "seg train", "depth train"))][-8:]
        if proc.returncode != 0:
            entry["log_tail"] = log_text[-15:]
        result["runs"][f"{task}_{run}"] = entry
        print(f"{task:6s} {run:12s} rc={proc.returncode} last val "
              f"{entry.get('val', [[0, float('nan')]])[-1] if entry.get('val') else '-'}")
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} after {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
