"""Depth node alone: `ros2 launch offroad_perception_bringup depth.launch.py depth_model:=/path/model.onnx`."""

from __future__ import annotations

import sys
from pathlib import Path

from launch import LaunchDescription
from launch.substitutions import LaunchConfiguration

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack_actions import declare, node


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *declare("namespace", "params_file", "use_sim_time", "autostart", "use_respawn", "dds_profile", "backend",
                 "depth_model", "image_topic", "camera_info_topic"),
        node("depth_perception", "depth_node", "depth_node",
             {"model_path": LaunchConfiguration("depth_model"), "backend": LaunchConfiguration("backend")},
             [("camera/image_raw", LaunchConfiguration("image_topic")),
              ("camera/camera_info", LaunchConfiguration("camera_info_topic"))]),
    ])
