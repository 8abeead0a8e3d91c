"""Start the perception nodes in one process, without `ros2 launch` (not installable here).

Console script ``perception-stack``.

It starts the same nodes as launch/perception.launch.py with the same
parameter YAML: the node names are the YAML's section names, and
``--params-file`` is handed to rclpy exactly as `ros2 launch` would hand it to
each node. Model paths and the backend override the YAML through a second,
generated params file (later files win), so no node constructor needs to know.

    perception-stack                                   # all three nodes, the installed config/perception.yaml
    perception-stack --backend cpu --depth-model models/depth_levels_r18_int8_qdq.onnx
    perception-stack --nodes costmap --remap /perception/depth/image:=/ground_truth/depth \
        --remap /perception/segmentation/labels:=/ground_truth/labels

Stop with Ctrl-C. Exits non-zero with one line when a node cannot start.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from perception_core.errors import PerceptionError
from perception_core.resources import resolve_in_share

# name -> (module, class, model-path flag or None). Named by string, as a launch file names packages: the
# runner sits below the node packages in the import graph only as a tool that starts them.
NODES: dict[str, tuple[str, str, str | None]] = {
    "depth": ("depth_perception.depth_node", "DepthNode", "depth_model"),
    "segmentation": ("seg_perception.segmentation_node", "SegmentationNode", "seg_model"),
    "costmap": ("seg_perception.costmap_node", "CostmapNode", None),
}
NODE_NAMES = {"depth": "depth_node", "segmentation": "segmentation_node", "costmap": "costmap_node"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=None,
                        help="parameter YAML, one section per node name (default: the bringup package's "
                             "installed config/perception.yaml)")
    parser.add_argument("--nodes", default="depth,segmentation,costmap",
                        help="comma-separated subset of: " + ", ".join(NODES))
    parser.add_argument("--depth-model", type=Path, help="depth model file (overrides the YAML)")
    parser.add_argument("--seg-model", type=Path, help="segmentation model file (overrides the YAML)")
    parser.add_argument("--backend", choices=("auto", "npu", "cpu"), help="backend for both models")
    parser.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                        help="topic remap applied to every node, e.g. /camera/image_raw:=/front/image_raw")
    parser.add_argument("--multi-threaded", action="store_true",
                        help="MultiThreadedExecutor (models run concurrently) instead of one thread")
    args = parser.parse_args(argv)
    args.nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    unknown = [n for n in args.nodes if n not in NODES]
    if unknown:
        parser.error(f"unknown node(s) {unknown}; choose from {', '.join(NODES)}")
    args.params = (args.params or resolve_in_share("config/perception.yaml")).resolve()
    args.depth_model = args.depth_model.resolve() if args.depth_model else None
    args.seg_model = args.seg_model.resolve() if args.seg_model else None
    if not args.params.is_file():
        parser.error(f"parameter file {args.params} does not exist")
    for remap in args.remap:
        if ":=" not in remap:
            parser.error(f"--remap {remap!r} is not FROM:=TO")
    return args


def override_yaml(args: argparse.Namespace) -> dict[str, Any]:
    """Per-node parameters from the command line, in params-file form."""
    sections: dict[str, Any] = {}
    for key, (_, _, model_flag) in NODES.items():
        values: dict[str, Any] = {}
        model = getattr(args, model_flag) if model_flag else None
        if model is not None:
            values["model_path"] = str(model)
        if model_flag and args.backend:
            values["backend"] = args.backend
        if values and key in args.nodes:
            sections[NODE_NAMES[key]] = {"ros__parameters": values}
    return sections


def ros_arguments(args: argparse.Namespace, override_file: Path | None) -> list[str]:
    ros_args = ["--ros-args", "--params-file", str(args.params)]
    if override_file is not None:
        ros_args += ["--params-file", str(override_file)]
    for remap in args.remap:
        ros_args += ["-r", remap]
    return ros_args


def run(args: argparse.Namespace) -> int:
    import rclpy
    import yaml
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor


    overrides = override_yaml(args)
    override_file = None
    if overrides:
        handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="run_stack_", delete=False)
        with handle:
            yaml.safe_dump(overrides, handle)
        override_file = Path(handle.name)
    rclpy.init(args=ros_arguments(args, override_file))
    nodes = []
    executor = MultiThreadedExecutor() if args.multi_threaded else SingleThreadedExecutor()
    try:
        for key in args.nodes:
            module_name, class_name, _ = NODES[key]
            node_class = getattr(importlib.import_module(module_name), class_name)
            node = node_class()
            nodes.append(node)
            executor.add_node(node)
        print(f"perception-stack: running {', '.join(n.get_name() for n in nodes)} with {args.params}", flush=True)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except PerceptionError as err:
        print(f"perception-stack: error: {err}", file=sys.stderr)
        return 1
    finally:
        executor.shutdown()
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
        if override_file is not None:
            override_file.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except PerceptionError as err:
        print(f"perception-stack: error: {err}", file=sys.stderr)
        return 1
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
