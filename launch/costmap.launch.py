"""Costmap node alone (e.g. on ground truth from a bag): `ros2 launch offroad_perception_bringup costmap.launch.py`."""

from __future__ import annotations

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

BRINGUP = Path(__file__).resolve().parents[1]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=str(BRINGUP / "config" / "perception.yaml"),
                              description="parameter YAML with a costmap_node section"),
        DeclareLaunchArgument("depth_topic", default_value="/perception/depth/image",
                              description="depth image (32FC1 metres), e.g. /ground_truth/depth from a bag"),
        DeclareLaunchArgument("labels_topic", default_value="/perception/segmentation/labels",
                              description="label image (mono8 class ids), e.g. /ground_truth/labels"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/camera_info",
                              description="camera intrinsics (any resolution of the same camera)"),
        Node(
            package="seg_perception",
            executable="costmap_node",
            name="costmap_node",
            output="screen",
            parameters=[LaunchConfiguration("params_file")],
            remappings=[("/perception/depth/image", LaunchConfiguration("depth_topic")),
                        ("/perception/segmentation/labels", LaunchConfiguration("labels_topic")),
                        ("/camera/camera_info", LaunchConfiguration("camera_info_topic"))],
        ),
    ])
