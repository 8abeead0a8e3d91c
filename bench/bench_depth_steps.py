"""What the depth model's integer steps cost the costmap: its fractional head's output, and the costmap from
ground-truth depth cut to the same steps, against the same truth as bench_costmap.

A dual-head depth model composes ``level * step + fractional``; a fractional head that does not resolve
the position inside a step leaves depth on a staircase of ``step * depth_scale`` metres, which near the
vehicle is more than a cell and breaks the dense ground into stripes. This prints the fractional head's
output in units of one step, and the five measures (and the terrain's two) of the costmap built from
(1) GT depth at the model's size, (2) that depth cut to the model's steps, (3) the model's depth, and (2) and
(3) with each column's staircase interpolated between its level edges (``depth_codec.interpolate_level_runs``,
the depth node's ``interpolate_levels``), all with GT labels, on the same frames, at one camera rig.

    python bench/bench_depth_steps.py --seeds 101 303 --out docs/measurements/depth_steps.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 303])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--hfov-deg", type=float, default=90.0)
    parser.add_argument("--mount-height", type=float, default=1.4, help="camera height above the ground, m")
    parser.add_argument("--pitch-deg", type=float, default=10.0, help="camera pitch, degrees down")
    parser.add_argument("--depth-model", type=Path, default=ROOT / "models" / "depth_levels_r18.onnx")
    parser.add_argument("--out", type=Path, help="JSON output")
    args = parser.parse_args(argv)

    import cv2
    from bench_costmap import costmap_parameters, drive_frames, frame_truth
    from tqdm import tqdm

    from model_tools.data.synth import CameraRig
    from perception_core.costmap import CostmapConfig, build_costmap, class_map_from_ontology
    from perception_core.depth_codec import integer_step, interpolate_level_runs
    from perception_core.metrics.costmap import BevGrid, CostmapMeasures
    from perception_core.pipelines import DepthPipeline
    from perception_core.runtime.loader import load_model

    rig = CameraRig.default(1280, 1080, hfov_deg=args.hfov_deg, mount_height=args.mount_height,
                            pitch_deg=args.pitch_deg)
    config = CostmapConfig.from_mapping(costmap_parameters(ROOT / "config" / "perception.yaml", rig, []))
    classes = class_map_from_ontology()
    grid = BevGrid(config.resolution, config.origin_x, config.origin_y, config.rows, config.cols)
    pipe = DepthPipeline(load_model(args.depth_model, backend="cpu", expected_task="depth"))
    interpolating = DepthPipeline(pipe.model, interpolate_levels=True)  # the same model's outputs, as the node does
    meta = pipe.metadata
    step = integer_step(pipe.max_depth, meta.integer_head_kind, meta.levels or 256)
    names = ("gt_depth", "gt_depth_in_model_steps", "gt_depth_in_model_steps_interpolated", "model_depth",
             "model_depth_interpolated")
    measures = {name: CostmapMeasures() for name in names}
    fractions: list[np.ndarray] = []
    scale = 1.0
    bar = tqdm(total=len(args.seeds) * args.frames, desc="bench_depth_steps", unit="frame")
    for seed in args.seeds:
        for frame in drive_frames(rig, seed, args.frames, 2.0, 4.0, grid):
            out = pipe.infer(frame.rgb, "RGB", camera_k=frame.k, camera_height=frame.camera_height)
            scale = out.depth_scale
            if out.fractional is not None:
                fractions.append((out.fractional / step).ravel()[::97])
            hw = out.depth.shape
            gt_small = cv2.resize(frame.depth, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
            labels = cv2.resize(frame.labels, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
            metres = np.float32(step * scale)
            gt_level = np.floor(gt_small / metres)
            stepped = (gt_level + np.float32(0.5)) * metres
            finite_level = np.where(np.isfinite(gt_level), gt_level, -1).astype(np.int32)  # sky: no level
            stepped_interpolated = interpolate_level_runs(stepped, finite_level, metres)
            heads = dict(zip(meta.output_names, (out.integer[None, None], out.fractional[None, None]), strict=True))
            model_interpolated = interpolating.postprocess(heads, camera_k=frame.k, camera_hw=frame.rgb.shape[:2],
                                                           camera_height=frame.camera_height).depth
            truth = frame_truth(frame, config, classes, grid)
            for name, depth in (("gt_depth", gt_small), ("gt_depth_in_model_steps", stepped),
                                ("gt_depth_in_model_steps_interpolated", stepped_interpolated),
                                ("model_depth", out.depth), ("model_depth_interpolated", model_interpolated)):
                result = build_costmap(depth, labels, frame.k, config, classes, k_hw=frame.depth.shape)
                measures[name].add(result.category, truth, grid)
            bar.update(1)
    bar.close()
    fraction = np.concatenate(fractions) if fractions else np.empty(0)
    report = {
        "command": "python bench/bench_depth_steps.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "depth_model": str(args.depth_model.relative_to(ROOT)) if args.depth_model.is_relative_to(ROOT) else
        str(args.depth_model),
        "rig": {"hfov_deg": args.hfov_deg, "mount_height_m": args.mount_height, "pitch_deg": args.pitch_deg},
        "seeds": args.seeds, "frames_per_seed": args.frames,
        "integer_step_m": step, "depth_scale_vehicle_camera": scale, "step_at_vehicle_camera_m": step * scale,
        "fractional_in_steps_percentiles": dict(zip(("p1", "p25", "p50", "p75", "p99"),
                                                    np.percentile(fraction, [1, 25, 50, 75, 99]).tolist(), strict=True))
        if fraction.size else None,
        "costmap": {name: m.summary() for name, m in measures.items()},
    }
    print(f"integer step {step:.4f} m, x {scale:.3f} at the vehicle camera = {step * scale:.3f} m")
    if fraction.size:
        print("fractional head output, in steps (p1 p25 p50 p75 p99):",
              " ".join(f"{v:.3f}" for v in report["fractional_in_steps_percentiles"].values()))
    for name, m in measures.items():
        s = m.summary()
        print(f"{name:>37}: " + ", ".join(f"{k} {s[k]:.3f}" for k in ("obstacle_recall", "obstacle_precision",
                                                                      "object_recall", "holes", "false_lethal",
                                                                      "drop_recall")))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
