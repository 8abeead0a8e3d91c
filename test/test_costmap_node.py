"""System tests: the costmap node over real DDS (loopback), fed depth + labels + camera_info (+ odometry).

Timing rules (pairing, flat-ground fallback, staleness) are unit-tested on a fake clock in
src/perception_core/test/test_costmap_timing.py; here the node's wiring is checked end to end,
without timed assertions.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Quaternion
from inference_node_harness import ros_context
from nav_msgs.msg import OccupancyGrid, Odometry
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from perception_core.geometry import quaternion_from_matrix, rotation_rpy
from perception_core.image_codec import array_to_image_fields
from perception_msgs.msg import CorridorStatus, InferenceStats

pytestmark = pytest.mark.system

WIDTH, HEIGHT, FOCAL = 64, 48, 40.0
CX, CY = (WIDTH - 1) / 2, (HEIGHT - 1) / 2
CAM_HEIGHT, WALL_X = 1.0, 4.05  # level camera 1 m up; a wall face 4.05 m ahead (middle of a 0.1 m cell)
GROUND, WALL = 0, 4  # smooth_ground -> FREE, static_obstacle -> BLOCKED (the packaged ontology)
STAMP = Time(sec=1234, nanosec=5678)
CAMERA_FRAME = "camera_optical_frame"

# Nav2's subscriptions (nav2_costmap_2d, jazzy): StaticLayer with map_subscribe_transient_local true
# (plugins/static_layer.cpp: QoS(10) then transient_local, reliable, keep_last 1), with it false (QoS(10):
# reliable, volatile, depth 10), and an ObstacleLayer/VoxelLayer observation source
# (plugins/obstacle_layer.cpp: rmw_qos_profile_sensor_data with depth 50).
NAV2_STATIC_LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
NAV2_STATIC_VOLATILE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                                  durability=DurabilityPolicy.VOLATILE)
NAV2_OBSERVATION = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.BEST_EFFORT,
                              durability=DurabilityPolicy.VOLATILE)


def scene() -> tuple[np.ndarray, np.ndarray]:
    """Depth (optical z) and labels of a level camera over flat ground facing a wall: closed form."""
    v = np.arange(HEIGHT, dtype=np.float64)[:, None] * np.ones((1, WIDTH))
    with np.errstate(divide="ignore"):
        ground_depth = np.where(v > CY, FOCAL * CAM_HEIGHT / (v - CY), np.inf)
    on_wall = ground_depth > WALL_X
    depth = np.where(on_wall, WALL_X, ground_depth).astype(np.float32)
    labels = np.where(on_wall, WALL, GROUND).astype(np.uint8)
    return depth, labels


def image(array: np.ndarray, encoding: str, stamp: Time = STAMP) -> Image:
    return Image(header=Header(stamp=stamp, frame_id=CAMERA_FRAME), **array_to_image_fields(array, encoding))


def camera_info(k: list[float] | None = None, width: int = WIDTH, height: int = HEIGHT) -> CameraInfo:
    return CameraInfo(header=Header(stamp=STAMP, frame_id=CAMERA_FRAME), width=width, height=height,
                      k=k if k is not None else [FOCAL, 0.0, CX, 0.0, FOCAL, CY, 0.0, 0.0, 1.0])


def odometry(stamp: Time, x: float, y: float, yaw: float, frame: str = "odom") -> Odometry:
    msg = Odometry(header=Header(stamp=stamp, frame_id=frame), child_frame_id="base_link")
    msg.pose.pose.position.x, msg.pose.pose.position.y = x, y
    qx, qy, qz, qw = quaternion_from_matrix(rotation_rpy(0.0, 0.0, yaw))
    msg.pose.pose.orientation = Quaternion(x=qx, y=qy, z=qz, w=qw)
    return msg


class Harness:
    """A costmap node and a probe node in one executor; the probe publishes inputs and records outputs."""

    def __init__(self, context: Any, grid_qos: QoSProfile = NAV2_STATIC_VOLATILE, **parameters: Any) -> None:
        defaults = {"mount_z": CAM_HEIGHT, "min_obstacle_area_m2": 0.0, "stale_timeout_s": 30.0}
        overrides = [Parameter(k, value=v) for k, v in {**defaults, **parameters}.items()]
        from seg_perception.costmap_node import CostmapNode

        self.node = CostmapNode(context=context, parameter_overrides=overrides)
        self.probe = rclpy.create_node("costmap_probe", context=context)
        qos = qos_profile_sensor_data
        self.depth_pub = self.probe.create_publisher(Image, "/perception/depth/image", qos)
        self.labels_pub = self.probe.create_publisher(Image, "/perception/segmentation/labels", qos)
        self.info_pub = self.probe.create_publisher(CameraInfo, "/camera/camera_info", qos)
        self.odom_pub = self.probe.create_publisher(Odometry, "/odom", 50)
        self.grids: list[OccupancyGrid] = []
        self.blocked_layers: list[OccupancyGrid] = []
        self.corridors: list[CorridorStatus] = []
        self.stats: list[InferenceStats] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.obstacle_points: list[PointCloud2] = []
        self.clearing_points: list[PointCloud2] = []
        self.probe.create_subscription(OccupancyGrid, "/perception/costmap", self.grids.append, grid_qos)
        self.probe.create_subscription(OccupancyGrid, "/perception/costmap/blocked", self.blocked_layers.append,
                                       grid_qos)
        self.probe.create_subscription(CorridorStatus, "/perception/corridor", self.corridors.append, 10)
        self.probe.create_subscription(InferenceStats, "/perception/costmap/stats", self.stats.append, 10)
        self.probe.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.probe.create_subscription(PointCloud2, "/perception/costmap/obstacle_points", self.obstacle_points.append,
                                       NAV2_OBSERVATION)
        self.probe.create_subscription(PointCloud2, "/perception/costmap/clearing_points", self.clearing_points.append,
                                       NAV2_OBSERVATION)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)

    def spin_until(self, done: Callable[[], bool], publish: Callable[[], Any] = lambda: None,
                   timeout: float = 30.0) -> None:
        """Publish repeatedly (best-effort inputs, discovery takes a moment) until ``done``."""
        deadline = time.monotonic() + timeout
        next_publish = 0.0
        while not done():
            now = time.monotonic()
            assert now < deadline, "timed out waiting for the costmap node's outputs"
            if now >= next_publish:
                publish()
                next_publish = now + 0.25
            self.executor.spin_once(timeout_sec=0.05)

    def ready(self, info: CameraInfo | None = None) -> None:
        """Until the node has a camera_info and every input publisher sees its subscription."""
        publishers = (self.depth_pub, self.labels_pub, self.info_pub)
        info = info or camera_info()
        self.spin_until(lambda: self.node.camera_info is not None and list(self.node.camera_info.k) == list(info.k)
                        and all(p.get_subscription_count() >= 1 for p in publishers), lambda: self.info_pub.publish(info))

    def publish_frame(self, depth: np.ndarray | None, labels: np.ndarray, stamp: Time = STAMP,
                      depth_encoding: str = "32FC1", info: CameraInfo | None = None) -> None:
        self.info_pub.publish(info or camera_info())
        if depth is not None:
            self.depth_pub.publish(image(depth, depth_encoding, stamp))
        self.labels_pub.publish(image(labels, "mono8", stamp))

    def latest_values(self) -> dict[str, str]:
        """Key/values of the newest /diagnostics status of the costmap node (empty before the first)."""
        mine = [a for a in self.diagnostics if a.status[0].name.startswith("costmap_node")]
        return {kv.key: kv.value for kv in mine[-1].status[0].values} if mine else {}

    def latest_status(self) -> DiagnosticStatus | None:
        mine = [a for a in self.diagnostics if a.status[0].name.startswith("costmap_node")]
        return mine[-1].status[0] if mine else None

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.probe.destroy_node()


@pytest.fixture
def context() -> Iterator[Any]:
    with ros_context() as context:
        yield context


def cell(grid: OccupancyGrid, x: float, y: float) -> int:
    col = math.floor((x - grid.info.origin.position.x) / grid.info.resolution)
    row = math.floor((y - grid.info.origin.position.y) / grid.info.resolution)
    return grid.data[row * grid.info.width + col]


def nav2_accepts(grid: OccupancyGrid) -> bool:
    """The checks nav2_util::validateMsg(OccupancyGrid) makes before a StaticLayer takes a grid (jazzy,
    nav2_util/include/nav2_util/validate_messages.hpp): frame, stamp, finite origin with a unit quaternion,
    resolution > 1e-6, a non-empty size within INT16_MAX per side, and width x height data."""
    origin = grid.info.origin
    values = [origin.position.x, origin.position.y, origin.position.z, origin.orientation.x, origin.orientation.y,
              origin.orientation.z, origin.orientation.w, grid.info.resolution]
    quaternion = sum(v * v for v in values[3:7])
    return (bool(grid.header.frame_id) and grid.header.stamp.nanosec < 1_000_000_000
            and all(math.isfinite(v) for v in values) and abs(quaternion - 1.0) < 1e-4
            and grid.info.resolution > 1e-6 and 0 < grid.info.width <= 32767 and 0 < grid.info.height <= 32767
            and len(grid.data) == grid.info.width * grid.info.height)


def stamp_of(msg: Any) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def cloud_xyz(msg: PointCloud2) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), dtype=np.float32).reshape(-1, 3)


def test_a_frame_gives_a_grid_corridor_and_clouds_with_its_stamp_to_nav2_qos_subscribers(context: Any) -> None:
    depth, labels = scene()
    harness = Harness(context, stop_distance=5.0, pose_source="none")
    try:
        harness.spin_until(lambda: bool(harness.grids and harness.corridors and harness.stats
                                        and harness.blocked_layers and harness.obstacle_points
                                        and harness.clearing_points),
                           lambda: harness.publish_frame(depth, labels))
        # A late subscriber with the StaticLayer's transient-local QoS still gets the last grid.
        late: list[OccupancyGrid] = []
        harness.probe.create_subscription(OccupancyGrid, "/perception/costmap", late.append, NAV2_STATIC_LATCHED)
        harness.spin_until(lambda: bool(late))
    finally:
        harness.close()

    grid = harness.grids[0]
    assert stamp_of(grid) == (1234, 5678) and stamp_of(late[0]) == (1234, 5678)
    assert nav2_accepts(grid) and nav2_accepts(late[0])
    assert grid.header.frame_id == "base_link"
    assert (grid.info.width, grid.info.height) == (300, 300)
    assert grid.info.resolution == pytest.approx(0.1)
    assert (grid.info.origin.position.x, grid.info.origin.position.y) == (pytest.approx(-15.0), pytest.approx(-15.0))
    assert cell(grid, WALL_X, 0.05) == 100, "the wall is BLOCKED where it stands"
    assert cell(grid, 2.05, 0.05) == 0, "visible ground is FREE"
    assert cell(grid, 6.05, 0.05) == -1, "behind the wall is unknown, not smeared"
    assert cell(grid, -2.0, 0.05) == -1
    assert cell(harness.blocked_layers[0], WALL_X, 0.05) == 100 and cell(harness.blocked_layers[0], 2.05, 0.05) == 0

    corridor = harness.corridors[0]
    assert stamp_of(corridor) == (1234, 5678)
    assert corridor.nearest_blocked_m == pytest.approx(4.0)
    assert math.isinf(corridor.nearest_hazard_m)
    assert corridor.stop_required and corridor.status == CorridorStatus.STATUS_STOP

    # The clouds are in the camera's optical frame at the image stamp: a Nav2 ObstacleLayer raytraces from the
    # cloud frame's origin (the camera). Back in the base frame, the obstacle points are the wall's cells.
    for cloud in (harness.obstacle_points[0], harness.clearing_points[0]):
        assert cloud.header.frame_id == CAMERA_FRAME and stamp_of(cloud) == (1234, 5678)
        assert cloud.point_step == 12 and [f.name for f in cloud.fields] == ["x", "y", "z"] and cloud.is_dense
    obstacles = cloud_xyz(harness.obstacle_points[0])
    base_x = obstacles[:, 2]  # level camera: optical z is base x, optical x is -base y
    assert base_x == pytest.approx(np.full(base_x.shape, WALL_X), abs=0.06)
    assert (np.abs(obstacles[:, 0]) <= WIDTH / 2 / FOCAL * WALL_X + 0.1).all()
    clearing = cloud_xyz(harness.clearing_points[0])
    assert clearing[:, 2].max() < WALL_X and clearing[:, 1] == pytest.approx(np.full(len(clearing), CAM_HEIGHT))

    stats = harness.stats[0]
    assert stats.backend_used == "host" and stats.node_name == "costmap_node" and stats.inference_ms > 0
    assert stamp_of(stats) == (1234, 5678)


def test_the_first_frame_is_built_with_the_camera_info_sent_with_it(context: Any) -> None:
    """camera_info is subscribed before depth and labels: when all three wait in the node's queues at once (one
    executor wait takes them together), the intrinsics are taken first and the first frame is not dropped."""
    depth, labels = scene()
    harness = Harness(context, pose_source="none")
    try:
        publishers = (harness.depth_pub, harness.labels_pub, harness.info_pub)
        harness.spin_until(lambda: all(p.get_subscription_count() >= 1 for p in publishers))
        assert harness.node.camera_info is None
        sent: list[float] = []

        def send_once_in_a_while() -> None:  # again only if a best-effort sample was lost on the way
            if not sent or time.monotonic() - sent[-1] > 3.0:
                harness.publish_frame(depth, labels, Time(sec=100 + len(sent), nanosec=0))
                time.sleep(0.3)  # all three are queued before the node spins again
                sent.append(time.monotonic())

        harness.spin_until(lambda: harness.node.stats.processed + harness.node.stats.dropped > 0,
                           send_once_in_a_while)
    finally:
        harness.close()
    assert harness.node.stats.dropped == 0, harness.node.stats.last_error
    assert harness.node.stats.processed == 1


def test_costs_and_thresholds_set_at_run_time_apply_to_the_next_grid(context: Any) -> None:
    """Through the node's SetParameters service, as `ros2 param set` does: the next grid and corridor use the new
    values; read-only, out-of-range and cross-parameter violations are refused with the reason."""
    depth, labels = scene()
    harness = Harness(context, pose_source="none", stop_distance=5.0)
    client = AsyncParameterClient(harness.probe, "costmap_node")

    def set_parameters(**values: Any) -> list[Any]:
        future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
        harness.spin_until(future.done)
        return list(future.result().results)

    try:
        harness.spin_until(client.services_are_ready)
        harness.spin_until(lambda: bool(harness.grids and harness.corridors), lambda: harness.publish_frame(depth, labels))
        assert cell(harness.grids[-1], WALL_X, 0.05) == 100 and harness.corridors[-1].stop_required

        results = set_parameters(cost_blocked=90, cost_free=5, stop_distance=2.0, corridor_length=6.0)
        assert all(r.successful for r in results), [r.reason for r in results]
        later = Time(sec=1300, nanosec=0)
        harness.spin_until(lambda: any(stamp_of(g) == (1300, 0) for g in harness.grids)
                           and any(stamp_of(c) == (1300, 0) for c in harness.corridors),
                           lambda: harness.publish_frame(depth, labels, later))
        grid = next(g for g in harness.grids if stamp_of(g) == (1300, 0))
        corridor = next(c for c in harness.corridors if stamp_of(c) == (1300, 0))
        assert cell(grid, WALL_X, 0.05) == 90 and cell(grid, 2.05, 0.05) == 5, "the next grid uses the new costs"
        assert corridor.stop_distance == 2.0 and corridor.corridor_length == 6.0
        assert not corridor.stop_required and corridor.nearest_blocked_m == pytest.approx(4.0)

        [refused] = set_parameters(width_m=20.0)  # grid geometry: read-only
        assert not refused.successful and "read-only" in refused.reason
        [refused] = set_parameters(cost_caution=150)  # outside the descriptor's range
        assert not refused.successful
        [refused] = set_parameters(corridor_length=40.0)  # a corridor beyond the 30 m grid
        assert not refused.successful and "reach outside the grid" in refused.reason
        [ok] = set_parameters(stale_timeout_s=5.0, fusion_decay_s=2.0)[:1]
        assert ok.successful and harness.node.watchdog.timeout_s == 5.0 and harness.node.rolling.decay_s == 2.0
        assert harness.node.get_parameter("cost_caution").value == 50 and harness.node.corridor.length == 6.0
    finally:
        harness.close()


def test_with_odometry_the_grid_is_in_odom_at_the_pose_of_the_image_stamp(context: Any) -> None:
    """The robot drives along odom +y at 3 m/s; the image is 0.3 s older than the newest odometry."""
    depth, labels = scene()
    harness = Harness(context)
    image_stamp = Time(sec=2000, nanosec=0)
    before, after = Time(sec=1999, nanosec=900_000_000), Time(sec=2000, nanosec=300_000_000)
    try:
        def publish_poses() -> None:
            harness.odom_pub.publish(odometry(before, 10.0, 4.7, math.pi / 2))
            harness.odom_pub.publish(odometry(after, 10.0, 5.9, math.pi / 2))

        # Both poses first: an image newer than the newest pose by up to pose_tolerance_s takes that pose.
        harness.spin_until(lambda: len(harness.node.poses) == 2, publish_poses)
        harness.spin_until(lambda: any(g.header.frame_id == "odom" for g in harness.grids),
                           lambda: harness.publish_frame(depth, labels, image_stamp))
        harness.spin_until(lambda: harness.latest_values().get("grid_frame") == "odom")
    finally:
        harness.close()
    grid = next(g for g in harness.grids if g.header.frame_id == "odom")
    assert stamp_of(grid) == (2000, 0)
    robot_y = 4.7 + (5.9 - 4.7) * 0.1 / 0.4  # the pose interpolated at the image stamp: 5.0
    assert cell(grid, 10.05, robot_y + WALL_X) == 100, "the wall 4.05 m ahead of the robot at the image stamp"
    assert cell(grid, 10.05, robot_y + 2.05) == 0
    assert cell(grid, 10.05, 5.9 + WALL_X) != 100, "not at the newest pose"
    assert grid.info.origin.position.x == pytest.approx(10.0 - 15.0, abs=0.11)
    assert harness.latest_values()["pose_source"] == "odom (pose from odometry)"


def test_fusion_remembers_an_obstacle_that_left_the_view_in_odom(context: Any) -> None:
    """The robot drives 1 m towards the wall; the second frame sees nothing (all sky): the wall is remembered
    where it was seen, in odom, for fusion_decay_s."""
    depth, labels = scene()
    sky = np.full(labels.shape, 6, np.uint8)  # sky: not projected
    first, second = Time(sec=3000, nanosec=0), Time(sec=3000, nanosec=500_000_000)
    harness = Harness(context, fusion_decay_s=5.0, pose_source="odometry")
    try:
        def publish_first() -> None:
            harness.odom_pub.publish(odometry(first, 1.0, 0.0, 0.0))
            harness.odom_pub.publish(odometry(second, 2.0, 0.0, 0.0))
            harness.publish_frame(depth, labels, first)

        harness.spin_until(lambda: any(stamp_of(g) == (3000, 0) for g in harness.grids), publish_first)
        harness.spin_until(lambda: any(stamp_of(g) == (3000, 500_000_000) for g in harness.grids),
                           lambda: harness.publish_frame(depth, sky, second))
    finally:
        harness.close()
    grid = next(g for g in harness.grids if stamp_of(g) == (3000, 500_000_000))
    assert grid.header.frame_id == "odom"
    assert cell(grid, 1.0 + WALL_X, 0.05) == 100, "remembered where it was seen"
    assert cell(grid, 1.0 + 2.05, 0.05) == 0
    assert grid.info.origin.position.x == pytest.approx(2.0 - 15.0, abs=0.11), "the window moved with the robot"


def tf2_ros_double(transforms: dict[tuple[str, str], np.ndarray]) -> types.ModuleType:
    """Test double for ``tf2_ros`` (not installable here; on the vehicle it comes from the ROS 2 apt install).

    Only what the costmap node's TF branch calls: ``Buffer().lookup_transform(target, source, time, timeout)``
    returning an object with ``.transform.translation`` / ``.transform.rotation``, and a ``TransformListener``
    that subscribes to nothing (``unregister`` only records that cleanup called it). Transforms are fixed 4x4
    matrices per (target, source).
    """
    from geometry_msgs.msg import Transform, TransformStamped, Vector3

    class Buffer:
        def lookup_transform(self, target: str, source: str, when: Any, timeout: Any) -> TransformStamped:
            matrix = transforms[(target, source)]
            qx, qy, qz, qw = quaternion_from_matrix(matrix[:3, :3])
            return TransformStamped(transform=Transform(
                translation=Vector3(x=float(matrix[0, 3]), y=float(matrix[1, 3]), z=float(matrix[2, 3])),
                rotation=Quaternion(x=qx, y=qy, z=qz, w=qw)))

    class TransformListener:
        def __init__(self, buffer: Buffer, node: Any) -> None:
            self.buffer, self.node, self.unregistered = buffer, node, False

        def unregister(self) -> None:
            self.unregistered = True

    module = types.ModuleType("tf2_ros")
    module.Buffer, module.TransformListener = Buffer, TransformListener
    return module


def test_with_tf_the_camera_and_base_poses_come_from_tf(context: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from perception_core.geometry import camera_optical_pose, pose_matrix

    depth, labels = scene()
    camera = camera_optical_pose(0.5, 0.0, CAM_HEIGHT, 0.0, 0.0, 0.0)  # TF says the camera is 0.5 m forward
    base = pose_matrix(-3.0, 2.0, 0.0, 0.0, 0.0, 0.0)
    monkeypatch.setitem(sys.modules, "tf2_ros", tf2_ros_double({("base_link", CAMERA_FRAME): camera,
                                                                 ("odom", "base_link"): base}))
    harness = Harness(context, mount_x=0.0)
    try:
        harness.spin_until(lambda: bool(harness.grids), lambda: harness.publish_frame(depth, labels))
        harness.spin_until(lambda: bool(harness.latest_values()))
        listener = harness.node.tf_listener
        harness.node.trigger_deactivate()
        harness.node.trigger_cleanup()
    finally:
        harness.close()
    grid = harness.grids[0]
    assert grid.header.frame_id == "odom"
    assert cell(grid, -3.0 + 0.5 + WALL_X, 2.05) == 100
    assert harness.latest_values()["camera_pose_source"] == "TF"
    assert listener.unregistered and harness.node.tf_buffer is None, "cleanup drops the TF listener"


def test_without_a_pose_source_diagnostics_say_the_grid_is_in_the_base_frame(context: Any) -> None:
    depth, labels = scene()
    harness = Harness(context)  # pose_source auto: no tf2_ros here, and nobody publishes odometry
    try:
        harness.spin_until(lambda: bool(harness.grids) and bool(harness.latest_values().get("frames_processed")) and
                           harness.latest_values()["frames_processed"] != "0", lambda: harness.publish_frame(depth, labels))
    finally:
        harness.close()
    values = harness.latest_values()
    assert harness.grids[-1].header.frame_id == "base_link" and values["grid_frame"] == "base_link"
    assert values["pose_source"].startswith("base_link (no pose source yet")
    assert values["camera_pose_source"] == "mount parameters"


def test_stopped_inputs_make_the_grid_unknown_and_diagnostics_error(context: Any) -> None:
    depth, labels = scene()
    harness = Harness(context, stale_timeout_s=0.5, pose_source="none")
    try:
        harness.spin_until(lambda: bool(harness.grids), lambda: harness.publish_frame(depth, labels))
        # The stack stops: no more frames. The node must stop asserting the free space it saw.
        harness.spin_until(lambda: any(all(v == -1 for v in g.data) for g in harness.grids[1:])
                           and harness.latest_status() is not None
                           and harness.latest_status().level == DiagnosticStatus.ERROR)
    finally:
        harness.close()
    unknown = next(g for g in harness.grids[1:] if all(v == -1 for v in g.data))
    assert stamp_of(unknown) != (1234, 5678), "a fresh stamp, so Nav2 takes it as the newest grid"
    assert nav2_accepts(unknown)
    assert "labels silent" in harness.latest_status().message
    assert harness.corridors[-1].status == CorridorStatus.STATUS_UNKNOWN


@pytest.mark.reliability(case="costmap node: camera_info with all-zero K, non-finite fx, or K of another "
                              "resolution", outcome="frame dropped, counted and named in /diagnostics; no grid")
def test_meaningless_camera_info_is_a_counted_named_drop(context: Any) -> None:
    depth, labels = scene()
    harness = Harness(context, pose_source="none")
    cases = [([0.0] * 9, "K is all zero"),
             ([float("nan"), 0.0, CX, 0.0, FOCAL, CY, 0.0, 0.0, 1.0], "K has non-finite values"),
             ([FOCAL, 0.0, 640.0, 0.0, FOCAL, 540.0, 0.0, 0.0, 1.0], "principal point (640, 540) is not near")]
    try:
        for k, message in cases:
            harness.ready(camera_info(k)) if not any(math.isnan(v) for v in k) else harness.spin_until(
                lambda: harness.node.camera_info is not None and math.isnan(harness.node.camera_info.k[0]),
                lambda: harness.info_pub.publish(camera_info(k)))  # noqa: B023
            dropped = harness.node.stats.dropped
            harness.spin_until(lambda: harness.node.stats.dropped > dropped,  # noqa: B023
                               lambda: harness.publish_frame(depth, labels, info=camera_info(k)))  # noqa: B023
            assert message in harness.node.stats.last_error
            assert "/camera/camera_info" in harness.node.stats.last_error
        harness.spin_until(lambda: int(harness.latest_values().get("frames_dropped", 0)) >= 3)
    finally:
        harness.close()
    assert harness.grids == [], "no plausible wrong grid"
    assert "camera_info" in harness.latest_values()["drops_by_reason"]


@pytest.mark.reliability(case="costmap node: label ids outside the ontology (an obstacle labelled 200)",
                         outcome="projected as BLOCKED (unknown_class_category), counted in /diagnostics, the "
                                 "corridor stops")
def test_label_ids_outside_the_ontology_are_blocked_counted_and_stop_the_corridor(context: Any) -> None:
    depth, labels = scene()
    labels = np.where(labels == WALL, 200, labels).astype(np.uint8)
    harness = Harness(context, pose_source="none", stop_distance=5.0)
    try:
        harness.spin_until(lambda: bool(harness.grids and harness.corridors)
                           and int(harness.latest_values().get("unknown_label_pixels", 0)) > 0,
                           lambda: harness.publish_frame(depth, labels))
    finally:
        harness.close()
    assert cell(harness.grids[0], WALL_X, 0.05) == 100
    assert harness.corridors[0].nearest_blocked_m == pytest.approx(4.0)
    assert harness.corridors[0].status == CorridorStatus.STATUS_STOP
    assert harness.latest_status().level == DiagnosticStatus.WARN
    assert "label ids outside the ontology" in harness.latest_status().message


@pytest.mark.parametrize("bad_depth, why", [
    pytest.param(np.nan, "every depth value is NaN or inf", id="all-nan", marks=pytest.mark.reliability(
        case="costmap node: depth that is NaN everywhere (no observed cell)",
        outcome="corridor status UNKNOWN (not clear), /diagnostics ERROR naming why")),
    pytest.param(4000.0, "millimetres written as metres", id="millimetres", marks=pytest.mark.reliability(
        case="costmap node: 32FC1 depth in millimetres (every pixel beyond max_range)",
        outcome="corridor status UNKNOWN (not clear), /diagnostics ERROR suggesting millimetres")),
])
def test_depth_with_nothing_usable_makes_the_corridor_unknown(context: Any, bad_depth: float, why: str) -> None:
    _, labels = scene()
    depth = np.full((HEIGHT, WIDTH), bad_depth, np.float32)
    harness = Harness(context, pose_source="none")
    try:
        harness.spin_until(lambda: bool(harness.corridors) and harness.latest_status() is not None
                           and harness.latest_status().level == DiagnosticStatus.ERROR,
                           lambda: harness.publish_frame(depth, labels))
    finally:
        harness.close()
    corridor = harness.corridors[-1]
    assert corridor.status == CorridorStatus.STATUS_UNKNOWN and not corridor.stop_required
    assert corridor.unknown_fraction == pytest.approx(1.0)
    assert why in harness.latest_status().message
    assert int(harness.latest_values()["frames_without_observation"]) >= 1


@pytest.mark.reliability(case="costmap node: 16UC1 depth at the top of its range (65535) and with a step that "
                              "disagrees with the encoding", outcome="65535 is no measurement (no cell from it); "
                                                                     "a short step is a counted, named drop")
def test_16uc1_saturation_is_no_measurement_and_a_bad_step_is_a_named_drop(context: Any) -> None:
    depth, labels = scene()
    millimetres = np.where(depth > 3.0, 65535, np.round(depth * 1000)).astype(np.uint16)  # far half saturated
    harness = Harness(context, pose_source="none")
    bad_stamp = Time(sec=77, nanosec=0)
    try:
        harness.ready()
        harness.spin_until(lambda: bool(harness.grids), lambda: harness.publish_frame(millimetres, labels,
                                                                                      depth_encoding="16UC1"))
        short = image(millimetres, "16UC1", bad_stamp)
        short.step = WIDTH  # one byte per pixel: disagrees with 16UC1
        harness.spin_until(lambda: "step" in harness.node.stats.last_error, lambda: (
            harness.info_pub.publish(camera_info()), harness.depth_pub.publish(short),
            harness.labels_pub.publish(image(labels, "mono8", bad_stamp))))
    finally:
        harness.close()
    grid = harness.grids[0]
    assert cell(grid, 2.05, 0.05) == 0
    assert cell(grid, WALL_X, 0.05) == -1, "the saturated wall pixels are no measurement: unknown, not 65.5 m"
    assert "/perception/depth/image" in harness.node.stats.last_error
    assert f"'step' is {WIDTH} but {WIDTH} px of 16UC1 need {2 * WIDTH} bytes" in harness.node.stats.last_error


@pytest.mark.reliability(case="costmap node: a 1x1 depth + label pair", outcome="processed without error (an "
                                                                                 "empty or one-cell grid)")
def test_a_one_pixel_frame_does_not_take_the_node_down(context: Any) -> None:
    harness = Harness(context, pose_source="none")
    one = np.full((1, 1), 3.0, np.float32)
    info = camera_info([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], width=1, height=1)
    try:
        harness.ready(info)
        harness.spin_until(lambda: bool(harness.grids),
                           lambda: harness.publish_frame(one, np.zeros((1, 1), np.uint8), info=info))
    finally:
        harness.close()
    assert harness.node.stats.processed >= 1 and harness.node.stats.dropped == 0


@pytest.mark.reliability(case="costmap node: an unexpected error while building one frame",
                         outcome="the frame is dropped, counted and named; the node keeps serving frames")
def test_an_unexpected_error_in_one_frame_is_counted_and_the_node_keeps_running(
        context: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import seg_perception.costmap_node as module

    depth, labels = scene()
    harness = Harness(context, pose_source="none")
    real_build = module.build_costmap
    calls = {"n": 0}

    def failing_once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("array shapes do not broadcast")
        return real_build(*args, **kwargs)

    monkeypatch.setattr(module, "build_costmap", failing_once)
    try:
        harness.ready()
        harness.spin_until(lambda: bool(harness.grids), lambda: harness.publish_frame(depth, labels))
    finally:
        harness.close()
    assert harness.node.stats.dropped == 1
    assert harness.node.stats.last_error == "internal error on this frame (ValueError): array shapes do not broadcast"
    assert harness.node.drop_reasons == {"internal error on this frame (ValueError)": 1}


def test_bad_encodings_and_short_data_are_counted_and_the_node_keeps_running(context: Any) -> None:
    depth, labels = scene()
    harness = Harness(context, pose_source="none")
    try:
        harness.spin_until(lambda: harness.node.stats.dropped >= 1, lambda: (
            harness.depth_pub.publish(image(depth, "32FC1")), harness.labels_pub.publish(image(labels, "mono8"))))
        assert "no camera_info received yet on /camera/camera_info" in harness.node.stats.last_error
        harness.ready()
        bad_stamp = Time(sec=1, nanosec=1)
        dropped = harness.node.stats.dropped
        harness.spin_until(lambda: harness.node.stats.dropped > dropped, lambda: (
            harness.depth_pub.publish(image(depth, "32FC1", bad_stamp)),
            harness.labels_pub.publish(image(np.dstack([labels] * 3), "rgb8", bad_stamp))))
        assert "/perception/segmentation/labels: label encoding 'rgb8' is not mono8" in harness.node.stats.last_error
        harness.spin_until(lambda: bool(harness.grids) and int(harness.latest_values().get("frames_processed", 0)),
                           lambda: harness.publish_frame(depth, labels))
    finally:
        harness.close()
    assert cell(harness.grids[-1], WALL_X, 0.05) == 100
    assert harness.stats[-1].frames_dropped >= 2
    values = harness.latest_values()
    assert int(values["frames_dropped"]) >= 2 and values["used_flat_ground"] == "false"


def test_depth_that_disagrees_with_the_mount_is_flagged(context: Any) -> None:
    depth, labels = scene()
    harness = Harness(context, pose_source="none")
    try:
        harness.spin_until(lambda: harness.latest_status() is not None and "ground plane" in
                           harness.latest_status().message, lambda: harness.publish_frame(depth * 1.5, labels))
    finally:
        harness.close()
    assert harness.latest_status().level == DiagnosticStatus.WARN
    assert "lies 0.50 m below the ground plane" in harness.latest_status().message
    assert float(harness.latest_values()["ground_offset_m"]) == pytest.approx(-0.5, abs=0.02)


def test_without_depth_the_flat_ground_fallback_is_flagged(context: Any) -> None:
    _, labels = scene()
    harness = Harness(context, use_depth=False, pose_source="none")
    try:
        harness.spin_until(lambda: bool(harness.grids) and harness.latest_values().get("used_flat_ground") == "true",
                           lambda: harness.publish_frame(None, labels))
    finally:
        harness.close()
    grid = harness.grids[0]
    assert stamp_of(grid) == (1234, 5678)
    assert cell(grid, 2.05, 0.05) == 0, "ground rays meet z = 0 where the ground is"
    assert cell(grid, 6.15, 0.05) == 100, "flat-ground smears the wall behind itself"
    assert harness.node.flat_ground_frames >= 1
    assert harness.latest_status().level == DiagnosticStatus.WARN


def test_a_silent_depth_stream_gives_flat_ground_through_the_timer(context: Any) -> None:
    """The wiring of DepthLabelSync.poll to the node's timer (the timing itself is unit-tested)."""
    _, labels = scene()
    harness = Harness(context, depth_timeout_s=0.2, pose_source="none")
    try:
        harness.spin_until(lambda: harness.node.flat_ground_frames >= 1 and bool(harness.grids),
                           lambda: harness.publish_frame(None, labels))
    finally:
        harness.close()
    assert cell(harness.grids[0], 6.15, 0.05) == 100


def _start_up_case(argument: str, named: str, what: str) -> Any:
    return pytest.param(argument, named, id=argument, marks=pytest.mark.reliability(
        case=f"costmap node start-up with {argument} ({what})",
        outcome=f"exit code 1 with one line naming {named if ' ' not in named else 'the grid size'}; no traceback"))


@pytest.mark.parametrize("argument, named", [
    _start_up_case("corridor_length:=0.0", "corridor_length", "an empty corridor"),
    _start_up_case("width_m:=100000.0", "width_m", "beyond the declared range"),
    _start_up_case("width_m:=2500.0", "exceeds 4000000 cells", "a grid too large for memory"),
    _start_up_case("stop_distance:=-1.0", "stop_distance", "negative"),
    _start_up_case("mount_z:=-0.5", "mount_z", "a camera below the ground"),
    _start_up_case("max_range:=5", "max_range", "an integer for a float"),
    _start_up_case("flat_obstacle_classes:=[lava]", "flat_obstacle_classes", "a class the ontology lacks"),
])
def test_invalid_parameters_exit_with_one_line_naming_the_parameter(argument: str, named: str) -> None:
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    done = subprocess.run([sys.executable, "-m", "seg_perception.costmap_node", "--ros-args", "-p", argument],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("CostmapNode: error: "), done.stderr
    assert named in errors[0]
    assert "Traceback" not in done.stderr


@pytest.mark.reliability(case="costmap node start-up with ontology_path pointing at a PNG image",
                         outcome="exit code 1 with one line naming the file as not a text (YAML) file; no traceback")
def test_an_ontology_path_to_an_image_exits_with_one_line(tmp_path: Any) -> None:
    image = tmp_path / "labels.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    done = subprocess.run([sys.executable, "-m", "seg_perception.costmap_node", "--ros-args", "-p",
                           f"ontology_path:={image}"], capture_output=True, text=True, timeout=120, env=env)
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(errors) == 1, done.stderr
    assert errors[0].startswith("CostmapNode: error: ") and f"{image} is not a text (YAML) file" in errors[0]
