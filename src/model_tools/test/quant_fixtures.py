"""Tiny data sets and bags for the INT8 tests (test_quant/compile/compare/convert), written by the tests.

Frames are smooth gradients at 32x32; depth ground truth is ``t * max_depth``
and labels ``round(t * 6)`` with ``t`` the mean RGB intensity the tiny models
read (testing.tiny_models), so FP32 models score well and INT8 deltas mean
something.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perception_core.testing.tiny_models import expected_mean_intensity

MAX_DEPTH = 15.0


def gradient_frame(index: int, hw: tuple[int, int] = (32, 32)) -> np.ndarray:
    h, w = hw
    rng = np.random.default_rng(index)
    ramp = np.linspace(0.0, 1.0, w)[None, :] * np.linspace(0.3, 1.0, h)[:, None]
    gain = 0.5 + 0.5 * rng.random()
    rgb = np.stack([ramp, ramp * 0.9, np.clip(ramp * 1.1, 0, 1)], axis=-1) * 255.0 * gain
    return rgb.clip(0, 255).astype(np.uint8)


def write_dataset(root: Path, splits: tuple[str, ...] = ("train", "val"), n: int = 6,
                  hw: tuple[int, int] = (32, 32)) -> Path:
    """<root>/<split>/{rgb,depth,label}/NNNNNN.png in the synthetic-folder format (depth PNG16 = m * 256)."""
    import cv2

    from model_tools.data.synth import depth_to_png16

    for s_index, split in enumerate(splits):
        for sub in ("rgb", "depth", "label"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rgb = gradient_frame(100 * s_index + i, hw)
            t = expected_mean_intensity(rgb)
            cv2.imwrite(str(root / split / "rgb" / f"{i:06d}.png"), rgb[..., ::-1])
            cv2.imwrite(str(root / split / "depth" / f"{i:06d}.png"), depth_to_png16(t * MAX_DEPTH))
            cv2.imwrite(str(root / split / "label" / f"{i:06d}.png"), np.rint(t * 6).astype(np.uint8))
    return root


def write_image_bag(path: Path, n: int = 5, hw: tuple[int, int] = (32, 32), topic: str = "/camera/image_raw",
                    encoding: str = "bgr8") -> Path:
    """An mcap rosbag2 with ``n`` sensor_msgs/Image frames on ``topic`` (written with rosbags)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from perception_core.image_codec import array_to_image_fields

    store = get_typestore(Stores.ROS2_JAZZY)
    image_cls = store.types["sensor_msgs/msg/Image"]
    header_cls = store.types["std_msgs/msg/Header"]
    time_cls = store.types["builtin_interfaces/msg/Time"]
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=store)
        for i in range(n):
            rgb = gradient_frame(i, hw)
            pixels = rgb[..., ::-1].copy() if encoding == "bgr8" else rgb
            stamp = 1_000_000_000 + i * 100_000_000
            msg = image_cls(header=header_cls(stamp=time_cls(sec=stamp // 10**9, nanosec=stamp % 10**9),
                                              frame_id="camera"),
                            **array_to_image_fields(pixels, encoding, container="numpy"))
            writer.write(conn, stamp, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    return path
