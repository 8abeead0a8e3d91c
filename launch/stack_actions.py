"""Shared pieces of the bringup's launch files: the common launch arguments and how a node is started.

Not a launch file itself; each *.launch.py imports it from its own folder. Every node is started the same way:

- in the ``namespace`` argument's namespace, with relative topic names, so one
  launch per camera (``namespace:=front``, ``namespace:=rear``) gives separate
  stacks in one graph;
- with ``params_file`` (keys ``/**/<node>`` match under any namespace), then the
  launch arguments as overrides, ``use_sim_time`` included;
- ``autostart`` (every node is a managed node): ``false`` leaves them
  unconfigured for a lifecycle manager (e.g. nav2_lifecycle_manager with their names);
- ``use_respawn``: ``true`` restarts a node that exits after 2 s (launch's
  ``respawn``/``respawn_delay``, launch/actions/execute_local.py); ``false`` makes
  an exiting node shut the whole launch down with a reason naming it, instead of
  leaving a stack that silently lacks a model;
- with the Fast DDS transport profile (``dds_profile``, default: the
  environment's FASTRTPS_DEFAULT_PROFILES_FILE, else the installed config/fastdds.xml).
"""

from __future__ import annotations

from typing import Any

from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable, Shutdown
from launch.conditions import UnlessCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "offroad_perception_bringup"
PROFILE_ENV = "FASTRTPS_DEFAULT_PROFILES_FILE"
BOOLEAN = ["true", "false"]
RESPAWN_DELAY_S = 2.0


def share_path(*parts: str) -> PathJoinSubstitution:
    """A file in the installed bringup share (ament index), whatever the current directory."""
    return PathJoinSubstitution([FindPackageShare(PACKAGE), *parts])


def arguments() -> dict[str, tuple[Any, str, list[str] | None]]:
    """name -> (default, description, choices) of every launch argument the files use."""
    return {
        "namespace": ("", "namespace of the nodes and their topics, one per camera (e.g. front)", None),
        "params_file": (share_path("config", "perception.yaml"), "parameter YAML, sections /**/<node name>", None),
        "use_sim_time": ("false", "use the /clock topic (bag replay) instead of the system clock", BOOLEAN),
        "autostart": ("true", "configure and activate the nodes at start (false: wait for a lifecycle manager)",
                      BOOLEAN),
        "use_respawn": ("false", "restart a node that exits (false: its exit shuts the launch down)", BOOLEAN),
        "dds_profile": (EnvironmentVariable(PROFILE_ENV, default_value=share_path("config", "fastdds.xml")),
                        "Fast DDS XML profile for the nodes (default: $FASTRTPS_DEFAULT_PROFILES_FILE, else the "
                        "bringup's config/fastdds.xml, sized for camera frames)", None),
        "backend": ("auto", "inference backend of every model: auto | npu (QNN HTP) | cpu", ["auto", "npu", "cpu"]),
        "depth_model": ("models/depth_levels_r18.onnx", "depth model: absolute, or relative to the bringup share "
                        "(INT8 for the NPU: models/depth_levels_r18_int8_qdq.onnx)", None),
        "seg_model": ("models/ddrnet23s_offroad.onnx", "segmentation model: absolute, or relative to the bringup "
                      "share (INT8 for the NPU: models/ddrnet23s_offroad_int8_qdq.onnx)", None),
        "image_topic": ("camera/image_raw", "input camera image (relative names follow the namespace)", None),
        "camera_info_topic": ("camera/camera_info", "input camera_info", None),
        "fused": ("false", "true: one fused_node runs both models on every frame it takes (every processed frame "
                  "gets a costmap); false: separate depth_node and segmentation_node", BOOLEAN),
    }


def declare(*names: str) -> list[Any]:
    """DeclareLaunchArgument for ``names``; declaring dds_profile also exports it to the launched processes."""
    table = arguments()
    actions: list[Any] = []
    for name in names:
        default, description, choices = table[name]
        actions.append(DeclareLaunchArgument(name, default_value=default, description=description,
                                             choices=choices))
    if "dds_profile" in names:
        actions.append(SetEnvironmentVariable(PROFILE_ENV, LaunchConfiguration("dds_profile")))
    return actions


def node(package: str, executable: str, name: str, parameters: dict[str, Any], remappings: list[tuple[Any, Any]]
         ) -> Node:
    """A node of the stack: namespace, params file + overrides (``autostart`` included), respawn or shut down on
    exit."""
    overrides = {"use_sim_time": LaunchConfiguration("use_sim_time"), **parameters,
                 "autostart": LaunchConfiguration("autostart")}
    respawn = LaunchConfiguration("use_respawn")
    return Node(
        package=package,
        executable=executable,
        name=name,
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=remappings,
        respawn=respawn,
        respawn_delay=RESPAWN_DELAY_S,
        on_exit=[Shutdown(reason=f"{name} exited and use_respawn is false: the perception stack cannot run without "
                                 "it (see its last log line)",
                          condition=UnlessCondition(respawn))],
    )
