"""System tests of seg_perception's SegmentationNode: real rclpy over loopback DDS, real tiny ONNX models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from inference_node_harness import LATCHED, Probe, as_array, image_msg, ros_context
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import String

from perception_core.testing.tiny_models import DEFAULT_CLASS_COLORS, DEFAULT_CLASS_NAMES, make_tiny_seg_model
from perception_msgs.msg import InferenceStats, SegmentationSummary

pytestmark = pytest.mark.system


def _scene(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB image whose grey level sits on class centres (tiny model: class = round(mean/255 * 6)) + its classes."""
    classes = np.zeros((h, w), np.int64)
    classes[:, w // 2:] = 3
    classes[: h // 4] = 6
    grey = np.round(classes * 255.0 / 6).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2), classes


def _node(model: Path, **params: object):
    from seg_perception.segmentation_node import SegmentationNode

    overrides = [Parameter("model_path", value=str(model))] + [Parameter(k, value=v) for k, v in params.items()]
    return lambda context: SegmentationNode(context=context, parameter_overrides=overrides)


@pytest.mark.parametrize("output", ["logits", "class_id"])
def test_synthetic_frame_gives_labels_overlay_and_summary(tmp_path: Path, output: str) -> None:
    model = make_tiny_seg_model(tmp_path / "seg.onnx", output=output)
    rgb, classes = _scene(32, 32)
    with ros_context() as context:
        node = _node(model, backend="cpu", num_threads=1, alpha=0.25)(context)
        probe = Probe(context, node)
        labels = probe.listen(Image, "/perception/segmentation/labels")
        colour = probe.listen(Image, "/perception/segmentation/colorized")
        summary = probe.listen(SegmentationSummary, "/perception/segmentation/summary")
        stats = probe.listen(InferenceStats, "/perception/segmentation/stats")
        info = probe.listen(String, "/perception/segmentation/model_info", LATCHED)
        send = probe.camera()
        frame = image_msg(rgb, "rgb8", stamp_sec=11, frame_id="cam_front", pad=3)
        assert probe.spin_until(lambda: labels and colour and summary and stats and info,
                                every=lambda: send(frame))
        probe.close()
        node.destroy_node()

    out = labels[0]
    assert (out.encoding, out.height, out.width) == ("mono8", 32, 32)
    assert (out.header.stamp.sec, out.header.stamp.nanosec, out.header.frame_id) == (11, 123, "cam_front")
    np.testing.assert_array_equal(as_array(out, np.uint8), classes)

    blended = as_array(colour[0], np.uint8)
    assert colour[0].encoding == "rgb8" and colour[0].header.frame_id == "cam_front"
    want = 0.25 * np.asarray(DEFAULT_CLASS_COLORS)[classes] + 0.75 * rgb
    assert np.abs(blended.astype(float) - want).max() <= 1.0

    s = summary[0]
    assert s.header.stamp.sec == 11 and (s.height, s.width) == (32, 32) and s.ontology_version == "tiny-test"
    assert list(s.class_names) == DEFAULT_CLASS_NAMES and list(s.class_ids) == list(range(7))
    counts = np.bincount(classes.ravel(), minlength=7)
    assert list(s.pixel_counts) == counts.tolist() and s.ignored_pixels == 0
    np.testing.assert_allclose(s.fractions, counts / counts.sum(), rtol=1e-6)
    processed = next(s for s in stats if s.frames_processed >= 1)
    assert processed.backend_used == "cpu" and processed.node_name == "segmentation_node"
    assert '"class_names": ["smooth_ground"' in info[0].data


def test_labels_resized_back_to_the_camera_with_nearest(tmp_path: Path) -> None:
    model = make_tiny_seg_model(tmp_path / "seg.onnx", output="class_id")
    rgb, classes = _scene(64, 96)
    with ros_context() as context:
        node = _node(model, backend="cpu", num_threads=1, resize_to_camera=True)(context)
        probe = Probe(context, node)
        labels = probe.listen(Image, "/perception/segmentation/labels")
        colour = probe.listen(Image, "/perception/segmentation/colorized")
        send = probe.camera()
        frame = image_msg(np.ascontiguousarray(rgb[:, :, ::-1]), "bgr8", stamp_sec=3)
        assert probe.spin_until(lambda: labels and colour, every=lambda: send(frame))
        probe.close()
        node.destroy_node()
    assert (labels[0].height, labels[0].width, colour[0].height, colour[0].width) == (64, 96, 64, 96)
    got = as_array(labels[0], np.uint8)
    assert set(np.unique(got)) <= {0, 3, 6}  # nearest: no in-between class ids
    assert (got == classes).mean() > 0.95  # only boundary rows/cols may shift by the 32-px model grid


def test_bad_input_is_dropped_and_counted_then_a_good_frame_is_processed(tmp_path: Path) -> None:
    model = make_tiny_seg_model(tmp_path / "seg.onnx")
    rgb, classes = _scene(32, 32)
    with ros_context() as context:
        node = _node(model, backend="cpu", num_threads=1)(context)
        probe = Probe(context, node)
        labels = probe.listen(Image, "/perception/segmentation/labels")
        stats = probe.listen(InferenceStats, "/perception/segmentation/stats")
        send = probe.camera()
        short = image_msg(rgb, "rgb8", stamp_sec=1)
        short.data = short.data[:100]
        depth_like = image_msg(np.ones((32, 32), np.float32), "32FC1", stamp_sec=2)
        for msg, reason in [(short, "field 'data' has 100 bytes"),
                            (depth_like, "unsupported camera image encoding '32FC1'")]:
            before = node.stats.dropped
            assert probe.spin_until(lambda before=before: node.stats.dropped > before,
                                    every=lambda msg=msg: send(msg)), f"not dropped: {reason}"
            assert reason in node.stats.last_error
        good = image_msg(np.dstack([rgb[:, :, 0], rgb[:, :, 0], rgb[:, :, 0], rgb[:, :, 0]]), "rgba8", stamp_sec=9)
        assert probe.spin_until(lambda: labels, every=lambda: send(good))
        probe.spin_until(lambda: any(s.frames_processed for s in stats), timeout=2.0)
        probe.close()
        node.destroy_node()
    assert labels[0].header.stamp.sec == 9
    np.testing.assert_array_equal(as_array(labels[0], np.uint8), classes)
    last = next(s for s in stats if s.frames_processed >= 1)
    assert last.frames_dropped >= 2


@pytest.mark.htp
def test_npu_backend_starts_on_htp_emulation_and_processes_a_frame(tmp_path: Path) -> None:
    model = make_tiny_seg_model(tmp_path / "seg.onnx", output="class_id")
    rgb, classes = _scene(32, 32)
    with ros_context() as context:
        node = _node(model, backend="npu")(context)
        probe = Probe(context, node)
        labels = probe.listen(Image, "/perception/segmentation/labels")
        stats = probe.listen(InferenceStats, "/perception/segmentation/stats")
        send = probe.camera()
        frame = image_msg(rgb, "rgb8", stamp_sec=4)
        assert probe.spin_until(lambda: labels and stats, every=lambda: send(frame), timeout=20.0)
        probe.close()
        node.destroy_node()
    assert stats[0].backend_used == "npu" and stats[0].frames_processed == 1
    np.testing.assert_array_equal(as_array(labels[0], np.uint8), classes)


def test_depth_model_given_to_the_segmentation_node_is_refused_at_start_up(tmp_path: Path) -> None:
    from perception_core.testing.tiny_models import make_tiny_depth_model

    model = make_tiny_depth_model(tmp_path / "depth.onnx")
    done = subprocess.run([sys.executable, "-m", "seg_perception.segmentation_node", "--ros-args", "-p",
                           f"model_path:={model}", "-p", "backend:=cpu"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "depth.onnx: model task is 'depth', but this consumer needs a 'segmentation' model" in done.stderr
