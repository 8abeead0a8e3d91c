"""Depth accuracy per camera: held-out synthetic frames for each camera, scored through the node's pipeline.

Why: a depth model that is meant to serve any camera in the generator's
ranges must be measured at many cameras, not one. For each set this renders
a held-out synthetic split (seeds the training never used), runs the
exported model through ``perception_core.pipelines.DepthPipeline`` with each
frame's K and camera height (what the depth node passes), and scores it with
the INT8 tools' ``TaskScorer`` (Eigen metrics, valid ground truth in the
model's [min_depth, max_depth]). Sets:

- ``default``: the vehicle camera (1.4 m, 10 deg down, 90 deg FOV, no roll);
- ``random``: a camera drawn per frame from the generator's default ranges;
- ``grid``: one fixed camera per (mount height, pitch, horizontal FOV) cell.

Writes ``cameras.json``, ``cameras.md`` and ``cameras.png`` (abs_rel per
cell) and says per set whether the goals hold (``--goal-default``,
``--goal-any``: abs_rel ceiling and a1 floor).

    python -m model_tools.eval_cameras --model models/depth_levels_r18.onnx --out models/reports/depth_cameras
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CAMERA = {"mount_height": 1.4, "pitch_deg": 10.0, "hfov_deg": 90.0}


def camera_sets(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The sets to render: name, camera source, frames, and the grid cell's values."""
    from model_tools.data.synth import CameraRanges, CameraRig

    sets: list[dict[str, Any]] = []
    if args.default_frames:
        rig = CameraRig.default(args.width, args.height, hfov_deg=DEFAULT_CAMERA["hfov_deg"],
                                mount_height=DEFAULT_CAMERA["mount_height"], pitch_deg=DEFAULT_CAMERA["pitch_deg"])
        sets.append({"name": "default", "camera": rig, "frames": args.default_frames, "cell": dict(DEFAULT_CAMERA)})
    if args.random_frames:
        sets.append({"name": "random", "camera": CameraRanges(args.width, args.height), "frames": args.random_frames,
                     "cell": CameraRanges(args.width, args.height).to_dict()})
    for height, pitch, hfov in itertools.product(args.heights, args.pitches, args.hfovs):
        rig = CameraRig.default(args.width, args.height, hfov_deg=hfov, mount_height=height, pitch_deg=pitch)
        sets.append({"name": f"h{height:g}_p{pitch:g}_fov{hfov:g}", "camera": rig, "frames": args.frames,
                     "cell": {"mount_height": height, "pitch_deg": pitch, "hfov_deg": hfov}})
    return sets


def score_folder(pipeline: Any, split_dir: Path) -> dict[str, Any]:
    """Eigen metrics of the pipeline over one rendered split (each frame with its own camera).

    ``obstacles`` holds the same metrics over the pixels whose true label is a standing obstacle: the
    pixels the costmap places as lethal, where a depth error moves an obstacle (its ``scale`` < 1: too near).
    ``ground_level`` and ``ground_relief`` split the ground pixels (labels that lie flat) by the height of
    their true point above the vehicle's ground plane: within ``RELIEF_BAND_M``, or farther (hills, ditches,
    the ground past a drop-off), where the costmap reads steps, slopes and drops.
    """
    from model_tools.data.readers import read_depth_png16, read_label_ids, read_rgb
    from model_tools.data.synth import read_frame_rig
    from model_tools.quant.evaluate import TaskScorer, depth_range, resize_to, scored_depth
    from perception_core.costmap import class_map_from_ontology
    from perception_core.geometry import camera_optical_pose
    from perception_core.metrics.costmap import RELIEF_BAND_M, pixel_points
    from perception_core.metrics.depth import DepthMetricAccumulator
    from perception_core.pipelines import scale_intrinsics

    scorer = TaskScorer(pipeline.metadata)
    obstacles, level, relief = (DepthMetricAccumulator(*depth_range(pipeline.metadata)) for _ in range(3))
    classes = class_map_from_ontology()
    standing, surface = classes.defined_standing, classes.surface
    for rgb_path in sorted((split_dir / "rgb").glob("*.png")):
        rig = read_frame_rig(split_dir, rgb_path.stem)
        decoded = pipeline.infer(read_rgb(rgb_path), "RGB", camera_k=rig.K, camera_hw=(rig.height, rig.width),
                                 camera_height=rig.mount_height)
        target = read_depth_png16(split_dir / "depth" / rgb_path.name)
        scorer.update(decoded, target)
        labels = resize_to(read_label_ids(split_dir / "label" / rgb_path.name), target.shape)
        predicted = resize_to(scored_depth(decoded, pipeline.metadata), target.shape)
        obstacles.update(predicted, np.where(standing[labels], target, np.nan))
        # Heights of the true points in the vehicle's base frame.
        k = scale_intrinsics(rig.K, (rig.height, rig.width), target.shape)
        valid_target = np.where(target > 0, target, np.nan)
        height = pixel_points(valid_target, k, camera_optical_pose(*rig.mount))[:, 2].reshape(target.shape)
        ground = np.where(surface[labels], target, np.nan)
        with np.errstate(invalid="ignore"):
            level.update(predicted, np.where(np.abs(height) <= RELIEF_BAND_M, ground, np.nan))
            relief.update(predicted, np.where(np.abs(height) > RELIEF_BAND_M, ground, np.nan))
    return scorer.compute() | {"obstacles": obstacles.compute(), "ground_level": level.compute(),
                               "ground_relief": relief.compute()}


def goal_verdict(metrics: dict[str, Any], goal: tuple[float, float]) -> bool:
    abs_rel_max, a1_min = goal
    return bool(metrics["abs_rel"] <= abs_rel_max and metrics["a1"] >= a1_min)


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    from perception_core.metrics.costmap import RELIEF_BAND_M

    goals = report["goals"]
    lines = [f"# Depth accuracy per camera: `{report['model']}`", "",
             f"Held-out synthetic frames ({report['frame_size']}, generator seed {report['seed']}, split `test`), "
             "each scored through `DepthPipeline` with its own K and camera height; valid ground truth in "
             f"[{report['depth_range'][0]}, {report['depth_range'][1]}] m. Command: `{report['command']}`.", "",
             f"Goals: default camera abs_rel <= {goals['default'][0]} and a1 >= {goals['default'][1]}; any camera "
             f"abs_rel <= {goals['any'][0]} and a1 >= {goals['any'][1]}.", "",
             "Obstacles: the same metrics over the pixels whose true label is a standing obstacle (what the "
             "costmap places as lethal); scale is the geometric mean of predicted / true depth (< 1: too near). "
             f"Ground level / relief: abs_rel over the ground pixels whose true point lies within {RELIEF_BAND_M} m of "
             "the vehicle's ground plane, or farther (hills, ditches, past a drop-off; share of the ground pixels "
             "in brackets).", "",
             "| set | mount height (m) | pitch (deg) | HFOV (deg) | frames | abs_rel | rmse (m) | a1 | scale | "
             "obstacles abs_rel | obstacles scale | ground level abs_rel | ground relief abs_rel | goal met |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    def show(value: Any) -> str:
        return f"{value[0]:g}-{value[1]:g}" if isinstance(value, list) else f"{value:g}"

    for entry in report["sets"]:
        cell, m, o = entry["cell"], entry["metrics"], entry["obstacle_metrics"]
        g = entry.get("ground_metrics")
        if g:
            shown = g["level"]["n_valid"] + g["relief"]["n_valid"]
            ground = (f"{g['level']['abs_rel']:.4f} | {g['relief']['abs_rel']:.4f} "
                      f"({100 * g['relief']['n_valid'] / max(shown, 1):.0f} %)")
        else:
            ground = "- | -"
        lines.append(f"| {entry['name']} | {show(cell['mount_height'])} | {show(cell['pitch_deg'])} | {show(cell['hfov_deg'])} | "
                     f"{entry['frames']} | {m['abs_rel']:.4f} | {m['rmse']:.3f} | {m['a1']:.4f} | {m['scale']:.3f} | "
                     f"{o['abs_rel']:.4f} | {o['scale']:.3f} | {ground} | {'yes' if entry['goal_met'] else 'no'} |")
    summary = report["summary"]
    lines += ["", f"Grid: worst abs_rel {summary['grid_worst_abs_rel']:.4f}, lowest a1 {summary['grid_lowest_a1']:.4f}; "
              f"{summary['grid_cells_meeting_goal']} of {summary['grid_cells']} cells meet the any-camera goal.", "",
              "![abs_rel per camera](cameras.png)", ""]
    path.write_text("\n".join(lines))


def write_figure(path: Path, report: dict[str, Any], args: argparse.Namespace) -> None:
    """abs_rel per grid cell: one panel per pitch, mount height x FOV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = {(e["cell"]["mount_height"], e["cell"]["pitch_deg"], e["cell"]["hfov_deg"]): e["metrics"]["abs_rel"]
            for e in report["sets"] if e["name"] not in ("default", "random")}
    if not grid:
        return
    fig, axes = plt.subplots(1, len(args.pitches), figsize=(3.4 * len(args.pitches) + 1.2, 3.4), squeeze=False)
    vmax = max(grid.values())
    for k, (ax, pitch) in enumerate(zip(axes[0], args.pitches, strict=True)):
        values = np.array([[grid[(h, pitch, f)] for f in args.hfovs] for h in args.heights])
        image = ax.imshow(values, vmin=0.0, vmax=vmax, cmap="viridis", origin="lower")
        ax.set_xticks(range(len(args.hfovs)), [f"{f:g}" for f in args.hfovs])
        ax.set_yticks(range(len(args.heights)), [f"{h:g}" for h in args.heights])
        ax.set_xlabel("horizontal FOV (deg)")
        if k == 0:
            ax.set_ylabel("mount height (m)")
        ax.set_title(f"pitch {pitch:g} deg")
        for (i, j), value in np.ndenumerate(values):
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="w" if value < 0.6 * vmax else "k", fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), label="abs_rel")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    from model_tools.data.synth import write_synthetic_folder
    from model_tools.io_utils import write_json
    from perception_core.pipelines import DepthPipeline
    from perception_core.runtime.loader import load_model

    model = load_model(args.model, backend="cpu", expected_task="depth", num_threads=args.threads)
    pipeline = DepthPipeline(model, interpolate_levels=args.interpolate_levels)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work_root = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="eval_cameras_"))
    goals = {"default": tuple(args.goal_default), "any": tuple(args.goal_any)}
    entries = []
    for entry in camera_sets(args):
        started = time.perf_counter()
        split_dir = work_root / entry["name"] / "test"
        if not (split_dir / "rgb").is_dir() or len(list((split_dir / "rgb").glob("*.png"))) != entry["frames"]:
            write_synthetic_folder(work_root / entry["name"], entry["camera"], entry["frames"], args.seed, "test",
                                   workers=args.workers, overwrite=True, progress=False)
        metrics = score_folder(pipeline, split_dir)
        goal = goals["default"] if entry["name"] == "default" else goals["any"]
        entries.append({"name": entry["name"], "cell": entry["cell"], "frames": entry["frames"],
                        "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
                        "obstacle_metrics": {k: float(v) for k, v in metrics["obstacles"].items()},
                        "ground_metrics": {band: {k: float(v) for k, v in metrics[f"ground_{band}"].items()}
                                           for band in ("level", "relief")},
                        "goal_met": goal_verdict(metrics, goal)})
        print(f"{entry['name']:22s} abs_rel {metrics['abs_rel']:.4f} a1 {metrics['a1']:.4f} "
              f"obstacles abs_rel {metrics['obstacles']['abs_rel']:.4f} scale {metrics['obstacles']['scale']:.3f} "
              f"ground level / relief abs_rel {metrics['ground_level']['abs_rel']:.4f} / "
              f"{metrics['ground_relief']['abs_rel']:.4f} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    grid = [e for e in entries if e["name"] not in ("default", "random")]
    report = {
        "model": str(args.model), "metadata": {"depth_camera": pipeline.metadata.depth_camera,
                                               "canonical_focal_px": pipeline.metadata.canonical_focal_px,
                                               "canonical_height_m": pipeline.metadata.canonical_height_m},
        "command": "python -m model_tools.eval_cameras " + shlex.join(args.argv),
        "frame_size": f"{args.width}x{args.height}", "seed": args.seed,
        "interpolate_levels": pipeline.interpolate_levels,
        "depth_range": [pipeline.min_depth, pipeline.max_depth], "goals": goals, "sets": entries,
        "summary": {
            "grid_cells": len(grid),
            "grid_cells_meeting_goal": sum(e["goal_met"] for e in grid),
            "grid_worst_abs_rel": max((e["metrics"]["abs_rel"] for e in grid), default=math.nan),
            "grid_lowest_a1": min((e["metrics"]["a1"] for e in grid), default=math.nan),
        },
    }
    write_json(out / "cameras.json", report)
    write_markdown(out / "cameras.md", report)
    write_figure(out / "cameras.png", report, args)
    print(json.dumps(report["summary"]))
    return report


def main(argv: list[str] | None = None) -> int:
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="depth ONNX model (FP32 or QDQ)")
    parser.add_argument("--out", required=True, help="folder for cameras.json/.md/.png")
    parser.add_argument("--work", default=None, help="folder for the rendered sets (default a temp folder; reused)")
    parser.add_argument("--heights", type=float, nargs="+", default=[0.8, 1.4, 2.2])
    parser.add_argument("--pitches", type=float, nargs="+", default=[0.0, 10.0, 20.0])
    parser.add_argument("--hfovs", type=float, nargs="+", default=[60.0, 90.0, 110.0])
    parser.add_argument("--frames", type=int, default=16, help="frames per grid cell")
    parser.add_argument("--default-frames", type=int, default=200)
    parser.add_argument("--random-frames", type=int, default=200)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=544)
    parser.add_argument("--seed", type=int, default=1001, help="generator seed (the demo models trained on 7-21, 23, 29, 31, 1021, 1023, 1029, 1031, 2029 and 2031)")
    parser.add_argument("--interpolate-levels", action="store_true",
                        help="score the depth as the depth node publishes it by default, its level staircase "
                        "interpolated (DepthPipeline(interpolate_levels=True)); default: the network's own composition")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = its default)")
    parser.add_argument("--goal-default", type=float, nargs=2, default=[0.06, 0.95], metavar=("ABS_REL", "A1"))
    parser.add_argument("--goal-any", type=float, nargs=2, default=[0.08, 0.93], metavar=("ABS_REL", "A1"))
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    from perception_core.errors import PerceptionError

    try:
        run(args)
    except PerceptionError as error:  # a missing or mismatched model, a broken set: one line, naming the file
        print(f"eval_cameras: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
