"""Host-side time per frame of the inference nodes, model inference excluded, vs a naive baseline.

What the depth and segmentation nodes do around ``session.run`` on each
1280x1080 rgb8 camera frame: message -> array, resize + normalise, head
composition / argmax, colouring, and building the output messages (plus the
costmap build on a rendered synthetic frame at the models' output sizes). The
model is replaced by fixed outputs of the real shapes (the shipped models'
input sizes, read from the committed INT8 models' metadata: depth 544x640,
segmentation 544x640), so the numbers are the host's share alone. The depth
outputs are a ground plane's staircase of levels (each level several rows
deep, as the shipped model gives), and the depth node interpolates them as it
does by default (``interpolate_levels``; the baseline calls the same
``interpolate_level_runs``, so it adds the same time to both). Goal: <= 5 ms
per frame per node on one core.

The baseline in the same run does the same work the straightforward way:
cv_bridge-style copies, float64 maths, fresh allocations every call,
``np.argmax(axis=0)`` and fancy-index colouring; for the costmap, the float64
N x 3 point path with boolean-mask copies and ``np.floor`` binning
(``project_points`` + ``grid_from_points``). ``--stages`` adds a per-step
breakdown of the optimised path. "costmap, every row" is the default build with ``near_row_spacing`` 0 (no
near rows thinned), and the JSON records how many depth rows the default build works on. The machine may be shared: each optimised
frame is timed in turn with its baseline frame, so a slow spell hits both and
the ratio holds; read the ratios.

    python bench/bench_host.py [--frames 30] [--stages] [--out docs/measurements/bench_host.json]

``--depth-hw H W`` times the depth node and the costmap at another depth model size (a candidate model's,
before it ships).
"""

from __future__ import annotations

import argparse
import array
import functools
import itertools
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np

from perception_core.depth_codec import interpolate_level_runs
from perception_core.image_codec import array_to_image_fields, image_to_array
from perception_core.model_metadata import read_metadata
from perception_core.pipelines import (
    DepthPipeline,
    SegPipeline,
    colorize_depth,
    colorize_labels,
    overlay,
    scale_intrinsics,
)
from perception_core.runtime.loader import load_model
from perception_core.testing.tiny_models import make_tiny_depth_model, make_tiny_seg_model

MODELS = Path(__file__).resolve().parents[1] / "models"
CAMERA_HW = (1080, 1280)
DEPTH_HW = read_metadata(MODELS / "depth_levels_r18_int8_qdq.onnx").input_hw
SEG_HW = read_metadata(MODELS / "ddrnet23s_offroad_int8_qdq.onnx").input_hw
LEVELS = 256
MAX_DEPTH = 15.0
K = np.array([[1000.0, 0, 639.5], [0, 1000.0, 539.5], [0, 0, 1]])


def _camera_msg():
    """A real rclpy Image when ROS is importable, else a plain stand-in with the same fields."""
    rgb = np.random.default_rng(0).integers(0, 256, (*CAMERA_HW, 3), dtype=np.uint8)
    fields = array_to_image_fields(rgb, "rgb8")
    try:
        from sensor_msgs.msg import Image
    except ImportError:
        from types import SimpleNamespace

        return SimpleNamespace(**fields), None
    return Image(**fields), Image


def _image_msg(image_cls, array_: np.ndarray, encoding: str):
    fields = array_to_image_fields(array_, encoding)
    return image_cls(**fields) if image_cls is not None else fields


# --------------------------------------------------------------------------- optimised (what the nodes run)


def _depth_staircase() -> dict[str, np.ndarray]:
    """Depth heads' outputs for a ground plane seen from 1.4 m, rolled 3 deg: levels that climb up each
    column a run of rows at a time, and a fractional head at half a step (what the shipped model gives)."""
    h, w = DEPTH_HW
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    focal = 0.5 * w  # 90 deg across
    below_horizon = (rows - 0.35 * h + np.tan(np.radians(3.0)) * (cols - w / 2)) / focal
    depth = np.where(below_horizon > 0, 1.4 / np.maximum(below_horizon, 1e-6), MAX_DEPTH)
    step = MAX_DEPTH / (LEVELS - 1)
    level = np.clip(np.floor(depth / step), 0, LEVELS - 1)
    return {"integer": (level / (LEVELS - 1))[None, None].astype(np.float32),
            "fractional": np.full((1, 1, h, w), 0.5 * step, np.float32)}


def depth_frame_fast(msg, pipe: DepthPipeline, outputs: dict, image_cls) -> None:
    image = image_to_array(msg)
    pipe.preprocessor.feeds(pipe.metadata.input_name, image, "RGB")
    result = pipe.postprocess(outputs)
    _image_msg(image_cls, result.depth, "32FC1")
    _image_msg(image_cls, colorize_depth(result.depth, pipe.max_depth), "rgb8")
    scale_intrinsics(K, CAMERA_HW, DEPTH_HW)


def seg_frame_fast(msg, pipe: SegPipeline, outputs: dict, image_cls) -> None:
    image = image_to_array(msg)
    pipe.preprocessor.feeds(pipe.metadata.input_name, image, "RGB")
    result = pipe.postprocess(outputs)
    _image_msg(image_cls, result.labels, "mono8")
    blended = overlay(pipe.preprocessor.resized, colorize_labels(result.labels, pipe.colors), 0.5)
    _image_msg(image_cls, blended, "rgb8")


# --------------------------------------------------------------------------- naive baseline


def _naive_to_array(msg) -> np.ndarray:
    data = bytes(msg.data)  # cv_bridge-style: copy the buffer, then reshape a copy
    return np.frombuffer(data, np.uint8).reshape(msg.height, msg.width, 3).copy()


def _naive_preprocess(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    resized = cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
    x = resized.astype(np.float64) / 255.0
    x = (x - np.array([0.0, 0.0, 0.0])) / np.array([1.0, 1.0, 1.0])
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None]).astype(np.float32)


def _naive_msg(image_cls, array_: np.ndarray, encoding: str):
    raw = array_.tobytes()
    data = array.array("B", raw)
    fields = {"height": array_.shape[0], "width": array_.shape[1], "encoding": encoding, "is_bigendian": 0,
              "step": len(raw) // array_.shape[0], "data": data}
    return image_cls(**fields) if image_cls is not None else fields


def depth_frame_naive(msg, outputs: dict, image_cls) -> None:
    _naive_preprocess(_naive_to_array(msg), DEPTH_HW)
    integer = outputs["integer"][0, 0].astype(np.float64)
    fractional = outputs["fractional"][0, 0].astype(np.float64)
    depth = integer * MAX_DEPTH + fractional
    depth = interpolate_level_runs(depth, np.rint(integer * (LEVELS - 1)).astype(np.int32), MAX_DEPTH / (LEVELS - 1))
    depth = np.where((depth > 0) & (depth <= MAX_DEPTH), depth, np.nan).astype(np.float32)
    _naive_msg(image_cls, depth, "32FC1")
    scaled = np.nan_to_num(depth / MAX_DEPTH * 255.0).clip(0, 255).astype(np.uint8)
    colour = cv2.cvtColor(cv2.applyColorMap(255 - scaled, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    colour[np.isnan(depth)] = 0
    _naive_msg(image_cls, colour, "rgb8")
    k = K.copy()
    k[0] *= DEPTH_HW[1] / CAMERA_HW[1]
    k[1] *= DEPTH_HW[0] / CAMERA_HW[0]


def seg_frame_naive(msg, outputs: dict, colors: np.ndarray, image_cls) -> None:
    image = _naive_to_array(msg)
    _naive_preprocess(image, SEG_HW)
    labels = outputs["logits"][0].argmax(axis=0).astype(np.uint8)
    np.bincount(labels.ravel(), minlength=256)
    _naive_msg(image_cls, labels, "mono8")
    small = cv2.resize(image, (SEG_HW[1], SEG_HW[0]), interpolation=cv2.INTER_AREA)
    colour = colors[labels]
    blended = (0.5 * colour.astype(np.float64) + 0.5 * small.astype(np.float64)).astype(np.uint8)
    _naive_msg(image_cls, blended, "rgb8")


# --------------------------------------------------------------------------- costmap


@functools.cache
def _costmap_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """A synthetic drive frame (model_tools.data.synth) as the costmap node receives it: depth at the depth
    model's size (DEPTH_HW, nearest), labels at the segmentation model's (SEG_HW), K of the camera and its mount.

    Random model outputs would give random labels and depth (a grid of speckle); a rendered scene has the
    ground, obstacles and sky whose handling the build time depends on.
    """
    from model_tools.data.synth import CameraRig, build_scene, drive_pose, render_frame

    rig = CameraRig.default(CAMERA_HW[1], CAMERA_HW[0])
    scene = build_scene(11, length=20.0, clear_corridor=True)
    frame = render_frame(rig, 11, drive_pose(scene, 1.0), time_s=1.0, scene=scene)
    depth = cv2.resize(np.where(frame.depth > 0, frame.depth, np.nan).astype(np.float32), (DEPTH_HW[1], DEPTH_HW[0]),
                       interpolation=cv2.INTER_NEAREST)
    labels = cv2.resize(frame.label, (SEG_HW[1], SEG_HW[0]), interpolation=cv2.INTER_NEAREST)
    mount = dict(zip(("mount_x", "mount_y", "mount_z", "mount_roll", "mount_pitch", "mount_yaw"), rig.mount,
                     strict=True))
    return depth, labels, rig.K, mount


def _costmap_steps() -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    """(name, optimised, naive) costmap builds on a rendered scene: the node's default base-frame grid, the same
    with ``ground_geometry`` off (labels alone), the grid in a fixed frame (a moving pose, so the per-pixel
    gains are recomputed every frame), and a camera moving on its mount (TF base -> camera changing every frame
    by a hundredth of a degree of pitch, so the cached ray geometry is computed anew each time). Naive: float64
    N x 3 points, boolean-mask copies, np.floor binning (``project_points`` + ``grid_from_points``, the
    module's own reference path; it has no dense ground)."""
    import math

    from perception_core import costmap
    from perception_core.geometry import pose_matrix

    depth, labels, k, mount = _costmap_scene()
    config = costmap.CostmapConfig(**mount)
    classes = costmap.class_map_from_ontology()
    rolling = costmap.RollingGrid(config)
    poses = iter(pose_matrix(0.01 * i, 0.02 * i, 0.0, 0.0, 0.0, math.radians(i)) for i in range(10**9))

    def naive() -> None:
        categories = classes.category[costmap.resize_nearest(labels, depth.shape).astype(np.int64)]
        points, cats, *_ = costmap.project_points(depth, categories, scale_intrinsics(k, CAMERA_HW, DEPTH_HW),
                                                  costmap.camera_to_grid_transform(config), config)
        costmap.grid_from_points(points, cats, config)

    # Built before timing: the node gets each transform from TF, it does not build a config for it.
    moving_mounts = itertools.cycle([costmap.camera_to_grid_transform(
        costmap.CostmapConfig(**{**mount, "mount_pitch": mount["mount_pitch"] + math.radians(0.01) * i}))
        for i in range(50)])
    labels_only = costmap.CostmapConfig(**mount, ground_geometry=False)
    every_row = costmap.CostmapConfig(**mount, near_row_spacing=0.0)
    return [
        ("costmap build", lambda: costmap.build_costmap(depth, labels, k, config, classes, k_hw=CAMERA_HW), naive),
        ("costmap, every row", lambda: costmap.build_costmap(depth, labels, k, every_row, classes, k_hw=CAMERA_HW),
         naive),
        ("costmap, no geometry", lambda: costmap.build_costmap(depth, labels, k, labels_only, classes, k_hw=CAMERA_HW),
         naive),
        ("costmap (odom grid)", lambda: costmap.build_costmap(depth, labels, k, config, classes, k_hw=CAMERA_HW,
                                                              window=rolling.window_for(next(poses))), naive),
        ("costmap, moving mount", lambda: costmap.build_costmap(depth, labels, k, config, classes,
                                                                camera_to_base=next(moving_mounts), k_hw=CAMERA_HW),
         naive),
    ]


def _costmap_rows_worked() -> dict[str, int]:
    """Depth rows the default build works on (near rows thinned, ``near_row_spacing``) and the image's rows."""
    from perception_core import costmap
    from perception_core.costmap.projection import _depth_geometry

    depth, _, k, mount = _costmap_scene()
    config = costmap.CostmapConfig(**mount)
    step, geometry = _depth_geometry(scale_intrinsics(k, CAMERA_HW, depth.shape), depth.shape,
                                     costmap.camera_to_grid_transform(config), config)
    rows = depth.shape[0] if geometry.rows is None else int(geometry.rows.size)
    return {"rows_worked": rows, "image_rows": int(depth.shape[0]), "column_step": int(step)}


def _print_stages(msg, depth_pipe: DepthPipeline, seg_pipe: SegPipeline, cid_pipe: SegPipeline, depth_out: dict,
                  seg_out: dict, cid_out: dict, image_cls, frames: int) -> dict[str, float]:
    """Median ms of each step of the optimised nodes' host work, to see where the time goes (printed and
    returned)."""
    image = image_to_array(msg)
    depth = depth_pipe.postprocess(depth_out).depth
    colour = colorize_depth(depth, depth_pipe.max_depth)
    level = np.rint(depth_out["integer"][0, 0] * (LEVELS - 1)).astype(np.int32)
    composed = depth_out["integer"][0, 0] * np.float32(MAX_DEPTH) + depth_out["fractional"][0, 0]
    labels = seg_pipe.postprocess(seg_out).labels
    seg_pipe.preprocessor(image)
    colored = colorize_labels(labels, seg_pipe.colors)
    stages = [
        ("message -> array", lambda: image_to_array(msg)),
        ("depth preprocess", lambda: depth_pipe.preprocessor(image)),
        ("depth postprocess", lambda: depth_pipe.postprocess(depth_out)),
        ("  of it: level interpolation", lambda: interpolate_level_runs(composed, level, depth_pipe.level_step)),
        ("colorize_depth", lambda: colorize_depth(depth, depth_pipe.max_depth)),
        ("depth 32FC1 msg", lambda: _image_msg(image_cls, depth, "32FC1")),
        ("depth rgb8 msg", lambda: _image_msg(image_cls, colour, "rgb8")),
        ("seg preprocess", lambda: seg_pipe.preprocessor(image)),
        ("seg postprocess (logits)", lambda: seg_pipe.postprocess(seg_out)),
        ("seg postprocess (class_id)", lambda: cid_pipe.postprocess(cid_out)),
        ("labels mono8 msg", lambda: _image_msg(image_cls, labels, "mono8")),
        ("colorize_labels", lambda: colorize_labels(labels, seg_pipe.colors)),
        ("overlay", lambda: overlay(seg_pipe.preprocessor.resized, colored, 0.5)),
    ]
    print(f"{'optimised stage':<28}{'ms':>8}")
    timed = {}
    for name, fn in stages:
        ms = timed[name.strip()] = _time(fn, lambda: None, frames)[0]
        print(f"{name:<28}{ms:>8.3f}")
    return timed


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def _time(fast: Callable[[], None], naive: Callable[[], None], frames: int) -> tuple[float, float, float]:
    """Median ms of each, timed in turns frame by frame (a shared machine's slow spells hit both alike, so
    their ratio holds even when the absolute times drift between runs), and the 90th percentile of the fast one:
    a stage that pays a cost on some frames only (a moving mount's geometry) shows it there, not in the median."""
    fast(), naive()  # warm-up: first-call allocations, lazy imports
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(frames):
        for fn, out in ((fast, samples[0]), (naive, samples[1])):
            start = _clock()
            fn()
            out.append((_clock() - start) * 1e3)
    p90 = statistics.quantiles(samples[0], n=10)[-1] if frames >= 2 else samples[0][0]
    return statistics.median(samples[0]), statistics.median(samples[1]), p90


def main(argv: list[str] | None = None) -> int:
    global DEPTH_HW, _clock
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--workdir", default="/tmp/bench_host_models")
    parser.add_argument("--stages", action="store_true", help="also print the optimised path stage by stage")
    parser.add_argument("--out", type=Path, help="also write the table as JSON to this file")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time, which other users of a shared "
                             "machine do not inflate (every stage runs on one thread)")
    parser.add_argument("--depth-hw", type=int, nargs=2, metavar=("H", "W"),
                        help=f"the depth model's input size (default: the committed INT8 model's, {DEPTH_HW[0]} "
                             f"{DEPTH_HW[1]})")
    args = parser.parse_args(argv)
    if args.depth_hw:
        DEPTH_HW = (args.depth_hw[0], args.depth_hw[1])
    _clock = CLOCKS[args.clock]
    cv2.setNumThreads(1)
    work = Path(args.workdir)
    depth_model = load_model(make_tiny_depth_model(work / "depth.onnx", kind="levels", outputs="separate",
                                                   hw=DEPTH_HW, levels=LEVELS, max_depth=MAX_DEPTH), backend="cpu")
    seg_model = load_model(make_tiny_seg_model(work / "seg.onnx", output="logits", hw=SEG_HW), backend="cpu")
    cid_model = load_model(make_tiny_seg_model(work / "seg_cid.onnx", output="class_id", hw=SEG_HW), backend="cpu")
    depth_pipe = DepthPipeline(depth_model, interpolate_levels=True)
    seg_pipe, cid_pipe = SegPipeline(seg_model), SegPipeline(cid_model)
    rng = np.random.default_rng(1)
    depth_out = _depth_staircase()
    seg_out = {"logits": rng.normal(size=(1, 7, *SEG_HW)).astype(np.float32)}
    cid_out = {"class_id": seg_out["logits"].argmax(axis=1, keepdims=True).astype(np.float32)}
    msg, image_cls = _camera_msg()
    print(f"input {CAMERA_HW[1]}x{CAMERA_HW[0]} rgb8 -> depth {DEPTH_HW[1]}x{DEPTH_HW[0]}, "
          f"seg {SEG_HW[1]}x{SEG_HW[0]}; messages: {'rclpy' if image_cls else 'plain dicts'}; "
          f"median of {args.frames} frames, 1 thread, {args.clock} clock, inference excluded")

    steps = [
        ("depth node", lambda: depth_frame_fast(msg, depth_pipe, depth_out, image_cls),
         lambda: depth_frame_naive(msg, depth_out, image_cls)),
        ("segmentation node", lambda: seg_frame_fast(msg, seg_pipe, seg_out, image_cls),
         lambda: seg_frame_naive(msg, seg_out, seg_pipe.colors, image_cls)),
        ("seg node (class_id)", lambda: seg_frame_fast(msg, cid_pipe, cid_out, image_cls),
         lambda: seg_frame_naive(msg, seg_out, seg_pipe.colors, image_cls)),
        *_costmap_steps(),
    ]
    rows = [(name, *_time(fast, naive, args.frames)) for name, fast, naive in steps]
    print(f"{'stage':<20}{'optimised ms':>14}{'(p90)':>8}{'naive ms':>12}{'speed-up':>10}{'goal 5 ms':>11}")
    for name, fast, naive, p90 in rows:
        print(f"{name:<20}{fast:>14.2f}{p90:>8.2f}{naive:>12.2f}{naive / fast:>9.1f}x"
              f"{'ok' if fast <= 5.0 else 'MISSED':>11}")
    stages = {}
    if args.stages:
        stages = _print_stages(msg, depth_pipe, seg_pipe, cid_pipe, depth_out, seg_out, cid_out, image_cls,
                               args.frames)
    if args.out:
        import json

        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "command": "python bench/bench_host.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "frames": args.frames, "threads": 1, "clock": args.clock, "goal_ms": 5.0,
            "depth_hw": list(DEPTH_HW), "seg_hw": list(SEG_HW),
            "stages": {name: {"optimised_ms": fast, "naive_ms": naive, "optimised_p90_ms": p90}
                       for name, fast, naive, p90 in rows},
            **({"optimised_steps_ms": stages} if stages else {}),
            "costmap_work": _costmap_rows_worked(),
            "load_average_1min": os.getloadavg()[0],
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
