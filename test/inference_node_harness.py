"""Helpers for system tests of the inference nodes: a probe node, image/camera_info builders, spin-until.

Real rclpy over loopback DDS (the root conftest sets discovery to LOCALHOST and
a per-run domain). Each test gets its own rclpy Context, so nodes from one test
never see another's.
"""

from __future__ import annotations

import array
import gc
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@contextmanager
def ros_context() -> Iterator[Context]:
    """A fresh rclpy Context, shut down on exit.

    Nodes a test leaves behind (a failed assert before ``destroy_node``, a node held in a reference cycle)
    are collected here, while their context is still up. Once a garbage-collector pass in a later test
    finalised such a node, and destroying its Fast DDS participant there never returned: gdb showed
    gc -> rcl_node_fini -> destroy_participant -> DomainParticipant::set_listener spinning, and the run hung.
    """
    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        gc.collect()
        rclpy.try_shutdown(context=context)


class Probe:
    """The test's side of the wire: publishes inputs, records every output by topic."""

    def __init__(self, context: Context, node_under_test: Node | None = None) -> None:
        """``node_under_test`` spins in the probe's executor; without one, the nodes run in other processes."""
        self.node = rclpy.create_node("probe", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        if node_under_test is not None:
            self.executor.add_node(node_under_test)
        self.received: dict[str, list[Any]] = defaultdict(list)

    def listen(self, msg_type: type, topic: str, qos: QoSProfile | int = 10) -> list[Any]:
        self.node.create_subscription(msg_type, topic, self.received[topic].append, qos)
        return self.received[topic]

    def publisher(self, msg_type: type, topic: str) -> Any:
        return self.node.create_publisher(msg_type, topic, 10)

    def camera(self, namespace: str = "") -> Callable[[Image, CameraInfo | None], None]:
        """A function that publishes a frame with its camera_info (default: an ideal pinhole of the frame's size)."""
        image_pub = self.publisher(Image, f"{namespace}/camera/image_raw")
        info_pub = self.publisher(CameraInfo, f"{namespace}/camera/camera_info")

        def send(frame: Image, info: CameraInfo | None = None) -> None:
            info = info or camera_info_msg(frame.width, frame.height, fx=frame.width, fy=frame.width,
                                           cx=(frame.width - 1) / 2, cy=(frame.height - 1) / 2)
            info.header = frame.header
            info_pub.publish(info)
            image_pub.publish(frame)

        return send

    def spin_until(self, done: Callable[[], bool], timeout: float = 15.0, every: Callable[[], None] | None = None,
                   period: float = 0.2) -> bool:
        """Spin both nodes until ``done()``; call ``every()`` each ``period`` s (re-publish past discovery)."""
        deadline = time.monotonic() + timeout
        next_tick = 0.0
        while time.monotonic() < deadline:
            if done():
                return True
            if every is not None and time.monotonic() >= next_tick:
                every()
                next_tick = time.monotonic() + period
            self.executor.spin_once(timeout_sec=0.02)
        return done()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def image_msg(pixels: np.ndarray, encoding: str, stamp_sec: int, frame_id: str = "camera_optical",
              pad: int = 0) -> Image:
    """An Image built by hand (rows padded by ``pad`` bytes) so tests do not depend on the code under test."""
    h, w = pixels.shape[:2]
    row = pixels.reshape(h, -1).view(np.uint8)
    padded = np.zeros((h, row.shape[1] + pad), np.uint8)
    padded[:, : row.shape[1]] = row
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=padded.shape[1],
                data=array.array("B", padded.tobytes()))
    msg.header.stamp.sec = stamp_sec
    msg.header.stamp.nanosec = 123
    msg.header.frame_id = frame_id
    return msg


def camera_info_msg(width: int, height: int, fx: float, fy: float, cx: float, cy: float,
                    frame_id: str = "camera_optical") -> CameraInfo:
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.header.frame_id = frame_id
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.d = [0.0] * 5
    return info


def as_array(msg: Image, dtype: Any) -> np.ndarray:
    """Decode an unpadded output Image by hand for assertions: [H, W] or [H, W, C]."""
    values = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step).view(dtype)
    channels = values.shape[1] // msg.width
    return values.reshape(msg.height, msg.width) if channels == 1 else values.reshape(msg.height, msg.width, channels)
