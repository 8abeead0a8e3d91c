"""The fused node over DDS: one subscription, both models on every frame it takes, one stamp for both outputs.

A burst of frames faster than the node runs makes it skip frames (latest
frame wins); the property under test is that every frame it did process
produced depth and labels with that frame's stamp, so the costmap node paired
every one of them.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from inference_node_harness import Probe, as_array, image_msg, ros_context
from nav_msgs.msg import OccupancyGrid
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, Image

from perception_core.testing.tiny_models import make_tiny_depth_model, make_tiny_seg_model
from perception_msgs.msg import InferenceStats

pytestmark = pytest.mark.system


def test_every_processed_frame_gives_depth_labels_and_a_costmap_with_its_stamp(tmp_path: Path) -> None:
    from fused_perception.fused_node import FusedNode
    from seg_perception.costmap_node import CostmapNode

    depth_model = make_tiny_depth_model(tmp_path / "depth.onnx", hw=(24, 32))
    seg_model = make_tiny_seg_model(tmp_path / "seg.onnx", hw=(24, 32), output="class_id")
    grey = np.full((48, 64), 60, np.uint8)  # class round(60/255*6) = 1 (rough ground), depth ~ 3.5 m
    grey[:12] = 0  # the top band: class 0, depth level 0
    with ros_context() as context:
        node = FusedNode(context=context, parameter_overrides=[
            Parameter("depth.model_path", value=str(depth_model)),
            Parameter("segmentation.model_path", value=str(seg_model)), Parameter("backend", value="cpu")])
        # The costmap projects with the intrinsics the fused node published with the depth (launch does this remap).
        # All nodes share this test's one executor, so the costmap gets a deep input queue: its own latest-wins
        # queue would otherwise drop pairs while the executor serves the fused node, which is not under test.
        costmap = CostmapNode(context=context, input_qos=QoSProfile(depth=50),
                              cli_args=["--ros-args", "-r", "/camera/camera_info:=/perception/depth/camera_info"],
                              parameter_overrides=[Parameter("use_tf", value=False),
                                                   Parameter("min_points_per_cell", value=1),
                                                   Parameter("depth_timeout_s", value=30.0)])
        probe = Probe(context, node)
        probe.executor.add_node(costmap)
        threads: set[str] = set()
        for head in (node.depth, node.segmentation):
            infer = head.infer

            def record(frame: Any, infer: Any = infer) -> Any:  # the real method, seen from its thread
                threads.add(threading.current_thread().name)
                return infer(frame)

            head.infer = record
        depth = probe.listen(Image, "/perception/depth/image")
        labels = probe.listen(Image, "/perception/segmentation/labels")
        infos = probe.listen(CameraInfo, "/perception/depth/camera_info")
        grids = probe.listen(OccupancyGrid, "/perception/costmap")
        depth_stats = probe.listen(InferenceStats, "/perception/depth/stats")
        seg_stats = probe.listen(InferenceStats, "/perception/segmentation/stats")
        send = probe.camera()
        frames = [image_msg(np.dstack([grey] * 3), "rgb8", stamp_sec=100 + i) for i in range(20)]
        # Warm-up until the first costmap: discovery done, and the costmap node holds a camera_info.
        assert probe.spin_until(lambda: grids, every=lambda: send(frames[0]), timeout=30.0)
        probe.spin_until(lambda: False, timeout=0.5)
        for topic in list(probe.received):
            probe.received[topic].clear()
        for frame in frames[1:]:  # a burst: faster than the node runs, so it skips some frames
            send(frame)
            probe.executor.spin_once(timeout_sec=0.005)
        assert probe.spin_until(lambda: any(d.header.stamp.sec == 119 for d in depth), timeout=30.0)
        probe.spin_until(lambda: False, timeout=1.5)  # let the last outputs arrive
        probe.close()
        costmap.destroy_node()
        node.destroy_node()

    depth_stamps = [d.header.stamp.sec for d in depth]
    label_stamps = [m.header.stamp.sec for m in labels]
    assert depth_stamps == label_stamps, "depth and labels came from different frames"
    assert sorted(depth_stamps) == sorted({m.header.stamp.sec for m in infos})
    assert 100 not in depth_stamps  # the warm-up frame's outputs were cleared
    processed = {s.header.stamp.sec for s in depth_stats if s.total_ms > 0}
    assert processed == set(depth_stamps) == {s.header.stamp.sec for s in seg_stats if s.total_ms > 0}
    assert {g.header.stamp.sec for g in grids} == set(depth_stamps), "a processed frame got no costmap"
    assert len(set(depth_stamps)) >= 2
    assert len(threads) == 2 and all(name.startswith("fused_node") for name in threads)  # concurrent workers
    np.testing.assert_array_equal(np.unique(as_array(labels[-1], np.uint8)), [0, 1])
