"""Depth node alone: `ros2 launch offroad_perception_bringup depth.launch.py depth_model:=/path/model.onnx`."""

from __future__ import annotations

import os
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# share/offroad_perception_bringup (installed) or the workspace root (source tree): config/ sits beside launch/.
BRINGUP = Path(__file__).resolve().parents[1]
# Models are produced at set-up into <workspace>/models/; run from the workspace or set OFFROAD_PERCEPTION_WS.
WORKSPACE = Path(os.environ.get("OFFROAD_PERCEPTION_WS", os.getcwd()))


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=str(BRINGUP / "config" / "perception.yaml"),
                              description="parameter YAML with a depth_node section"),
        DeclareLaunchArgument("depth_model", default_value=str(WORKSPACE / "models" / "depth_levels_r18.onnx"),
                              description="depth ONNX model (FP32, *_int8_qdq.onnx, or a QNN context binary)"),
        DeclareLaunchArgument("backend", default_value="auto", description="auto | npu | cpu"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw", description="input camera image"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/camera_info",
                              description="input camera intrinsics"),
        Node(
            package="depth_perception",
            executable="depth_node",
            name="depth_node",
            output="screen",
            parameters=[LaunchConfiguration("params_file"),
                        {"model_path": LaunchConfiguration("depth_model"), "backend": LaunchConfiguration("backend")}],
            remappings=[("/camera/image_raw", LaunchConfiguration("image_topic")),
                        ("/camera/camera_info", LaunchConfiguration("camera_info_topic"))],
        ),
    ])
