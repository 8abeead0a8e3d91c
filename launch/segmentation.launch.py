"""Segmentation node alone: `ros2 launch offroad_perception_bringup segmentation.launch.py seg_model:=...`."""

from __future__ import annotations

import os
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

BRINGUP = Path(__file__).resolve().parents[1]
WORKSPACE = Path(os.environ.get("OFFROAD_PERCEPTION_WS", os.getcwd()))


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=str(BRINGUP / "config" / "perception.yaml"),
                              description="parameter YAML with a segmentation_node section"),
        DeclareLaunchArgument("seg_model", default_value=str(WORKSPACE / "models" / "ddrnet23s_offroad.onnx"),
                              description="segmentation ONNX model (FP32, *_int8_qdq.onnx, or a QNN context binary)"),
        DeclareLaunchArgument("backend", default_value="auto", description="auto | npu | cpu"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw", description="input camera image"),
        Node(
            package="seg_perception",
            executable="segmentation_node",
            name="segmentation_node",
            output="screen",
            parameters=[LaunchConfiguration("params_file"),
                        {"model_path": LaunchConfiguration("seg_model"), "backend": LaunchConfiguration("backend")}],
            remappings=[("/camera/image_raw", LaunchConfiguration("image_topic"))],
        ),
    ])
