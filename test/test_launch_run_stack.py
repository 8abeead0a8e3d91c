"""perception-stack (perception_tools.stack): the no-`ros2 launch`
runner applies the same YAML to the real nodes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RUN_STACK = [sys.executable, "-m", "perception_tools.stack"]


def test_override_yaml_carries_model_flags_for_the_chosen_nodes(tmp_path: Path) -> None:
    from perception_core.resources import package_share
    from perception_tools import stack as run_stack

    model = tmp_path / "d.onnx"
    args = run_stack.parse_args(["--nodes", "depth,costmap", "--depth-model", str(model), "--seg-model", "s.onnx",
                                 "--backend", "cpu", "--remap", "camera/image_raw:=/front/image_raw",
                                 "--namespace", "front"])
    assert run_stack.override_yaml(args) == {"/**/depth_node": {"ros__parameters": {"model_path": str(model),
                                                                                    "backend": "cpu"}}}
    ros_args = run_stack.ros_arguments(args, tmp_path / "o.yaml")
    installed = package_share("offroad_perception_bringup") / "config" / "perception.yaml"
    assert ros_args == ["--ros-args", "--params-file", str(installed.resolve()),
                        "--params-file", str(tmp_path / "o.yaml"), "-r", "__ns:=/front",
                        "-r", "costmap_node:camera/camera_info:=perception/depth/camera_info",
                        "-r", "camera/image_raw:=/front/image_raw"]
    fused = run_stack.parse_args(["--nodes", "fused,costmap", "--depth-model", "/m/d.onnx", "--seg-model", "/m/s.onnx"])
    assert run_stack.override_yaml(fused) == {"/**/fused_node": {"ros__parameters": {
        "depth": {"model_path": "/m/d.onnx"}, "segmentation": {"model_path": "/m/s.onnx"}}}}
    with pytest.raises(SystemExit):
        run_stack.parse_args(["--nodes", "lidar"])
    with pytest.raises(SystemExit):
        run_stack.parse_args(["--nodes", "fused,depth"])


def test_bad_node_choice_exits_with_one_line() -> None:
    done = subprocess.run([*RUN_STACK, "--nodes", "lidar"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "unknown node(s) ['lidar']" in done.stderr


@pytest.mark.system
def test_run_stack_starts_the_costmap_node_with_the_yaml(tmp_path: Path) -> None:
    import rclpy
    from nav_msgs.msg import OccupancyGrid
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    from perception_core.image_codec import array_to_image_fields

    params = yaml.safe_load((ROOT / "config" / "perception.yaml").read_text())
    section = params["/**/costmap_node"]["ros__parameters"]
    section.update(resolution=0.25, width_m=10.0, height_m=8.0, origin_x=0.0, origin_y=-4.0, use_depth=False,
                   mount_z=1.0, min_points_per_cell=1)
    params_file = tmp_path / "stack.yaml"
    params_file.write_text(yaml.safe_dump(params))
    stack = subprocess.Popen([*RUN_STACK, "--nodes", "costmap", "--params", str(params_file),
                              "--remap", "perception/segmentation/labels:=/test/labels"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    labels = np.zeros((24, 32), dtype=np.uint8)  # all smooth_ground (FREE); the lower half hits the ground
    header = Header(frame_id="camera_optical_frame")
    header.stamp.sec = 77
    info = CameraInfo(header=header, width=32, height=24, k=[20.0, 0.0, 15.5, 0.0, 20.0, 11.5, 0.0, 0.0, 1.0])
    label_msg = Image(header=header, **array_to_image_fields(labels, "mono8"))
    context = rclpy.Context()
    rclpy.init(context=context)
    grids: list[OccupancyGrid] = []
    try:
        probe = rclpy.create_node("run_stack_probe", context=context)
        probe.create_subscription(OccupancyGrid, "/perception/costmap", grids.append, 10)
        info_pub = probe.create_publisher(CameraInfo, "/camera/camera_info", qos_profile_sensor_data)
        labels_pub = probe.create_publisher(Image, "/test/labels", qos_profile_sensor_data)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(probe)
        deadline = time.monotonic() + 60.0
        # Until a grid built from these labels (stamp 77) arrives: a start-up slower than stale_timeout_s first
        # brings the watchdog's all-unknown grids, stamped now.
        while not any(g.header.stamp.sec == 77 for g in grids) and time.monotonic() < deadline \
                and stack.poll() is None:
            info_pub.publish(info)
            labels_pub.publish(label_msg)
            executor.spin_once(timeout_sec=0.25)
        executor.shutdown()
        probe.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
        stack.send_signal(signal.SIGINT)
        output = stack.communicate(timeout=30)[0]
    built = [g for g in grids if g.header.stamp.sec == 77]
    assert built, f"no costmap of the labels from perception-stack ({len(grids)} watchdog grids); its output:\n{output}"
    grid = built[0]
    assert grid.info.resolution == pytest.approx(0.25) and (grid.info.width, grid.info.height) == (40, 32)
    assert stack.returncode == 0, f"perception-stack did not shut down cleanly:\n{output}"
    assert "perception-stack: running costmap_node" in output
