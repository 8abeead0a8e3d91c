"""Launch files and parameter YAML: right nodes, real entry points, existing files, declared parameters.

`launch`/`launch_ros` are not installable here, so the launch files are run
against the recording test double in test/launch_double (put on sys.path only
inside these tests). The parameter check instantiates the real node classes
with rclpy and the real YAML.
"""

from __future__ import annotations

import configparser
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOUBLE = Path(__file__).resolve().parent / "launch_double"
LAUNCH = ROOT / "launch"
PARAMS = ROOT / "config" / "perception.yaml"
NODE_PACKAGES = {"depth_node": "depth_perception", "segmentation_node": "seg_perception",
                 "costmap_node": "seg_perception"}


def _forget_launch_modules() -> None:
    for name in [n for n in sys.modules if n.split(".")[0] in ("launch", "launch_ros")]:
        del sys.modules[name]


@pytest.fixture
def launch_double(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The recording double of launch/launch_ros, importable only for the test's duration."""
    _forget_launch_modules()  # e.g. the workspace's launch/ folder seen as a namespace package
    monkeypatch.syspath_prepend(str(DOUBLE))
    import launch.substitutions

    assert "TEST DOUBLE" in (sys.modules["launch"].__doc__ or ""), "the launch double must shadow `launch`"
    yield launch
    _forget_launch_modules()


def describe(path: Path, given: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Resolved Node(...) kwargs of a launch file (following includes) and its launch arguments."""
    from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    given = dict(given or {})
    spec = importlib.util.spec_from_file_location(f"launch_file_{path.stem.replace('.', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    scope: dict[str, Any] = {}

    def resolve(value: Any) -> Any:
        if isinstance(value, LaunchConfiguration):
            assert value.variable_name in scope, f"{path.name}: LaunchConfiguration {value.variable_name!r} undeclared"
            return scope[value.variable_name]
        if isinstance(value, dict):
            return {resolve(k): resolve(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(resolve(v) for v in value)
        return value

    nodes: list[dict[str, Any]] = []
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            scope[entity.name] = given.pop(entity.name, entity.default_value)
        elif isinstance(entity, IncludeLaunchDescription):
            arguments = {resolve(k): resolve(v) for k, v in entity.launch_arguments}
            nodes += describe(Path(entity.launch_description_source.location), arguments)[0]
        elif isinstance(entity, Node):
            nodes.append(resolve(entity.kwargs))
        else:
            raise AssertionError(f"{path.name}: unexpected launch entity {entity!r}")
    assert not given, f"{path.name} does not declare launch arguments {sorted(given)}"
    return nodes, scope


def console_scripts(package: str) -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "src" / package / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines)


def test_perception_launch_starts_the_three_nodes_from_real_entry_points(launch_double: Any) -> None:
    nodes, _ = describe(LAUNCH / "perception.launch.py")
    assert sorted(n["name"] for n in nodes) == ["costmap_node", "depth_node", "segmentation_node"]
    for node in nodes:
        assert node["package"] == NODE_PACKAGES[node["name"]]
        scripts = console_scripts(node["package"])
        assert node["executable"] in scripts, f"{node['executable']} is not a console script of {node['package']}"
        module_name = scripts[node["executable"]].split(":")[0]
        module_file = ROOT / "src" / node["package"] / (module_name.replace(".", "/") + ".py")
        assert module_file.is_file(), f"entry point module {module_file} is missing"


def test_parameter_files_exist_and_have_a_section_per_node(launch_double: Any) -> None:
    nodes, _ = describe(LAUNCH / "perception.launch.py")
    for node in nodes:
        files = [Path(p) for p in node["parameters"] if isinstance(p, str)]
        assert files, f"{node['name']} gets no parameter file"
        for file in files:
            assert file.is_file(), f"{node['name']}: parameter file {file} does not exist"
            sections = yaml.safe_load(file.read_text())
            assert "ros__parameters" in sections[node["name"]], f"{file} has no {node['name']} section"


def test_launch_arguments_reach_the_nodes(launch_double: Any) -> None:
    nodes, _ = describe(LAUNCH / "perception.launch.py", {
        "depth_model": "/m/depth_int8_qdq.onnx", "seg_model": "/m/seg_int8_qdq.onnx", "backend": "npu",
        "image_topic": "/front/image_raw", "camera_info_topic": "/front/camera_info"})
    by_name = {n["name"]: n for n in nodes}
    depth_overrides = next(p for p in by_name["depth_node"]["parameters"] if isinstance(p, dict))
    seg_overrides = next(p for p in by_name["segmentation_node"]["parameters"] if isinstance(p, dict))
    assert depth_overrides == {"model_path": "/m/depth_int8_qdq.onnx", "backend": "npu"}
    assert seg_overrides == {"model_path": "/m/seg_int8_qdq.onnx", "backend": "npu"}
    assert ("/camera/image_raw", "/front/image_raw") in by_name["depth_node"]["remappings"]
    assert ("/camera/image_raw", "/front/image_raw") in by_name["segmentation_node"]["remappings"]
    assert ("/camera/camera_info", "/front/camera_info") in by_name["costmap_node"]["remappings"]
    assert ("/camera/camera_info", "/front/camera_info") in by_name["depth_node"]["remappings"]


def test_default_model_paths_point_into_the_workspace_models_folder(launch_double: Any) -> None:
    _, arguments = describe(LAUNCH / "perception.launch.py")
    assert Path(arguments["depth_model"]).parts[-2:] == ("models", "depth_levels_r18.onnx")
    assert Path(arguments["seg_model"]).parts[-2:] == ("models", "ddrnet23s_offroad.onnx")
    assert arguments["backend"] == "auto"
    assert Path(arguments["params_file"]) == PARAMS


@pytest.mark.parametrize("file_name, node_name", [
    ("depth.launch.py", "depth_node"), ("segmentation.launch.py", "segmentation_node"),
    ("costmap.launch.py", "costmap_node")])
def test_each_node_has_its_own_launch_file(launch_double: Any, file_name: str, node_name: str) -> None:
    nodes, _ = describe(LAUNCH / file_name)
    assert [n["name"] for n in nodes] == [node_name]


def test_costmap_launch_remaps_inputs_for_ground_truth(launch_double: Any) -> None:
    nodes, _ = describe(LAUNCH / "costmap.launch.py", {"depth_topic": "/ground_truth/depth",
                                                       "labels_topic": "/ground_truth/labels"})
    assert ("/perception/depth/image", "/ground_truth/depth") in nodes[0]["remappings"]
    assert ("/perception/segmentation/labels", "/ground_truth/labels") in nodes[0]["remappings"]


def _node_under_test(node_name: str, tmp_path: Path) -> tuple[type, list[str]]:
    """The node class and the extra `-p` overrides it needs to start here (a tiny model)."""
    if node_name == "costmap_node":
        from seg_perception.costmap_node import CostmapNode

        return CostmapNode, []
    from perception_core.testing.tiny_models import make_tiny_depth_model, make_tiny_seg_model

    if node_name == "depth_node":
        from depth_perception.depth_node import DepthNode

        model = make_tiny_depth_model(tmp_path / "depth.onnx")
        return DepthNode, [f"model_path:={model}", "backend:=cpu"]
    from seg_perception.segmentation_node import SegmentationNode

    model = make_tiny_seg_model(tmp_path / "seg.onnx")
    return SegmentationNode, [f"model_path:={model}", "backend:=cpu"]


@pytest.mark.system
@pytest.mark.parametrize("node_name", ["depth_node", "segmentation_node", "costmap_node"])
def test_every_yaml_parameter_is_declared_by_its_node(node_name: str, tmp_path: Path) -> None:
    import rclpy

    section = yaml.safe_load(PARAMS.read_text())[node_name]["ros__parameters"]
    node_class, overrides = _node_under_test(node_name, tmp_path)
    args = ["--ros-args", "--params-file", str(PARAMS)]
    for override in overrides:
        args += ["-p", override]
    context = rclpy.Context()
    rclpy.init(args=args, context=context)
    try:
        node = node_class(context=context)
        try:
            undeclared = sorted(k for k in section if not node.has_parameter(k))
            assert not undeclared, f"{PARAMS.name} [{node_name}] sets parameters the node does not declare: {undeclared}"
            overridden = {o.split(":=")[0] for o in overrides}
            for key, value in section.items():
                if key not in overridden:
                    assert node.get_parameter(key).value == value, f"{node_name}.{key} did not take the YAML value"
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_rviz_config_shows_camera_depth_overlay_costmap_and_cloud() -> None:
    config = yaml.safe_load((ROOT / "config" / "perception.rviz").read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "base_link"
    shown = {(d["Class"], d["Topic"]["Value"]) for d in manager["Displays"] if "Topic" in d}
    for expected in [("rviz_default_plugins/Image", "/camera/image_raw"),
                     ("rviz_default_plugins/Image", "/perception/depth/image"),
                     ("rviz_default_plugins/Image", "/perception/segmentation/colorized"),
                     ("rviz_default_plugins/Map", "/perception/costmap"),
                     ("rviz_default_plugins/PointCloud2", "/perception/depth/points")]:
        assert expected in shown, f"perception.rviz lacks {expected}"
    assert all(d["Class"].startswith("rviz_default_plugins/") for d in manager["Displays"])
