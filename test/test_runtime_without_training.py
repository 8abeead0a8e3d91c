"""The vehicle runtime needs no training stack: the nodes start and process frames without torch and friends.

How the environment is made: each node runs in a child interpreter started
with ``python -S`` (no automatic site-packages), whose only site directory is
a view of the venv's site-packages that leaves out every file of the
training and tooling distributions (torch, tqdm, matplotlib, onnx,
onnxscript, onnx-ir, rosbags: their modules and dist-info), and whose
PYTHONPATH leaves out the colcon overlay's model_tools and perception_tools.
For that interpreter those packages are not installed: ``find_spec`` finds
nothing and ``importlib.metadata`` lists none of them. It is not an import
hook that refuses them after they are found.

What it proves: the depth, segmentation, costmap and fused nodes import and
process camera frames (over DDS, from this test process) with nothing from
those distributions. What it does not prove: that a vehicle's package manager
resolves the runtime without them (test_workspace.py checks the package.xml
keys), or that the versions of the remaining packages match a vehicle's.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from inference_node_harness import Probe, image_msg, ros_context
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import Image

from perception_core.testing.tiny_models import make_tiny_depth_model, make_tiny_seg_model

pytestmark = pytest.mark.system
TRAINING_DISTRIBUTIONS = ("torch", "tqdm", "matplotlib", "onnx", "onnxscript", "onnx-ir", "rosbags")
TOOLING_PACKAGES = ("model_tools", "perception_tools")

BOOTSTRAP = """
import importlib.metadata, importlib.util, runpy, site, sys
site_dir, module, absent = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
site.addsitedir(site_dir)
present = [name for name in absent if importlib.util.find_spec(name) is not None]
dists = {d.metadata["Name"].lower() for d in importlib.metadata.distributions()}
if present or dists & {"torch", "tqdm", "matplotlib", "onnx", "rosbags"}:
    sys.exit(f"the restricted environment still has {present} {sorted(dists & {'torch', 'tqdm', 'matplotlib'})}")
print(f"runtime-only environment: {len(dists)} distributions, none of {', '.join(absent)}", flush=True)
sys.argv = [module, *sys.argv[4:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _training_entries() -> set[str]:
    """Top-level site-packages entries (modules, packages, dist-info) of the training distributions."""
    entries: set[str] = set()
    for name in TRAINING_DISTRIBUTIONS:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            continue
        entries |= {str(f).split("/")[0] for f in files} - {"..", "__pycache__"}
    return entries


def _runtime_site(tmp_path: Path) -> Path:
    site_packages = Path(next(p for p in sys.path if p.endswith("site-packages") and Path(p, "rclpy").is_dir()))
    view = tmp_path / "runtime-site"
    view.mkdir()
    left_out = _training_entries()
    assert {"torch", "tqdm", "matplotlib"} <= left_out
    for entry in site_packages.iterdir():
        if entry.name not in left_out and entry.name != "__pycache__":
            (view / entry.name).symlink_to(entry)
    return view


def _runtime_pythonpath() -> str:
    keep = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
            if p and not any(Path(p).name == t or f"/{t}/" in p for t in TOOLING_PACKAGES)]
    assert len(keep) < len(os.environ["PYTHONPATH"].split(os.pathsep))
    return os.pathsep.join(keep)


def test_nodes_start_and_process_frames_without_the_training_stack(tmp_path: Path) -> None:
    depth = make_tiny_depth_model(tmp_path / "depth.onnx")
    seg = make_tiny_seg_model(tmp_path / "seg.onnx")
    view = _runtime_site(tmp_path)
    env = {**os.environ, "PYTHONPATH": _runtime_pythonpath()}
    absent = "torch,tqdm,matplotlib,onnx,onnxscript,rosbags,model_tools,perception_tools"
    ros = ["--ros-args", "-p", "backend:=cpu"]
    nodes = {  # depth + segmentation + costmap as the stack runs them, and the fused node in its own namespace
        "depth": ("depth_perception.depth_node", [*ros, "-p", f"model_path:={depth}"]),
        "segmentation": ("seg_perception.segmentation_node", [*ros, "-p", f"model_path:={seg}"]),
        "costmap": ("seg_perception.costmap_node", ["--ros-args", "-p", "use_tf:=false", "-p",
                                                    "min_points_per_cell:=1", "-r",
                                                    "camera/camera_info:=perception/depth/camera_info"]),
        "fused": ("fused_perception.fused_node", [*ros, "-p", f"depth.model_path:={depth}", "-p",
                                                  f"segmentation.model_path:={seg}", "-r", "__ns:=/fused"]),
    }
    processes = {name: subprocess.Popen([sys.executable, "-S", "-c", BOOTSTRAP, str(view), module, absent, *args],
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
                 for name, (module, args) in nodes.items()}
    grey = np.full((48, 64), 60, np.uint8)
    grey[:12] = 0
    frame = image_msg(np.dstack([grey] * 3), "rgb8", stamp_sec=8)
    try:
        with ros_context() as context:
            probe = Probe(context)
            outputs = {"depth": probe.listen(Image, "/perception/depth/image"),
                       "segmentation": probe.listen(Image, "/perception/segmentation/labels"),
                       "costmap": probe.listen(OccupancyGrid, "/perception/costmap"),
                       "fused": probe.listen(Image, "/fused/perception/depth/image")}
            fused_labels = probe.listen(Image, "/fused/perception/segmentation/labels")
            senders = [probe.camera(), probe.camera(namespace="/fused")]

            def send() -> None:
                for sender in senders:
                    sender(frame)

            def done() -> bool:
                return (all(outputs.values()) and bool(fused_labels)) or any(p.poll() is not None
                                                                           for p in processes.values())

            probe.spin_until(done, every=send, timeout=120.0, period=0.3)
            probe.close()
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
        logs = {name: process.communicate(timeout=60)[0] for name, process in processes.items()}
    for name, process in processes.items():
        assert f"none of {absent.replace(',', ', ')}" in logs[name], f"{name}:\n{logs[name]}"
        assert process.returncode == 0, f"{name} exited {process.returncode}:\n{logs[name]}"
        assert outputs[name], f"{name} produced nothing in the runtime-only environment:\n{logs[name]}"
    assert all(m.header.stamp.sec == 8 for m in outputs["depth"] + outputs["fused"] + fused_labels)


def test_the_runtime_requirements_are_perception_cores_and_nothing_of_training() -> None:
    import configparser

    root = Path(__file__).resolve().parents[1]
    wanted = {line.strip() for line in (root / "requirements-runtime.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    setup = configparser.ConfigParser()
    setup.read(root / "src" / "perception_core" / "setup.cfg")
    core = {r.strip() for r in setup["options"]["install_requires"].split() if r.strip()}
    npu = {r.strip() for r in setup["options.extras_require"]["npu"].split(";") if r.strip()}
    assert wanted == core | npu
    assert not wanted & {"torch", "tqdm", "matplotlib", "onnx", "onnxscript", "rosbags"}
    develop = {line.split("[")[0].split("=")[0].split("<")[0].strip()
               for line in (root / "requirements.in").read_text().splitlines() if line and not line.startswith("#")}
    assert wanted <= develop  # the development venv runs what the vehicle runs
