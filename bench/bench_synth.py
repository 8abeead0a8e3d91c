"""Benchmark: synthetic generator frames/s per process, this tree against a baseline tree, in one run.

Renders the same frame seeds with both generators (render only, 640x544 and
1280x1080, the vehicle camera fixed), round by round alternating which goes
first, so both see the same machine load; also this tree with per-frame
camera ranges. The baseline is a git revision of this repository
(``--baseline-ref``, exported with ``git archive`` into a temp folder) and
runs in a subprocess with only its own sources on PYTHONPATH; docs/data.md
compares with 0bea0cd, the generator before the terrain.

Usage: python bench/bench_synth.py [--baseline-ref main] [--frames 8] [--rounds 3] [--json out.json]
Prints frames/s and the ratio this/baseline; ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = ((640, 544), (1280, 1080))

# Runs inside a subprocess with one tree's sources: frames/s of render_frame for each size.
_WORKER = r"""
import json, os, sys, time
os.environ.setdefault("OMP_NUM_THREADS", "1")
from model_tools.data import synth
frames, sizes, ranges = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3] == "1"
out = {}
for w, h in sizes:
    camera = synth.CameraRanges(w, h) if ranges else synth.CameraRig.default(w, h)
    pick = (lambda seed: synth.camera_for(camera, seed)) if ranges else (lambda seed: camera)
    synth.render_frame(pick(synth.frame_seed(9, 0)), synth.frame_seed(9, 0))  # warm caches
    start = time.perf_counter()
    for i in range(frames):
        seed = synth.frame_seed(9, i + 1)
        synth.render_frame(pick(seed), seed)
    out[f"{w}x{h}"] = frames / (time.perf_counter() - start)
print(json.dumps(out))
"""


def export_tree(ref: str, dest: Path) -> Path:
    """``git archive`` of the two generator packages at ``ref`` into ``dest``; returns its src folder."""
    archive = dest / "tree.tar"
    with open(archive, "wb") as fh:
        subprocess.run(["git", "-C", str(REPO), "archive", ref, "src/model_tools/model_tools", "src/perception_core/perception_core"],
                       stdout=fh, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def run_tree(src: Path, frames: int, sizes: list[tuple[int, int]], ranges: bool) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=f"{src / 'model_tools'}:{src / 'perception_core'}", OMP_NUM_THREADS="1")
    env.pop("AMENT_PREFIX_PATH", None)
    done = subprocess.run([sys.executable, "-c", _WORKER, str(frames), json.dumps(sizes), "1" if ranges else "0"],
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default="main", help="git revision of the baseline generator (default main)")
    parser.add_argument("--frames", type=int, default=8, help="frames per size per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median is reported)")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = parser.parse_args()
    sizes = list(SIZES)
    runs: dict[str, list[dict[str, float]]] = {"baseline": [], "this": [], "this_camera_ranges": []}
    with tempfile.TemporaryDirectory() as tmp:
        base_src = export_tree(args.baseline_ref, Path(tmp))
        this_src = REPO / "src"
        for r in range(args.rounds):
            order = [("baseline", base_src, False), ("this", this_src, False)]
            for name, src, ranges in (order if r % 2 == 0 else order[::-1]) + [("this_camera_ranges", this_src, True)]:
                runs[name].append(run_tree(src, args.frames, sizes, ranges))
    result: dict[str, object] = {
        "what": "render_frame frames/s, one process, OMP_NUM_THREADS=1; median over rounds",
        "baseline_ref": args.baseline_ref,
        "baseline_commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", args.baseline_ref], capture_output=True,
                                          text=True, check=True).stdout.strip(),
        "frames_per_round": args.frames, "rounds": args.rounds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_at_end": os.getloadavg()},
        "runs": runs, "median": {}, "ratio_this_over_baseline": {},
    }
    for name, per_round in runs.items():
        result["median"][name] = {k: statistics.median(r[k] for r in per_round) for k in per_round[0]}  # type: ignore[index]
    for size in result["median"]["this"]:  # type: ignore[index]
        result["ratio_this_over_baseline"][size] = (  # type: ignore[index]
            result["median"]["this"][size] / result["median"]["baseline"][size])  # type: ignore[index]
    for name, med in result["median"].items():  # type: ignore[union-attr]
        print(f"{name:20s} " + "  ".join(f"{size}: {fps:6.2f} frames/s" for size, fps in med.items()))
    print("this / baseline      " + "  ".join(f"{size}: {ratio:.2f}x" for size, ratio in
                                             result["ratio_this_over_baseline"].items()))  # type: ignore[union-attr]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
