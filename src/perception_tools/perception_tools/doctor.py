"""`perception-tools doctor`: say what this environment can run, and prove a node runs.

With ``--ros-roundtrip`` one rclpy node publishes a perception_msgs message
and a second receives it over DDS (loopback only).
"""

from __future__ import annotations

import argparse
import importlib
import os
import time

from perception_core.errors import PerceptionError


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - any import failure is a finding to report
        return f"missing ({type(err).__name__}: {err})"
    return str(getattr(mod, "__version__", "present"))


def ros_roundtrip(timeout_s: float = 10.0) -> float:
    """Publish one InferenceStats between two rclpy nodes; return latency in ms."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from perception_msgs.msg import InferenceStats

    rclpy.init()
    try:
        talker = rclpy.create_node("doctor_talker")
        listener = rclpy.create_node("doctor_listener")
        got: list[float] = []
        listener.create_subscription(InferenceStats, "/doctor/stats", lambda m: got.append(time.monotonic()), 10)
        pub = talker.create_publisher(InferenceStats, "/doctor/stats", 10)
        executor = SingleThreadedExecutor()
        executor.add_node(talker)
        executor.add_node(listener)
        deadline = time.monotonic() + timeout_s
        sent = 0.0
        while not got and time.monotonic() < deadline:
            msg = InferenceStats(node_name="doctor_talker", backend_used="cpu")
            sent = time.monotonic()
            pub.publish(msg)
            executor.spin_once(timeout_sec=0.1)
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()
    finally:
        rclpy.try_shutdown()
    if not got:
        raise PerceptionError(f"no perception_msgs/InferenceStats arrived on /doctor/stats within {timeout_s} s")
    return (got[0] - sent) * 1000.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ros-roundtrip", action="store_true", help="also exchange a message between two rclpy nodes")


def run(args: argparse.Namespace) -> int:
    for module in ("numpy", "cv2", "yaml", "onnx", "onnxruntime", "onnxruntime_qnn", "torch", "rosbags", "rclpy"):
        print(f"{module:>16}: {_version(module)}")
    print(f"{'ROS_DOMAIN_ID':>16}: {os.environ.get('ROS_DOMAIN_ID', '(unset)')}")
    print(f"{'discovery range':>16}: {os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE', '(unset: DDS may leave loopback)')}")
    if args.ros_roundtrip:
        latency = ros_roundtrip()
        print(f"{'ROS 2 roundtrip':>16}: perception_msgs/InferenceStats delivered over DDS in {latency:.1f} ms")
    return 0
