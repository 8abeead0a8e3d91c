"""Start the perception nodes in one process, without `ros2 launch` (not installable here).

Console script ``perception-stack``.

It starts the same nodes as launch/perception.launch.py with the same
parameter YAML: ``--params-file`` is handed to rclpy exactly as `ros2 launch`
would hand it to each node, and the YAML's sections are keyed ``/**/<node>``
so they match under any namespace. Model paths and the backend override the
YAML through a second, generated params file (later files win), so no node
constructor needs to know. The Fast DDS transport profile of the bringup
(``config/fastdds.xml``) is loaded unless FASTRTPS_DEFAULT_PROFILES_FILE is set.
The nodes run side by side (a MultiThreadedExecutor; each node's own callbacks
stay one at a time), as separate `ros2 launch` processes would: with one
thread, a node would wait for another's inference before taking its input.

    perception-stack                                   # depth, segmentation, costmap; installed config/perception.yaml
    perception-stack --nodes fused,costmap             # both models on every frame (one node), then the costmap
    perception-stack --namespace front --params front.yaml   # a second camera's stack: /front/... topics
    perception-stack --backend cpu --depth-model models/depth_levels_r18_int8_qdq.onnx
    perception-stack --nodes costmap --remap perception/depth/image:=/ground_truth/depth \
        --remap perception/segmentation/labels:=/ground_truth/labels

Stop with Ctrl-C (exit 0). Exits 1 with one line when a node cannot start.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from perception_core.errors import PerceptionError
from perception_core.resources import resolve_in_share

# name -> (node class "module:Class", node name, {parameter: model flag}). Named by string, as a launch file names
# packages: the runner sits below the node packages in the import graph only as a tool that starts them.
NODES: dict[str, tuple[str, str, dict[str, str]]] = {
    "depth": ("depth_perception.depth_node:DepthNode", "depth_node", {"model_path": "depth_model"}),
    "segmentation": ("seg_perception.segmentation_node:SegmentationNode", "segmentation_node",
                     {"model_path": "seg_model"}),
    "fused": ("fused_perception.fused_node:FusedNode", "fused_node",
              {"depth.model_path": "depth_model", "segmentation.model_path": "seg_model"}),
    "costmap": ("seg_perception.costmap_node:CostmapNode", "costmap_node", {}),
}
INFERENCE_NODES = ("depth", "segmentation", "fused")
# The costmap projects rectified depth and labels, so it takes the intrinsics the inference node published
# with them (D = 0, the rectified K), not the raw camera's.
COSTMAP_CAMERA_INFO_REMAP = "costmap_node:camera/camera_info:=perception/depth/camera_info"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=None,
                        help="parameter YAML, one section per node (default: the bringup package's "
                             "installed config/perception.yaml)")
    parser.add_argument("--nodes", default="depth,segmentation,costmap",
                        help="comma-separated subset of: " + ", ".join(NODES))
    parser.add_argument("--namespace", default="", help="namespace of every node and topic, e.g. front")
    parser.add_argument("--depth-model", type=Path, help="depth model file (overrides the YAML)")
    parser.add_argument("--seg-model", type=Path, help="segmentation model file (overrides the YAML)")
    parser.add_argument("--backend", choices=("auto", "npu", "cpu"), help="backend for every model")
    parser.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                        help="topic remap applied to every node, e.g. camera/image_raw:=/front/image_raw")
    parser.add_argument("--single-threaded", action="store_true",
                        help="one thread for every node's callbacks, instead of a MultiThreadedExecutor that runs "
                             "the nodes side by side as separate `ros2 launch` processes would")
    args = parser.parse_args(argv)
    args.nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    unknown = [n for n in args.nodes if n not in NODES]
    if unknown:
        parser.error(f"unknown node(s) {unknown}; choose from {', '.join(NODES)}")
    if "fused" in args.nodes and ({"depth", "segmentation"} & set(args.nodes)):
        parser.error("--nodes: fused already runs depth and segmentation; do not add them too")
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
    """Per-node parameters from the command line, in params-file form (``/**/<node>`` keys, nested names)."""
    sections: dict[str, Any] = {}
    for key in args.nodes:
        _, node_name, model_parameters = NODES[key]
        values: dict[str, Any] = {}
        for parameter, flag in model_parameters.items():
            model = getattr(args, flag)
            if model is not None:
                _set_nested(values, parameter, str(model))
        if key in INFERENCE_NODES and args.backend:
            values["backend"] = args.backend
        if values:
            sections[f"/**/{node_name}"] = {"ros__parameters": values}
    return sections


def _set_nested(values: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for parent in parents:
        values = values.setdefault(parent, {})
    values[leaf] = value


def ros_arguments(args: argparse.Namespace, override_file: Path | None) -> list[str]:
    ros_args = ["--ros-args", "--params-file", str(args.params)]
    if override_file is not None:
        ros_args += ["--params-file", str(override_file)]
    if args.namespace:
        ros_args += ["-r", f"__ns:=/{args.namespace.strip('/')}"]
    if "costmap" in args.nodes and set(INFERENCE_NODES) & set(args.nodes):
        ros_args += ["-r", COSTMAP_CAMERA_INFO_REMAP]
    for remap in args.remap:
        ros_args += ["-r", remap]
    return ros_args


def run(args: argparse.Namespace) -> int:
    import yaml

    from perception_ros.spin import run_nodes
    from perception_ros.transport import use_transport_profile

    use_transport_profile()  # before rclpy creates the process's DDS participant
    overrides = override_yaml(args)
    override_file = None
    if overrides:
        handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="perception_stack_", delete=False)
        with handle:
            yaml.safe_dump(overrides, handle)
        override_file = Path(handle.name)

    def started(nodes: list[Any]) -> None:
        names = ", ".join(n.get_fully_qualified_name().lstrip("/") for n in nodes)
        print(f"perception-stack: running {names} with {args.params}", flush=True)

    try:
        return run_nodes([NODES[key][0] for key in args.nodes], ros_arguments(args, override_file),
                         label="perception-stack", multi_threaded=not args.single_threaded, on_started=started)
    finally:
        if override_file is not None:
            override_file.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except PerceptionError as err:
        print(f"perception-stack: error: {err}", file=sys.stderr)
        return 1
    try:
        return run(args)
    except KeyboardInterrupt:  # Ctrl-C before run_nodes has its handlers (imports take a while): a clean exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
