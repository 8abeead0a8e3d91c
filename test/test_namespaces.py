"""Two cameras' pipelines in one graph, under two namespaces, each with its own parameters, no cross-talk.

Two perception-stack processes (as two `ros2 launch ... namespace:=` would
start them): /front runs the separate depth and segmentation nodes and the
costmap node, /rear the fused node. One parameter file serves both; its namespaced sections give
each camera its own depth model (different max_depth) and overlay opacity. The
test publishes different frames to each camera and checks every output
topic of each namespace carries only its own camera's frames and values.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from inference_node_harness import Probe, as_array, image_msg, ros_context
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import Image

from perception_core.testing.tiny_models import make_tiny_depth_model, make_tiny_seg_model

pytestmark = pytest.mark.system
OUTPUTS = ("perception/depth/image", "perception/segmentation/labels", "perception/segmentation/colorized")


def _expected_depth(grey: int, max_depth: float, levels: int = 16) -> float:
    """The tiny composed levels model: round(t * (L-1)) / (L-1) * max_depth + step * sigmoid(t - 0.5)."""
    t = grey / 255.0
    step = max_depth / (levels - 1)
    return round(t * (levels - 1)) / (levels - 1) * max_depth + step / (1 + np.exp(-(t - 0.5)))


def test_two_namespaced_pipelines_keep_their_own_frames_and_parameters(tmp_path: Path) -> None:
    seg = make_tiny_seg_model(tmp_path / "seg.onnx")
    params = {
        "/**/depth_node": {"ros__parameters": {"backend": "cpu", "num_threads": 1}},
        "/**/segmentation_node": {"ros__parameters": {"backend": "cpu", "num_threads": 1}},
        "/front/depth_node": {"ros__parameters": {
            "model_path": str(make_tiny_depth_model(tmp_path / "front_depth.onnx", max_depth=15.0))}},
        "/front/segmentation_node": {"ros__parameters": {"model_path": str(seg), "alpha": 0.0}},
        "/rear/fused_node": {"ros__parameters": {
            "backend": "cpu",
            "depth": {"model_path": str(make_tiny_depth_model(tmp_path / "rear_depth.onnx", max_depth=7.5))},
            "segmentation": {"model_path": str(seg), "alpha": 1.0}}},
    }
    params_file = tmp_path / "cameras.yaml"
    params_file.write_text(yaml.safe_dump(params))
    stacks = {
        "front": ["--nodes", "depth,segmentation,costmap"],
        "rear": ["--nodes", "fused"],
    }
    processes = {ns: subprocess.Popen([sys.executable, "-m", "perception_tools.stack", "--params", str(params_file),
                                       "--namespace", ns, *nodes], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True, env=dict(os.environ))
                 for ns, nodes in stacks.items()}
    greys = {"front": 136, "rear": 170}  # different scenes: different depth levels and classes
    stamps = {"front": 10, "rear": 20}
    try:
        with ros_context() as context:
            probe = Probe(context)
            received = {ns: {topic: probe.listen(Image, f"/{ns}/{topic}") for topic in OUTPUTS} for ns in stacks}
            root_outputs = [probe.listen(Image, f"/{topic}") for topic in OUTPUTS]
            costmaps = {ns: probe.listen(OccupancyGrid, f"/{ns}/perception/costmap") for ns in stacks}
            root_costmaps = probe.listen(OccupancyGrid, "/perception/costmap")
            diagnostics = probe.listen(DiagnosticArray, "/diagnostics")
            senders = {ns: probe.camera(namespace=f"/{ns}") for ns in stacks}
            frames = {ns: image_msg(np.full((32, 32, 3), greys[ns], np.uint8), "rgb8", stamp_sec=stamps[ns])
                      for ns in stacks}

            def every_output() -> bool:
                return all(received[ns][topic] for ns in stacks for topic in OUTPUTS) and bool(costmaps["front"])

            def send_both() -> None:
                for ns in stacks:
                    senders[ns](frames[ns])

            assert probe.spin_until(every_output, every=send_both, timeout=90.0, period=0.3), {
                ns: {t: len(v) for t, v in topics.items()} for ns, topics in received.items()}
            probe.spin_until(lambda: False, every=send_both, timeout=1.5, period=0.3)
            probe.close()
    finally:
        outputs = {}
        for ns, process in processes.items():
            os.killpg(process.pid, signal.SIGINT)
            outputs[ns] = process.communicate(timeout=30)[0]

    for ns in stacks:
        assert processes[ns].returncode == 0, outputs[ns]
        for topic in OUTPUTS:
            assert {m.header.stamp.sec for m in received[ns][topic]} == {stamps[ns]}, f"cross-talk on /{ns}/{topic}"
    assert not any(root_outputs) and not root_costmaps, "a namespaced stack published on root topics"
    # Grids of other stamps may only be the watchdog's all-unknown ones (a start-up slower than stale_timeout_s).
    own = [g for g in costmaps["front"] if g.header.stamp.sec == stamps["front"]]
    assert own and all(set(g.data) == {-1} for g in costmaps["front"] if g not in own) and not costmaps["rear"]
    # Each camera's own parameters: the depth scale of its model, the opacity of its overlay.
    for ns, max_depth in (("front", 15.0), ("rear", 7.5)):
        got = as_array(received[ns]["perception/depth/image"][-1], np.float32)
        np.testing.assert_allclose(got, _expected_depth(greys[ns], max_depth), atol=1e-3)
    front_overlay = as_array(received["front"]["perception/segmentation/colorized"][-1], np.uint8)
    assert (front_overlay == greys["front"]).all()  # alpha 0: the camera image itself
    rear_overlay = as_array(received["rear"]["perception/segmentation/colorized"][-1], np.uint8)
    assert (rear_overlay != greys["rear"]).any()  # alpha 1: the class colours only
    names = {s.name for a in diagnostics for s in a.status}
    assert {"/front/depth_node: depth inference", "/front/segmentation_node: segmentation inference",
            "/rear/fused_node: depth+segmentation inference"} <= names
    assert "perception-stack: running front/depth_node, front/segmentation_node, front/costmap_node" \
        in outputs["front"]
