"""The whole stack for one camera: depth + segmentation (separate nodes, or one fused node), then the costmap.

    ros2 launch offroad_perception_bringup perception.launch.py backend:=npu \
        depth_model:=models/depth_levels_r18_int8_qdq.onnx seg_model:=models/ddrnet23s_offroad_int8_qdq.onnx
    ros2 launch offroad_perception_bringup perception.launch.py namespace:=front \
        image_topic:=/front_camera/image_raw camera_info_topic:=/front_camera/camera_info fused:=true

Each node's own launch file is included, so a node is started one way only.
The costmap takes its camera_info from the inference node (perception/depth/camera_info:
the rectified intrinsics of the depth it projects, D = 0), not from the raw camera.
"""

from __future__ import annotations

import sys
from pathlib import Path

from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.conditions import IfCondition, UnlessCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack_actions import arguments, declare, share_path

COMMON = ("namespace", "params_file", "use_sim_time", "autostart", "use_respawn", "dds_profile")
INFERENCE = (*COMMON, "backend", "image_topic", "camera_info_topic")


def _include(file_name: str, names: tuple[str, ...], condition: object = None, **fixed: object) -> IncludeLaunchDescription:
    launch_arguments = {name: LaunchConfiguration(name) for name in names}
    launch_arguments.update(fixed)
    return IncludeLaunchDescription(PythonLaunchDescriptionSource(share_path("launch", file_name)),
                                    launch_arguments=launch_arguments.items(), condition=condition)


def generate_launch_description() -> LaunchDescription:
    fused = LaunchConfiguration("fused")
    return LaunchDescription([
        *declare(*arguments()),
        _include("depth.launch.py", (*INFERENCE, "depth_model"), UnlessCondition(fused)),
        _include("segmentation.launch.py", (*INFERENCE, "seg_model"), UnlessCondition(fused)),
        _include("fused.launch.py", (*INFERENCE, "depth_model", "seg_model"), IfCondition(fused)),
        _include("costmap.launch.py", COMMON, camera_info_topic="perception/depth/camera_info"),
    ])
