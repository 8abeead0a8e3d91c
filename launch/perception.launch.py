"""The whole stack: depth + segmentation on the NPU, then the costmap.

    ros2 launch offroad_perception_bringup perception.launch.py \
        depth_model:=models/depth_levels_r18_int8_qdq.onnx seg_model:=models/ddrnet23s_offroad_int8_qdq.onnx \
        backend:=npu image_topic:=/front_camera/image_raw camera_info_topic:=/front_camera/camera_info

Each node's own launch file is included, so a node is started one way only.
"""

from __future__ import annotations

import os
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

HERE = Path(__file__).resolve().parent
BRINGUP = HERE.parent
WORKSPACE = Path(os.environ.get("OFFROAD_PERCEPTION_WS", os.getcwd()))

ARGUMENTS = {  # name: (default, description)
    "params_file": (str(BRINGUP / "config" / "perception.yaml"), "parameter YAML, one section per node"),
    "depth_model": (str(WORKSPACE / "models" / "depth_levels_r18.onnx"), "depth model file"),
    "seg_model": (str(WORKSPACE / "models" / "ddrnet23s_offroad.onnx"), "segmentation model file"),
    "backend": ("auto", "auto | npu | cpu, for both models"),
    "image_topic": ("/camera/image_raw", "input camera image"),
    "camera_info_topic": ("/camera/camera_info", "input camera intrinsics"),
}


def _include(file_name: str, *names: str) -> IncludeLaunchDescription:
    return IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(HERE / file_name)),
        launch_arguments={name: LaunchConfiguration(name) for name in names}.items(),
    )


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=description)
          for name, (default, description) in ARGUMENTS.items()),
        _include("depth.launch.py", "params_file", "depth_model", "backend", "image_topic", "camera_info_topic"),
        _include("segmentation.launch.py", "params_file", "seg_model", "backend", "image_topic"),
        _include("costmap.launch.py", "params_file", "camera_info_topic"),
    ])
