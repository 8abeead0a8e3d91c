"""Costmap quality with the models in the loop, against a bird's-eye ground truth, on synthetic drives.

For each seed a synthetic drive is rendered at the vehicle camera size
(``model_tools.data.synth``: ``build_scene`` + ``drive_pose`` +
``render_frame``, as ``write_drive_bag`` does). Every frame is fed in
lock-step (nothing dropped) through the same per-frame work as eval-bag
(``OfflineStack``: depth and segmentation pipelines on ONNX Runtime, then
``build_costmap`` with the costmap node's parameters and the rig's mount),
and scored with ``perception_core.metrics.costmap`` against a bird's-eye
ground truth projected from the GT depth and labels at full resolution. The
same node core fed the GT depth and labels ("GT in -> GT out") is the
control: it must come out (near) perfect. Two more rows swap one model's
output for the ground truth at the model's size, to show which model limits
the costmap.

It also scores the depth model on the same frames (``model_depth``: Eigen
metrics against the GT depth at the model's size, over all pixels in range
and over those whose true label stands up), per seed and in total.

Prints the five measures (obstacle recall, obstacle precision, object
recall, holes, false lethal) and the two of the terrain (drop recall:
ditch walls and cliff edges; false lethal on drivable slopes) against
their goals, per seed and in total, and writes them as JSON. The truth
includes what the exact terrain's steps and slopes block
(``ground_truth_geometry``, from the terrain height under each cell). Model
outputs can be cached (``--cache``) so the costmap can be re-scored quickly
with other parameters (``--set``).

    python bench/bench_costmap.py                                  # defaults: 6 seeds x 8 frames, 1280x1080
    python bench/bench_costmap.py --seeds 5 6 --mount-height 1.1 --pitch-deg 14 --hfov-deg 100
    python bench/bench_costmap.py --seeds 5 6 --roll-deg 4                # a camera mounted with a roll
    python bench/bench_costmap.py --set ground_geometry=false      # labels alone, as before the terrain
    python bench/bench_costmap.py --depth-model models/x.onnx --seg-model models/y.onnx --out /tmp/x.json
    python bench/bench_costmap.py --explain-false-lethal            # + which evidence made the false lethal
    python bench/bench_costmap.py --split-depth                     # + GT depth on the ground / on obstacles only

``--split-depth`` adds two rows with GT labels that swap only part of the
model's depth for the truth: on the ground pixels (``gt_ground_depth_gt_labels``:
the model's depth stays on standing obstacles) or on the standing obstacles
(``gt_obstacle_depth_gt_labels``), to show which part limits the costmap. A
third (``frame_scaled_depth_gt_labels``) keeps all of the model's depth but
multiplies each frame by the one scale that best fits its truth (the median
ratio): what a perfect per-frame scale correction would give, and so how much
of the loss is a global scale rather than the depth's shape.

``--explain-false-lethal`` also builds each frame's costmap from the labels
alone and splits the false lethal cells of the models' costmap by the first
evidence, in this order, that makes them lethal: the labels (HAZARD, or a
standing BLOCKED obstacle), a drop edge, a step between cells, a slope.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "measurements" / "costmap_bench.json"
DEFAULT_SEEDS = (101, 202, 303, 404, 505, 606)  # not the seeds the costmap was developed on


@dataclass
class DriveFrame:
    seed: int
    index: int
    rgb: np.ndarray
    depth: np.ndarray  # GT metres, NaN invalid
    labels: np.ndarray  # GT class ids
    k: np.ndarray
    camera_height: float  # the mount's z: what the depth node's camera_height gives a camera-aware depth model
    ground_height: np.ndarray  # exact terrain height per costmap cell centre, along base_link z


def drive_frames(rig: Any, seed: int, frames: int, fps: float, speed: float, grid: Any) -> Iterator[DriveFrame]:
    """The frames of one synthetic drive, as ``write_drive_bag`` renders them (without writing a bag)."""
    from model_tools.data.synth import drive_frames as render_drive

    xs, ys = grid.centres()
    cx, cy = np.meshgrid(xs, ys)
    for index, (scene, pose, frame) in enumerate(render_drive(rig, seed, frames, fps, speed)):
        depth = np.where(frame.depth > 0, frame.depth, np.float32(np.nan)).astype(np.float32)
        heights = scene.terrain.heights_along_z(pose, cx.ravel(), cy.ravel()).reshape(cx.shape)
        yield DriveFrame(seed, index, frame.rgb, depth, frame.label, np.asarray(frame.K, dtype=np.float64),
                         float(rig.mount_height), heights.astype(np.float32))


def frame_truth(frame: DriveFrame, config: Any, classes: Any, grid: Any) -> Any:
    """The bird's-eye truth of a frame for a costmap of ``config``: from the GT depth and labels at full
    resolution, heights over the exact terrain, raised by its geometry when the costmap costs geometry."""
    from perception_core.costmap import camera_to_grid_transform
    from perception_core.metrics.costmap import ground_truth_bev, ground_truth_geometry

    truth = ground_truth_bev(frame.depth, frame.labels, frame.k, camera_to_grid_transform(config), grid,
                             classes.category, ground_z=config.ground_z, max_point_height=config.max_point_height,
                             min_range=config.min_range, max_range=config.max_range,
                             ground_height=frame.ground_height)
    return ground_truth_geometry(truth, frame.ground_height, config) if config.ground_geometry else truth


def model_key(path: Path) -> str:
    """The cache key of a model: its graph's content hash (a re-export of the same weights hits the cache)."""
    from perception_core.model_metadata import read_metadata

    digest = read_metadata(path).content_sha256
    if digest:
        return f"{path.name}-{digest[:16]}"
    stat = path.stat()  # a model without a recorded hash: size and time, so a rewrite still misses
    return f"{path.name}-{stat.st_size}-{int(stat.st_mtime)}"


def load_or_infer(stack: Any, frame: DriveFrame, cache: Path | None, tag: str) -> tuple[np.ndarray, np.ndarray, float, str]:
    """(depth, labels, inference seconds, range correction outcome) of the models on one frame, from the cache
    when it has them."""
    file = cache / f"{tag}-s{frame.seed}-f{frame.index}.npz" if cache else None
    if file is not None and file.is_file():
        data = np.load(file)
        return data["depth"], data["labels"], float(data["seconds"]), (str(data["range_correction"]) if "range_correction" in data.files else "off")
    start = time.perf_counter()
    depth_out = stack.depth.infer(frame.rgb, "RGB", camera_k=frame.k, camera_height=frame.camera_height)
    depth = depth_out.depth
    labels = stack.seg.infer(frame.rgb, "RGB").labels
    seconds = time.perf_counter() - start
    if file is not None:  # written whole, then renamed: benches run side by side may share a cache
        file.parent.mkdir(parents=True, exist_ok=True)
        partial = file.with_name(f"{file.stem}.{os.getpid()}.partial.npz")
        np.savez(partial, depth=depth, labels=labels, seconds=seconds, range_correction=depth_out.range_correction)
        os.replace(partial, file)
    return depth, labels, seconds, depth_out.range_correction


def depth_node_parameter(args: argparse.Namespace, name: str, default: Any) -> Any:
    """The depth node's parameter ``name`` in the --params file, or ``default`` (the node's) without one."""
    if args.params and args.params.is_file():
        from model_tools.bags.eval_bag import node_parameters

        return node_parameters(args.params, "depth_node").get(name, default)
    return default


def range_correction_path(args: argparse.Namespace) -> Path | None:
    """The range correction (a file or a folder) the bench's depth runs with (see --range-correction),
    absolute, or None."""
    text = args.range_correction
    if text is None:
        text = depth_node_parameter(args, "range_correction_file", "")
    if not text:
        return None
    path = Path(text)
    return path if path.is_absolute() else ROOT / path  # relative to the repository, as the config's model paths


def interpolate_levels(args: argparse.Namespace) -> bool:
    """Whether the bench's depth interpolates its level staircase, as the depth node would (see
    --interpolate-levels)."""
    if args.interpolate_levels is not None:
        return args.interpolate_levels == "true"
    return bool(depth_node_parameter(args, "interpolate_levels", True))


def correction_digest(correction: Any) -> str:
    """A cache key of a range correction: the hash of its contents."""
    import hashlib

    return hashlib.sha256(json.dumps(correction.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def best_frame_scale(depth: np.ndarray, truth: np.ndarray, config: Any) -> float:
    """The one factor that best maps a frame's predicted depth onto its truth: the median of truth / prediction
    over the pixels both put in range (1 when none do)."""
    with np.errstate(invalid="ignore"):
        both = ((depth > config.min_range) & (depth < config.max_range)
                & (truth > config.min_range) & (truth < config.max_range))
    return float(np.median(truth[both] / depth[both])) if both.any() else 1.0


FALSE_LETHAL_SOURCES = ("labels_hazard", "labels_blocked", "drop_edge", "step", "slope", "other")


def object_offsets_removed(depth: np.ndarray, truth: np.ndarray, standing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``depth`` with each standing obstacle's own offset taken out, and per object (offset, spread, pixels, depth).

    Every 4-connected group of ``standing`` pixels (an object, as its GT labels outline it) is scaled by the median
    truth / depth ratio of its pixels. What is left on the obstacles is their depth's spread within each object; the
    ground keeps the model's depth. Per object [n, 4]: the median log(depth / truth) (its offset), the median
    |log ratio - offset| (its spread), its pixel count and its median true depth.
    """
    import cv2

    known = standing & np.isfinite(truth) & np.isfinite(depth) & (depth > 0) & (truth > 0)
    count, groups = cv2.connectedComponents(known.astype(np.uint8), connectivity=4)
    out = depth.copy()
    if count < 2:
        return out, np.zeros((0, 4))
    ids, depth_known, truth_known = groups[known], depth[known], truth[known]
    order = np.argsort(ids, kind="stable")
    log_ratio = np.log(depth_known / truth_known)[order]
    true_depth = truth_known[order]
    starts = np.searchsorted(ids[order], np.arange(2, count))
    stats = np.array([(np.median(part), np.median(np.abs(part - np.median(part))), part.size, np.median(z))
                      for part, z in zip(np.split(log_ratio, starts), np.split(true_depth, starts), strict=True)])
    factor = np.ones(count, np.float64)
    factor[1:] = np.exp(-stats[:, 0])
    out[known] = depth_known * factor[ids].astype(np.float32)
    return out, stats


def object_offset_summary(stats: np.ndarray, bands: list[tuple[float, float]]) -> dict[str, Any]:
    """Per band of true depth: objects, and the pixel-weighted median |offset| and spread (relative, from logs)."""
    summary: dict[str, Any] = {"bands_m": bands, "objects": [], "offset": [], "spread": []}
    for low, high in bands:
        part = stats[(stats[:, 3] >= low) & (stats[:, 3] < high)] if stats.size else stats
        summary["objects"].append(len(part))
        for key, column in (("offset", 0), ("spread", 1)):
            if not len(part):
                summary[key].append(float("nan"))
                continue
            values = np.abs(part[:, column])
            order = np.argsort(values)
            weights = np.cumsum(part[order, 2])
            summary[key].append(float(np.expm1(values[order][np.searchsorted(weights, weights[-1] / 2)])))
    return summary


def false_lethal_sources(result: Any, labels_only: Any, false_lethal: np.ndarray, config: Any) -> dict[str, int]:
    """Cells of ``false_lethal`` per source (FALSE_LETHAL_SOURCES), each cell counted once, in that order.

    ``result`` is built with ``ground_geometry`` on, ``labels_only`` is the same frame's costmap with it off:
    a cell lethal there is lethal by its labels. The rest are lethal by the ground's geometry: drop edges
    (BLOCKED-sized), then steps over ``step_blocked_m``, then slopes.
    """
    from perception_core.costmap import Category

    with np.errstate(invalid="ignore"):  # NaN: unseen ground, no step
        steps = result.ground.step_m > config.step_blocked_m
    evidence = (("labels_hazard", labels_only.category == int(Category.HAZARD)),
                ("labels_blocked", labels_only.category == int(Category.BLOCKED)),
                ("drop_edge", result.evidence_map("drop_edges")[1] >= config.min_points_per_cell),
                ("step", steps), ("slope", result.ground.blocked))
    rest = false_lethal.copy()
    out = {}
    for name, cells in evidence:
        out[name] = int((rest & cells).sum())
        rest &= ~cells
    out["other"] = int(rest.sum())
    return out


def parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def costmap_parameters(params_file: Path | None, rig: Any, overrides: list[str]) -> dict[str, Any]:
    """The costmap node's parameters from the YAML, the mount from the rig (TF on the vehicle), then --set."""
    from model_tools.bags.eval_bag import node_parameters

    params = node_parameters(params_file, "costmap_node") if params_file else {}
    params.update(dict(zip(("mount_x", "mount_y", "mount_z", "mount_roll", "mount_pitch", "mount_yaw"),
                           (float(v) for v in rig.mount), strict=True)))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r} is not KEY=VALUE")
        params[key.strip()] = parse_value(value)
    return params


def fmt(value: float) -> str:
    return "  n/a" if not math.isfinite(value) else f"{value:.3f}"


def print_table(rows: list[tuple[str, dict[str, float]]]) -> None:
    from perception_core.metrics.costmap import GOALS, MEASURE_NAMES, TERRAIN_MEASURE_NAMES, meets_goal

    names = MEASURE_NAMES + TERRAIN_MEASURE_NAMES
    width = max(len(name) for name, _ in rows) + 2
    print(f"{'':<{width}}" + "".join(f"{name:>23}" for name in names))
    print(f"{'goal':<{width}}" + "".join(f"{GOALS[n][0] + ' ' + str(GOALS[n][1]):>23}" for n in names))
    for name, measures in rows:
        cells = []
        for n in names:
            mark = "" if meets_goal(n, measures[n]) else " !"
            cells.append(f"{fmt(measures[n]) + mark:>23}")
        print(f"{name:<{width}}" + "".join(cells))


def print_by_range(summary: dict[str, Any]) -> None:
    """The models' recall by kind of obstacle and precision by source, one row per band of distance ahead."""
    columns = [key for key in summary if key.startswith(("recall_", "precision_"))]
    print("models' costmap by distance ahead (recall: GT obstacle cells by kind; precision: lethal cells by source)")
    print(f"{'x (m)':>8}" + "".join(f"{name:>22}" for name in columns))
    for i, (low, high) in enumerate(summary["bands_m"]):
        print(f"{f'{low:g}-{high:g}':>8}" + "".join(f"{fmt(summary[name][i]):>22}" for name in columns))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), help="scene seeds, one drive each")
    parser.add_argument("--frames", type=int, default=8, help="frames per drive")
    parser.add_argument("--fps", type=float, default=2.0, help="frame rate of the drive (frames are fed in lock-step)")
    parser.add_argument("--speed", type=float, default=4.0, help="vehicle speed, m/s")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--hfov-deg", type=float, default=90.0)
    parser.add_argument("--mount-height", type=float, default=1.4, help="camera height above the ground, m")
    parser.add_argument("--pitch-deg", type=float, default=10.0, help="camera pitch, degrees down")
    parser.add_argument("--roll-deg", type=float, default=0.0, help="camera roll about its optical axis, degrees")
    parser.add_argument("--depth-model", type=Path, default=ROOT / "models" / "depth_levels_r18.onnx")
    parser.add_argument("--seg-model", type=Path, default=ROOT / "models" / "ddrnet23s_offroad.onnx")
    parser.add_argument("--params", type=Path, default=ROOT / "config" / "perception.yaml",
                        help="parameter YAML with the costmap_node section")
    parser.add_argument("--range-correction", default=None, metavar="YAML",
                        help="the depth model's range correction (perception_core.range_correction); default: the "
                             "depth_node's range_correction_file in --params; '' for none. It applies only where it "
                             "fits the model and the rig's camera, as in the node")
    parser.add_argument("--interpolate-levels", choices=("true", "false"), default=None,
                        help="the depth node's interpolate_levels (default: the --params file's depth_node value, "
                        "else true, the node's default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a costmap parameter (YAML value), e.g. --set min_points_per_cell=2")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    parser.add_argument("--cache", type=Path, help="folder to keep model outputs in, keyed by model, rig, seed, frame")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output ('-' for none)")
    parser.add_argument("--explain-false-lethal", action="store_true",
                        help="split the models' false lethal cells by the evidence that made them lethal")
    parser.add_argument("--split-depth", action="store_true",
                        help="three more rows with GT labels: the model's depth with GT depth on the ground pixels, "
                             "with GT depth on the standing obstacles (which part of the depth limits the costmap), with "
                             "each obstacle's own depth offset removed (how much of that is a per-object offset), and "
                             "scaled per frame by the factor that best fits the truth (how much is a global scale)")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from model_tools.bags.eval_bag import OfflineStack
    from model_tools.data.synth import CameraRig
    from perception_core.costmap import (
        DEFAULT_FLAT_OBSTACLE_CLASSES,
        CostmapConfig,
        build_costmap,
        camera_to_grid_transform,
        class_map_from_ontology,
        resize_nearest,
    )
    from perception_core.metrics.costmap import (
        LETHAL_CATEGORIES,
        RELIEF_BAND_M,
        BevGrid,
        CostmapMeasures,
        RangeBandMeasures,
        terrain_under_pixels,
    )
    from perception_core.metrics.depth import DepthMetricAccumulator
    from perception_core.pipelines import scale_intrinsics

    rig = CameraRig.default(args.width, args.height, hfov_deg=args.hfov_deg, mount_height=args.mount_height,
                            pitch_deg=args.pitch_deg, roll_deg=args.roll_deg)
    params = costmap_parameters(args.params if args.params and args.params.is_file() else None, rig, args.set)
    config = CostmapConfig.from_mapping(params)
    classes = class_map_from_ontology(params.get("ontology_path") or None,
                                      params.get("flat_obstacle_classes", DEFAULT_FLAT_OBSTACLE_CLASSES),
                                      params.get("unknown_class_category", "BLOCKED"))
    correction_path = range_correction_path(args)
    interpolate = interpolate_levels(args)
    stack = OfflineStack(args.depth_model, args.seg_model, "cpu", config, classes, num_threads=args.threads,
                         depth_params={"range_correction_file": str(correction_path or ""),
                                       "interpolate_levels": interpolate})
    correction = stack.depth.range_correction  # the file the node would take for this model, or None
    grid = BevGrid(config.resolution, config.origin_x, config.origin_y, config.rows, config.cols)
    tag = "-".join([model_key(args.depth_model), model_key(args.seg_model), f"{args.width}x{args.height}",
                    f"h{args.mount_height}", f"p{args.pitch_deg}", *([f"roll{args.roll_deg}"] if args.roll_deg else []),
                    f"f{args.hfov_deg}", f"v{args.speed}",
                    f"r{args.fps}", *([f"rc-{correction_digest(correction)}"] if correction else []),
                    *(["li"] if stack.depth.interpolate_levels else [])])

    # Where the loss comes from: each model's output swapped for the ground truth at the model's size.
    paths = ("models", "gt", "gt_depth_model_labels", "model_depth_gt_labels")
    if args.split_depth:
        paths += ("gt_ground_depth_gt_labels", "gt_obstacle_depth_gt_labels", "object_offset_removed_depth_gt_labels",
                  "frame_scaled_depth_gt_labels")
    totals = {path: CostmapMeasures() for path in paths}
    by_range = RangeBandMeasures()  # the models' costmap per band of distance ahead
    per_seed: dict[int, dict[str, CostmapMeasures]] = {}
    build_ms: dict[str, list[float]] = {path: [] for path in paths}
    ground_offset: dict[str, list[float]] = {path: [] for path in paths}
    inference_s: list[float] = []
    correction_status: dict[str, int] = {}  # the depth pipeline's range correction, frames per outcome
    frame_scales: list[dict[str, float]] = []  # --split-depth: each frame's best scale
    object_stats: list[np.ndarray] = []  # --split-depth: each standing object's depth offset and spread
    sources = dict.fromkeys(FALSE_LETHAL_SOURCES, 0)
    # The depth model on these frames (the costmap's pixels): all, and those whose true label stands up.
    standing_ids = classes.defined_standing
    depth_scores = {seed: (DepthMetricAccumulator(config.min_range, config.max_range),
                           DepthMetricAccumulator(config.min_range, config.max_range)) for seed in ["all", *args.seeds]}
    # ... and split by the terrain under each pixel: level with the vehicle's ground plane, lower, higher.
    terrain_bands = ("level", "lower", "higher")
    depth_by_terrain = {band: (DepthMetricAccumulator(config.min_range, config.max_range),
                               DepthMetricAccumulator(config.min_range, config.max_range)) for band in terrain_bands}
    camera_to_grid = camera_to_grid_transform(config)
    labels_only_config = dataclasses.replace(config, ground_geometry=False)
    bar = tqdm(total=len(args.seeds) * args.frames, desc="bench_costmap", unit="frame")
    for seed in args.seeds:
        per_seed[seed] = {path: CostmapMeasures() for path in paths}
        for frame in drive_frames(rig, seed, args.frames, args.fps, args.speed, grid):
            depth, labels, seconds, corrected = load_or_infer(stack, frame, args.cache, tag)
            correction_status[corrected] = correction_status.get(corrected, 0) + 1
            inference_s.append(seconds)
            truth = frame_truth(frame, config, classes, grid)
            import cv2

            gt_depth_small = cv2.resize(frame.depth, (depth.shape[1], depth.shape[0]), interpolation=cv2.INTER_NEAREST)
            gt_labels_small = resize_nearest(frame.labels, depth.shape)
            inputs = {"models": (depth, labels), "gt": (frame.depth, frame.labels),
                      "gt_depth_model_labels": (gt_depth_small, labels),
                      "model_depth_gt_labels": (depth, gt_labels_small)}
            standing_gt = standing_ids[gt_labels_small]
            gt_on_obstacles = np.where(standing_gt, gt_depth_small, np.nan)
            if args.split_depth:  # the model's depth with one part of it replaced by the truth (NaN truth: kept)
                known = np.isfinite(gt_depth_small)
                inputs["gt_ground_depth_gt_labels"] = (np.where(known & ~standing_gt, gt_depth_small, depth),
                                                       gt_labels_small)
                inputs["gt_obstacle_depth_gt_labels"] = (np.where(known & standing_gt, gt_depth_small, depth),
                                                         gt_labels_small)
                offsets_removed, stats = object_offsets_removed(depth, gt_depth_small, standing_gt)
                object_stats.append(stats)
                inputs["object_offset_removed_depth_gt_labels"] = (offsets_removed, gt_labels_small)
                scale = best_frame_scale(depth, gt_depth_small, config)
                frame_scales.append({"seed": seed, "frame": frame.index, "scale": scale})
                inputs["frame_scaled_depth_gt_labels"] = (depth * np.float32(scale), gt_labels_small)
            for key in ("all", seed):
                everywhere, on_obstacles = depth_scores[key]
                everywhere.update(depth, gt_depth_small)
                on_obstacles.update(depth, gt_on_obstacles)
            terrain = terrain_under_pixels(gt_depth_small, scale_intrinsics(frame.k, frame.depth.shape, depth.shape),
                                           camera_to_grid, grid, frame.ground_height)
            with np.errstate(invalid="ignore"):
                band_masks = (np.abs(terrain) <= RELIEF_BAND_M, terrain < -RELIEF_BAND_M, terrain > RELIEF_BAND_M)
            for band, mask in zip(terrain_bands, band_masks, strict=True):
                everywhere, on_obstacles = depth_by_terrain[band]
                everywhere.update(depth, np.where(mask, gt_depth_small, np.nan))
                on_obstacles.update(depth, np.where(mask, gt_on_obstacles, np.nan))
            for path, (d, lab) in inputs.items():
                start = time.perf_counter()
                result = build_costmap(d, lab, frame.k, config, classes, k_hw=frame.depth.shape)
                build_ms[path].append((time.perf_counter() - start) * 1e3)
                ground_offset[path].append(result.ground_offset_m)
                totals[path].add(result.category, truth, grid)
                per_seed[seed][path].add(result.category, truth, grid)
                if path != "models":
                    continue
                lethal_sources = None
                if args.explain_false_lethal and config.ground_geometry:
                    labels_only = build_costmap(d, lab, frame.k, labels_only_config, classes, k_hw=frame.depth.shape)
                    wrong = totals[path].false_lethal_cells(result.category, truth, grid)
                    for name, cells in false_lethal_sources(result, labels_only, wrong, config).items():
                        sources[name] += cells
                    by_labels = np.isin(labels_only.category, [int(c) for c in LETHAL_CATEGORIES])
                    lethal_sources = {"labels": by_labels, "geometry": ~by_labels}
                by_range.add(result.category, truth, grid, lethal_sources)
            bar.update(1)
    bar.close()

    rows = [("models in the loop", totals["models"].summary()), ("GT in -> GT out", totals["gt"].summary()),
            ("GT depth + model labels", totals["gt_depth_model_labels"].summary()),
            ("model depth + GT labels", totals["model_depth_gt_labels"].summary())]
    if args.split_depth:
        rows += [("  + GT depth on the ground", totals["gt_ground_depth_gt_labels"].summary()),
                 ("  + GT depth on obstacles", totals["gt_obstacle_depth_gt_labels"].summary()),
                 ("  + each obstacle's offset removed", totals["object_offset_removed_depth_gt_labels"].summary()),
                 ("  at each frame's best scale", totals["frame_scaled_depth_gt_labels"].summary())]
    rows += [(f"  seed {seed} models", m["models"].summary()) for seed, m in per_seed.items()]
    print(f"\n{len(args.seeds)} drives x {args.frames} frames at {args.width}x{args.height}, mount "
          f"{args.mount_height} m / {args.pitch_deg} deg down / roll {args.roll_deg} deg / hfov {args.hfov_deg} deg; depth "
          f"{args.depth_model.name}, seg {args.seg_model.name}")
    print_table(rows)
    print("depth range correction: " + (f"{os.path.relpath(correction_path, ROOT)}, " if correction_path else "")
          + ", ".join(f"{outcome} on {n} frames" for outcome, n in correction_status.items())
          + (f" ({stack.range_correction_missing})" if stack.range_correction_missing else ""))
    print("observed ground above the ground plane (median, m; |x| > max_ground_offset_m is flagged): "
          + ", ".join(f"{path} {np.nanmedian(values):+.2f}" for path, values in ground_offset.items()))
    model_depth = {str(key): {"all": everywhere.compute(), "standing_obstacles": on_obstacles.compute()}
                   for key, (everywhere, on_obstacles) in depth_scores.items()}
    print("depth model vs GT depth at its size, on the pixels in range (abs_rel / scale; scale < 1: too near): all "
          + "{abs_rel:.3f} / {scale:.3f}".format(**model_depth["all"]["all"]) + ", standing obstacles "
          + "{abs_rel:.3f} / {scale:.3f}".format(**model_depth["all"]["standing_obstacles"]) + "; per seed, obstacles: "
          + ", ".join(f"{seed} {m['standing_obstacles']['abs_rel']:.3f} / {m['standing_obstacles']['scale']:.3f}"
                      for seed, m in model_depth.items() if seed != "all"))
    by_terrain = {band: {"all": everywhere.compute(), "standing_obstacles": on_obstacles.compute()}
                  for band, (everywhere, on_obstacles) in depth_by_terrain.items()}
    print(f"depth model by the terrain under the pixel (+-{RELIEF_BAND_M} m of the vehicle's ground plane; abs_rel / "
          "scale, all pixels | standing obstacles): " + ", ".join(
              f"{band} {m['all']['abs_rel']:.3f} / {m['all']['scale']:.3f} | {m['standing_obstacles']['abs_rel']:.3f} / "
              f"{m['standing_obstacles']['scale']:.3f}" for band, m in by_terrain.items()))
    print_by_range(by_range.summary())
    if any(sources.values()):
        clear = totals["models"].counts["clear_cells"]
        print("models' false lethal by source (% of clear cells): "
              + ", ".join(f"{name} {100 * cells / max(clear, 1):.2f}" for name, cells in sources.items()))
    print(f"costmap build (this run, not the one-core benchmark: bench/bench_host.py): models median "
          f"{np.median(build_ms['models']):.1f} ms at the depth model's size, GT median "
          f"{np.median(build_ms['gt']):.1f} ms at {args.width}x{args.height}")
    if args.out and str(args.out) != "-":
        report = {
            "command": "python bench/bench_costmap.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "rig": {"width": args.width, "height": args.height, "hfov_deg": args.hfov_deg,
                    "mount_height_m": args.mount_height, "pitch_deg": args.pitch_deg, "roll_deg": args.roll_deg},
            "drive": {"seeds": args.seeds, "frames_per_seed": args.frames, "fps": args.fps, "speed_mps": args.speed},
            "models": {"depth": str(os.path.relpath(args.depth_model, ROOT)), "seg": str(os.path.relpath(args.seg_model, ROOT))},
            "range_correction": {"file": str(os.path.relpath(correction_path, ROOT)) if correction_path else "",
                                 "model_sha256": correction.model_sha256 if correction else "",
                                 "frames": correction_status},
            "interpolate_levels": stack.depth.interpolate_levels,
            "costmap_parameters": {k: v for k, v in params.items()},
            "models_in_the_loop": totals["models"].summary(),
            "gt_in_gt_out": totals["gt"].summary(),
            "gt_depth_model_labels": totals["gt_depth_model_labels"].summary(),
            "model_depth_gt_labels": totals["model_depth_gt_labels"].summary(),
            **{path: totals[path].summary() for path in paths[4:]},
            "per_seed": {str(seed): {"models_in_the_loop": m["models"].summary(), "gt_in_gt_out": m["gt"].summary()}
                         for seed, m in per_seed.items()},
            "costmap_build_ms_median": {"models": float(np.median(build_ms["models"])),
                                        "gt_full_resolution": float(np.median(build_ms["gt"]))},
            "model_inference_s_median": float(np.median(inference_s)),
            "ground_offset_m_median": {path: float(np.nanmedian(values)) for path, values in ground_offset.items()},
        }
        report["model_depth"] = {**model_depth, "by_terrain": by_terrain,
                                 "definition": "the depth model's output against the GT depth at "
                                 "the model's size, pixels with GT depth in (min_range, max_range); standing_obstacles: "
                                 "those whose GT label is a standing obstacle; by_terrain: all seeds, split by the exact "
                                 f"terrain height under the pixel's GT point: within {RELIEF_BAND_M} m of the vehicle's "
                                 "ground plane (level), below it (lower), above it (higher)"}
        report["models_by_range"] = by_range.summary()
        if frame_scales:
            report["frame_scales"] = frame_scales
        if object_stats:
            report["object_depth_offsets"] = {
                **object_offset_summary(np.concatenate(object_stats), [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0), (9.0, 12.0),
                                                                       (12.0, 15.0)]),
                "definition": "standing objects (4-connected groups of GT standing pixels at the depth model's size) "
                "by their median true depth: how many, and the pixel-weighted median over objects of the factor by "
                "which each is off as a whole, exp(|median log(depth / truth)|) - 1 (offset), and of its pixels' "
                "spread about that, exp(median |log ratio - its median|) - 1 (spread)"}
        if any(sources.values()):
            report["models_false_lethal_sources"] = {
                "cells": sources, "clear_cells": totals["models"].counts["clear_cells"],
                "order": "each cell counted once, under the first source in this order that makes it lethal"}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
