"""Live evaluation: replay a bag into the running node stack over DDS, record its outputs, score them.

The stack is ``perception_tools.stack`` (the same nodes and parameter YAML as
``ros2 launch``) in a subprocess, so images really cross DDS between
processes. This process replays the camera topics with ``BagReplayer`` and
records the outputs with ``BagRecorder``; ``score_recorded`` then scores the
recorded bag with the same ``EvalScorer`` and GT costmap as eval-bag, and
``compare_paths`` puts the two paths side by side on the frames both saw.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_tools.bags.bagio import (
    deserialize,
    header_stamp_from_cdr,
    iter_raw,
    make_typestore,
    summarize_bag,
)
from model_tools.bags.eval_bag import (
    FramePrediction,
    OfflineStack,
    costmap_truth,
    ground_truth_category,
    sample_panels,
    write_outputs,
)
from model_tools.bags.frames import DEFAULT_TOPICS, FrameTopics, image_array, iter_frames
from model_tools.bags.report import SampleFrame
from model_tools.bags.scoring import EvalScorer, category_from_layers
from perception_core.costmap import CATEGORIES
from perception_core.errors import BagError, PerceptionError
from perception_core.geometry import stamp_ns
from perception_tools.recorder import BagRecorder, RecordStats
from perception_tools.replay import BagReplayer, ReplayStats

DEPTH_TOPIC = "/perception/depth/image"
LABELS_TOPIC = "/perception/segmentation/labels"
COSTMAP_TOPIC = "/perception/costmap"
LAYER_TOPICS = {c.name.lower(): f"{COSTMAP_TOPIC}/{c.name.lower()}" for c in CATEGORIES}
STATS_TOPICS = {
    "depth": "/perception/depth/stats",
    "seg": "/perception/segmentation/stats",
    "costmap": "/perception/costmap/stats",
}
# What the live run records, with types so the recorder need not wait for discovery.
OUTPUT_TYPES: dict[str, str] = {
    DEPTH_TOPIC: "sensor_msgs/msg/Image",
    LABELS_TOPIC: "sensor_msgs/msg/Image",
    COSTMAP_TOPIC: "nav_msgs/msg/OccupancyGrid",
    **{topic: "nav_msgs/msg/OccupancyGrid" for topic in LAYER_TOPICS.values()},
    **{topic: "perception_msgs/msg/InferenceStats" for topic in STATS_TOPICS.values()},
}


# --------------------------------------------------------------------------- the stack process


# Head room for the first frame: the costmap node measures depth_timeout_s from its own start until the first
# depth image, and the replay starts only once every subscriber is matched (seconds after the nodes load).
STARTUP_ALLOWANCE_S = 10.0


def live_depth_timeout_s(base_timeout_s: float, rate: float, max_timeout_s: float) -> float:
    """The costmap node's depth_timeout_s for a replay at ``rate``: ``base / rate`` plus start-up head room.

    The timeout is wall-clock: labels that see no depth image for that long are projected flat-ground.
    The node waits for each frame's own depth, so what matters here is only that a slow replay
    (the demo replays far slower than real time) and the first, slow CPU inference never look like a dead depth stream:
    scaling by 1/rate keeps that margin. Capped at the node's declared maximum.
    """
    if rate <= 0:
        raise ValueError(f"replay rate must be > 0, got {rate}")
    return float(min(max_timeout_s, base_timeout_s / rate + STARTUP_ALLOWANCE_S))


def write_stack_params(out: Path, base_params: Path | None, mount: Mapping[str, float] | None,
                       rate: float = 1.0, exact_pairing: bool = False) -> Path:
    """A params YAML for run_stack: the base file with the costmap mount and the depth node's camera
    height set from the bag (no TF here) and the costmap node's depth and staleness timeouts scaled to the
    replay rate (``live_depth_timeout_s``).

    ``exact_pairing`` turns the costmap's skew-bounded pairing off: a live run that is compared frame
    by frame with the offline path must build each costmap from that frame's own depth and labels.
    """
    import yaml

    from seg_perception.costmap_node import PARAMETERS as COSTMAP_PARAMETERS  # the tool sits above the nodes

    data: dict[str, Any] = {}
    if base_params is not None and Path(base_params).is_file():
        data = yaml.safe_load(Path(base_params).read_text()) or {}
    def node_section(name: str) -> dict[str, Any]:
        """The parameters of the section that matches node ``name``: "name", or a namespaced/wildcard "/**/name"."""
        key = next((k for k in data if str(k).strip("/").split("/")[-1] == name), name)
        return data.setdefault(key, {}).setdefault("ros__parameters", {})

    section = node_section("costmap_node")
    if mount:
        section.update({k: float(v) for k, v in mount.items()})
        if "mount_z" in mount:  # the camera height of depth models that rescale with it, in both depth nodes
            node_section("depth_node")["camera_height"] = float(mount["mount_z"])
            if any(str(k).strip("/").split("/")[-1] == "fused_node" for k in data):
                node_section("fused_node").setdefault("depth", {})["camera_height"] = float(mount["mount_z"])
    for name in ("depth_timeout_s", "stale_timeout_s"):  # wall-clock timeouts stretch with a slow replay
        default_timeout, _, constraints = COSTMAP_PARAMETERS[name]
        section[name] = live_depth_timeout_s(float(section.get(name, default_timeout)), rate,
                                             float(constraints["float_range"][1]))
    if exact_pairing:
        section["pairing_max_skew_s"] = 0.0
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


class StackProcess:
    """``perception_tools.stack`` in a subprocess (``python -m``, so the interpreter running this process runs it);
    stopped with SIGINT (clean rclpy shutdown), then SIGKILL."""

    def __init__(self, params: Path, depth_model: Path, seg_model: Path, backend: str, log_path: Path,
                 extra_args: list[str] | None = None) -> None:
        self.log_path = log_path
        self.command = [sys.executable, "-m", "perception_tools.stack", "--params", str(params), "--depth-model", str(depth_model),
                        "--seg-model", str(seg_model), "--backend", backend, *(extra_args or [])]
        self._log = open(log_path, "w")  # closed in stop()
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            tail = self.log_tail()
            raise PerceptionError(f"the node stack exited with code {code} before the run finished:\n{tail}")

    def log_tail(self, lines: int = 15) -> str:
        self._log.flush()
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout_s: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        self._log.close()
        return int(self.process.returncode)


def rss_mb(pid: int) -> float:
    """Resident memory (MiB) of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# --------------------------------------------------------------------------- replay + record


@dataclass
class LiveRun:
    """What a live run produced: the recorded bag and when each input image was published."""

    recorded_bag: Path
    replay: ReplayStats
    record: RecordStats
    image_publish_ns: dict[int, int] = field(default_factory=dict)  # image header stamp -> wall time of publish
    stack_log: Path | None = None
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, stack RSS MiB)


def _spin_until(executor: Any, predicate: Any, timeout_s: float, stack: StackProcess | None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        if stack is not None:
            stack.check_alive()
        executor.spin_once(timeout_sec=0.05)
    return bool(predicate())


def wait_until_ready(executor: Any, node: Any, recorder: BagRecorder, topics: FrameTopics, stack: StackProcess,
                     timeout_s: float) -> None:
    """Block until the stack subscribes to the camera topics and the recorder matches every output publisher.

    Raises PerceptionError naming what is still unmatched (and the stack log's tail) after ``timeout_s``.
    """
    ready = _spin_until(executor, lambda: node.count_subscribers(topics.image) >= 2
                        and node.count_subscribers(topics.camera_info) >= 1
                        and all(n > 0 for n in recorder.matched_publishers().values()), timeout_s, stack)
    if not ready:
        missing = [t for t, n in recorder.matched_publishers().items() if n == 0]
        raise PerceptionError(f"the node stack was not ready after {timeout_s:.0f} s (unmatched: "
                              f"{', '.join(missing) or 'camera subscribers'}); log:\n{stack.log_tail()}")
    _spin_until(executor, lambda: False, 0.5, stack)  # let both sides finish matching


def replay_all(executor: Any, replayer: BagReplayer, stack: StackProcess, loops: int, image_topic: str,
               sample_rss_s: float, progress: Any, started: float) -> list[tuple[float, float]]:
    """Replay ``loops`` times while spinning; returns the stack's RSS samples (seconds since ``started``, MiB)."""
    rss: list[tuple[float, float]] = []
    next_rss = started
    replayer.start(max_loops=loops)
    while not replayer.finished:
        executor.spin_once(timeout_sec=0.02)
        stack.check_alive()
        if sample_rss_s > 0 and time.monotonic() >= next_rss:
            rss.append((time.monotonic() - started, rss_mb(stack.pid)))
            next_rss += sample_rss_s
        if progress is not None:
            progress(replayer.stats.published.get(image_topic, 0))
    return rss


def drain_outputs(executor: Any, recorder: BagRecorder, last_stamp: int | None, stack: StackProcess,
                  timeout_s: float) -> None:
    """Spin until the costmap of the last published image is recorded (or ``timeout_s``), then a little more."""
    _spin_until(executor, lambda: last_stamp is None or recorder.last_header_stamp_ns(COSTMAP_TOPIC) == last_stamp,
                timeout_s, stack)
    _spin_until(executor, lambda: False, 0.3, stack)


def run_live(
    bag: str | os.PathLike[str],
    out_bag: str | os.PathLike[str],
    depth_model: str | os.PathLike[str],
    seg_model: str | os.PathLike[str],
    *,
    backend: str = "cpu",
    params_file: Path | None = None,
    mount: Mapping[str, float] | None = None,
    rate: float = 1.0,
    loops: int = 1,
    topics: FrameTopics = DEFAULT_TOPICS,
    record_topics: Mapping[str, str] | None = None,
    startup_timeout_s: float = 120.0,
    drain_timeout_s: float = 30.0,
    sample_rss_s: float = 0.0,
    work_dir: Path | None = None,
    progress: Any = None,
) -> LiveRun:
    """Start the stack, replay the bag's camera topics into it, record its outputs to ``out_bag``.

    Waits until the stack subscribes to the camera topics and the recorder is
    matched with the stack's publishers before the first frame, and after the
    last frame until a costmap for it arrived (or ``drain_timeout_s`` passes).
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    out_bag = Path(out_bag)
    work = work_dir or out_bag.parent
    work.mkdir(parents=True, exist_ok=True)
    stack_params = write_stack_params(work / "stack_params.yaml", params_file, mount, rate, exact_pairing=True)
    stack = StackProcess(stack_params, Path(depth_model).resolve(), Path(seg_model).resolve(), backend,
                         work / "stack.log")
    record_types = dict(record_topics or OUTPUT_TYPES)
    publish_ns: dict[int, int] = {}
    context = rclpy.Context()
    rclpy.init(context=context)
    node = recorder = None
    try:
        node = rclpy.create_node("live_eval", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)

        def on_publish(topic: str, _bag_ns: int, wall_ns: int, data: bytes) -> None:
            if topic == topics.image:
                stamp = header_stamp_from_cdr(data)
                if stamp is not None:
                    publish_ns[stamp] = wall_ns

        replayer = BagReplayer(node, bag, rate=rate, loop=loops > 1, topics=[topics.image, topics.camera_info],
                               on_publish=on_publish, first_topics=[topics.camera_info])
        recorder = BagRecorder(node, out_bag, list(record_types), types=record_types).start()
        wait_until_ready(executor, node, recorder, topics, stack, startup_timeout_s)
        started = time.monotonic()
        rss = replay_all(executor, replayer, stack, loops, topics.image, sample_rss_s, progress, started)
        drain_outputs(executor, recorder, max(publish_ns) if publish_ns else None, stack, drain_timeout_s)
        if sample_rss_s > 0:
            rss.append((time.monotonic() - started, rss_mb(stack.pid)))
        record_stats = recorder.stop()
        recorder = None
        return LiveRun(out_bag, replayer.stats, record_stats, publish_ns, stack.log_path, rss)
    finally:
        if recorder is not None:
            recorder.abort()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
        stack.stop()


# --------------------------------------------------------------------------- scoring the recording


@dataclass
class RecordedFrame:
    """The stack's outputs for one input stamp, decoded from the recorded bag."""

    depth: np.ndarray | None = None
    labels: np.ndarray | None = None
    layers: dict[str, np.ndarray] = field(default_factory=dict)
    costmap_received_ns: int | None = None
    stats_ms: dict[str, float] = field(default_factory=dict)

    @property
    def category(self) -> np.ndarray | None:
        return category_from_layers(self.layers) if len(self.layers) == len(LAYER_TOPICS) else None


def read_recorded(recorded_bag: str | os.PathLike[str]) -> dict[int, RecordedFrame]:
    """Decode the recorded outputs, grouped by their header stamp (= input image stamp)."""
    summary = summarize_bag(recorded_bag)
    wanted = [t for t in OUTPUT_TYPES if t in summary.topics]
    typestore = make_typestore()
    frames: dict[int, RecordedFrame] = {}
    layer_of = {topic: name for name, topic in LAYER_TOPICS.items()}
    stats_of = {topic: name for name, topic in STATS_TOPICS.items()}
    for raw in iter_raw(recorded_bag, topics=wanted):
        msg = deserialize(raw, typestore)
        frame = frames.setdefault(stamp_ns(msg.header), RecordedFrame())
        if raw.topic == DEPTH_TOPIC:
            frame.depth = image_array(msg, DEPTH_TOPIC).astype(np.float32, copy=True)
        elif raw.topic == LABELS_TOPIC:
            frame.labels = image_array(msg, LABELS_TOPIC).copy()
        elif raw.topic == COSTMAP_TOPIC:
            frame.costmap_received_ns = raw.timestamp_ns
        elif raw.topic in layer_of:
            grid = np.asarray(msg.data, dtype=np.int8).reshape(int(msg.info.height), int(msg.info.width))
            frame.layers[layer_of[raw.topic]] = grid
        elif raw.topic in stats_of and msg.total_ms > 0:
            frame.stats_ms[f"{stats_of[raw.topic]}_node_total_ms"] = float(msg.total_ms)
            if stats_of[raw.topic] != "costmap":
                frame.stats_ms[f"{stats_of[raw.topic]}_inference_ms"] = float(msg.inference_ms)
    return frames


@dataclass
class PathComparison:
    """Offline vs live on the frames both produced."""

    frames_compared: int = 0
    depth_max_abs_diff_m: list[float] = field(default_factory=list)
    depth_nan_mismatch_pixels: int = 0
    label_agreement: list[float] = field(default_factory=list)
    costmap_cell_agreement: list[float] = field(default_factory=list)
    # Stamps whose live costmap is exactly the flat-ground projection of its labels: the costmap node gave
    # up waiting for depth (depth_timeout_s), so the paths differ by configuration, not by computation.
    costmap_flat_ground_stamps: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def worst(values: list[float], fn: Any) -> float | None:
            return float(fn(values)) if values else None

        return {
            "frames_compared": self.frames_compared,
            "depth_max_abs_diff_m": worst(self.depth_max_abs_diff_m, max),
            "depth_nan_mismatch_pixels": self.depth_nan_mismatch_pixels,
            "label_agreement_min": worst(self.label_agreement, min),
            "costmap_cell_agreement_min": worst(self.costmap_cell_agreement, min),
            "costmap_frames_differing": sum(1 for a in self.costmap_cell_agreement if a < 1.0),
            "costmap_flat_ground_frames": len(self.costmap_flat_ground_stamps),
            "costmap_flat_ground_stamps_ns": list(self.costmap_flat_ground_stamps),
        }


def score_recorded(
    recorded_bag: str | os.PathLike[str],
    gt_bag: str | os.PathLike[str],
    stack: OfflineStack,
    *,
    image_publish_ns: Mapping[int, int] | None = None,
    offline: Mapping[int, FramePrediction] | None = None,
    topics: FrameTopics = DEFAULT_TOPICS,
    num_samples: int = 3,
) -> tuple[EvalScorer, EvalScorer | None, PathComparison, list[SampleFrame], dict[str, Any]]:
    """Score the recorded live outputs against the GT bag with the eval-bag scorer.

    ``stack`` supplies the class names, depth range, and the costmap
    configuration used for the GT-derived reference costmap (its models are
    not run). With ``offline`` predictions, a second scorer scores them on
    exactly the live frames and ``PathComparison`` holds per-frame differences.
    Returns (live scorer, offline-on-live-frames scorer, comparison, samples, counts).
    """
    recorded = read_recorded(recorded_bag)
    live = EvalScorer(stack.class_names, max_depth=stack.depth.max_depth)
    matched_offline = EvalScorer(stack.class_names, max_depth=stack.depth.max_depth) if offline else None
    comparison = PathComparison()
    samples: list[SampleFrame] = []
    complete = {s for s, f in recorded.items() if f.depth is not None and f.labels is not None
                and f.category is not None}
    sample_every = max(1, len(complete) // max(num_samples, 1))
    gt_summary = summarize_bag(gt_bag)
    inputs = 0
    for frame in iter_frames(gt_bag, gt_summary, topics):
        inputs += 1
        out = recorded.get(frame.stamp_ns)
        if out is None or frame.stamp_ns not in complete:
            continue
        category = out.category
        timings = dict(out.stats_ms)
        if image_publish_ns and frame.stamp_ns in image_publish_ns and out.costmap_received_ns is not None:
            timings["end_to_end_ms"] = (out.costmap_received_ns - image_publish_ns[frame.stamp_ns]) / 1e6
        live.add_latency(frame.stamp_ns, timings)
        gt_category = truth = None
        if frame.gt_depth is not None:
            live.add_depth(frame.stamp_ns, out.depth, frame.gt_depth)
        if frame.gt_labels is not None:
            live.add_labels(frame.stamp_ns, out.labels, frame.gt_labels)
            gt_category = ground_truth_category(stack.costmap, frame)
            live.add_costmap(frame.stamp_ns, category, gt_category)
            truth = costmap_truth(stack, frame)
            if truth is not None:
                live.add_costmap_measures(frame.stamp_ns, category, truth[1], truth[0])
        reference = offline.get(frame.stamp_ns) if offline else None
        if reference is not None and matched_offline is not None:
            comparison.frames_compared += 1
            # REP 117 specials (NaN, +Inf, -Inf) agree when both paths give the same one; a finite value against
            # a special one is a mismatch, counted apart from the metric difference.
            special = ~np.isfinite(reference.depth) | ~np.isfinite(out.depth)
            same_special = (reference.depth == out.depth) | (np.isnan(reference.depth) & np.isnan(out.depth))
            mismatch = special & ~same_special
            comparison.depth_nan_mismatch_pixels += int(mismatch.sum())
            with np.errstate(invalid="ignore"):  # inf - inf where both are +Inf: masked by `special`
                diff = np.abs(np.where(special, 0.0, reference.depth - out.depth))
            comparison.depth_max_abs_diff_m.append(float(diff.max()) if diff.size else 0.0)
            comparison.label_agreement.append(float(np.mean(reference.labels == out.labels)))
            cell_agreement = float(np.mean(reference.category == category))
            comparison.costmap_cell_agreement.append(cell_agreement)
            if cell_agreement < 1.0 and np.array_equal(
                    stack.costmap(None, out.labels, frame).category, category):
                comparison.costmap_flat_ground_stamps.append(frame.stamp_ns)
            matched_offline.add_latency(frame.stamp_ns, reference.timings_ms)
            if frame.gt_depth is not None:
                matched_offline.add_depth(frame.stamp_ns, reference.depth, frame.gt_depth)
            if frame.gt_labels is not None:
                matched_offline.add_labels(frame.stamp_ns, reference.labels, frame.gt_labels)
                matched_offline.add_costmap(frame.stamp_ns, reference.category, gt_category)
                if truth is not None:
                    matched_offline.add_costmap_measures(frame.stamp_ns, reference.category, truth[1], truth[0])
        if len(live.frames) % sample_every == 1 % sample_every and len(samples) < num_samples:
            samples.append(SampleFrame(frame.stamp_ns, sample_panels(
                frame, out.depth, out.labels, category, gt_category, stack.seg.colors, stack.depth.max_depth, "live")))
    counts = {"frames_in_bag": inputs, "frames_with_outputs": len(complete),
              "frames_scored": len(live.frames), "frames_dropped": inputs - len(live.frames)}
    return live, matched_offline, comparison, samples, counts


def metric_deltas(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, float | None]:
    """|a - b| of the headline metrics of two scorer summaries."""
    def get(summary: Mapping[str, Any], *path: str) -> float | None:
        value: Any = summary
        for key in path:
            if not isinstance(value, Mapping) or value.get(key) is None:
                return None
            value = value[key]
        return float(value)

    keys = {
        "depth_abs_rel": ("depth", "abs_rel"), "depth_rmse": ("depth", "rmse"), "depth_a1": ("depth", "a1"),
        "miou": ("segmentation", "miou"), "costmap_agreement": ("costmap", "agreement_observed"),
    }
    deltas: dict[str, float | None] = {}
    for name, path in keys.items():
        x, y = get(a, *path), get(b, *path)
        deltas[name] = None if x is None or y is None else abs(x - y)
    return deltas


def write_live_report(out_dir: Path, live: EvalScorer, counts: Mapping[str, Any], run: LiveRun | None,
                      comparison: PathComparison, offline_matched: EvalScorer | None, samples: list[SampleFrame],
                      base: Mapping[str, Any], tolerance: float = 1e-3) -> dict[str, Any]:
    """metrics.json + report.html of the live path, with the path-vs-path agreement section."""
    from model_tools.bags.report import _table

    live_summary = live.summary()
    metrics: dict[str, Any] = {**base, **counts, "path": "live", "frames_evaluated": counts["frames_scored"]}
    metrics["drop_rate"] = counts["frames_dropped"] / counts["frames_in_bag"] if counts["frames_in_bag"] else None
    if run is not None:
        metrics["replay"] = {"published": run.replay.published, "skipped_topics": run.replay.skipped_topics,
                             "max_lateness_ms": run.replay.max_lateness_ms, "wall_s": run.replay.wall_s}
        metrics["recorded"] = {"bag": str(run.record.path), "counts": run.record.counts}
    metrics.update(live_summary)
    sections: list[tuple[str, str]] = []
    if offline_matched is not None:
        deltas = metric_deltas(offline_matched.summary(), live_summary)
        cmp = comparison.summary()
        # Both paths run the same code on the same inputs: labels and costmap cells must match exactly.
        agree = (cmp["frames_compared"] > 0 and (cmp["depth_max_abs_diff_m"] or 0.0) <= tolerance
                 and cmp["label_agreement_min"] == 1.0 and cmp["costmap_cell_agreement_min"] == 1.0
                 and all(d is None or d <= tolerance for d in deltas.values()))
        metrics["agreement_with_offline"] = {**cmp, "metric_abs_deltas": deltas, "tolerance": tolerance,
                                             "agree": agree}
        rows = [[k, v] for k, v in cmp.items()] + [[f"|delta| {k}", v] for k, v in deltas.items()]
        verdict = "AGREE" if agree else "DIFFER"
        sections.append(("Offline vs live (same frames)",
                         f"<p>The offline path (eval-bag) and the live path (nodes over DDS, recorded) "
                         f"<b>{verdict}</b> within {tolerance:g} on {cmp['frames_compared']} frames.</p>"
                         + _table(rows, ["quantity", "value"])))
    if metrics.get("drop_rate"):
        metrics.setdefault("notes", []).append(
            f"{counts['frames_dropped']} of {counts['frames_in_bag']} frames produced no complete output (the nodes "
            "keep only the newest frame); live metrics cover the frames that did")
    write_outputs(out_dir, metrics, live, samples, "Live evaluation (nodes over DDS, replayed bag)", sections)
    return metrics


def require_outputs(stats: RecordStats) -> None:
    """A live run that recorded nothing on the key outputs is an error, not an empty score."""
    empty = [t for t in (DEPTH_TOPIC, LABELS_TOPIC, COSTMAP_TOPIC) if stats.counts.get(t, 0) == 0]
    if empty:
        raise BagError(f"the live run recorded nothing on {', '.join(empty)} (bag {stats.path}); see the stack log")
