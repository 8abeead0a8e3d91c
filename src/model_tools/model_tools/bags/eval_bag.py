"""`model-tools eval-bag`: run the node pipelines over a bag offline and score them against its ground truth.

The per-frame work is exactly the nodes': ``runtime.loader.load_model``,
``pipelines.DepthPipeline``/``SegPipeline`` (preprocess, inference,
postprocess) and ``costmap.build_costmap`` with the costmap node's parameters
(config/perception.yaml) and the camera mount from the bag. Two references:
the same ``build_costmap`` run on the bag's GT depth and labels (cell-by-cell
agreement), and the bird's-eye ground truth projected independently from the
GT at full resolution (``perception_core.metrics.costmap``: obstacle recall
and precision, object recall, holes, false lethal). Writes ``metrics.json``,
``frames.csv`` and a self-contained ``report.html``.

A bag that breaks mid-way (truncated, corrupt) still gets its partial results
written, marked ``"partial": true`` with the reason, and the command fails.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_tools.bags.bagio import MOUNT_FIELDS, BagSummary, ReadTally, camera_mount_from_bag, summarize_bag
from model_tools.bags.frames import DEFAULT_TOPICS, BagFrame, FrameTopics, gt_topics_in, iter_frames
from model_tools.bags.report import SampleFrame, costmap_rgb, render_html, write_report
from model_tools.bags.scoring import EvalScorer
from model_tools.io_utils import atomic_write, check_output_folder, write_json
from perception_core.errors import BagError, ConfigError, OutputExistsError
from perception_core.geometry import camera_info_problem
from perception_core.resources import resolve_in_share

LOG = logging.getLogger(__name__)
COSTMAP_NODE = "costmap_node"


# --------------------------------------------------------------------------- configuration


def default_params_file() -> Path | None:
    """The installed bringup package's config/perception.yaml (ament index), or None outside a workspace."""
    try:
        path = resolve_in_share("config/perception.yaml")
    except ConfigError:
        return None
    return path if path.is_file() else None


DEFAULT_PARAMS = default_params_file()


def node_parameters(params_file: str | os.PathLike[str] | None, node_name: str) -> dict[str, Any]:
    """``ros__parameters`` of one node from a ROS 2 parameter YAML ({} when the file or node is absent)."""
    import yaml

    if params_file is None:
        return {}
    path = Path(params_file)
    if not path.is_file():
        raise ConfigError(f"parameter file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    for key, section in data.items():
        if str(key).strip("/").split("/")[-1] == node_name and isinstance(section, dict):
            return dict(section.get("ros__parameters", {}) or {})
    return {}


def costmap_setup(
    bag: str | os.PathLike[str],
    params_file: str | os.PathLike[str] | None = DEFAULT_PARAMS,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """(CostmapConfig, ClassMap, where each came from) as the costmap node would build them.

    Node parameters from ``params_file``; the camera mount from the bag (its
    metadata or /tf_static) where the bag has one, as the node gets it from TF
    on the vehicle; then explicit ``overrides``.
    """
    from perception_core.costmap import DEFAULT_FLAT_OBSTACLE_CLASSES, CostmapConfig, class_map_from_ontology

    params = node_parameters(params_file, COSTMAP_NODE)
    sources = {"params_file": str(params_file) if params else None, "mount": "costmap defaults"}
    if params:
        sources["mount"] = "parameters"
    mount = camera_mount_from_bag(bag)
    if mount is not None:
        params.update(mount)
        sources["mount"] = "bag"
    params.update(overrides or {})
    config = CostmapConfig.from_mapping(params)
    ontology = params.get("ontology_path") or None
    classes = class_map_from_ontology(resolve_in_share(ontology) if ontology else None,
                                      params.get("flat_obstacle_classes", DEFAULT_FLAT_OBSTACLE_CLASSES),
                                      params.get("unknown_class_category", "BLOCKED"))
    sources["mount_values"] = {k: float(getattr(config, k)) for k in MOUNT_FIELDS}
    return config, classes, sources


# --------------------------------------------------------------------------- the per-frame work


@dataclass
class FramePrediction:
    """What the three nodes would publish for one frame."""

    depth: np.ndarray  # [h, w] float32 metres, NaN invalid, depth-model resolution
    labels: np.ndarray  # [h, w] uint8 class ids, seg-model resolution
    category: np.ndarray  # costmap category per cell
    timings_ms: dict[str, float] = field(default_factory=dict)


class OfflineStack:
    """The depth, segmentation and costmap nodes' processing, without ROS.

    Node parameters that change outputs are honoured as the nodes do:
    depth_node ``max_depth``/``min_depth`` (0 / -1 = the model's metadata), ``camera_height``
    (for depth models that rescale with it; K comes from each frame's camera_info), ``range_correction_file``
    (a file or a folder of them, absolute or relative to the installed bringup share, as the node takes it;
    "" for none) and
    ``resize_to_camera`` of both inference nodes (nearest resize to the camera size).
    """

    def __init__(
        self,
        depth_model: str | os.PathLike[str],
        seg_model: str | os.PathLike[str],
        backend: str,
        costmap_config: Any,
        classes: Any,
        num_threads: int = 0,
        depth_params: Mapping[str, Any] | None = None,
        seg_params: Mapping[str, Any] | None = None,
    ) -> None:
        from perception_core.pipelines import DepthPipeline, SegPipeline
        from perception_core.range_correction import load_range_correction_for
        from perception_core.resources import resolve_in_share
        from perception_core.runtime.loader import load_model

        depth_params = dict(depth_params or {})
        seg_params = dict(seg_params or {})
        self.depth_model = load_model(depth_model, backend=backend, expected_task="depth", num_threads=num_threads)
        self.seg_model = load_model(seg_model, backend=backend, expected_task="segmentation", num_threads=num_threads)
        max_depth = float(depth_params.get("max_depth", 0.0) or 0.0)
        min_depth = float(depth_params.get("min_depth", -1.0))
        self.camera_height = float(depth_params.get("camera_height", 0.0) or 0.0) or None
        correction_path = str(depth_params.get("range_correction_file", "") or "")
        correction, missing = None, ""
        if correction_path:  # the node's rule: a file, or the folder's file for this model
            correction, missing = load_range_correction_for(resolve_in_share(correction_path),
                                                            self.depth_model.metadata)
        self.depth = DepthPipeline(self.depth_model, max_depth=max_depth or None,
                                   min_depth=None if min_depth < 0 else min_depth, range_correction=correction,
                                   interpolate_levels=bool(depth_params.get("interpolate_levels", True)))
        # Why a correction that was asked for is not used (the node's range_correction_status says the same).
        self.range_correction_missing = missing
        self.seg = SegPipeline(self.seg_model)
        self.depth_to_camera = bool(depth_params.get("resize_to_camera", False))
        self.labels_to_camera = bool(seg_params.get("resize_to_camera", False))
        self.costmap_config = costmap_config
        self.classes = classes  # perception_core.costmap.ClassMap (or a bare class -> category table)

    @property
    def class_names(self) -> list[str]:
        return list(self.seg.metadata.class_names)

    @property
    def backend_used(self) -> str:
        used = {self.depth_model.backend_used, self.seg_model.backend_used}
        return used.pop() if len(used) == 1 else f"depth {self.depth_model.backend_used}, seg {self.seg_model.backend_used}"

    def costmap(self, depth: np.ndarray | None, labels: np.ndarray, frame: BagFrame) -> Any:
        """The costmap node's call: K and its size from camera_info, mount from the config."""
        from perception_core.costmap import build_costmap

        return build_costmap(depth, labels, frame.k_matrix, self.costmap_config, self.classes, k_hw=frame.info_hw)

    def process(self, frame: BagFrame) -> FramePrediction:
        import cv2

        start = time.perf_counter()
        camera_hw = frame.rgb.shape[:2]
        depth_out = self.depth.infer(frame.rgb, "RGB", camera_k=frame.k_matrix, camera_hw=frame.info_hw,
                                     camera_height=self.camera_height)
        depth = depth_out.depth
        if self.depth_to_camera and depth.shape != camera_hw:
            depth = cv2.resize(depth, (camera_hw[1], camera_hw[0]), interpolation=cv2.INTER_NEAREST)
        seg_out = self.seg.infer(frame.rgb, "RGB")
        labels = seg_out.labels
        if self.labels_to_camera and labels.shape != camera_hw:
            labels = cv2.resize(labels, (camera_hw[1], camera_hw[0]), interpolation=cv2.INTER_NEAREST)
        costmap_start = time.perf_counter()
        result = self.costmap(depth, labels, frame)
        end = time.perf_counter()
        timings = {f"depth_{k}": v for k, v in depth_out.timings.items()}
        timings |= {f"seg_{k}": v for k, v in seg_out.timings.items()}
        timings["costmap_ms"] = (end - costmap_start) * 1e3
        timings["total_ms"] = (end - start) * 1e3
        return FramePrediction(depth, labels, result.category, timings)


def ground_truth_category(stack_costmap: Callable[..., Any], frame: BagFrame) -> np.ndarray | None:
    """The reference costmap: the same build_costmap on GT depth and labels (None without GT labels)."""
    if frame.gt_labels is None:
        return None
    return stack_costmap(frame.gt_depth, frame.gt_labels, frame).category


def elevation_on_grid(elevation: np.ndarray, grid: Any) -> np.ndarray:
    """Terrain height per cell of ``grid`` from an organised [rows, cols, 3] x, y, z cloud of cell centres
    on an axis-aligned grid (the bag's elevation); NaN where the cloud does not reach."""
    xs, ys = elevation[0, :, 0].astype(np.float64), elevation[:, 0, 1].astype(np.float64)
    out = np.full((grid.rows, grid.cols), np.nan, np.float32)
    if xs.size < 2 or ys.size < 2:
        return out
    res_x, res_y = (xs[-1] - xs[0]) / (xs.size - 1), (ys[-1] - ys[0]) / (ys.size - 1)
    cx, cy = grid.centres()
    col = np.floor((cx - xs[0]) / res_x + 0.5).astype(np.int64)
    row = np.floor((cy - ys[0]) / res_y + 0.5).astype(np.int64)
    ok_c, ok_r = (col >= 0) & (col < xs.size), (row >= 0) & (row < ys.size)
    out[np.ix_(ok_r, ok_c)] = elevation[np.ix_(row[ok_r], col[ok_c])][..., 2]
    return out


def costmap_truth(stack: OfflineStack, frame: BagFrame) -> tuple[Any, Any] | None:
    """(BevGrid, bird's-eye truth) from the frame's full-resolution GT; None without GT depth and labels.

    The grid is the costmap's base-frame grid; the camera pose is the stack's mount (from the bag). With the
    bag's terrain elevation the truth is a GeometryTruth: heights above the terrain, and what its step and
    slope block (perception_core.metrics.costmap.ground_truth_geometry).
    """
    from perception_core.costmap import camera_to_grid_transform
    from perception_core.costmap.classes import as_class_map
    from perception_core.metrics.costmap import BevGrid, ground_truth_bev, ground_truth_geometry
    from perception_core.pipelines import scale_intrinsics

    if frame.gt_depth is None or frame.gt_labels is None or frame.gt_depth.shape != frame.gt_labels.shape[:2]:
        return None
    config = stack.costmap_config
    grid = BevGrid(config.resolution, config.origin_x, config.origin_y, config.rows, config.cols)
    depth = np.where(frame.gt_depth > 0, frame.gt_depth, np.nan).astype(np.float32)
    k = scale_intrinsics(frame.k_matrix, frame.info_hw, depth.shape)
    heights = None if frame.gt_elevation is None else elevation_on_grid(frame.gt_elevation, grid)
    truth = ground_truth_bev(depth, frame.gt_labels, k, camera_to_grid_transform(config), grid,
                             as_class_map(stack.classes).category, ground_z=config.ground_z,
                             max_point_height=config.max_point_height, min_range=config.min_range,
                             max_range=config.max_range, ground_height=heights)
    if heights is not None and config.ground_geometry:
        return grid, ground_truth_geometry(truth, heights, config)
    return grid, truth


def sample_panels(frame: BagFrame, depth: np.ndarray, labels: np.ndarray, category: np.ndarray,
                  gt_category: np.ndarray | None, colors: Any, max_depth: float,
                  path: str = "pred") -> dict[str, np.ndarray]:
    """Report views of one frame: input, depth (and GT), overlay and the two costmaps.

    ``path`` names where the outputs came from ("pred" offline, "live" from the nodes).
    """
    import cv2

    from perception_core.pipelines import colorize_depth, colorize_labels, overlay

    h, w = labels.shape
    small = cv2.resize(frame.rgb, (w, h), interpolation=cv2.INTER_AREA)
    panels = {
        "input": frame.rgb,
        f"depth ({path})": colorize_depth(depth, max_depth),
    }
    if frame.gt_depth is not None:
        gt = np.where(frame.gt_depth > 0, frame.gt_depth, np.nan).astype(np.float32)
        panels["depth (GT)"] = colorize_depth(gt, max_depth)
    panels[f"segmentation overlay ({path})"] = overlay(small, colorize_labels(labels, colors), 0.5)
    panels[f"costmap ({path})"] = costmap_rgb(category)
    if gt_category is not None:
        panels["costmap (GT)"] = costmap_rgb(gt_category)
    return panels


# --------------------------------------------------------------------------- evaluation


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    out_dir: Path
    scorer: EvalScorer
    predictions: dict[int, FramePrediction]  # kept only when asked (for path-vs-path comparison)
    stack: OfflineStack  # the loaded models and costmap setup, reusable for scoring a live run

    @property
    def partial(self) -> bool:
        return bool(self.metrics.get("partial"))


def prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Check, before any work, that the evaluation can be written to ``out_dir``; then create it."""
    check_output_folder(out_dir, "--out")
    if (out_dir / "metrics.json").exists() and not overwrite:
        raise OutputExistsError(f"{out_dir} already holds an evaluation (metrics.json); pass --overwrite to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)


def write_frames_csv(path: Path, scorer: EvalScorer) -> None:
    """One row per frame: stamp, depth metrics, mIoU, costmap agreement, latencies."""
    frames = [scorer.frames[s] for s in sorted(scorer.frames)]
    latency_keys = sorted({k for f in frames for k in f.latency_ms})
    depth_keys = ["abs_rel", "rmse", "a1"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["stamp_ns", *depth_keys, "miou", "costmap_agreement", *latency_keys])
    for f in frames:
        writer.writerow([f.stamp_ns, *(f.depth.get(k, "") for k in depth_keys), f.miou, f.costmap_agreement,
                         *(f"{f.latency_ms[k]:.3f}" if k in f.latency_ms else "" for k in latency_keys)])
    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_text(buffer.getvalue())


def sample_indices(frames: int, num_samples: int) -> set[int]:
    """Indices of ``num_samples`` frames spread evenly over ``frames``, shown in the report."""
    return set(np.linspace(0, max(frames - 1, 0), num=min(num_samples, frames)).round().astype(int).tolist())


def build_offline_stack(
    bag: Path,
    depth_model: str | os.PathLike[str],
    seg_model: str | os.PathLike[str],
    backend: str,
    params_file: str | os.PathLike[str] | None,
    costmap_overrides: Mapping[str, Any] | None,
) -> tuple[OfflineStack, dict[str, Any]]:
    """The three nodes' processing with their parameters from ``params_file`` and the mount from ``bag``
    (the costmap's, and the depth node's camera height).

    Returns the stack and where its costmap setup came from (for metrics.json).
    """
    config, classes, sources = costmap_setup(bag, params_file, costmap_overrides)
    depth_params = node_parameters(params_file, "depth_node")
    if sources["mount"] == "bag" or not depth_params.get("camera_height"):
        depth_params["camera_height"] = float(config.mount_z)  # the bag's mount stands in for TF, as for the costmap
    stack = OfflineStack(depth_model, seg_model, backend, config, classes, depth_params=depth_params,
                         seg_params=node_parameters(params_file, "segmentation_node"))
    return stack, sources


def score_frame(stack: OfflineStack, scorer: EvalScorer, frame: BagFrame) -> tuple[FramePrediction, np.ndarray | None]:
    """Run the stack on one frame and add every score its ground truth allows.

    Returns the prediction and the reference costmap categories (None without GT labels).
    """
    prediction = stack.process(frame)
    scorer.add_latency(frame.stamp_ns, prediction.timings_ms)
    if frame.gt_depth is not None:
        scorer.add_depth(frame.stamp_ns, prediction.depth, frame.gt_depth)
    if frame.gt_labels is not None:
        scorer.add_labels(frame.stamp_ns, prediction.labels, frame.gt_labels)
    gt_category = ground_truth_category(stack.costmap, frame)
    if gt_category is not None:
        scorer.add_costmap(frame.stamp_ns, prediction.category, gt_category)
    truth = costmap_truth(stack, frame)
    if truth is not None:
        scorer.add_costmap_measures(frame.stamp_ns, prediction.category, truth[1], truth[0])
    return prediction, gt_category


@dataclass
class FramePass:
    """What one pass of the stack over a bag's frames produced."""

    evaluated: int = 0
    frames_without_gt: int = 0
    samples: list[SampleFrame] = field(default_factory=list)
    predictions: dict[int, FramePrediction] = field(default_factory=dict)
    bag_error: str | None = None  # why reading stopped before the end (the bag broke)
    unread_messages: dict[str, int] = field(default_factory=dict)  # per topic, when the bag broke
    camera_info_rejected: list[dict[str, Any]] = field(default_factory=list)  # {stamp_ns, problem} per skipped frame


def run_frames(
    stack: OfflineStack,
    scorer: EvalScorer,
    bag: Path,
    summary: BagSummary,
    topics: FrameTopics,
    *,
    wanted: int,
    max_frames: int,
    sample_at: set[int],
    keep_predictions: bool,
    progress: bool,
) -> FramePass:
    """Score every assembled frame (at most ``max_frames`` when > 0); a bag that breaks ends the pass early.

    A frame whose camera_info cannot describe its image (geometry.camera_info_problem)
    is not evaluated but listed in ``camera_info_rejected``: its costmap and the
    reference built with the same wrong K would agree with each other and raise
    the score.
    """
    from tqdm import tqdm

    result = FramePass()
    tally = ReadTally()
    bar = tqdm(total=wanted, desc="eval-bag", unit="frame", disable=not progress)
    try:
        for frame in iter_frames(bag, summary, topics, tally=tally):
            if max_frames > 0 and result.evaluated >= max_frames:
                break
            problem = camera_info_problem(frame.k_matrix, frame.info_hw, frame.rgb.shape[:2])
            if problem is not None:
                result.camera_info_rejected.append({"stamp_ns": frame.stamp_ns, "problem": problem})
                continue
            prediction, gt_category = score_frame(stack, scorer, frame)
            if frame.gt_depth is None and frame.gt_labels is None:
                result.frames_without_gt += 1
            if result.evaluated in sample_at:
                result.samples.append(SampleFrame(frame.stamp_ns, sample_panels(
                    frame, prediction.depth, prediction.labels, prediction.category, gt_category, stack.seg.colors,
                    stack.depth.max_depth)))
            if keep_predictions:
                result.predictions[frame.stamp_ns] = prediction
            result.evaluated += 1
            bar.update(1)
    except BagError as err:
        result.bag_error = str(err)
        result.unread_messages = tally.unread()
    finally:
        bar.close()
    return result


def partial_reason(frame_pass: FramePass, wanted: int, camera_info_topic: str) -> str | None:
    """Why the evaluation covers less than asked for, or None when it is complete."""
    if frame_pass.bag_error is not None:
        return frame_pass.bag_error
    if frame_pass.camera_info_rejected:
        first = frame_pass.camera_info_rejected[0]
        skipped = len(frame_pass.camera_info_rejected)
        return (f"{skipped} of {skipped + frame_pass.evaluated} frames not evaluated: their {camera_info_topic} "
                f"cannot describe the image (first at stamp {first['stamp_ns']}: {first['problem']})")
    if frame_pass.evaluated < wanted:
        return f"only {frame_pass.evaluated} of {wanted} camera frames could be assembled (image + camera_info + GT)"
    return None


def evaluate_bag(
    bag: str | os.PathLike[str],
    depth_model: str | os.PathLike[str],
    seg_model: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    backend: str = "cpu",
    topics: FrameTopics = DEFAULT_TOPICS,
    params_file: str | os.PathLike[str] | None = DEFAULT_PARAMS,
    costmap_overrides: Mapping[str, Any] | None = None,
    max_frames: int = 0,
    num_samples: int = 4,
    keep_predictions: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    title: str = "Offline evaluation (eval-bag)",
    notes: list[str] | None = None,
) -> EvalResult:
    """Run the stack over every camera frame of ``bag``, score it, write metrics.json + report.html.

    Raises:
        BagError: the bag is missing/unreadable or lacks camera topics; or it
            broke mid-way, after the partial results were written (marked partial).
    """
    bag_path, out_path = Path(bag), Path(out_dir)
    summary = summarize_bag(bag_path)
    frames_in_bag = summary.topics[topics.image].count if topics.image in summary.topics else 0
    prepare_out_dir(out_path, overwrite)
    stack, sources = build_offline_stack(bag_path, depth_model, seg_model, backend, params_file, costmap_overrides)
    scorer = EvalScorer(stack.class_names, min_depth=1e-3, max_depth=stack.depth.max_depth)
    wanted = min(frames_in_bag, max_frames) if max_frames > 0 else frames_in_bag
    frame_pass = run_frames(stack, scorer, bag_path, summary, topics, wanted=wanted, max_frames=max_frames,
                            sample_at=sample_indices(wanted, num_samples), keep_predictions=keep_predictions,
                            progress=progress)
    notes = list(notes or [])
    if not gt_topics_in(summary, topics):
        notes.append(f"the bag has no ground truth ({topics.gt_depth}, {topics.gt_labels}): only latency is reported")
    reason = partial_reason(frame_pass, wanted, topics.camera_info)
    metrics = {
        "partial": reason is not None,
        "partial_reason": reason,
        "path": "offline",
        "bag": str(bag_path),
        "depth_model": str(depth_model),
        "seg_model": str(seg_model),
        "backend": backend,
        "backend_used": stack.backend_used,
        "model_content_check": {"depth_model": stack.depth_model.content_check,
                                "seg_model": stack.seg_model.content_check},
        "frames_in_bag": frames_in_bag,
        "frames_evaluated": frame_pass.evaluated,
        "frames_without_gt": frame_pass.frames_without_gt,
        "unread_messages": frame_pass.unread_messages,
        "camera_info_rejected": frame_pass.camera_info_rejected,
        "max_frames": max_frames or None,
        "costmap_setup": sources,
        "notes": notes,
        **scorer.summary(),
    }
    write_outputs(out_path, metrics, scorer, frame_pass.samples, title)
    if frame_pass.bag_error is not None:
        raise BagError(f"{reason} (partial results for {frame_pass.evaluated} frames written to {out_path}, "
                       "marked partial)")
    return EvalResult(metrics, out_path, scorer, frame_pass.predictions, stack)


def write_outputs(out_dir: Path, metrics: dict[str, Any], scorer: EvalScorer, samples: list[SampleFrame],
                  title: str, extra_sections: list[tuple[str, str]] | None = None) -> None:
    """metrics.json, frames.csv and report.html, each written atomically."""
    write_json(out_dir / "metrics.json", metrics)
    write_frames_csv(out_dir / "frames.csv", scorer)
    write_report(out_dir / "report.html", render_html(title, metrics, scorer.latencies, samples, extra_sections or []))


def headline(metrics: Mapping[str, Any]) -> str:
    """One line of the key numbers."""
    parts = [f"{metrics.get('frames_evaluated', 0)} frames"]
    if metrics.get("depth"):
        parts.append(f"depth abs_rel {metrics['depth']['abs_rel']:.3f} a1 {metrics['depth']['a1']:.3f}")
    if metrics.get("segmentation"):
        parts.append(f"mIoU {metrics['segmentation']['miou']:.3f}")
    if metrics.get("costmap"):
        parts.append(f"costmap agreement {metrics['costmap']['agreement_observed']:.3f}")
    measures = metrics.get("costmap_measures")
    if measures:
        parts.append(f"obstacle recall {measures['obstacle_recall']:.3f} precision {measures['obstacle_precision']:.3f} "
                     f"object recall {measures['object_recall']:.3f} holes {measures['holes']:.3f} "
                     f"false lethal {measures['false_lethal']:.3f}")
        if measures.get("counts", {}).get("gt_drop_cells"):
            parts.append(f"drop recall {measures['drop_recall']:.3f}")
    total = metrics.get("latency_ms", {}).get("total_ms") or metrics.get("latency_ms", {}).get("end_to_end_ms")
    if total and total.get("count"):
        parts.append(f"latency p50 {total['p50']:.1f} ms")
    if metrics.get("partial"):
        parts.append("PARTIAL")
    return ", ".join(parts)


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 with /camera/image_raw + /camera/camera_info (GT optional)")
    parser.add_argument("--depth-model", type=Path, required=True, help="depth ONNX / QDQ / context-binary file")
    parser.add_argument("--seg-model", type=Path, required=True, help="segmentation ONNX / QDQ / context-binary file")
    parser.add_argument("--backend", choices=("cpu", "npu", "auto"), default="cpu")
    parser.add_argument("--out", type=Path, required=True, help="folder for metrics.json, frames.csv, report.html")
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS,
                        help="ROS parameter YAML with the costmap_node section (default: config/perception.yaml)")
    parser.add_argument("--max-frames", type=int, default=0, help="evaluate at most this many frames (0: all)")
    parser.add_argument("--samples", type=int, default=4, help="sample frames shown in the report")
    parser.add_argument("--image-topic", default=FrameTopics.image)
    parser.add_argument("--camera-info-topic", default=FrameTopics.camera_info)
    parser.add_argument("--gt-depth-topic", default=FrameTopics.gt_depth)
    parser.add_argument("--gt-labels-topic", default=FrameTopics.gt_labels)
    parser.add_argument("--overwrite", action="store_true", help="replace an evaluation already in --out")


def run(args: argparse.Namespace) -> int:
    topics = FrameTopics(args.image_topic, args.camera_info_topic, args.gt_depth_topic, args.gt_labels_topic)
    result = evaluate_bag(
        args.bag, args.depth_model, args.seg_model, args.out, backend=args.backend, topics=topics,
        params_file=args.params, max_frames=args.max_frames, num_samples=args.samples, overwrite=args.overwrite,
    )
    print(f"eval-bag: {headline(result.metrics)}")
    print(f"  report:  {result.out_dir / 'report.html'}")
    print(f"  metrics: {result.out_dir / 'metrics.json'}")
    if result.partial:
        print(f"model-tools eval-bag: error: partial evaluation: {result.metrics['partial_reason']}", file=sys.stderr)
        return 1
    return 0
