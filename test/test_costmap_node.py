"""System test: the costmap node over real DDS (loopback), fed depth + labels + camera_info."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.system

import rclpy  # noqa: E402  (a missing rclpy is a broken environment: fail, never skip)
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from nav_msgs.msg import OccupancyGrid  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from perception_core.image_codec import array_to_image_fields  # noqa: E402
from perception_msgs.msg import CorridorStatus, InferenceStats  # noqa: E402
from seg_perception.costmap_node import CostmapNode  # noqa: E402

WIDTH, HEIGHT, FOCAL = 64, 48, 40.0
CX, CY = (WIDTH - 1) / 2, (HEIGHT - 1) / 2
CAM_HEIGHT, WALL_X = 1.0, 4.05  # level camera 1 m up; a wall face 4.05 m ahead (middle of a 0.1 m cell)
GROUND, WALL = 0, 4  # smooth_ground -> FREE, static_obstacle -> BLOCKED (the packaged ontology)
STAMP = Time(sec=1234, nanosec=5678)


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
    return Image(header=Header(stamp=stamp, frame_id="camera_optical_frame"), **array_to_image_fields(array, encoding))


def camera_info() -> CameraInfo:
    return CameraInfo(header=Header(stamp=STAMP, frame_id="camera_optical_frame"), width=WIDTH, height=HEIGHT,
                      k=[FOCAL, 0.0, CX, 0.0, FOCAL, CY, 0.0, 0.0, 1.0])


class Harness:
    """A costmap node and a test node in one executor; the test node publishes inputs, records outputs."""

    def __init__(self, context: Any, **parameters: Any) -> None:
        overrides = [Parameter(k, value=v) for k, v in {"mount_z": CAM_HEIGHT, "min_points_per_cell": 1,
                                                           **parameters}.items()]
        self.node = CostmapNode(context=context, parameter_overrides=overrides)
        self.probe = rclpy.create_node("costmap_probe", context=context)
        qos = qos_profile_sensor_data
        self.depth_pub = self.probe.create_publisher(Image, "/perception/depth/image", qos)
        self.labels_pub = self.probe.create_publisher(Image, "/perception/segmentation/labels", qos)
        self.info_pub = self.probe.create_publisher(CameraInfo, "/camera/camera_info", qos)
        self.grids: list[OccupancyGrid] = []
        self.blocked_layers: list[OccupancyGrid] = []
        self.corridors: list[CorridorStatus] = []
        self.stats: list[InferenceStats] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.probe.create_subscription(OccupancyGrid, "/perception/costmap", self.grids.append, 10)
        self.probe.create_subscription(OccupancyGrid, "/perception/costmap/blocked", self.blocked_layers.append, 10)
        self.probe.create_subscription(CorridorStatus, "/perception/corridor", self.corridors.append, 10)
        self.probe.create_subscription(InferenceStats, "/perception/costmap/stats", self.stats.append, 10)
        self.probe.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)

    def spin_until(self, done: Callable[[], bool], publish: Callable[[], None], timeout: float = 20.0) -> None:
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

    def spin_for(self, seconds: float) -> None:
        """Serve callbacks (the node's timers included) for ``seconds`` without publishing."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)

    def wait_for_discovery(self) -> None:
        """Until every input publisher sees the costmap node's subscription (a single publish must arrive)."""
        publishers = (self.depth_pub, self.labels_pub, self.info_pub)
        self.spin_until(lambda: all(p.get_subscription_count() >= 1 for p in publishers), lambda: None)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.probe.destroy_node()


@pytest.fixture
def context() -> Iterator[Any]:
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


def latest_values(harness: Harness) -> dict[str, str]:
    """Key/values of the newest /diagnostics status (empty before the first)."""
    if not harness.diagnostics:
        return {}
    return {kv.key: kv.value for kv in harness.diagnostics[-1].status[0].values}


def cell(grid: OccupancyGrid, x: float, y: float) -> int:
    col = math.floor((x - grid.info.origin.position.x) / grid.info.resolution)
    row = math.floor((y - grid.info.origin.position.y) / grid.info.resolution)
    return grid.data[row * grid.info.width + col]


def test_depth_and_labels_with_one_stamp_give_a_grid_with_that_stamp(context: Any) -> None:
    depth, labels = scene()
    harness = Harness(context, stop_distance=5.0)
    try:
        def publish() -> None:
            harness.info_pub.publish(camera_info())
            harness.depth_pub.publish(image(depth, "32FC1"))
            harness.labels_pub.publish(image(labels, "mono8"))

        harness.spin_until(lambda: bool(harness.grids and harness.corridors and harness.stats
                                        and harness.blocked_layers), publish)
    finally:
        harness.close()

    grid = harness.grids[0]
    assert (grid.header.stamp.sec, grid.header.stamp.nanosec) == (1234, 5678)
    assert grid.header.frame_id == "base_link"
    assert (grid.info.width, grid.info.height) == (200, 200)
    assert grid.info.resolution == pytest.approx(0.1)
    assert (grid.info.origin.position.x, grid.info.origin.position.y) == (pytest.approx(-5.0), pytest.approx(-10.0))
    assert cell(grid, WALL_X, 0.0) == 100, "the wall is BLOCKED where it stands"
    assert cell(grid, 2.05, 0.0) == 0, "visible ground is FREE"
    assert cell(grid, 6.05, 0.0) == -1, "behind the wall is unknown, not smeared"
    assert cell(grid, -2.0, 0.0) == -1
    assert cell(harness.blocked_layers[0], WALL_X, 0.0) == 100 and cell(harness.blocked_layers[0], 2.05, 0.0) == 0

    corridor = harness.corridors[0]
    assert (corridor.header.stamp.sec, corridor.header.stamp.nanosec) == (1234, 5678)
    assert corridor.nearest_blocked_m == pytest.approx(4.0)
    assert math.isinf(corridor.nearest_hazard_m)
    assert corridor.stop_required and corridor.stop_distance == pytest.approx(5.0)

    stats = harness.stats[0]
    assert stats.backend_used == "host" and stats.node_name == "costmap_node"
    assert stats.frames_processed >= 1 and stats.inference_ms > 0
    assert (stats.header.stamp.sec, stats.header.stamp.nanosec) == (1234, 5678)


def stamp_of(msg: Any) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def test_labels_wait_for_depth_that_comes_after_they_do_even_when_the_previous_depth_is_older_than_the_timeout(
        context: Any) -> None:
    """The slow-depth case: labels of frame t beat their depth, and the previous depth is > depth_timeout_s old.

    They must wait for their own depth (a depth-based grid) rather than go flat-ground on arrival.
    """
    depth, labels = scene()
    timeout = 0.5
    previous, late = Time(sec=1000, nanosec=0), Time(sec=1001, nanosec=0)
    harness = Harness(context, depth_timeout_s=timeout)
    try:
        harness.wait_for_discovery()
        harness.spin_until(lambda: harness.node.camera_info is not None and harness.node.last_depth_time is not None,
                           lambda: (harness.info_pub.publish(camera_info()),
                                    harness.depth_pub.publish(image(depth, "32FC1", previous))))
        harness.spin_for(timeout + 0.3)
        assert time.monotonic() - harness.node.last_depth_time > timeout, "precondition: the last depth is stale"
        harness.labels_pub.publish(image(labels, "mono8", late))
        harness.spin_for(timeout / 2)  # the depth of frame t is still being inferred
        harness.depth_pub.publish(image(depth, "32FC1", late))
        harness.spin_until(lambda: any(stamp_of(g) == (1001, 0) for g in harness.grids), lambda: None, timeout=5.0)
        harness.spin_for(timeout + 0.2)  # a second grid for t (flat-ground then depth) would arrive by now
    finally:
        harness.close()
    late_grids = [g for g in harness.grids if stamp_of(g) == (1001, 0)]
    assert len(late_grids) == 1
    grid = late_grids[0]
    assert cell(grid, WALL_X, 0.0) == 100, "the wall is BLOCKED where it stands (depth-based)"
    assert cell(grid, 2.05, 0.0) == 0
    for behind in (5.35, 6.15, 7.25):  # where flat-ground ray casting smears the wall
        assert cell(grid, behind, 0.0) == -1, f"behind the wall at x = {behind} m must be unknown, not smeared"
    assert harness.node.flat_ground_frames == 0 and not harness.node.last_used_flat_ground


def test_silent_depth_stream_gives_flagged_flat_ground_after_the_timeout(context: Any) -> None:
    _, labels = scene()
    timeout = 1.0
    harness = Harness(context, depth_timeout_s=timeout)  # use_depth stays on; nothing publishes depth
    try:
        harness.wait_for_discovery()

        def publish(stamp: Time) -> Callable[[], None]:
            return lambda: (harness.info_pub.publish(camera_info()), harness.labels_pub.publish(image(labels, "mono8", stamp)))

        harness.spin_until(lambda: bool(harness.node.pairer.pending("labels")), publish(STAMP))
        waiting_since = time.monotonic()
        assert not harness.grids, "labels must wait for depth first"
        harness.spin_until(lambda: bool(harness.grids), publish(STAMP))
        waited = time.monotonic() - waiting_since
        assert waited >= timeout - 0.1, f"flat-ground after {waited:.2f} s, before depth_timeout_s={timeout}"
        # The stream is now known silent: the next frame's labels go flat-ground at the next timer tick.
        later = Time(sec=1235, nanosec=0)
        published = time.monotonic()
        harness.labels_pub.publish(image(labels, "mono8", later))
        harness.spin_until(lambda: any(stamp_of(g) == (1235, 0) for g in harness.grids), lambda: None)
        later_latency = time.monotonic() - published
        harness.spin_until(lambda: int(latest_values(harness).get("flat_ground_frames", 0)) >= 2, lambda: None)
    finally:
        harness.close()
    grid = harness.grids[0]
    assert stamp_of(grid) == (1234, 5678)
    assert cell(grid, 2.05, 0.0) == 0, "ground rays meet z = 0 where the ground is"
    assert cell(grid, 6.15, 0.0) == 100, "flat-ground smears the wall behind itself"
    assert later_latency < timeout, f"a known-silent depth stream still delayed the labels {later_latency:.2f} s"
    assert latest_values(harness)["used_flat_ground"] == "true"
    assert harness.diagnostics[-1].status[0].level == DiagnosticStatus.WARN


def test_labels_whose_depth_never_comes_while_depth_flows_are_dropped_not_flat_ground(context: Any) -> None:
    depth, labels = scene()
    timeout = 0.5
    harness = Harness(context, depth_timeout_s=timeout)
    try:
        harness.wait_for_discovery()
        frame = iter(range(1, 1000))

        def publish() -> None:  # depth keeps flowing, but for other frames than the labels
            n = next(frame)
            harness.info_pub.publish(camera_info())
            harness.depth_pub.publish(image(depth, "32FC1", Time(sec=2000, nanosec=n)))
            harness.labels_pub.publish(image(labels, "mono8", Time(sec=3000, nanosec=n)))

        harness.spin_until(lambda: harness.node.pairer.dropped >= 4 and bool(harness.node.pairer.pending("labels")),
                           publish)
        deadline = time.monotonic() + 3 * timeout
        harness.spin_until(lambda: time.monotonic() > deadline, publish)
    finally:
        harness.close()
    assert harness.grids == [] and harness.node.flat_ground_frames == 0
    assert harness.node.pairer.dropped >= 8


def test_bad_inputs_are_counted_and_the_node_keeps_running(context: Any) -> None:
    depth, labels = scene()
    harness = Harness(context)
    try:
        # Before any camera_info: a valid pair is dropped ("no camera_info").
        harness.spin_until(lambda: harness.node.stats.dropped >= 1, lambda: (
            harness.depth_pub.publish(image(depth, "32FC1")), harness.labels_pub.publish(image(labels, "mono8"))))
        assert "no camera_info received yet on /camera/camera_info" in harness.node.stats.last_error
        harness.spin_until(lambda: harness.node.camera_info is not None,
                           lambda: harness.info_pub.publish(camera_info()))
        # Wrong label encoding.
        bad_stamp = Time(sec=1, nanosec=1)
        dropped = harness.node.stats.dropped
        harness.spin_until(lambda: harness.node.stats.dropped > dropped, lambda: (
            harness.depth_pub.publish(image(depth, "32FC1", bad_stamp)),
            harness.labels_pub.publish(image(np.dstack([labels] * 3), "rgb8", bad_stamp))))
        assert "/perception/segmentation/labels: label encoding 'rgb8' is not mono8" in harness.node.stats.last_error
        # Depth whose data is shorter than height x step.
        dropped = harness.node.stats.dropped
        short = image(depth, "32FC1", bad_stamp)
        short.data = bytes(short.data)[: len(short.data) // 2]
        harness.spin_until(lambda: harness.node.stats.dropped > dropped, lambda: (
            harness.depth_pub.publish(short), harness.labels_pub.publish(image(labels, "mono8", bad_stamp))))
        assert "/perception/depth/image: image field 'data' has 6144 bytes" in harness.node.stats.last_error
        # The node still serves good frames, and says it dropped some.
        harness.spin_until(lambda: bool(harness.grids and int(latest_values(harness).get("frames_processed", 0))),
                           lambda: (harness.depth_pub.publish(image(depth, "32FC1")),
                                    harness.labels_pub.publish(image(labels, "mono8"))))
    finally:
        harness.close()
    assert cell(harness.grids[-1], WALL_X, 0.0) == 100
    assert harness.stats[-1].frames_dropped >= 3
    values = latest_values(harness)
    assert int(values["frames_dropped"]) >= 3 and values["used_flat_ground"] == "false"
    levels = {array.status[0].level for array in harness.diagnostics}
    assert levels & {DiagnosticStatus.WARN, DiagnosticStatus.ERROR}, "drops must show in /diagnostics"


def test_flat_ground_fallback_without_depth_is_flagged(context: Any) -> None:
    _, labels = scene()
    harness = Harness(context, use_depth=False)
    try:
        harness.spin_until(lambda: bool(harness.grids and int(latest_values(harness).get("frames_processed", 0))),
                           lambda: (harness.info_pub.publish(camera_info()),
                                    harness.labels_pub.publish(image(labels, "mono8"))))
    finally:
        harness.close()
    grid = harness.grids[0]
    assert (grid.header.stamp.sec, grid.header.stamp.nanosec) == (1234, 5678)
    assert cell(grid, 2.05, 0.0) == 0, "ground rays meet z = 0 where the ground is"
    assert harness.node.flat_ground_frames >= 1
    assert latest_values(harness)["used_flat_ground"] == "true"
    assert harness.diagnostics[-1].status[0].level == DiagnosticStatus.WARN
