"""Costmap node alone (e.g. on ground truth from a bag): `ros2 launch offroad_perception_bringup costmap.launch.py`."""

from __future__ import annotations

import sys
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack_actions import declare, node


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *declare("namespace", "params_file", "use_sim_time", "autostart", "use_respawn", "dds_profile",
                 "camera_info_topic"),
        DeclareLaunchArgument("depth_topic", default_value="perception/depth/image",
                              description="depth image (32FC1 metres), e.g. /ground_truth/depth from a bag"),
        DeclareLaunchArgument("labels_topic", default_value="perception/segmentation/labels",
                              description="label image (mono8 class ids), e.g. /ground_truth/labels"),
        node("seg_perception", "costmap_node", "costmap_node", {},
             [("perception/depth/image", LaunchConfiguration("depth_topic")),
              ("perception/segmentation/labels", LaunchConfiguration("labels_topic")),
              ("camera/camera_info", LaunchConfiguration("camera_info_topic"))]),
    ])
