"""Traversability costmap node: depth + labels + camera_info (+ a pose) -> nav_msgs/OccupancyGrid for Nav2.

Model-agnostic: it runs on model outputs and on ground truth replayed from a
bag alike. Everything but ROS wiring lives in ``perception_core.costmap``:
projection, the fixed-frame rolling window and fusion, the pose buffer, the
pairing and flat-ground timing, the staleness watchdog and the corridor. This
file declares parameters, converts messages and publishes.

    in   perception/depth/image          sensor_msgs/Image 32FC1 metres (NaN invalid, REP 117 +/-Inf no point) or 16UC1 mm
    in   perception/segmentation/labels  sensor_msgs/Image mono8 class ids
    in   camera/camera_info              sensor_msgs/CameraInfo (any resolution of the same camera)
    in   odom (odometry_topic)           nav_msgs/Odometry: the base's pose in the fixed frame where no TF
    out  perception/costmap              nav_msgs/OccupancyGrid (reliable, transient-local, depth 1)
    out  perception/costmap/<category>   nav_msgs/OccupancyGrid per category (publish_category_layers)
    out  perception/costmap/obstacle_points  sensor_msgs/PointCloud2: lethal cells, for an ObstacleLayer
    out  perception/costmap/clearing_points  sensor_msgs/PointCloud2: observed traversable cells (clearing)
    out  perception/corridor             perception_msgs/CorridorStatus
    out  perception/costmap/stats        perception_msgs/InferenceStats (backend_used "host")
    out  /diagnostics                    diagnostic_msgs/DiagnosticArray

The grid is published in ``fixed_frame`` (default ``odom``) when the base's
pose at the image stamp is known (TF on the vehicle, else nav_msgs/Odometry);
otherwise in ``base_frame`` from the mount parameters, and /diagnostics says
which. Topic names are relative (remap them, or set a namespace).

A managed node (``perception_ros.lifecycle.ManagedNode``; ``autostart`` makes
it a plain one): configure validates the parameters, loads the ontology and
creates the publishers (and the TF listener, as Nav2's costmap does); activate
subscribes (camera_info first) and starts the timers; deactivate stops the
inputs and publishes an unknown grid, so no consumer keeps the last one.
Costs, evidence thresholds, the corridor, fusion decay and the timeouts
(``RUN_TIME_PARAMETERS``) may change at run time, checked together with the
rest; grid geometry, frames, mount and topics are read-only.
"""

from __future__ import annotations

import array
import math
import sys
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid, Odometry
from rclpy.duration import Duration
from rclpy.qos import QoSProfile
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from perception_core.costmap import (
    CATEGORIES,
    UNKNOWN,
    Category,
    CorridorConfig,
    CorridorReport,
    CostmapConfig,
    DepthLabelSync,
    GridWindow,
    PoseBuffer,
    RollingGrid,
    StalenessWatchdog,
    Work,
    build_costmap,
    camera_to_grid_transform,
    check_camera_info,
    check_corridor_fits,
    class_map_from_ontology,
    corridor_report,
    depth_from_16uc1,
    depth_problem,
    unknown_report,
    warm_up,
)
from perception_core.errors import ConfigError, DataError, ImageEncodingError, PerceptionError
from perception_core.geometry import pose_msg_matrix, stamp_ns, transform_matrix
from perception_core.resources import resolve_in_share
from perception_msgs.msg import CorridorStatus, InferenceStats
from perception_ros.health import DIAGNOSTICS_PERIOD_S, FrameStats, diagnostic_array, frame_health
from perception_ros.images import ImageConverter
from perception_ros.lifecycle import ManagedNode
from perception_ros.parameters import RuntimeParameters, declare
from perception_ros.qos import latched_qos, odometry_qos, points_qos, sensor_qos

NODE_NAME = "costmap_node"
DEPTH_TOPIC = "perception/depth/image"
LABELS_TOPIC = "perception/segmentation/labels"
CAMERA_INFO_TOPIC = "camera/camera_info"
COSTMAP_TOPIC = "perception/costmap"
OBSTACLE_POINTS_TOPIC = "perception/costmap/obstacle_points"
CLEARING_POINTS_TOPIC = "perception/costmap/clearing_points"
CORRIDOR_TOPIC = "perception/corridor"
STATS_TOPIC = "perception/costmap/stats"
LOG_THROTTLE_S = 5.0
POSE_SOURCES = ("auto", "tf", "odometry", "none")
RECENT_S = 5.0  # window of the "no observation" / "unknown label ids" diagnostics

_FLOAT_ANY = {"float_range": (-1e3, 1e3)}
# name: (default, description, declare() constraints). Grid/mount/projection names match CostmapConfig fields.
PARAMETERS: dict[str, tuple[Any, str, dict[str, Any]]] = {
    "base_frame": ("base_link", "the robot's base frame (REP 103: x forward, y left, z up); the grid's frame "
                                "when there is no pose in fixed_frame", {}),
    "fixed_frame": ("odom", "frame the grid is published in when the base's pose is known (TF or odometry)", {}),
    "pose_source": ("auto", "where the base's pose in fixed_frame comes from: auto (TF where tf2_ros imports, "
                            "else odometry once it arrives), tf, odometry, or none (grid in base_frame)",
                    {"choices": POSE_SOURCES}),
    "odometry_topic": ("odom", "nav_msgs/Odometry of base_frame in fixed_frame, used where there is no TF", {}),
    "pose_tolerance_s": (0.1, "an image newer than the newest pose by up to this long uses that pose; older "
                              "than the pose history or newer still is a dropped frame", {"float_range": (0.0, 5.0)}),
    "use_depth": (True, "project with depth; false forces the flat-ground fallback", {}),
    "depth_timeout_s": (2.0, "seconds (wall clock) labels wait for depth: labels are projected flat-ground "
                             "(flagged) only when no depth message at all arrived within this long after they "
                             "did; must exceed the depth stream's longest gap (its latency behind the labels "
                             "and its period). Also the delay of the first flat-ground grid once depth stops",
                        {"float_range": (0.01, 600.0)}),
    "flat_ground_fallback": (True, "project labels flat-ground (flagged) when depth is silent; false: silent "
                                   "depth makes the grid unknown (stale_timeout_s)", {}),
    "stale_timeout_s": (2.0, "when no grid could be built, or labels, camera_info (or depth without the "
                             "fallback) are silent, for this long: publish an unknown grid and report ERROR",
                        {"float_range": (0.05, 600.0)}),
    "pairing_capacity": (3, "depth/label messages kept per stream while waiting for an exact-stamp partner",
                         {"int_range": (1, 100)}),
    "pairing_max_skew_s": (0.12, "when a frame's exact partner can no longer come (the other node skipped it), "
                                 "pair with the nearest frame within this many seconds; 0 = exact stamps only",
                           {"float_range": (0.0, 1.0)}),
    "tf_timeout_s": (0.05, "how long to wait for a transform at the image stamp", {"float_range": (0.0, 5.0)}),
    "ontology_path": ("", "ontology YAML with the class -> category mapping: absolute, or relative to the "
                          "installed offroad_perception_bringup share; '' = the ontology shipped with perception_core",
                      {}),
    "flat_obstacle_classes": (["water"], "lethal classes that lie flat on the ground: filled as a surface and "
                                         "never pulled onto a ground contact", {}),
    "unknown_class_category": ("BLOCKED", "category of label ids the ontology does not define (counted in "
                                          "/diagnostics); unknown is not free",
                               {"choices": ("FREE", "CAUTION", "BLOCKED", "HAZARD")}),
    "resolution": (0.1, "cell size in metres", {"float_range": (0.01, 10.0)}),
    "width_m": (30.0, "grid extent along grid x, metres", {"float_range": (0.01, 10000.0)}),
    "height_m": (30.0, "grid extent along grid y, metres", {"float_range": (0.01, 10000.0)}),
    "origin_x": (-15.0, "corner of cell (0, 0) relative to the robot along grid x, metres (-width_m/2: centred)",
                 {"float_range": (-10000.0, 10000.0)}),
    "origin_y": (-15.0, "corner of cell (0, 0) relative to the robot along grid y, metres",
                 {"float_range": (-10000.0, 10000.0)}),
    "cost_free": (0, "OccupancyGrid cost of FREE cells", {"int_range": (0, 100)}),
    "cost_caution": (50, "OccupancyGrid cost of CAUTION cells", {"int_range": (0, 100)}),
    "cost_blocked": (100, "OccupancyGrid cost of BLOCKED cells (100 = lethal in Nav2)", {"int_range": (0, 100)}),
    "cost_hazard": (100, "OccupancyGrid cost of HAZARD cells", {"int_range": (0, 100)}),
    "mount_x": (0.0, "camera body x in base_frame, metres (used without TF)", _FLOAT_ANY),
    "mount_y": (0.0, "camera body y in base_frame, metres", _FLOAT_ANY),
    "mount_z": (1.5, "camera body z in base_frame, metres; must be above ground_z", _FLOAT_ANY),
    "mount_roll": (0.0, "camera body roll, radians", {"float_range": (-math.pi, math.pi)}),
    "mount_pitch": (0.0, "camera body pitch, radians; positive tilts the camera down",
                    {"float_range": (-math.pi / 2, math.pi / 2)}),
    "mount_yaw": (0.0, "camera body yaw, radians; positive turns it left", {"float_range": (-math.pi, math.pi)}),
    "ground_z": (0.0, "height of the ground plane in base_frame, metres (0 for base_footprint, -0.3 for a "
                      "base_link 0.3 m above the ground)", {"float_range": (-100.0, 100.0)}),
    "min_range": (0.3, "depth (metres) at or below which pixels are dropped", {"float_range": (0.0, 1000.0)}),
    "max_range": (15.0, "depth (metres) at or beyond which pixels are dropped; a depth model's max_depth marks "
                        "'farther'", {"float_range": (0.01, 1000.0)}),
    "max_point_height": (3.0, "points higher above the ground (metres) are dropped: canopy, overhangs",
                         {"float_range": (0.01, 100.0)}),
    "min_points_per_cell": (1, "points or surface samples a FREE/CAUTION/flat category needs in a cell",
                            {"int_range": (1, 10000)}),
    "min_obstacle_area_m2": (0.001, "surface area a standing BLOCKED/HAZARD obstacle needs in a cell (each "
                                    "pixel counts z^2 / (fx fy)): many pixels near, few far",
                             {"float_range": (0.0, 100.0)}),
    "max_obstacle_depth_m": (1.5, "how far behind the ground it stands on an obstacle pixel may lie; farther "
                                  "(mixed pixels, depth error) is pulled onto this limit",
                             {"float_range": (0.0, 1000.0)}),
    "column_step": (0, "work on every n-th column of the depth image; 0: the largest n whose columns stay within "
                       "one cell of each other at max_range (finer columns add work, not cells)",
                    {"int_range": (0, 64)}),
    "near_row_spacing": (0.35, "near rows that flat ground packs closer than this (cells) are thinned to about this "
                               "spacing: fewer pixels, the same cells; 0 works on every row",
                         {"float_range": (0.0, 1.0)}),
    "dense_ground": (True, "fill the ground surface between neighbouring pixel rows", {}),
    "surface_step_ratio": (3.0, "largest inverse-depth step between rows, relative to flat ground's, that is "
                                "still one surface (larger: a depth discontinuity, never filled)",
                           {"float_range": (1.0, 100.0)}),
    "max_surface_slope_deg": (35.0, "steepest segment between neighbouring surface pixels that is still one "
                                    "surface (an occlusion edge seen obliquely is steeper)",
                              {"float_range": (1.0, 89.0)}),
    "surface_depth_noise": (0.05, "relative noise of the depth source: rows of one surface may differ this much in "
                                  "inverse depth beyond the flat-ground step (GT depth: 0.01 is plenty)",
                            {"float_range": (0.0, 0.49)}),
    "ground_geometry": (True, "cost from the observed ground's geometry: steps, slopes and drops over the "
                              "vehicle's limits raise traversable cells to CAUTION / BLOCKED", {}),
    "step_caution_m": (0.15, "height step to a neighbouring cell above which ground is CAUTION, metres",
                       {"float_range": (0.0, 100.0)}),
    "step_blocked_m": (0.3, "height step above which ground is BLOCKED; also the largest drop (ditch, cliff "
                            "edge) the vehicle may step down, metres", {"float_range": (0.0, 100.0)}),
    "slope_caution_deg": (20.0, "slope above which ground is CAUTION, degrees", {"float_range": (0.1, 89.9)}),
    "slope_blocked_deg": (30.0, "slope above which ground is BLOCKED, degrees", {"float_range": (0.1, 89.9)}),
    "slope_window_m": (0.5, "side of the square the slope is averaged over, metres (3 cells at least)",
                       {"float_range": (0.01, 100.0)}),
    "fusion_decay_s": (0.0, "remember each cell's newest observation for this long in fixed_frame (0: off; "
                            "needs a pose source)", {"float_range": (0.0, 3600.0)}),
    "publish_category_layers": (True, "also publish one grid per category on perception/costmap/<category>", {}),
    "publish_points": (True, "publish the obstacle and clearing PointCloud2 for a Nav2 ObstacleLayer", {}),
    "corridor_length": (10.0, "driving corridor length ahead of the vehicle, metres", {"float_range": (0.01, 1000.0)}),
    "corridor_width": (2.0, "driving corridor width centred on y = 0, metres", {"float_range": (0.01, 1000.0)}),
    "stop_distance": (3.0, "stop_required when a BLOCKED/HAZARD cell in the corridor is this near, metres",
                      {"float_range": (0.0, 1000.0)}),
    "max_ground_offset_m": (0.3, "/diagnostics WARN when the observed ground lies further than this above or "
                                 "below the ground plane (median): the depth's scale or the camera pose disagrees "
                                 "with the mount or TF", {"float_range": (0.01, 100.0)}),
    "corridor_max_unknown_fraction": (0.5, "corridor status is UNKNOWN when more of the corridor than this is "
                                           "unknown", {"float_range": (0.0, 1.0)}),
}

# Safe to change while frames flow: each frame reads them afresh (costs, evidence, corridor), or they only set
# how long to wait or remember. Grid geometry, frames, mount, projection, topics and pose source are read-only.
RUN_TIME_PARAMETERS = (
    "cost_free", "cost_caution", "cost_blocked", "cost_hazard", "min_points_per_cell", "min_obstacle_area_m2",
    "corridor_length", "corridor_width", "stop_distance", "corridor_max_unknown_fraction", "fusion_decay_s",
    "depth_timeout_s", "stale_timeout_s", "max_ground_offset_m", "step_caution_m", "step_blocked_m",
    "slope_caution_deg", "slope_blocked_deg",
)


def stale_check_period_s(stale_timeout_s: float) -> float:
    """How often the watchdog looks: twice per timeout, at least every 0.5 s."""
    return min(0.5, stale_timeout_s / 2)


def validated_configs(values: dict[str, Any]) -> tuple[CostmapConfig, CorridorConfig]:
    """The grid and corridor configs of parameter ``values``; ConfigError names what is wrong with them."""
    for name in ("base_frame", "fixed_frame"):
        if not str(values[name]).strip():
            raise ConfigError(f"costmap parameter {name} must name a frame, got ''")
    config = CostmapConfig.from_mapping(values)
    corridor = CorridorConfig(values["corridor_length"], values["corridor_width"], values["stop_distance"])
    check_corridor_fits(corridor, config, rolling=False)
    return config, corridor


def depth_from_image(converter: ImageConverter, msg: Image, topic: str) -> np.ndarray:
    """Metres (NaN invalid) from a REP 118 depth image: 32FC1 metres or 16UC1 millimetres (0, 65535 invalid)."""
    if msg.encoding not in ("32FC1", "16UC1"):
        raise ImageEncodingError(f"{topic}: depth encoding {msg.encoding!r} is not 32FC1 (metres) or 16UC1 (mm)")
    depth = _pixels(converter, msg, topic)
    if msg.encoding == "16UC1":
        depth = depth_from_16uc1(depth)
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


def grid_message(grid: np.ndarray, window: GridWindow, header: Any) -> OccupancyGrid:
    """OccupancyGrid of ``grid`` placed by ``window``; ``header`` carries the source stamp and the grid frame."""
    msg = OccupancyGrid()
    msg.header = header
    msg.info.map_load_time = header.stamp
    msg.info.resolution = float(window.resolution)
    msg.info.height, msg.info.width = (int(n) for n in grid.shape)
    msg.info.origin.position.x = float(window.origin_x)
    msg.info.origin.position.y = float(window.origin_y)
    msg.info.origin.orientation.w = 1.0
    msg.data = array.array("b", np.ascontiguousarray(grid, dtype=np.int8).tobytes())
    return msg


def cloud_message(points: np.ndarray, header: Any) -> PointCloud2:
    """An unorganised float32 x, y, z PointCloud2 of ``points`` [N, 3]."""
    points = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 3)
    fields = [PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
              for i, name in enumerate("xyz")]
    return PointCloud2(header=header, height=1, width=int(points.shape[0]), fields=fields,
                       is_bigendian=sys.byteorder == "big", point_step=12, row_step=12 * int(points.shape[0]),
                       data=array.array("B", points.tobytes()), is_dense=True)


def cell_points(mask: np.ndarray, heights: np.ndarray | float, window: GridWindow) -> np.ndarray:
    """[N, 3] grid-frame points at the centres of the ``mask`` cells, at ``heights`` (per cell or one value)."""
    rows, cols = np.nonzero(mask)
    x = window.origin_x + (cols + 0.5) * window.resolution
    y = window.origin_y + (rows + 0.5) * window.resolution
    z = heights[rows, cols] if isinstance(heights, np.ndarray) else np.full(rows.size, float(heights))
    return np.stack([x, y, z], axis=1)


class CostmapNode(ManagedNode):
    """Pairs depth and labels, places the camera, builds the costmap and publishes it with the corridor status."""

    def __init__(self, node_name: str = NODE_NAME, input_qos: QoSProfile | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for name, (default, description, constraints) in PARAMETERS.items():
            declare(self, name, default, description, read_only=name not in RUN_TIME_PARAMETERS, **constraints)
        self.runtime = RuntimeParameters(self)
        self.runtime.add_group(RUN_TIME_PARAMETERS, apply=self._apply_run_time, check=self._check_run_time)
        self.input_qos = input_qos or sensor_qos()
        self.converter = ImageConverter()
        self.params: dict[str, Any] = {}  # the values in use, read at configure
        self.config: CostmapConfig | None = None
        self._own_publishers: list[Any] = []
        self.tf_buffer: Any = None
        self.tf_listener: Any = None
        self._poll_timer: Any = None
        self._stale_timer: Any = None
        self.camera_info: CameraInfo | None = None
        self._reset_counters()
        self.start()

    # ------------------------------------------------------------------ lifecycle

    def configure_node(self) -> None:
        """Validate every parameter together, load the ontology, create the publishers and the pose sources."""
        values = {name: self.get_parameter(name).value for name in PARAMETERS}
        config, corridor = validated_configs(values)  # ConfigError names the parameter
        ontology = resolve_in_share(values["ontology_path"]) if values["ontology_path"] else None
        classes = class_map_from_ontology(ontology, values["flat_obstacle_classes"], values["unknown_class_category"])
        self.params, self.config, self.corridor, self.classes = values, config, corridor, classes
        self.rolling = RollingGrid(config, values["fusion_decay_s"])
        self.poses = PoseBuffer(history_s=10.0, tolerance_s=values["pose_tolerance_s"])
        self.mount_transform = camera_to_grid_transform(config)
        self.required_streams = ["labels", "camera_info"]
        if values["use_depth"] and not values["flat_ground_fallback"]:
            self.required_streams.append("depth")
        self._reset_inputs()
        self._reset_counters()
        # Topic names as resolved (namespace, remapping): errors and diagnostics name what the user sees.
        self.depth_topic, self.labels_topic, self.camera_info_topic = (
            self.resolve_topic_name(name) for name in (DEPTH_TOPIC, LABELS_TOPIC, CAMERA_INFO_TOPIC))
        if values["pose_source"] in ("auto", "tf"):
            self._start_tf(required=values["pose_source"] == "tf")
        self._warn_if_corridor_leaves_rolling_window()

        grid_qos = latched_qos()
        self.costmap_pub = self._publisher(OccupancyGrid, COSTMAP_TOPIC, grid_qos)
        self.layer_pubs = {}
        if values["publish_category_layers"]:
            self.layer_pubs = {c.name.lower(): self._publisher(OccupancyGrid, f"{COSTMAP_TOPIC}/{c.name.lower()}",
                                                               grid_qos) for c in CATEGORIES}
        self.obstacle_points_pub = self.clearing_points_pub = None
        if values["publish_points"]:
            self.obstacle_points_pub = self._publisher(PointCloud2, OBSTACLE_POINTS_TOPIC, points_qos())
            self.clearing_points_pub = self._publisher(PointCloud2, CLEARING_POINTS_TOPIC, points_qos())
        self.corridor_pub = self._publisher(CorridorStatus, CORRIDOR_TOPIC, points_qos())
        self.stats_pub = self._publisher(InferenceStats, STATS_TOPIC, 10)
        self.diagnostics_pub = self._publisher(DiagnosticArray, "/diagnostics", 10)
        # The build's compiled loops: compiled on a new install (seconds), loaded from their cache otherwise; here,
        # not on the first frame.
        warm_s = warm_up(config, classes) if values["use_depth"] else 0.0
        self.get_logger().info(
            f"costmap {config.cols}x{config.rows} cells of {config.resolution} m; grid in "
            f"'{self._frame_description()}'; use_depth={values['use_depth']}; compiled loops ready in {warm_s:.2f} s")

    def activate_node(self) -> None:
        """Subscribe (camera_info first) and start the timers; silence is counted from here."""
        self._reset_inputs()
        # What a frame needs before the frame: the executor serves ready subscriptions in creation order, so a
        # frame taken in the same spin as its camera_info (and odometry) is built with them, not dropped or
        # left in base_frame for want of them.
        self.create_input_subscription(CameraInfo, CAMERA_INFO_TOPIC, self._on_camera_info, self.input_qos)
        pose_source = self.params["pose_source"]
        if pose_source == "odometry" or (pose_source == "auto" and self.tf_buffer is None):
            self.create_input_subscription(Odometry, self.params["odometry_topic"], self._on_odometry,
                                           odometry_qos())
        self.create_input_subscription(Image, DEPTH_TOPIC, self._on_depth, self.input_qos)
        self.create_input_subscription(Image, LABELS_TOPIC, self._on_labels, self.input_qos)
        self.create_input_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._poll_timer = None
        if self.params["use_depth"] and self.params["flat_ground_fallback"]:
            self._poll_timer = self.create_input_timer(self.sync.poll_period_s, self._poll_sync)
        self._stale_timer = self.create_input_timer(stale_check_period_s(self.params["stale_timeout_s"]),
                                                    self._check_staleness)

    def deactivate_node(self) -> None:
        """No more inputs: stop asserting the last grid (a StaticLayer and late subscribers would keep it)."""
        self._poll_timer = self._stale_timer = None
        self._withdraw()
        self.get_logger().info("deactivated: published an unknown grid and an UNKNOWN corridor")

    def cleanup_node(self) -> None:
        for publisher in self._own_publishers:
            self.destroy_publisher(publisher)
        self._own_publishers.clear()
        if self.tf_listener is not None:
            self.tf_listener.unregister()  # destroys its /tf and /tf_static subscriptions
        self.tf_buffer = self.tf_listener = None
        self.params, self.config, self.camera_info = {}, None, None

    def _publisher(self, msg_type: Any, topic: str, qos: Any) -> Any:
        publisher = self.create_publisher(msg_type, topic, qos)
        self._own_publishers.append(publisher)
        return publisher

    def _reset_inputs(self) -> None:
        """Fresh pairing, watchdog and memory: what came before (an earlier activation) is not continued."""
        values = self.params
        self.sync: DepthLabelSync[Image] = DepthLabelSync(
            use_depth=values["use_depth"], depth_timeout_s=values["depth_timeout_s"],
            flat_ground_fallback=values["flat_ground_fallback"], capacity=values["pairing_capacity"],
            max_skew_ns=round(values["pairing_max_skew_s"] * 1e9))
        self.watchdog = StalenessWatchdog(values["stale_timeout_s"], ["depth", *self.required_streams, "costmap"])
        self.rolling.reset()
        self.camera_info = None
        self.stale_message = None

    def _reset_counters(self) -> None:
        """Counters and health state of one configured life."""
        self.stats = FrameStats()
        self.drop_reasons: dict[str, int] = {}
        self.flat_ground_frames = 0
        self.last_used_flat_ground = False
        self.unknown_label_pixels = 0
        self.last_unknown_labels_at: float | None = None
        self.frames_without_observation = 0
        self.last_no_observation: tuple[float, str] | None = None
        self.last_observation_at: float | None = None
        self.ground_offset_m = float("nan")
        self.drop_edge_cells = 0
        self.stale_message: str | None = None
        self.last_window: GridWindow | None = None
        self.last_grid_frame = self.params.get("base_frame", PARAMETERS["base_frame"][0])
        self.last_report: CorridorReport | None = None
        self.odometry_seen = False
        self.odometry_rejected = 0

    # ------------------------------------------------------------------ run-time parameters

    def _check_run_time(self, changes: dict[str, Any]) -> str | None:
        """Refuse values that break a rule between parameters (unconfigured: configure checks them all)."""
        if self.config is None:
            return None
        try:
            validated_configs({**self.params, **changes})
        except ConfigError as err:
            return str(err)
        return None

    def _apply_run_time(self, changes: dict[str, Any]) -> None:
        """Use the new values from the next frame (or the next watchdog look) on."""
        if self.config is None:
            return  # read at configure
        self.params.update(changes)
        self.config, self.corridor = validated_configs(self.params)
        self.rolling.config = self.config
        self.rolling.decay_s = float(self.params["fusion_decay_s"])
        self.sync.depth_timeout_s = float(self.params["depth_timeout_s"])
        self.watchdog.timeout_s = float(self.params["stale_timeout_s"])
        if self._poll_timer is not None:
            self._poll_timer.timer_period_ns = round(self.sync.poll_period_s * 1e9)
        if self._stale_timer is not None:
            self._stale_timer.timer_period_ns = round(stale_check_period_s(self.watchdog.timeout_s) * 1e9)
        if {"corridor_length", "corridor_width"} & set(changes):
            self._warn_if_corridor_leaves_rolling_window()

    def _warn_if_corridor_leaves_rolling_window(self) -> None:
        if self.params["pose_source"] == "none":
            return
        try:
            check_corridor_fits(self.corridor, self.config, rolling=True)
        except ConfigError as err:  # in fixed_frame the window does not turn with the robot
            self.get_logger().warning(f"{err}: headings that take the corridor out of the window read it as unknown")

    # ------------------------------------------------------------------ set-up

    def _start_tf(self, required: bool) -> None:
        try:
            import tf2_ros  # on the vehicle (ROS 2 apt install); absent from this workspace's venv
        except ImportError:
            if required:
                raise ConfigError("costmap parameter pose_source is 'tf' but tf2_ros is not installed") from None
            self.get_logger().info("tf2_ros is not installed: pose from odometry if it arrives, camera from mount_*")
            return
        self.tf_buffer = tf2_ros.Buffer()
        self.tf_listener = tf2_ros.TransformListener(self.tf_buffer, self)

    def _frame_description(self) -> str:
        if self.tf_buffer is not None:
            return f"{self.params['fixed_frame']} (pose from TF)"
        if self.odometry_seen:
            return f"{self.params['fixed_frame']} (pose from odometry)"
        return f"{self.params['base_frame']} (no pose source yet; camera from mount_*)"

    # ------------------------------------------------------------------ inputs

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info = msg
        self.watchdog.mark("camera_info")

    def _on_odometry(self, msg: Odometry) -> None:
        fixed, base = self.params["fixed_frame"], self.params["base_frame"]
        parent, child = msg.header.frame_id.lstrip("/"), msg.child_frame_id.lstrip("/")
        if parent != fixed or (child and child != base):
            self.odometry_rejected += 1
            self.get_logger().warning(
                f"{self.params['odometry_topic']}: odometry of '{child}' in '{parent}' is not {base} in {fixed}; "
                "ignored", throttle_duration_sec=LOG_THROTTLE_S)
            return
        try:
            self.poses.add(stamp_ns(msg.header), pose_msg_matrix(msg.pose.pose))
        except ValueError as err:
            self.odometry_rejected += 1
            self.get_logger().warning(f"{self.params['odometry_topic']}: {err}; ignored",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        self.odometry_seen = True

    def _on_depth(self, msg: Image) -> None:
        self.watchdog.mark("depth")
        self._build_work(self.sync.on_depth(stamp_ns(msg.header), msg))

    def _on_labels(self, msg: Image) -> None:
        self.watchdog.mark("labels")
        self._build_work(self.sync.on_labels(stamp_ns(msg.header), msg))

    def _poll_sync(self) -> None:
        self._build_work(self.sync.poll())

    def _build_work(self, work: list[Work[Image]]) -> None:
        for item in work:
            self._process(item.labels, item.depth)

    # ------------------------------------------------------------------ poses

    def _lookup(self, target: str, source: str, stamp: Any) -> np.ndarray:
        transform = self.tf_buffer.lookup_transform(  # type: ignore[union-attr]
            target, source, Time.from_msg(stamp), Duration(seconds=self.params["tf_timeout_s"]))
        return transform_matrix(transform.transform)

    def _camera_pose(self, header: Header) -> tuple[np.ndarray, np.ndarray | None]:
        """(optical -> base transform, base pose in fixed_frame or None for a base-frame grid) at the stamp.

        Raises DataError when the pose source exists but cannot answer for this stamp (a dropped frame).
        """
        frame_id, stamp = header.frame_id, header.stamp
        if self.tf_buffer is not None:
            base, fixed = self.params["base_frame"], self.params["fixed_frame"]
            try:
                camera_to_base = self._lookup(base, frame_id, stamp)
            except Exception as err:  # noqa: BLE001 - tf2 raises several unrelated types; all mean "no pose"
                self.get_logger().warning(f"no TF from '{frame_id}' to '{base}' ({err}); camera from mount_*",
                                          throttle_duration_sec=LOG_THROTTLE_S)
                camera_to_base = self.mount_transform
            try:
                return camera_to_base, self._lookup(fixed, base, stamp)
            except Exception as err:  # noqa: BLE001
                raise DataError(f"no TF from '{base}' to '{fixed}' at the image stamp: {err}") from None
        if self.odometry_seen:
            try:
                return self.mount_transform, self.poses.lookup(stamp_ns(header))
            except LookupError as err:
                raise DataError(f"{self.params['odometry_topic']}: no pose of '{self.params['base_frame']}' at the "
                                f"image stamp: {err}") from None
        return self.mount_transform, None

    # ------------------------------------------------------------------ processing

    def _drop(self, reason: str) -> None:
        self.stats.drop(reason)
        key = reason.split(":")[0]
        self.drop_reasons[key] = self.drop_reasons.get(key, 0) + 1
        self.get_logger().warning(f"dropped frame: {reason}", throttle_duration_sec=LOG_THROTTLE_S)

    def _process(self, labels_msg: Image, depth_msg: Image | None) -> None:
        entered = time.perf_counter()
        try:
            if self.camera_info is None:
                raise DataError(f"no camera_info received yet on {self.camera_info_topic}")
            info = self.camera_info
            k = check_camera_info(info.width, info.height, info.k, where=self.camera_info_topic)
            labels = labels_from_image(self.converter, labels_msg, self.labels_topic)
            depth = depth_from_image(self.converter, depth_msg, self.depth_topic) if depth_msg is not None else None
            camera_to_base, base_in_fixed = self._camera_pose(labels_msg.header)
            window = self.rolling.window_for(base_in_fixed) if base_in_fixed is not None else None
            converted = time.perf_counter()
            result = build_costmap(depth, labels, k, self.config, self.classes, camera_to_base=camera_to_base,
                                   k_hw=(int(info.height), int(info.width)), window=window)
            built = time.perf_counter()
            stamp_s = stamp_ns(labels_msg.header) / 1e9
            published = self.rolling.fuse(result, stamp_s) if base_in_fixed is not None else result
            frame = self.params["fixed_frame"] if base_in_fixed is not None else self.params["base_frame"]
            self._publish(labels_msg, frame, published, result, camera_to_base)
        except PerceptionError as err:
            self._drop(str(err))
            return
        except Exception as err:  # noqa: BLE001 - a frame must never take the node down; it is counted and named
            self._drop(f"internal error on this frame ({type(err).__name__}): {err}")
            return
        self._account(result, depth)
        done = time.perf_counter()
        self.stats.record((done - entered) * 1e3)
        self.stats_pub.publish(InferenceStats(
            header=labels_msg.header, node_name=self.get_name(), model_path="", backend_requested="host",
            backend_used="host", preprocess_ms=(converted - entered) * 1e3, inference_ms=(built - converted) * 1e3,
            postprocess_ms=(done - built) * 1e3, total_ms=(done - entered) * 1e3,
            frames_processed=self.stats.processed, frames_dropped=self.stats.dropped))

    def _account(self, result: Any, depth: np.ndarray | None) -> None:
        now = time.monotonic()
        if result.used_flat_ground:
            self.flat_ground_frames += 1
            reason = "use_depth is false" if not self.params["use_depth"] else (
                f"no depth on {self.depth_topic} within depth_timeout_s="
                f"{self.params['depth_timeout_s']} s of the labels")
            self.get_logger().warning(f"flat-ground fallback ({reason}): obstacles are smeared behind themselves",
                                      throttle_duration_sec=LOG_THROTTLE_S)
        self.last_used_flat_ground = result.used_flat_ground
        if result.unknown_label_pixels:
            self.unknown_label_pixels += result.unknown_label_pixels
            self.last_unknown_labels_at = now
        self.ground_offset_m = result.ground_offset_m
        self.drop_edge_cells = result.drop_edge_cells
        if result.observed_cells == 0:
            self.frames_without_observation += 1
            why = (depth_problem(depth, self.config) if depth is not None else None) or "no labelled pixel in range"
            self.last_no_observation = (now, why)
            self.get_logger().warning(f"frame gave no observed cell: {why}", throttle_duration_sec=LOG_THROTTLE_S)
        else:
            self.last_observation_at = now

    def _publish(self, source: Image, frame: str, grid: Any, observation: Any, camera_to_base: np.ndarray) -> None:
        header = Header(stamp=source.header.stamp, frame_id=frame)
        window = grid.window
        self.costmap_pub.publish(grid_message(grid.grid, window, header))
        for name, publisher in self.layer_pubs.items():
            publisher.publish(grid_message(grid.layers[name], window, header))
        report = corridor_report(grid.present, grid.category, window, self.corridor,
                                 self.params["corridor_max_unknown_fraction"])
        self._publish_corridor(header, report)
        if self.obstacle_points_pub is not None:
            self._publish_points(source, grid, observation, camera_to_base)
        self.watchdog.mark("costmap")
        self.last_window, self.last_grid_frame = window, frame
        self.stale_message = None

    def _publish_points(self, source: Image, grid: Any, observation: Any, camera_to_base: np.ndarray) -> None:
        """Lethal cells (of the published grid) and observed traversable cells (of this frame) in the camera frame.

        In the camera's optical frame at the image stamp, a Nav2 ObstacleLayer raytraces from the camera (the
        cloud frame's origin) to each point: clearing up to it, then marking the lethal ones.
        """
        window = grid.window
        ground = self.config.ground_z
        lethal = grid.present[Category.BLOCKED] | grid.present[Category.HAZARD]
        heights = np.where(np.isfinite(grid.obstacle_height), grid.obstacle_height, 0.0) + ground
        traversable = (observation.category == Category.FREE) | (observation.category == Category.CAUTION)
        grid_to_camera = np.linalg.inv(np.asarray(window.base_to_grid) @ camera_to_base)
        header = Header(stamp=source.header.stamp, frame_id=source.header.frame_id)
        for publisher, points in ((self.obstacle_points_pub, cell_points(lethal, heights, window)),
                                  (self.clearing_points_pub, cell_points(traversable, ground, window))):
            if not window.is_base_frame:  # grid-frame z of a base-frame height
                points[:, 2] += window.base_to_grid[2, 3]
            camera_points = points @ grid_to_camera[:3, :3].T + grid_to_camera[:3, 3]
            publisher.publish(cloud_message(camera_points, header))  # type: ignore[union-attr]

    def _publish_corridor(self, header: Header, report: CorridorReport) -> None:
        self.last_report = report
        self.corridor_pub.publish(CorridorStatus(
            header=header, corridor_length=float(self.corridor.length), corridor_width=float(self.corridor.width),
            nearest_blocked_m=report.nearest_blocked_m, nearest_hazard_m=report.nearest_hazard_m,
            unknown_fraction=report.unknown_fraction, stop_required=report.stop_required,
            stop_distance=float(self.corridor.stop_distance), status=int(report.status)))

    # ------------------------------------------------------------------ staleness

    def _check_staleness(self) -> None:
        """Withdraw the grid (and corridor) while the output or a required input is silent."""
        silent = self.watchdog.silent()
        required = {k: v for k, v in silent.items() if k in self.required_streams or k == "costmap"}
        if not required:
            return
        self.stale_message = "stopped asserting free space: " + self.watchdog.describe(required)
        self._withdraw()
        self.get_logger().error(self.stale_message, throttle_duration_sec=LOG_THROTTLE_S)

    def _withdraw(self) -> None:
        """Publish an unknown grid (fresh stamp: consumers take it as the newest) and an UNKNOWN corridor, and
        forget the fused memory."""
        self.rolling.reset()
        window = self.last_window or GridWindow.base_frame(self.config)
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.last_grid_frame)
        unknown = np.full((window.rows, window.cols), UNKNOWN, dtype=np.int8)
        self.costmap_pub.publish(grid_message(unknown, window, header))
        for publisher in self.layer_pubs.values():
            publisher.publish(grid_message(unknown, window, header))
        self._publish_corridor(header, unknown_report())

    # ------------------------------------------------------------------ health

    def diagnostic_values(self, summary: dict[str, float]) -> dict[str, Any]:
        values: dict[str, Any] = {k: f"{v:.3f}" for k, v in summary.items()}
        values.update(
            frames_processed=self.stats.processed,
            frames_dropped=self.stats.dropped,
            drops_by_reason="; ".join(f"{k}: {v}" for k, v in self.drop_reasons.items()) or "none",
            flat_ground_frames=self.flat_ground_frames,
            used_flat_ground=self.last_used_flat_ground,
            pairs_unmatched=self.sync.pairer.dropped,
            pairs_approximate=self.sync.pairer.approximate_pairs,
            grid_frame=self.last_grid_frame,
            pose_source=self._frame_description(),
            camera_pose_source="TF" if self.tf_buffer is not None else "mount parameters",
            fusion=("off" if self.rolling.decay_s <= 0 else
                    f"{self.rolling.decay_s} s" if self.last_grid_frame == self.params["fixed_frame"]
                    else "off (no pose in fixed_frame)"),
            odometry_rejected=self.odometry_rejected,
            unknown_label_pixels=self.unknown_label_pixels,
            frames_without_observation=self.frames_without_observation,
            ground_offset_m=f"{self.ground_offset_m:.3f}",
            ground_geometry=self.params["ground_geometry"],
            drop_edge_cells=self.drop_edge_cells,
            corridor_status=self.last_report.status.name if self.last_report else "none yet",
            stale=self.stale_message is not None,
            unknown_parameters=",".join(self.unknown_parameters),
        )
        return values

    def _health(self, summary: dict[str, float]) -> tuple[int, str]:
        """perception_ros.health's rules, with this node's stale state, ERROR and WARN conditions."""
        now = time.monotonic()
        recent_empty = self.last_no_observation is not None and now - self.last_no_observation[0] <= RECENT_S
        error = None
        if recent_empty and (self.last_observation_at is None or now - self.last_observation_at > RECENT_S):
            error = f"no frame observed any cell: {self.last_no_observation[1]}"
        warning = None
        if self.last_used_flat_ground:
            warning = "flat-ground fallback (no depth): obstacles smeared"
        elif recent_empty:
            warning = f"frames without any observed cell: {self.last_no_observation[1]}"
        elif abs(self.ground_offset_m) > self.params["max_ground_offset_m"]:  # NaN compares False
            side = "above" if self.ground_offset_m > 0 else "below"
            warning = (f"the observed ground lies {abs(self.ground_offset_m):.2f} m {side} the ground plane: the "
                       "depth's scale or the camera pose disagrees with the mount or TF")
        elif self.last_unknown_labels_at is not None and now - self.last_unknown_labels_at <= RECENT_S:
            warning = (f"label ids outside the ontology ({self.unknown_label_pixels} pixels so far), projected as "
                       f"{self.params['unknown_class_category']}")
        return frame_health(self.stats, summary, warning, stale=self.stale_message, error=error)

    def _publish_diagnostics(self) -> None:
        summary = self.stats.summary()
        level, message = self._health(summary)
        self.diagnostics_pub.publish(diagnostic_array(
            self.get_clock().now().to_msg(), f"{self.get_name()}: costmap", "host", level, message,
            self.diagnostic_values(summary)))


if __name__ == "__main__":
    from seg_perception.main import costmap_node

    costmap_node()
