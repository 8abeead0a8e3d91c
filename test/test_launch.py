"""Launch files and parameter YAML: right nodes, real entry points, files from the share, declared parameters.

`launch`/`launch_ros` are not installable here, so the launch files are run
against the recording test double in test/launch_double (put on sys.path only
inside these tests), which resolves substitutions and conditions as launch
does. The parameter checks instantiate the real node classes with rclpy and
the real YAML.
"""

from __future__ import annotations

import configparser
import importlib.util
import os
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
                 "costmap_node": "seg_perception", "fused_node": "fused_perception"}
PROFILE_ENV = "FASTRTPS_DEFAULT_PROFILES_FILE"


def _forget_launch_modules() -> None:
    for name in [n for n in sys.modules if n.split(".")[0] in ("launch", "launch_ros", "stack_actions")]:
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


def share() -> Path:
    from perception_core.resources import package_share

    return package_share("offroad_perception_bringup")


def describe(path: Path, given: dict[str, Any] | None = None, environment: dict[str, str] | None = None
             ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Resolved Node(...) kwargs of a launch file (following includes) and its launch arguments.

    Each node's dict also has ``environment`` (what SetEnvironmentVariable set before it) and
    ``shutdown_on_exit`` (the reason of an on_exit Shutdown whose condition holds, else None).
    """
    from launch import perform
    from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, SetEnvironmentVariable, Shutdown
    from launch_ros.actions import Node

    given = dict(given or {})
    environment = dict(environment or {})
    spec = importlib.util.spec_from_file_location(f"launch_file_{path.stem.replace('.', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    scope: dict[str, Any] = {}

    def resolve(value: Any) -> Any:
        if hasattr(value, "perform"):
            return value.perform(scope)
        if isinstance(value, dict):
            return {resolve(k): resolve(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(resolve(v) for v in value)
        return value

    nodes: list[dict[str, Any]] = []
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            value = given.pop(entity.name) if entity.name in given else perform(entity.default_value, scope)
            assert value is not None, f"{path.name}: launch argument {entity.name} has no value"
            entity.check(str(value))
            scope[entity.name] = value
        elif not entity.applies(scope):
            continue
        elif isinstance(entity, SetEnvironmentVariable):
            environment[resolve(entity.name)] = resolve(entity.value)
        elif isinstance(entity, IncludeLaunchDescription):
            arguments = {resolve(k): resolve(v) for k, v in entity.launch_arguments}
            location = Path(resolve(entity.launch_description_source.location))
            assert location.is_file(), f"{path.name} includes {location}, which does not exist"
            nodes += describe(location, arguments, environment)[0]
        elif isinstance(entity, Node):
            node = resolve({k: v for k, v in entity.kwargs.items() if k != "on_exit"})
            node["environment"] = dict(environment)
            exits = [a for a in entity.kwargs.get("on_exit", []) if isinstance(a, Shutdown) and a.applies(scope)]
            node["shutdown_on_exit"] = exits[0].reason if exits else None
            nodes.append(node)
        else:
            raise AssertionError(f"{path.name}: unexpected launch entity {entity!r}")
    assert not given, f"{path.name} does not declare launch arguments {sorted(given)}"
    return nodes, scope


def by_name(nodes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in nodes}


def overrides(node: dict[str, Any]) -> dict[str, Any]:
    return next(p for p in node["parameters"] if isinstance(p, dict))


def console_scripts(package: str) -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "src" / package / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines)


def section(node_name: str) -> dict[str, Any]:
    """The node's ros__parameters in config/perception.yaml (its /**/<node> section)."""
    return yaml.safe_load(PARAMS.read_text())[f"/**/{node_name}"]["ros__parameters"]


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


def test_fused_argument_replaces_the_two_inference_nodes_by_the_fused_node(launch_double: Any) -> None:
    nodes = by_name(describe(LAUNCH / "perception.launch.py", {"fused": "true", "depth_model": "/m/d.onnx",
                                                               "seg_model": "/m/s.onnx"})[0])
    assert sorted(nodes) == ["costmap_node", "fused_node"]
    assert console_scripts("fused_perception")[nodes["fused_node"]["executable"]] == "fused_perception.main:fused_node"
    assert overrides(nodes["fused_node"])["depth.model_path"] == "/m/d.onnx"
    assert overrides(nodes["fused_node"])["segmentation.model_path"] == "/m/s.onnx"


def test_parameter_files_come_from_the_installed_share_and_match_every_node(launch_double: Any) -> None:
    for fused in ("false", "true"):
        for node in describe(LAUNCH / "perception.launch.py", {"fused": fused})[0]:
            files = [Path(p) for p in node["parameters"] if isinstance(p, str)]
            assert files == [share() / "config" / "perception.yaml"], f"{node['name']} gets {files}"
            assert files[0].is_file() and files[0].resolve() == PARAMS.resolve()
            sections = yaml.safe_load(files[0].read_text())
            assert "ros__parameters" in sections[f"/**/{node['name']}"], f"no /**/{node['name']} section"


def test_launch_arguments_reach_the_nodes(launch_double: Any) -> None:
    nodes = by_name(describe(LAUNCH / "perception.launch.py", {
        "depth_model": "/m/depth_int8_qdq.onnx", "seg_model": "/m/seg_int8_qdq.onnx", "backend": "npu",
        "image_topic": "/front/image_raw", "camera_info_topic": "/front/camera_info", "namespace": "front",
        "use_sim_time": "true", "autostart": "false"})[0])
    assert overrides(nodes["depth_node"]) == {"model_path": "/m/depth_int8_qdq.onnx", "backend": "npu",
                                              "use_sim_time": "true", "autostart": "false"}
    assert overrides(nodes["segmentation_node"])["model_path"] == "/m/seg_int8_qdq.onnx"
    assert overrides(nodes["costmap_node"]) == {"use_sim_time": "true", "autostart": "false"}
    for name in ("depth_node", "segmentation_node"):
        assert ("camera/image_raw", "/front/image_raw") in nodes[name]["remappings"]
        assert ("camera/camera_info", "/front/camera_info") in nodes[name]["remappings"]
    assert all(n["namespace"] == "front" for n in nodes.values())
    # The costmap projects rectified depth: it takes the intrinsics the depth node published with it.
    assert ("camera/camera_info", "perception/depth/camera_info") in nodes["costmap_node"]["remappings"]


def test_backend_and_switches_only_take_their_choices(launch_double: Any) -> None:
    with pytest.raises(RuntimeError, match=r"Argument 'backend' provided value 'gpu' is not valid"):
        describe(LAUNCH / "perception.launch.py", {"backend": "gpu"})
    for switch in ("use_sim_time", "use_respawn", "autostart", "fused"):
        with pytest.raises(RuntimeError, match=rf"Argument '{switch}' provided value 'yes' is not valid"):
            describe(LAUNCH / "perception.launch.py", {switch: "yes"})


def test_defaults_do_not_depend_on_the_current_directory(launch_double: Any, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _, arguments = describe(LAUNCH / "perception.launch.py")
    assert Path(arguments["params_file"]).is_absolute() and Path(arguments["params_file"]).is_file()
    assert arguments["backend"] == "auto" and arguments["use_sim_time"] == "false"
    # Model paths stay relative: the nodes resolve them in the installed bringup share, never the cwd.
    from perception_core.resources import resolve_in_share

    for key, name in (("depth_model", "depth_levels_r18.onnx"), ("seg_model", "ddrnet23s_offroad.onnx")):
        assert arguments[key] == f"models/{name}"
        assert resolve_in_share(arguments[key]) == share() / "models" / name
    assert not list(tmp_path.iterdir()), "describing the launch touched the current directory"


def test_an_exiting_node_shuts_the_launch_down_unless_respawn_is_asked_for(launch_double: Any) -> None:
    default = by_name(describe(LAUNCH / "perception.launch.py")[0])
    for node in default.values():
        assert node["respawn"] == "false" and node["respawn_delay"] == 2.0
        assert node["shutdown_on_exit"] and node["name"] in node["shutdown_on_exit"]
    respawning = by_name(describe(LAUNCH / "perception.launch.py", {"use_respawn": "true"})[0])
    for node in respawning.values():
        assert node["respawn"] == "true" and node["shutdown_on_exit"] is None


def test_nodes_get_the_transport_profile_unless_the_environment_names_one(
        launch_double: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    for node in describe(LAUNCH / "perception.launch.py")[0]:
        assert node["environment"][PROFILE_ENV] == str(share() / "config" / "fastdds.xml")
    assert (share() / "config" / "fastdds.xml").is_file()
    mine = tmp_path / "vehicle_dds.xml"
    monkeypatch.setenv(PROFILE_ENV, str(mine))
    for node in describe(LAUNCH / "perception.launch.py")[0]:
        assert node["environment"][PROFILE_ENV] == str(mine)


@pytest.mark.parametrize("file_name, node_name", [
    ("depth.launch.py", "depth_node"), ("segmentation.launch.py", "segmentation_node"),
    ("fused.launch.py", "fused_node"), ("costmap.launch.py", "costmap_node")])
def test_each_node_has_its_own_launch_file(launch_double: Any, file_name: str, node_name: str) -> None:
    nodes, _ = describe(LAUNCH / file_name, {"namespace": "rear"})
    assert [n["name"] for n in nodes] == [node_name] and nodes[0]["namespace"] == "rear"


def test_costmap_launch_remaps_inputs_for_ground_truth(launch_double: Any) -> None:
    nodes, _ = describe(LAUNCH / "costmap.launch.py", {"depth_topic": "/ground_truth/depth",
                                                       "labels_topic": "/ground_truth/labels"})
    assert ("perception/depth/image", "/ground_truth/depth") in nodes[0]["remappings"]
    assert ("perception/segmentation/labels", "/ground_truth/labels") in nodes[0]["remappings"]


def test_remappings_and_default_topics_are_relative(launch_double: Any) -> None:
    for fused in ("false", "true"):
        for node in describe(LAUNCH / "perception.launch.py", {"fused": fused})[0]:
            for source, target in node["remappings"]:
                assert not source.startswith("/") and not target.startswith("/"), (node["name"], source, target)


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested YAML parameters -> dotted names, as rcl reads them."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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
    if node_name == "fused_node":
        from fused_perception.fused_node import FusedNode

        depth = make_tiny_depth_model(tmp_path / "depth.onnx")
        seg = make_tiny_seg_model(tmp_path / "seg.onnx")
        return FusedNode, [f"depth.model_path:={depth}", f"segmentation.model_path:={seg}", "backend:=cpu"]
    from seg_perception.segmentation_node import SegmentationNode

    model = make_tiny_seg_model(tmp_path / "seg.onnx")
    return SegmentationNode, [f"model_path:={model}", "backend:=cpu"]


@pytest.mark.system
@pytest.mark.parametrize("node_name", ["depth_node", "segmentation_node", "fused_node", "costmap_node"])
@pytest.mark.parametrize("namespace", ["", "/front"])
def test_every_yaml_parameter_is_declared_by_its_node(node_name: str, namespace: str, tmp_path: Path) -> None:
    import rclpy

    values = _flatten(section(node_name))
    node_class, extra = _node_under_test(node_name, tmp_path)
    args = ["--ros-args", "--params-file", str(PARAMS)]
    if namespace:
        args += ["-r", f"__ns:={namespace}"]
    for override in extra:
        args += ["-p", override]
    context = rclpy.Context()
    rclpy.init(args=args, context=context)
    try:
        node = node_class(context=context)
        try:
            assert node.get_namespace() == (namespace or "/")
            undeclared = sorted(k for k in values if not node.has_parameter(k))
            assert not undeclared, f"{PARAMS.name} [{node_name}] sets parameters the node does not declare: {undeclared}"
            overridden = {o.split(":=")[0] for o in extra}
            for key, value in values.items():
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


def test_bringup_installs_the_launch_config_and_transport_files() -> None:
    for relative in ("launch/perception.launch.py", "launch/fused.launch.py", "launch/stack_actions.py",
                     "config/perception.yaml", "config/fastdds.xml"):
        assert (share() / relative).is_file(), f"the bringup share lacks {relative}"
    assert os.path.samefile(share() / "config" / "fastdds.xml", ROOT / "config" / "fastdds.xml")
