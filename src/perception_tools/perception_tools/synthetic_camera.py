"""A synthetic camera process: publishes camera-size frames and camera_info at a fixed rate, like a driver.

Transport checks need the frames to come from another process, as they do on
the vehicle (the camera driver is its own process, with its own DDS
participant). This one publishes ``camera/image_raw`` and
``camera/camera_info`` with sensor-data QoS, in rgb8 or NV12 (what
qrb_ros_camera publishes), stamps ``frame / rate`` seconds apart, after
waiting for the given number of image subscribers, and prints one JSON line
with what it sent. It uses whatever Fast DDS profile its environment names,
so it can play a camera driver with or without the stack's profile.

    python -m perception_tools.synthetic_camera --size 1280x1080 --encoding nv12 --rate 30 --frames 90
"""

from __future__ import annotations

import argparse
import array
import json
import sys
import time
from typing import Any

import numpy as np

ENCODINGS = ("rgb8", "nv12")


def frame_bytes(width: int, height: int, encoding: str) -> tuple[int, bytes]:
    """(step, data) of a frame: a horizontal grey ramp with a lighter lower half (rgb8, or NV12 grey)."""
    ramp = np.tile(np.linspace(30, 220, width).astype(np.uint8), (height, 1))
    ramp[height // 2:] = np.clip(ramp[height // 2:].astype(np.int16) + 30, 0, 255).astype(np.uint8)
    if encoding == "rgb8":
        return width * 3, np.repeat(ramp[:, :, None], 3, axis=2).tobytes()
    if encoding == "nv12":
        chroma = np.full((height // 2, width), 128, np.uint8)
        return width, np.vstack([ramp, chroma]).tobytes()
    raise ValueError(f"encoding {encoding!r} is not one of {ENCODINGS}")


def publish_frames(node: Any, width: int, height: int, encoding: str, rate_hz: float, frames: int,
                   wait_subscribers: int = 1, wait_s: float = 30.0, settle_s: float = 1.0) -> dict[str, Any]:
    """Publish ``frames`` frames at ``rate_hz`` through ``node``; returns what was sent and when.

    Stay alive after the last frame (``--linger``) while slow subscribers finish: here, a busy node never
    took the last frame in its queue when the camera process had already exited.
    """
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    image_pub = node.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
    info_pub = node.create_publisher(CameraInfo, "camera/camera_info", qos_profile_sensor_data)
    step, data = frame_bytes(width, height, encoding)
    image = Image(width=width, height=height, encoding=encoding, step=step, data=array.array("B", data))
    f = 0.8 * width
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5,
                      k=[f, 0.0, (width - 1) / 2, 0.0, f, (height - 1) / 2, 0.0, 0.0, 1.0],
                      r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[f, 0.0, (width - 1) / 2, 0.0, 0.0, f, (height - 1) / 2, 0.0, 0.0, 0.0, 1.0, 0.0])
    image.header.frame_id = info.header.frame_id = "camera_optical_frame"
    deadline = time.monotonic() + wait_s
    while image_pub.get_subscription_count() < wait_subscribers and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    subscribers = image_pub.get_subscription_count()
    time.sleep(settle_s)  # matched readers finish their handshake before the first frame
    start = time.perf_counter()
    late = 0
    for i in range(frames):
        stamp_ns = int(1e9 * (1000.0 + i / rate_hz))
        image.header.stamp.sec = info.header.stamp.sec = stamp_ns // 1_000_000_000
        image.header.stamp.nanosec = info.header.stamp.nanosec = stamp_ns % 1_000_000_000
        info_pub.publish(info)
        image_pub.publish(image)
        pause = start + (i + 1) / rate_hz - time.perf_counter()
        late += pause < 0
        time.sleep(max(0.0, pause))
    elapsed = time.perf_counter() - start
    return {"sent": frames, "width": width, "height": height, "encoding": encoding, "rate_hz": rate_hz,
            "achieved_rate_hz": frames / elapsed, "late_frames": late, "subscribers": subscribers,
            "frame_bytes": len(data)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1280x1080", help="WIDTHxHEIGHT (default: the vehicle camera's)")
    parser.add_argument("--encoding", choices=ENCODINGS, default="rgb8")
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second")
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--wait-subscribers", type=int, default=1, help="image subscribers to wait for (30 s)")
    parser.add_argument("--linger", type=float, default=1.0,
                        help="seconds to stay after the last frame (its report is printed first), for slow readers")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    from perception_ros.spin import interrupts_deferred

    with interrupts_deferred() as interrupted:  # a Ctrl-C while rclpy loads ends the tool, without a traceback
        import rclpy
    if interrupted.is_set():
        return 0
    rclpy.init()
    node = rclpy.create_node("synthetic_camera")
    try:
        report = publish_frames(node, width, height, args.encoding, args.rate, args.frames, args.wait_subscribers)
        print(json.dumps(report), flush=True)
        time.sleep(args.linger)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
