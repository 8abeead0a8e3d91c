"""Parameters of the inference and costmap nodes: one-line start-up errors, ranges, run-time changes, unknown keys.

Start-up errors run the real entry points in subprocesses (exit code and
stderr are what `ros2 launch` shows); run-time changes go through the nodes'
real parameter services, as `ros2 param set` does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from inference_node_harness import Probe, ros_context
from rcl_interfaces.msg import ParameterType
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient

from perception_core.testing.tiny_models import make_tiny_depth_model, make_tiny_seg_model

pytestmark = pytest.mark.system
MODULES = {"depth": "depth_perception.depth_node", "segmentation": "seg_perception.segmentation_node",
           "fused": "fused_perception.fused_node"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"depth": make_tiny_depth_model(root / "depth.onnx"), "segmentation": make_tiny_seg_model(root / "seg.onnx")}


def _model_args(node: str, models: dict[str, Path]) -> list[str]:
    if node == "fused":
        return [f"depth.model_path:={models['depth']}", f"segmentation.model_path:={models['segmentation']}"]
    return [f"model_path:={models[node]}"]


# node, bad -p value, what the one line must say
START_UP_CASES = [
    ("depth", "max_depth:=5", "parameter max_depth=5 is an integer; expected a floating-point number "
                              "(write 5.0)"),
    ("depth", "num_threads:=abc", "parameter num_threads='abc' is a string; expected an integer"),
    ("depth", "min_depth:=-3.0", "parameter min_depth=-3.0 is outside its range [-1.0, 1000.0]"),
    ("depth", "rectification:=fisheye", "parameter rectification='fisheye' is not one of node, upstream, off"),
    ("segmentation", "alpha:=2.0", "parameter alpha=2.0 is outside its range [0.0, 1.0]"),
    ("segmentation", "backend:=gpu", "parameter backend='gpu' is not one of auto, npu, cpu"),
    ("segmentation", "expected_rate_hz:=true", "parameter expected_rate_hz=True is a boolean; "
                                               "expected a floating-point number"),
    ("fused", "depth.max_depth:=5", "parameter depth.max_depth=5 is an integer; expected a floating-point "
                                    "number (write 5.0)"),
    ("fused", "segmentation.num_threads:=100", "parameter segmentation.num_threads=100 is outside its "
                                               "range [0, 64]"),
]


@pytest.mark.reliability(case="parameter of the wrong type or out of range at depth/segmentation/fused node start-up "
                              "(max_depth:=5, num_threads:=abc, alpha:=2.0, backend:=gpu, ...)",
                         outcome="one-line error naming the parameter, exit code 1, no traceback")
def test_bad_parameters_at_start_up_exit_1_with_one_line(models: dict[str, Path]) -> None:
    runs = []
    for node, bad, _ in START_UP_CASES:
        args = [sys.executable, "-m", MODULES[node], "--ros-args"]
        for value in [*_model_args(node, models), "backend:=cpu", bad]:
            args += ["-p", value]
        runs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for run, (node, bad, message) in zip(runs, START_UP_CASES, strict=True):
        out, err = run.communicate(timeout=120)
        assert run.returncode == 1, f"{node} {bad}: exit {run.returncode}\n{err}"
        assert "Traceback" not in err and "Traceback" not in out, f"{node} {bad}:\n{err}"
        error_lines = [line for line in err.splitlines() if ": error: " in line]
        label = {"depth": "DepthNode", "segmentation": "SegmentationNode", "fused": "FusedNode"}[node]
        assert len(error_lines) == 1 and error_lines[0] == f"{label}: error: {message}", f"{node} {bad}:\n{err}"


def _node(kind: str, models: dict[str, Path], **params: Any):
    from depth_perception.depth_node import DepthNode
    from fused_perception.fused_node import FusedNode
    from seg_perception.costmap_node import CostmapNode
    from seg_perception.segmentation_node import SegmentationNode

    classes = {"depth": DepthNode, "segmentation": SegmentationNode, "fused": FusedNode, "costmap": CostmapNode}
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    if kind != "costmap":  # the costmap node has no model
        overrides += [Parameter(a.split(":=")[0], value=a.split(":=")[1]) for a in _model_args(kind, models)]
        overrides += [Parameter("backend", value="cpu")]
    return lambda context: classes[kind](context=context, parameter_overrides=overrides)


@pytest.mark.parametrize("kind", ["depth", "segmentation", "fused", "costmap"])
def test_every_numeric_parameter_has_a_range(models: dict[str, Path], kind: str) -> None:
    with ros_context() as context:
        node = _node(kind, models)(context)
        try:
            names = node.list_parameters([], 10).names
            descriptors = dict(zip(names, node.describe_parameters(names), strict=True))
        finally:
            node.destroy_node()
    numeric = {n: d for n, d in descriptors.items() if d.type in (ParameterType.PARAMETER_INTEGER,
                                                                 ParameterType.PARAMETER_DOUBLE)}
    assert numeric, "no numeric parameters found"
    unbounded = [n for n, d in numeric.items() if not (d.integer_range or d.floating_point_range)]
    assert not unbounded, f"{kind}: numeric parameters without a range: {unbounded}"
    rclpy_own = ("use_sim_time", "start_type_description_service")
    assert all(d.description for n, d in descriptors.items() if n not in rclpy_own), "a parameter lacks a description"


def _set(probe: Probe, client: AsyncParameterClient, **values: Any) -> list[Any]:
    future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
    assert probe.spin_until(future.done, timeout=10.0), "parameter service did not answer"
    return list(future.result().results)


def test_costs_and_thresholds_change_at_run_time_with_checks(models: dict[str, Path]) -> None:
    with ros_context() as context:
        node = _node("fused", models)(context)
        probe = Probe(context, node)
        client = AsyncParameterClient(probe.node, "fused_node")
        assert probe.spin_until(lambda: client.services_are_ready(), timeout=10.0)
        [ok] = _set(probe, client, **{"segmentation.alpha": 0.8})
        assert ok.successful and node.segmentation.alpha == 0.8
        [ok] = _set(probe, client, **{"depth.point_stride": 2, "expected_rate_hz": 30.0})[:1]
        assert ok.successful and node.depth.point_stride == 2 and node.expected_rate_hz == 30.0
        [ok] = _set(probe, client, **{"depth.min_depth": 1.5})
        assert ok.successful and node.depth.pipeline.min_depth == 1.5
        [refused] = _set(probe, client, **{"depth.min_depth": 20.0})  # above the model's 15 m range
        assert not refused.successful and "must be below max_depth (15 m)" in refused.reason
        [refused] = _set(probe, client, **{"segmentation.alpha": 1.5})  # outside the descriptor's range
        assert not refused.successful and node.segmentation.alpha == 0.8
        [refused] = _set(probe, client, **{"depth.max_depth": 20.0})  # the composition scale: read-only
        assert not refused.successful and "read-only" in refused.reason
        [refused] = _set(probe, client, backend="npu")
        assert not refused.successful and node.backend == "cpu"
        assert node.depth.pipeline.min_depth == 1.5
        probe.close()
        node.destroy_node()


@pytest.mark.parametrize("kind, given, unknown", [
    ("depth", {"max_dept": 3.0, "alpha": 0.3}, ["alpha", "max_dept"]),  # a typo, and a key of another node
    ("costmap", {"cost_blocke": 90, "use_tf": False}, ["cost_blocke", "use_tf"]),  # a typo, and no such key
])
def test_unknown_parameters_are_reported(models: dict[str, Path], kind: str, given: dict[str, Any],
                                         unknown: list[str]) -> None:
    with ros_context() as context:
        node = _node(kind, models, **given)(context)
        try:
            assert node.unknown_parameters == unknown
            assert not any(node.has_parameter(name) for name in unknown)
        finally:
            node.destroy_node()
