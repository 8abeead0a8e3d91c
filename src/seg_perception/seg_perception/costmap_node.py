"""Traversability costmap node: depth + labels + camera_info -> nav_msgs/OccupancyGrid.

Model-agnostic: it runs on model outputs and on ground truth replayed from a
bag alike. The geometry lives in ``perception_core.costmap``; this file declares
parameters, pairs the two images by stamp, converts messages and publishes.

    in   /perception/depth/image          sensor_msgs/Image 32FC1 metres (NaN invalid) or 16UC1 mm
    in   /perception/segmentation/labels  sensor_msgs/Image mono8 class ids
    in   /camera/camera_info              sensor_msgs/CameraInfo (any resolution of the same camera)
    out  /perception/costmap              nav_msgs/OccupancyGrid (stamp = source image stamp)
    out  /perception/costmap/<category>   nav_msgs/OccupancyGrid per category (publish_category_layers)
    out  /perception/corridor             perception_msgs/CorridorStatus
    out  /perception/costmap/stats        perception_msgs/InferenceStats (backend_used "host")
    out  /diagnostics                     diagnostic_msgs/DiagnosticArray

The camera pose in the grid frame comes from TF when tf2_ros is installed
(the vehicle) and ``use_tf`` is true, otherwise from the mount parameters.
"""

from __future__ import annotations

import array
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from perception_core.costmap import (
    CATEGORIES,
    CostmapConfig,
    CostmapResult,
    ExactStampPairer,
    build_costmap,
    class_categories_from_ontology,
    corridor_distances,
)
from perception_core.errors import DataError, ImageEncodingError, PerceptionError
from perception_core.geometry import stamp_ns, transform_matrix
from perception_core.resources import resolve_in_share
from perception_msgs.msg import CorridorStatus, InferenceStats
from perception_ros.health import DIAGNOSTICS_PERIOD_S, FrameStats, diagnostic_array, frame_health
from perception_ros.images import ImageConverter
from perception_ros.parameters import declare
from perception_ros.qos import sensor_qos
from perception_ros.spin import run_node

NODE_NAME = "costmap_node"
DEPTH_TOPIC = "/perception/depth/image"
LABELS_TOPIC = "/perception/segmentation/labels"
CAMERA_INFO_TOPIC = "/camera/camera_info"
COSTMAP_TOPIC = "/perception/costmap"
CORRIDOR_TOPIC = "/perception/corridor"
STATS_TOPIC = "/perception/costmap/stats"
LOG_THROTTLE_S = 5.0

# name: (default, description, declare() constraints). Grid/mount/filter names match CostmapConfig fields.
PARAMETERS: dict[str, tuple[Any, str, dict[str, Any]]] = {
    "grid_frame": ("base_link", "frame of the grid (REP 103: x forward, y left, z up; ground at z = 0)", {}),
    "use_depth": (True, "project with depth; false forces the flat-ground fallback", {}),
    "depth_timeout_s": (2.0, "seconds (wall clock) labels wait for depth: labels are projected flat-ground "
                             "(flagged) only when no depth message at all arrived within this long after they "
                             "did; must exceed the depth stream's longest gap (its latency behind the labels "
                             "and its period). Also the delay of the first flat-ground grid once depth stops",
                        {"float_range": (0.0, 60.0)}),
    "pairing_capacity": (3, "depth/label messages kept per stream while waiting for an exact-stamp partner",
                         {"int_range": (1, 100)}),
    "pairing_max_skew_s": (0.12, "when a frame's exact partner can no longer come (the other node skipped it), "
                                 "pair with the nearest frame within this many seconds; 0 = exact stamps only",
                           {"float_range": (0.0, 1.0)}),
    "use_tf": (True, "take the camera pose from TF when tf2_ros is installed; else the mount_* parameters", {}),
    "tf_timeout_s": (0.05, "how long to wait for the camera transform at the image stamp", {}),
    "ontology_path": ("", "ontology YAML with the class -> category mapping: absolute, or relative to the "
                          "installed offroad_perception_bringup share; '' = the ontology shipped with perception_core",
                      {}),
    "resolution": (0.1, "cell size in metres", {}),
    "width_m": (20.0, "grid extent along grid x, metres", {}),
    "height_m": (20.0, "grid extent along grid y, metres", {}),
    "origin_x": (-5.0, "grid x of the corner of cell (0, 0); -5 with 20 m gives x in [-5, 15) (forward-biased)", {}),
    "origin_y": (-10.0, "grid y of the corner of cell (0, 0); -10 with 20 m centres the grid on y = 0", {}),
    "cost_free": (0, "OccupancyGrid cost of FREE cells", {"int_range": (0, 100)}),
    "cost_caution": (50, "OccupancyGrid cost of CAUTION cells", {"int_range": (0, 100)}),
    "cost_blocked": (100, "OccupancyGrid cost of BLOCKED cells (100 = lethal in Nav2)", {"int_range": (0, 100)}),
    "cost_hazard": (100, "OccupancyGrid cost of HAZARD cells", {"int_range": (0, 100)}),
    "mount_x": (0.0, "camera body x in the grid frame, metres (used without TF)", {}),
    "mount_y": (0.0, "camera body y in the grid frame, metres", {}),
    "mount_z": (1.5, "camera body height above the ground plane, metres", {}),
    "mount_roll": (0.0, "camera body roll, radians", {}),
    "mount_pitch": (0.0, "camera body pitch, radians; positive tilts the camera down", {}),
    "mount_yaw": (0.0, "camera body yaw, radians; positive turns it left", {}),
    "min_range": (0.3, "points nearer than this depth (metres) are dropped", {}),
    "max_range": (15.0, "points beyond this depth (metres) are dropped", {}),
    "max_point_height": (3.0, "points higher above the ground (metres) are dropped: canopy, overhangs", {}),
    "min_points_per_cell": (3, "fewer points of a category in a cell are treated as noise", {"int_range": (1, 10000)}),
    "publish_category_layers": (True, "also publish one grid per category on /perception/costmap/<category>", {}),
    "corridor_length": (10.0, "driving corridor length ahead of the vehicle, metres", {}),
    "corridor_width": (2.0, "driving corridor width centred on y = 0, metres", {}),
    "stop_distance": (3.0, "stop_required when a BLOCKED/HAZARD cell in the corridor is this near, metres", {}),
}


def depth_from_image(converter: ImageConverter, msg: Image, topic: str) -> np.ndarray:
    """Metres (NaN invalid) from a REP 118 depth image: 32FC1 metres or 16UC1 millimetres (0 invalid)."""
    if msg.encoding not in ("32FC1", "16UC1"):
        raise ImageEncodingError(f"{topic}: depth encoding {msg.encoding!r} is not 32FC1 (metres) or 16UC1 (mm)")
    depth = _pixels(converter, msg, topic)
    if msg.encoding == "16UC1":
        depth = np.where(depth > 0, depth.astype(np.float32) / 1000.0, np.nan).astype(np.float32)
    return depth.reshape(msg.height, msg.width)


def labels_from_image(converter: ImageConverter, msg: Image, topic: str) -> np.ndarray:
    """Class ids from a mono8 (8UC1) label image."""
    if msg.encoding not in ("mono8", "8UC1"):
        raise ImageEncodingError(f"{topic}: label encoding {msg.encoding!r} is not mono8 (class ids)")
    return _pixels(converter, msg, topic).reshape(msg.height, msg.width)


def _pixels(converter: ImageConverter, msg: Image, topic: str) -> np.ndarray:
    try:
        return np.asarray(converter.to_array(msg))
    except ImageEncodingError as err:
        raise ImageEncodingError(f"{topic}: {err}") from err


def grid_message(grid: np.ndarray, result: CostmapResult, header: Any) -> OccupancyGrid:
    """OccupancyGrid with the result's geometry; ``header`` carries the source stamp and grid frame."""
    msg = OccupancyGrid()
    msg.header = header
    msg.info.map_load_time = header.stamp
    msg.info.resolution = float(result.resolution)
    msg.info.height, msg.info.width = (int(n) for n in grid.shape)
    msg.info.origin.position.x = float(result.origin_x)
    msg.info.origin.position.y = float(result.origin_y)
    msg.info.origin.orientation.w = 1.0
    msg.data = array.array("b", np.ascontiguousarray(grid, dtype=np.int8).tobytes())
    return msg


class CostmapNode(Node):
    """Pairs depth and labels by stamp, builds the costmap and the corridor status, publishes both."""

    def __init__(self, node_name: str = NODE_NAME, input_qos: QoSProfile | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        # read_only: the values are read once at start; a changed value would be silently ignored.
        values = {name: declare(self, name, default, description, read_only=True, **constraints)
                  for name, (default, description, constraints) in PARAMETERS.items()}
        self.params = values
        self.config = CostmapConfig.from_mapping(values)  # ConfigError names the bad field
        ontology = resolve_in_share(values["ontology_path"]) if values["ontology_path"] else None
        self.class_to_category = class_categories_from_ontology(ontology)
        self.pairer: ExactStampPairer[Image] = ExactStampPairer(
            ("depth", "labels"), values["pairing_capacity"], round(values["pairing_max_skew_s"] * 1e9))

        qos = input_qos or sensor_qos()
        self.converter = ImageConverter()
        self.create_subscription(Image, DEPTH_TOPIC, self._on_depth, qos)
        self.create_subscription(Image, LABELS_TOPIC, self._on_labels, qos)
        self.create_subscription(CameraInfo, CAMERA_INFO_TOPIC, self._on_camera_info, qos)
        self.costmap_pub = self.create_publisher(OccupancyGrid, COSTMAP_TOPIC, 1)
        self.layer_pubs = {}
        if values["publish_category_layers"]:
            self.layer_pubs = {c.name.lower(): self.create_publisher(OccupancyGrid, f"{COSTMAP_TOPIC}/{c.name.lower()}", 1)
                               for c in CATEGORIES}
        self.corridor_pub = self.create_publisher(CorridorStatus, CORRIDOR_TOPIC, 1)
        self.stats_pub = self.create_publisher(InferenceStats, STATS_TOPIC, 10)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self.camera_info: CameraInfo | None = None
        self.last_depth_time: float | None = None  # monotonic arrival of the latest depth message
        # Arrival of the first labels left waiting since the latest depth message or completed pair: once
        # depth_timeout_s has passed since then with no depth at all, the depth stream counts as silent.
        self.labels_waiting_since: float | None = None
        self.stats = FrameStats()
        self.flat_ground_frames = 0
        self.last_used_flat_ground = False
        self.pose_source = "mount parameters"
        self.tf_buffer = None
        if values["use_tf"]:
            self._start_tf()
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        if values["use_depth"]:
            # Labels are never sent flat-ground on arrival (their depth is usually still being inferred);
            # this timer does it once depth has been silent for depth_timeout_s since they arrived.
            period = max(0.01, min(0.1, values["depth_timeout_s"] / 4))
            self.create_timer(period, self._flush_labels_without_depth)
        self.get_logger().info(
            f"costmap {self.config.cols}x{self.config.rows} cells of {self.config.resolution} m in "
            f"'{values['grid_frame']}', camera pose from {self.pose_source}, use_depth={values['use_depth']}"
        )

    # ------------------------------------------------------------------ inputs

    def _start_tf(self) -> None:
        try:
            import tf2_ros  # on the vehicle (ROS 2 apt install); absent from this workspace's venv
        except ImportError:
            self.get_logger().info("tf2_ros is not installed: camera pose from the mount_* parameters")
            return
        self.tf_buffer = tf2_ros.Buffer()
        self.tf_listener = tf2_ros.TransformListener(self.tf_buffer, self)
        self.pose_source = "TF"

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info = msg

    def _on_depth(self, msg: Image) -> None:
        self.last_depth_time = time.monotonic()
        self.labels_waiting_since = None  # the depth stream is alive: waiting labels get their full timeout again
        if not self.params["use_depth"]:
            return
        pair = self.pairer.add("depth", stamp_ns(msg.header), msg, self.last_depth_time)
        if pair is not None:
            self._process(pair["labels"], pair["depth"])

    def _on_labels(self, msg: Image) -> None:
        if not self.params["use_depth"]:
            self._process(msg, None)
            return
        arrival = time.monotonic()
        pair = self.pairer.add("labels", stamp_ns(msg.header), msg, arrival)
        if pair is not None:
            self.labels_waiting_since = None
            self._process(pair["labels"], pair["depth"])
        elif self.labels_waiting_since is None:
            self.labels_waiting_since = arrival

    def _flush_labels_without_depth(self) -> None:
        """Project flat-ground the waiting labels during whose wait no depth arrived, once depth is silent.

        The stream counts as silent when depth_timeout_s has passed since the first labels were left
        waiting with no depth message since. Labels that saw depth arrive while they waited (their own
        partner never came: a skipped or mismatched stamp) stay in the pairer and are dropped there.
        """
        if self.labels_waiting_since is None:
            return
        if time.monotonic() - self.labels_waiting_since <= self.params["depth_timeout_s"]:
            return
        unanswered = sorted(stamp for stamp, arrival in self.pairer.waiting("labels")
                            if self.last_depth_time is None or arrival > self.last_depth_time)
        for stamp in unanswered:  # oldest stamp first: taking one drops older ones (counted), never newer
            if stamp in self.pairer.pending("labels"):
                self._process(self.pairer.take("labels", stamp), None)

    # ------------------------------------------------------------------ processing

    def _camera_to_grid(self, frame_id: str, stamp: Any) -> np.ndarray | None:
        """Optical->grid transform from TF at the image stamp; None means use the mount parameters."""
        if self.tf_buffer is None:
            return None
        try:
            transform = self.tf_buffer.lookup_transform(
                self.params["grid_frame"], frame_id, Time.from_msg(stamp),
                Duration(seconds=self.params["tf_timeout_s"]))
        except Exception as err:  # noqa: BLE001 - tf2 raises several unrelated types; all mean "no pose"
            self.get_logger().warning(
                f"no TF from '{frame_id}' to '{self.params['grid_frame']}' ({err}); using the mount parameters",
                throttle_duration_sec=LOG_THROTTLE_S)
            return None
        return transform_matrix(transform.transform)

    def _process(self, labels_msg: Image, depth_msg: Image | None) -> None:
        entered = time.perf_counter()
        try:
            if self.camera_info is None:
                raise DataError(f"no camera_info received yet on {CAMERA_INFO_TOPIC}")
            info = self.camera_info
            if not (info.width > 0 and info.height > 0 and info.k[0] > 0 and info.k[4] > 0):
                raise DataError(f"{CAMERA_INFO_TOPIC}: camera_info has no intrinsics (width/height/K zero)")
            labels = labels_from_image(self.converter, labels_msg, LABELS_TOPIC)
            depth = depth_from_image(self.converter, depth_msg, DEPTH_TOPIC) if depth_msg is not None else None
            converted = time.perf_counter()
            result = build_costmap(
                depth, labels, np.array(info.k, dtype=np.float64).reshape(3, 3), self.config, self.class_to_category,
                camera_to_grid=self._camera_to_grid(labels_msg.header.frame_id, labels_msg.header.stamp),
                k_hw=(int(info.height), int(info.width)))
            built = time.perf_counter()
        except PerceptionError as err:
            self.stats.drop(str(err))
            self.get_logger().warning(f"dropped frame: {err}", throttle_duration_sec=LOG_THROTTLE_S)
            return
        if result.used_flat_ground:
            self.flat_ground_frames += 1
            reason = "use_depth is false" if not self.params["use_depth"] else (
                f"no depth on {DEPTH_TOPIC} within depth_timeout_s={self.params['depth_timeout_s']} s of the labels")
            self.get_logger().warning(f"flat-ground fallback ({reason}): obstacles are smeared behind themselves",
                                      throttle_duration_sec=LOG_THROTTLE_S)
        self.last_used_flat_ground = result.used_flat_ground
        self._publish(labels_msg, result)
        done = time.perf_counter()
        self.stats.record((done - entered) * 1e3)
        self.stats_pub.publish(InferenceStats(
            header=labels_msg.header, node_name=self.get_name(), model_path="", backend_requested="host",
            backend_used="host", preprocess_ms=(converted - entered) * 1e3, inference_ms=(built - converted) * 1e3,
            postprocess_ms=(done - built) * 1e3, total_ms=(done - entered) * 1e3,
            frames_processed=self.stats.processed, frames_dropped=self.stats.dropped))

    def _publish(self, source: Image, result: CostmapResult) -> None:
        header = Header(stamp=source.header.stamp, frame_id=self.params["grid_frame"])
        self.costmap_pub.publish(grid_message(result.grid, result, header))
        for name, publisher in self.layer_pubs.items():
            publisher.publish(grid_message(result.layers[name], result, header))
        found = corridor_distances(result, self.config, self.params["corridor_length"],
                                   self.params["corridor_width"], self.params["stop_distance"])
        self.corridor_pub.publish(CorridorStatus(
            header=header, corridor_length=float(self.params["corridor_length"]),
            corridor_width=float(self.params["corridor_width"]), nearest_blocked_m=found["nearest_blocked_m"],
            nearest_hazard_m=found["nearest_hazard_m"], unknown_fraction=found["unknown_fraction"],
            stop_required=found["stop_required"], stop_distance=float(self.params["stop_distance"])))

    # ------------------------------------------------------------------ health

    def diagnostic_values(self, summary: dict[str, float]) -> dict[str, Any]:
        values: dict[str, Any] = {k: f"{v:.3f}" for k, v in summary.items()}
        values.update(
            frames_processed=self.stats.processed,
            frames_dropped=self.stats.dropped,
            flat_ground_frames=self.flat_ground_frames,
            used_flat_ground=self.last_used_flat_ground,
            pairs_unmatched=self.pairer.dropped,
            pairs_approximate=self.pairer.approximate_pairs,
            camera_pose_source=self.pose_source,
            grid_frame=self.params["grid_frame"],
        )
        return values

    def _publish_diagnostics(self) -> None:
        summary = self.stats.summary()
        warning = "flat-ground fallback (no depth): obstacles smeared" if self.last_used_flat_ground else None
        level, message = frame_health(self.stats, summary, warning)
        self.diagnostics_pub.publish(diagnostic_array(
            self.get_clock().now().to_msg(), f"{self.get_name()}: costmap", "host", level, message,
            self.diagnostic_values(summary)))


def main(args: list[str] | None = None) -> None:
    """Console entry point: the jazzy init/spin/try_shutdown pattern (shared with the inference nodes)."""
    raise SystemExit(run_node(CostmapNode, args))


if __name__ == "__main__":
    main()
