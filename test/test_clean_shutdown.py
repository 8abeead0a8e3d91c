"""Ctrl-C to the process group ends every node (the costmap node too) and perception-stack with exit code 0 and no
traceback.

The installed console scripts run as `ros2 run`/`ros2 launch` would run them,
each in its own process group and namespace. SIGINT goes to the whole group
(what a terminal's Ctrl-C and launch's shutdown send) at two moments: during
start-up (Python still importing rclpy, OpenCV and ONNX Runtime) and while
camera frames are being processed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from inference_node_harness import Probe, image_msg, ros_context
from sensor_msgs.msg import CameraInfo, Image

from perception_core.resources import package_share
from perception_core.testing.tiny_models import make_tiny_depth_model, make_tiny_seg_model
from perception_msgs.msg import InferenceStats

pytestmark = pytest.mark.system


def _executable(package: str, name: str) -> Path:
    prefix = package_share(package).parents[1]
    path = prefix / "lib" / package / name if (prefix / "lib" / package / name).is_file() else prefix / "bin" / name
    assert path.is_file(), f"{name} is not installed under {prefix}"
    return path


def _commands(tmp_path: Path) -> dict[str, list[str]]:
    depth = make_tiny_depth_model(tmp_path / "depth.onnx")
    seg = make_tiny_seg_model(tmp_path / "seg.onnx")
    ros = ["--ros-args", "-p", "backend:=cpu"]
    return {
        "depth": [str(_executable("depth_perception", "depth_node")), *ros, "-p", f"model_path:={depth}",
                  "-r", "__ns:=/depth"],
        "segmentation": [str(_executable("seg_perception", "segmentation_node")), *ros, "-p", f"model_path:={seg}",
                         "-r", "__ns:=/segmentation"],
        "fused": [str(_executable("fused_perception", "fused_node")), *ros, "-p", f"depth.model_path:={depth}",
                  "-p", f"segmentation.model_path:={seg}", "-r", "__ns:=/fused"],
        "costmap": [str(_executable("seg_perception", "costmap_node")), "--ros-args", "-p", "pose_source:=none",
                    "-r", "__ns:=/costmap"],
        "stack": [str(_executable("perception_tools", "perception-stack")), "--namespace", "stack", "--backend", "cpu",
                  "--depth-model", str(depth), "--seg-model", str(seg)],
    }


def _start(commands: dict[str, list[str]]) -> dict[str, subprocess.Popen[str]]:
    return {name: subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True, env=dict(os.environ))
            for name, command in commands.items()}


def _wait_until_importing(processes: dict[str, subprocess.Popen[str]], timeout: float = 60.0) -> None:
    """Until every process has loaded numpy's extension (so it is inside the entry point's own imports, past the
    interpreter's and the console script's start): a fixed sleep lands before that on a loaded machine."""
    deadline = time.monotonic() + timeout
    waiting = set(processes)
    while waiting and time.monotonic() < deadline:
        for name in list(waiting):
            try:
                maps = Path(f"/proc/{processes[name].pid}/maps").read_text()
            except OSError:  # exited already: _assert_clean says how
                maps = "numpy"
            if "numpy" in maps:
                waiting.discard(name)
        time.sleep(0.02)
    assert not waiting, f"{sorted(waiting)} did not start importing within {timeout} s"


def _interrupt_all(processes: dict[str, subprocess.Popen[str]]) -> dict[str, str]:
    """One SIGINT to each process group, then each process's output once it has exited."""
    for process in processes.values():
        os.killpg(process.pid, signal.SIGINT)
    return {name: process.communicate(timeout=60)[0] for name, process in processes.items()}


def _assert_clean(processes: dict[str, subprocess.Popen[str]], outputs: dict[str, str]) -> None:
    for name, process in processes.items():
        assert process.returncode == 0, f"{name} exited {process.returncode}:\n{outputs[name]}"
        assert "Traceback" not in outputs[name], f"{name} printed a traceback:\n{outputs[name]}"


@pytest.mark.reliability(case="Ctrl-C (SIGINT to the process group) during start-up of each node and perception-stack",
                         outcome="exit code 0, no traceback")
def test_ctrl_c_during_start_up_exits_cleanly(tmp_path: Path) -> None:
    processes = _start(_commands(tmp_path))
    _wait_until_importing(processes)  # inside Python's imports of rclpy, OpenCV and ONNX Runtime
    _assert_clean(processes, _interrupt_all(processes))


@pytest.mark.reliability(case="Ctrl-C (SIGINT to the process group) while each node and perception-stack process frames",
                         outcome="exit code 0, no traceback")
def test_ctrl_c_while_processing_frames_exits_cleanly(tmp_path: Path) -> None:
    processes = _start(_commands(tmp_path))
    namespaces = {"depth": "depth", "segmentation": "segmentation", "fused": "fused", "stack": "stack",
                  "costmap": "costmap"}
    stats_topic = {"depth": "perception/depth/stats", "segmentation": "perception/segmentation/stats",
                   "fused": "perception/segmentation/stats", "stack": "perception/segmentation/stats",
                   "costmap": "perception/costmap/stats"}
    frame = image_msg(np.full((48, 64, 3), 90, np.uint8), "rgb8", stamp_sec=3)
    # The costmap node's inputs: depth 4 m everywhere, all smooth ground, and their camera_info.
    depth = image_msg(np.full((48, 64), 4.0, np.float32), "32FC1", stamp_sec=3)
    labels = image_msg(np.zeros((48, 64), np.uint8), "mono8", stamp_sec=3)
    info = CameraInfo(header=frame.header, width=64, height=48, k=[40.0, 0.0, 31.5, 0.0, 40.0, 23.5, 0.0, 0.0, 1.0])
    interrupted = False
    try:
        with ros_context() as context:
            probe = Probe(context)
            stats = {name: probe.listen(InferenceStats, f"/{ns}/{stats_topic[name]}") for name, ns in namespaces.items()}
            senders = [probe.camera(namespace=f"/{ns}") for name, ns in namespaces.items() if name != "costmap"]
            costmap_inputs = [(probe.publisher(CameraInfo, "/costmap/camera/camera_info"), info),
                              (probe.publisher(Image, "/costmap/perception/depth/image"), depth),
                              (probe.publisher(Image, "/costmap/perception/segmentation/labels"), labels)]

            def send() -> None:
                for sender in senders:
                    sender(frame)
                for publisher, msg in costmap_inputs:
                    publisher.publish(msg)

            def all_processing() -> bool:
                return all(any(s.frames_processed for s in stats[name]) for name in namespaces)

            started = probe.spin_until(all_processing, every=send, timeout=90.0, period=0.05)
            for process in processes.values():  # one Ctrl-C each, while frames keep arriving
                os.killpg(process.pid, signal.SIGINT)
                probe.spin_until(lambda: False, every=send, timeout=0.05, period=0.01)
            interrupted = True
            probe.close()
    finally:
        if not interrupted:
            for process in processes.values():
                os.killpg(process.pid, signal.SIGINT)
        outputs = {name: process.communicate(timeout=60)[0] for name, process in processes.items()}
    assert started, {name: outputs[name][-2000:] for name in processes}
    _assert_clean(processes, outputs)


@pytest.mark.parametrize("name, input_topic", [("fused", "/fused/camera/image_raw"),
                                               ("costmap", "/costmap/perception/depth/image")])
def test_sigterm_after_start_up_also_exits_cleanly(tmp_path: Path, name: str, input_topic: str) -> None:
    """launch escalates to SIGTERM when SIGINT is not enough; it ends the process the same way."""
    command = _commands(tmp_path)[name]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, env=dict(os.environ))
    with ros_context() as context:
        probe = Probe(context)
        assert probe.spin_until(lambda: probe.node.count_subscribers(input_topic) >= 1, timeout=60.0)
        probe.close()
    os.killpg(process.pid, signal.SIGTERM)
    output = process.communicate(timeout=60)[0]
    _assert_clean({name: process}, {name: output})
