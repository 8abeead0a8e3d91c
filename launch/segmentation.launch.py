"""Segmentation node alone: `ros2 launch offroad_perception_bringup segmentation.launch.py seg_model:=...`."""

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
                 "seg_model", "image_topic", "camera_info_topic"),
        node("seg_perception", "segmentation_node", "segmentation_node",
             {"model_path": LaunchConfiguration("seg_model"), "backend": LaunchConfiguration("backend")},
             [("camera/image_raw", LaunchConfiguration("image_topic")),
              ("camera/camera_info", LaunchConfiguration("camera_info_topic"))]),
    ])
