"""Camera input of the inference nodes over DDS: camera encodings, rectification modes, inconsistent camera_info.

Real rclpy nodes and tiny ONNX models whose outputs are known functions of the
pixels: the segmentation model's class is ``round(mean_grey / 255 * 6)``, so a
decoded or undistorted image is checked pixel by pixel through the labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from inference_node_harness import Probe, as_array, camera_info_msg, image_msg, ros_context
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from perception_core.testing.tiny_models import make_tiny_depth_model, make_tiny_seg_model
from perception_msgs.msg import InferenceStats

pytestmark = pytest.mark.system
H, W = 32, 32


def _classes() -> np.ndarray:
    classes = np.zeros((H, W), np.int64)
    classes[:, W // 2:] = 3
    classes[: H // 4] = 6
    return classes


def _grey(classes: np.ndarray) -> np.ndarray:
    return np.round(classes * 255.0 / 6).astype(np.uint8)


def _yuv_message(grey: np.ndarray, encoding: str, stamp_sec: int) -> Image:
    """A grey scene in a YUV layout, packed by hand: video-range luma, neutral chroma (128)."""
    y = np.round(16 + grey.astype(float) * 219 / 255).astype(np.uint8)
    h, w = y.shape
    if encoding in ("nv12", "nv21"):
        rows = np.vstack([y, np.full((h // 2, w), 128, np.uint8)])
    else:
        rows = np.full((h, 2 * w), 128, np.uint8)
        luma = 1 if encoding in ("uyvy", "yuv422") else 0  # UYVY: luma at odd bytes; YUYV: at even bytes
        rows[:, luma::2] = y
    msg = image_msg(rows, "mono8", stamp_sec)  # rows of bytes, step = their length
    msg.encoding, msg.height, msg.width = encoding, h, w
    return msg


def _seg_node(model: Path, **params: Any):
    from seg_perception.segmentation_node import SegmentationNode

    overrides = [Parameter("model_path", value=str(model)), Parameter("backend", value="cpu"),
                 Parameter("num_threads", value=1)] + [Parameter(k, value=v) for k, v in params.items()]
    return lambda context: SegmentationNode(context=context, parameter_overrides=overrides)


@pytest.mark.parametrize("encoding", ["nv12", "nv21", "yuyv", "yuv422_yuy2", "uyvy", "yuv422", "bgra8", "mono8"])
def test_camera_encodings_decode_to_the_same_labels(tmp_path: Path, encoding: str) -> None:
    classes = _classes()
    grey = _grey(classes)
    if encoding == "bgra8":
        frame = image_msg(np.dstack([grey, grey, grey, np.full_like(grey, 255)]), encoding, stamp_sec=5)
    elif encoding == "mono8":
        frame = image_msg(grey, encoding, stamp_sec=5)
    else:
        frame = _yuv_message(grey, encoding, stamp_sec=5)
    with ros_context() as context:
        node = _seg_node(make_tiny_seg_model(tmp_path / "seg.onnx", output="class_id"))(context)
        probe = Probe(context, node)
        labels = probe.listen(Image, "/perception/segmentation/labels")
        send = probe.camera()
        assert probe.spin_until(lambda: labels, every=lambda: send(frame)), node.stats.last_error
        probe.close()
        node.destroy_node()
    np.testing.assert_array_equal(as_array(labels[0], np.uint8), classes)


@pytest.mark.reliability(case="camera image in an encoding the nodes cannot decode (bayer_rggb8)",
                         outcome="counted drop naming the encoding and listing the accepted ones")
def test_an_unsupported_camera_encoding_is_a_named_drop(tmp_path: Path) -> None:
    frame = image_msg(np.zeros((H, W), np.uint8), "mono8", stamp_sec=2)
    frame.encoding = "bayer_rggb8"
    with ros_context() as context:
        node = _seg_node(make_tiny_seg_model(tmp_path / "seg.onnx"))(context)
        probe = Probe(context, node)
        send = probe.camera()
        assert probe.spin_until(lambda: node.stats.dropped >= 1, every=lambda: send(frame))
        probe.close()
        node.destroy_node()
    assert "unsupported camera image encoding 'bayer_rggb8'" in node.stats.last_error
    assert "nv12" in node.stats.last_error and "yuv422_yuy2" in node.stats.last_error


# --------------------------------------------------------------------------- rectification

K = [40.0, 0.0, 48.0, 0.0, 40.0, 36.0, 0.0, 0.0, 1.0]  # a 96x72 camera, wide angle
D = [-0.35, 0.1, 0.0, 0.0, 0.0]
P = [36.0, 0.0, 47.0, 0.0, 0.0, 36.0, 35.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _distorted_info(width: int = 96, height: int = 72) -> CameraInfo:
    info = camera_info_msg(width, height, fx=K[0], fy=K[4], cx=K[2], cy=K[5])
    info.d = list(D)
    info.p = list(P)
    return info


def _raw_pixel_of(u: float, v: float) -> tuple[float, float]:
    """Where the lens puts the rectified pixel (u, v) of intrinsics P: the Brown-Conrady formula (the oracle)."""
    x, y = (u - P[2]) / P[0], (v - P[6]) / P[5]
    r2 = x * x + y * y
    radial = 1 + D[0] * r2 + D[1] * r2 * r2
    return K[0] * x * radial + K[2], K[4] * y * radial + K[5]


def test_node_rectification_moves_labels_to_the_rectified_pixels(tmp_path: Path) -> None:
    grey = np.zeros((72, 96), np.uint8)
    target = (18.0, 14.0)  # near a corner: the lens moves it by several pixels
    u_raw, v_raw = _raw_pixel_of(*target)
    assert np.hypot(u_raw - target[0], v_raw - target[1]) > 4
    grey[round(v_raw) - 2: round(v_raw) + 3, round(u_raw) - 2: round(u_raw) + 3] = 255  # a sky (class 6) blob
    frame = image_msg(grey, "mono8", stamp_sec=9)
    model = make_tiny_seg_model(tmp_path / "seg.onnx", output="class_id", hw=(72, 96))
    with ros_context() as context:
        node = _seg_node(model)(context)
        probe = Probe(context, node)
        labels = probe.listen(Image, "/perception/segmentation/labels")
        send = probe.camera()
        assert probe.spin_until(lambda: len(labels) >= 3, every=lambda: send(frame, _distorted_info()))
        probe.close()
        node.destroy_node()
    got = as_array(labels[-1], np.uint8)
    rows, cols = np.nonzero(got == 6)
    assert rows.size > 0
    assert abs(cols.mean() - target[0]) < 1.5 and abs(rows.mean() - target[1]) < 1.5, (cols.mean(), rows.mean())
    assert node.rectifier.maps_computed == 1  # the maps of one camera_info, reused for every frame


@pytest.mark.parametrize("mode", ["node", "upstream", "off"])
def test_published_camera_info_says_what_was_rectified(tmp_path: Path, mode: str) -> None:
    from depth_perception.depth_node import DepthNode

    model = make_tiny_depth_model(tmp_path / "depth.onnx")  # 32x32 output
    frame = image_msg(np.full((72, 96, 3), 90, np.uint8), "rgb8", stamp_sec=4)
    overrides = [Parameter("model_path", value=str(model)), Parameter("backend", value="cpu"),
                 Parameter("rectification", value=mode), Parameter("publish_points", value=True)]
    with ros_context() as context:
        node = DepthNode(context=context, parameter_overrides=overrides)
        probe = Probe(context, node)
        infos = probe.listen(CameraInfo, "/perception/depth/camera_info")
        clouds = probe.listen(PointCloud2, "/perception/depth/points")
        send = probe.camera()
        assert probe.spin_until(lambda: infos and clouds, every=lambda: send(frame, _distorted_info()))
        warning = node.camera_warning()
        probe.close()
        node.destroy_node()
    info = infos[0]
    sx, sy = 32 / 96, 32 / 72
    source = np.asarray(K if mode == "off" else P).reshape(3, -1)[:, :3]
    want = [[source[0, 0] * sx, 0, (source[0, 2] + 0.5) * sx - 0.5],
            [0, source[1, 1] * sy, (source[1, 2] + 0.5) * sy - 0.5], [0, 0, 1]]
    np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3), want, atol=1e-9)
    if mode == "off":
        assert list(info.d) == D and "rectification is off" in warning
    else:
        assert list(info.d) == [0.0] * 5 and warning is None
    assert node.rectifier.maps_computed == (1 if mode == "node" else 0)
    assert clouds[0].is_dense


BAD_INFOS = {
    "all-zero K": ({"k": [0.0] * 9}, "K is all zero"),
    "negative fx": ({"k": [-40.0, 0, 48, 0, 40, 36, 0, 0, 1]}, "focal lengths fx=-40, fy=40 must be > 0"),
    "NaN fy": ({"k": [40.0, 0, 48, 0, float("nan"), 36, 0, 0, 1]}, "K has non-finite values"),
    "principal point of another resolution": ({"k": [80.0, 0, 95.5, 0, 80, 71.5, 0, 0, 1]},
                                              "principal point (95.5, 71.5) is not in the middle half of the 96x72"),
    "size disagreeing with the image": ({"width": 192, "height": 144}, "is 96x72 but camera_info on camera/camera_info"
                                                                       " says 192x144"),
}


@pytest.mark.reliability(case="inconsistent camera_info at the depth node (zero K, non-positive or non-finite fx/fy, "
                              "principal point or size of another resolution)",
                         outcome="counted drop naming the camera_info field; no depth camera_info or cloud published")
def test_inconsistent_camera_info_is_a_named_drop_and_nothing_is_published(tmp_path: Path) -> None:
    from depth_perception.depth_node import DepthNode

    model = make_tiny_depth_model(tmp_path / "depth.onnx")
    frame = image_msg(np.full((72, 96, 3), 90, np.uint8), "rgb8", stamp_sec=4)
    overrides = [Parameter("model_path", value=str(model)), Parameter("backend", value="cpu"),
                 Parameter("publish_points", value=True)]
    with ros_context() as context:
        node = DepthNode(context=context, parameter_overrides=overrides)
        probe = Probe(context, node)
        infos = probe.listen(CameraInfo, "/perception/depth/camera_info")
        clouds = probe.listen(PointCloud2, "/perception/depth/points")
        depth = probe.listen(Image, "/perception/depth/image")
        stats = probe.listen(InferenceStats, "/perception/depth/stats")
        send = probe.camera()
        for name, (change, reason) in BAD_INFOS.items():
            bad = _distorted_info()
            for field, value in change.items():
                setattr(bad, field, value)
            before = node.stats.dropped
            assert probe.spin_until(lambda before=before: node.stats.dropped > before,
                                    every=lambda bad=bad: send(frame, bad)), f"not dropped: {name}"
            assert reason in node.stats.last_error, (name, node.stats.last_error)
        assert not infos and not clouds and not depth
        assert probe.spin_until(lambda: infos, every=lambda: send(frame, _distorted_info()))  # still alive
        probe.spin_until(lambda: any(s.frames_processed for s in stats), timeout=2.0)
        probe.close()
        node.destroy_node()
    assert all(np.asarray(i.k).any() for i in infos)
    assert max(s.frames_dropped for s in stats) >= len(BAD_INFOS)
