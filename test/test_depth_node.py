"""System tests of depth_perception's DepthNode: real rclpy over loopback DDS, real tiny ONNX models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from inference_node_harness import LATCHED, Probe, as_array, camera_info_msg, image_msg, ros_context
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import String

from perception_core.errors import BackendError
from perception_core.pipelines import colorize_depth
from perception_core.testing.tiny_models import make_tiny_depth_model
from perception_msgs.msg import DepthHeads, InferenceStats

pytestmark = pytest.mark.system
LEVEL = 8  # grey level of the synthetic scene: integer head = 8/15, depth = 8 m + fractional


def _scene(h: int = 48, w: int = 64) -> np.ndarray:
    grey = np.full((h, w), round(LEVEL * 255 / 15), np.uint8)
    grey[:, : w // 4] = 255  # left quarter: top level 15 m + fractional: at or beyond max range -> +Inf
    return np.repeat(grey[:, :, None], 3, axis=2)


def _expected_depth(value: int) -> float:
    t = value / 255.0
    return round(t * 15) + 1.0 / (1.0 + np.exp(-(t - 0.5)))


def _node(model: Path, **params: object):
    from depth_perception.depth_node import DepthNode

    overrides = [Parameter("model_path", value=str(model))] + [Parameter(k, value=v) for k, v in params.items()]
    return lambda context: DepthNode(context=context, parameter_overrides=overrides)


def test_synthetic_frame_gives_rep118_rep117_depth_camera_info_heads_points(tmp_path: Path) -> None:
    model = make_tiny_depth_model(tmp_path / "depth.onnx", kind="levels", outputs="separate", levels=16,
                                  max_depth=15.0)
    with ros_context() as context:
        node = _node(model, backend="cpu", num_threads=1, publish_heads=True, publish_points=True,
                     point_stride=2)(context)
        probe = Probe(context, node)
        depth = probe.listen(Image, "/perception/depth/image")
        infos = probe.listen(CameraInfo, "/perception/depth/camera_info")
        colour = probe.listen(Image, "/perception/depth/colorized")
        heads = probe.listen(DepthHeads, "/perception/depth/heads")
        points = probe.listen(PointCloud2, "/perception/depth/points")
        stats = probe.listen(InferenceStats, "/perception/depth/stats")
        model_info = probe.listen(String, "/perception/depth/model_info", LATCHED)
        diagnostics = probe.listen(DiagnosticArray, "/diagnostics")
        image_pub = probe.publisher(Image, "/camera/image_raw")
        info_pub = probe.publisher(CameraInfo, "/camera/camera_info")
        frame = image_msg(_scene(), "rgb8", stamp_sec=42, pad=4)

        def send() -> None:
            info_pub.publish(camera_info_msg(64, 48, fx=50.0, fy=60.0, cx=31.5, cy=23.5))
            image_pub.publish(frame)

        assert probe.spin_until(lambda: depth and infos and colour and heads and points and stats and model_info,
                                every=send), "depth node produced no complete output set within 15 s"
        assert probe.spin_until(lambda: any(a.status[0].level == DiagnosticStatus.OK for a in diagnostics),
                                every=send, timeout=5.0), "no OK /diagnostics within 5 s of frames flowing"
        probe.close()
        node.destroy_node()

    out = depth[0]
    assert (out.encoding, out.height, out.width) == ("32FC1", 32, 32)
    assert (out.header.stamp.sec, out.header.stamp.nanosec, out.header.frame_id) == (42, 123, "camera_optical")
    values = as_array(out, np.float32)
    assert np.isposinf(values[:, :8]).all()  # REP 117: beyond range is +Inf, not a wall at max_depth
    np.testing.assert_allclose(values[:, 8:], _expected_depth(round(LEVEL * 255 / 15)), atol=1e-4)

    info = next(i for i in infos if i.header.stamp.sec == 42)  # the one published with the frame
    assert (info.width, info.height, info.header.stamp.sec, info.header.frame_id) == (32, 32, 42, "camera_optical")
    # 64x48 -> 32x32: sx = 0.5, sy = 2/3; cx' = (31.5 + 0.5) * 0.5 - 0.5, cy' = (23.5 + 0.5) * 2/3 - 0.5.
    np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3), [[25.0, 0, 15.5], [0, 40.0, 15.5], [0, 0, 1]])

    assert (colour[0].encoding, colour[0].height, colour[0].width) == ("rgb8", 32, 32)
    at_max = colorize_depth(np.full((1, 1), 1e6, np.float32), 15.0)[0, 0]  # any value past the range's top
    assert (as_array(colour[0], np.uint8)[:, :8] == at_max).all()  # +Inf gets the colour map's far end

    head = heads[0]
    assert head.header.stamp.sec == 42 and head.integer.encoding == "32FC1" and head.levels == 16
    np.testing.assert_allclose(as_array(head.integer, np.float32)[:, 8:], LEVEL / 15, atol=1e-6)

    cloud = points[0]
    assert cloud.header.frame_id == "camera_optical" and cloud.point_step == 12
    xyz = np.frombuffer(bytes(cloud.data), np.float32).reshape(-1, 3)
    assert len(xyz) == 16 * 12 and cloud.width == 16 * 12  # stride 2 over 32x32, minus the +Inf quarter
    assert cloud.is_dense and np.isfinite(xyz).all()  # is_dense says the truth: only finite points
    np.testing.assert_allclose(xyz[:, 2], _expected_depth(round(LEVEL * 255 / 15)), atol=1e-4)

    processed = next(s for s in stats if s.frames_processed >= 1)
    assert processed.backend_used == "cpu" and processed.inference_ms > 0
    status = next(a.status[0] for a in diagnostics if a.status[0].level == DiagnosticStatus.OK)
    values = {kv.key: kv.value for kv in status.values}
    assert status.name == "/depth_node: depth inference" and status.hardware_id == "cpu"
    assert values["backend_used"] == "cpu" and int(values["frames_processed"]) >= 1 and values["frames_dropped"] == "0"
    assert '"task": "depth"' in model_info[0].data and '"backend_used": "cpu"' in model_info[0].data
    assert json.loads(model_info[0].data)["content_check"].startswith("verified")


def test_bad_input_is_dropped_and_counted_then_a_good_frame_is_processed(tmp_path: Path) -> None:
    model = make_tiny_depth_model(tmp_path / "depth.onnx", outputs="composed")
    with ros_context() as context:
        node = _node(model, backend="cpu", num_threads=1)(context)
        probe = Probe(context, node)
        depth = probe.listen(Image, "/perception/depth/image")
        stats = probe.listen(InferenceStats, "/perception/depth/stats")
        image_pub = probe.publisher(Image, "/camera/image_raw")
        info_pub = probe.publisher(CameraInfo, "/camera/camera_info")

        def dropped() -> int:
            return max((s.frames_dropped for s in stats), default=0)

        # 1. A well-formed frame before any camera_info: refused, since the depth needs intrinsics.
        early = image_msg(_scene(), "rgb8", stamp_sec=1)
        assert probe.spin_until(lambda: dropped() >= 1, every=lambda: image_pub.publish(early))
        assert "no camera_info on camera/camera_info" in node.stats.last_error
        info = camera_info_msg(64, 48, fx=50.0, fy=50.0, cx=31.5, cy=23.5)
        assert probe.spin_until(lambda: node.camera_info is not None, every=lambda: info_pub.publish(info))

        # 2. Garbage of each kind, one at a time; each must bump the drop counter and name its fault.
        empty = image_msg(_scene(), "rgb8", stamp_sec=3)
        empty.data = []
        garbage = [
            (image_msg(_scene(), "bayer_rggb8", stamp_sec=2), "unsupported camera image encoding 'bayer_rggb8'"),
            (empty, "field 'data' is empty"),
            (image_msg(_scene(30, 40), "rgb8", stamp_sec=4), "is 40x30 but camera_info on camera/camera_info says"),
        ]
        for msg, reason in garbage:
            before = dropped()
            assert probe.spin_until(lambda before=before: dropped() > before,
                                    every=lambda msg=msg: image_pub.publish(msg)), f"not dropped: {reason}"
            assert reason in node.stats.last_error
        assert not depth and node.stats.processed == 0

        # 3. The node is still alive: a good (bgr8, padded) frame goes through.
        good = image_msg(_scene(), "bgr8", stamp_sec=7, pad=2)
        assert probe.spin_until(lambda: depth, every=lambda: image_pub.publish(good)), "good frame not processed"
        probe.spin_until(lambda: any(s.frames_processed >= 1 for s in stats), timeout=2.0)
        probe.close()
        node.destroy_node()
    assert depth[0].header.stamp.sec == 7
    np.testing.assert_allclose(as_array(depth[0], np.float32)[:, 8:], _expected_depth(round(LEVEL * 255 / 15)),
                               atol=1e-3)
    last = next(s for s in stats if s.frames_processed >= 1)
    assert last.frames_dropped >= 4 and last.frames_processed == 1


@pytest.mark.htp
def test_npu_backend_starts_on_htp_emulation_and_processes_a_frame(tmp_path: Path) -> None:
    model = make_tiny_depth_model(tmp_path / "depth.onnx", kind="sigmoid", outputs="separate")
    with ros_context() as context:
        node = _node(model, backend="npu", require_camera_info=False)(context)
        assert node.model.backend_used == "npu"
        probe = Probe(context, node)
        depth = probe.listen(Image, "/perception/depth/image")
        stats = probe.listen(InferenceStats, "/perception/depth/stats")
        image_pub = probe.publisher(Image, "/camera/image_raw")
        frame = image_msg(_scene(32, 32), "rgb8", stamp_sec=5)
        assert probe.spin_until(lambda: depth and stats, every=lambda: image_pub.publish(frame), timeout=20.0)
        probe.close()
        node.destroy_node()
    assert stats[0].backend_used == "npu" and stats[0].backend_requested == "npu"
    t = round(LEVEL * 255 / 15) / 255.0
    want = 15.0 / (1 + np.exp(-4 * (t - 0.5))) + 1.0 / (1 + np.exp(-(t - 0.5)))
    np.testing.assert_allclose(as_array(depth[0], np.float32)[:, 8:], want, atol=0.1)  # fp16 on HTP


@pytest.mark.htp
def test_npu_backend_on_a_model_htp_cannot_run_fails_clearly(tmp_path: Path) -> None:
    model = make_tiny_depth_model(tmp_path / "cpu_only.onnx", cpu_only_op=True)
    with ros_context() as context, pytest.raises(BackendError, match=r"cpu_only\.onnx: QNN HTP .*cannot run"):
        _node(model, backend="npu")(context)
    # The entry point turns the same failure into one line on stderr and a non-zero exit.
    done = subprocess.run(
        [sys.executable, "-m", "depth_perception.depth_node", "--ros-args", "-p", f"model_path:={model}",
         "-p", "backend:=npu"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "DepthNode: error:" in done.stderr and "cpu_only.onnx: QNN HTP (CPU fallback disabled) cannot run" \
        in done.stderr


def test_missing_model_path_is_a_clear_start_up_error() -> None:
    done = subprocess.run([sys.executable, "-m", "depth_perception.depth_node"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "parameter model_path is empty" in done.stderr


def test_depth_camera_info_is_announced_when_the_camera_info_arrives(tmp_path: Path) -> None:
    """Before any frame: a consumer that keeps the latest camera_info (the costmap) has it for the first depth."""
    model = make_tiny_depth_model(tmp_path / "depth.onnx", hw=(24, 32))
    with ros_context() as context:
        node = _node(model, backend="cpu")(context)
        probe = Probe(context, node)
        infos = probe.listen(CameraInfo, "/perception/depth/camera_info")
        info_pub = probe.publisher(CameraInfo, "/camera/camera_info")
        info = camera_info_msg(64, 48, fx=50.0, fy=50.0, cx=31.5, cy=23.5)
        info.header.stamp.sec = 5
        assert probe.spin_until(lambda: infos, every=lambda: info_pub.publish(info))
        probe.spin_until(lambda: False, every=lambda: info_pub.publish(info), timeout=0.5)
        probe.close()
        node.destroy_node()
    assert node.stats.processed == 0 and len(infos) == 1  # once per camera model, not per camera_info message
    assert (infos[0].width, infos[0].height, infos[0].header.stamp.sec) == (32, 24, 5)
    np.testing.assert_allclose(np.asarray(infos[0].k).reshape(3, 3)[0], [25.0, 0.0, 15.5])
