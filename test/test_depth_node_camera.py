"""System test: the depth node gives a camera-aware depth model its camera (camera_info's K, camera_height).

Real rclpy over loopback DDS and a real tiny ONNX model whose metadata says
its output is depth for a canonical camera; the node must rescale it with the
camera it is told about, exactly as perception_core.pipelines does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from inference_node_harness import Probe, as_array, camera_info_msg, image_msg, ros_context
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from perception_core.errors import ConfigError
from perception_core.model_metadata import read_metadata
from perception_core.range_correction import CameraCurve, RangeCorrection, save_range_correction
from perception_core.testing.tiny_models import make_tiny_depth_model

pytestmark = pytest.mark.system
LEVEL = 6  # grey level of the scene: canonical depth = 6 m + the fractional residual


def _node(model: Path, **params: object):
    from depth_perception.depth_node import DepthNode

    overrides = [Parameter("model_path", value=str(model))] + [Parameter(k, value=v) for k, v in params.items()]
    return lambda context: DepthNode(context=context, parameter_overrides=overrides)


def _published_depth(model: Path, **params: object) -> np.ndarray:
    """The depth the node publishes for a grey 64x48 frame (fx 50, fy 60) and camera_height 1.2 m."""
    return _published(model, **params)[0]


def _published(model: Path, image: np.ndarray | None = None, fy: float = 60.0,
               **params: object) -> tuple[np.ndarray, dict[str, str]]:
    """(depth, the node's /diagnostics values after it) for ``image`` (default a grey 64x48 frame; fx 50, fy ``fy``,
    principal point at the centre), camera_height 1.2 m."""
    if image is None:
        image = np.full((48, 64, 3), round(LEVEL * 255 / 15), np.uint8)
    h, w = image.shape[:2]
    with ros_context() as context:
        node = _node(model, backend="cpu", num_threads=1, camera_height=1.2, **params)(context)
        probe = Probe(context, node)
        depth = probe.listen(Image, "/perception/depth/image")
        diagnostics = probe.listen(DiagnosticArray, "/diagnostics")
        image_pub = probe.publisher(Image, "/camera/image_raw")
        info_pub = probe.publisher(CameraInfo, "/camera/camera_info")

        def send() -> None:
            info_pub.publish(camera_info_msg(w, h, fx=50.0, fy=fy, cx=(w - 1) / 2, cy=(h - 1) / 2))
            image_pub.publish(image_msg(image, "rgb8", stamp_sec=9))

        def values() -> dict[str, str]:
            return {kv.key: kv.value for array in diagnostics for status in array.status for kv in status.values}

        assert probe.spin_until(lambda: depth, every=send), "no depth within 15 s"
        assert probe.spin_until(lambda: "depth_level_interpolation" in values()
                                and (values().get("depth_range_correction", "off") != "off"
                                     or "range_correction_file" not in params)), "no diagnostics after the frame"
        probe.close()
        node.destroy_node()
    return as_array(depth[0], np.float32), values()


# 64x48 -> the 32x32 input: fx' = 50 * 0.5 = 25, fy' = 60 * 2/3 = 40, so the focal factor is sqrt(25 * 40) / 20;
# the height factor is 1.2 m / 1.0 m.
FOCAL_RATIO, HEIGHT_RATIO = np.sqrt(25.0 * 40.0) / 20.0, 1.2
GREY_T = round(LEVEL * 255 / 15) / 255.0  # the tiny model's mean intensity t


def test_depth_is_rescaled_by_the_camera_info_focal_length_and_the_camera_height(tmp_path: Path) -> None:
    model = make_tiny_depth_model(tmp_path / "aware.onnx", outputs="separate", levels=16, max_depth=15.0,
                                  depth_camera="canonical_focal_height", canonical_focal_px=20.0, canonical_height_m=1.0)
    canonical = LEVEL + 1.0 / (1.0 + np.exp(-(GREY_T - 0.5)))  # the tiny model: 1 m levels + a sigmoid residual
    np.testing.assert_allclose(_published_depth(model), canonical * FOCAL_RATIO * HEIGHT_RATIO, rtol=1e-5)


def test_a_model_that_needs_the_camera_height_refuses_to_start_without_it(tmp_path: Path) -> None:
    model = make_tiny_depth_model(tmp_path / "aware.onnx", depth_camera="canonical_focal_height",
                                  canonical_focal_px=20.0, canonical_height_m=1.0)
    with ros_context() as context:
        with pytest.raises(ConfigError, match="needs the camera's height above the ground: set the camera_height"):
            _node(model, backend="cpu")(context)
        with pytest.raises(ConfigError, match="require_camera_info must stay true"):
            _node(model, backend="cpu", camera_height=1.2, require_camera_info=False)(context)


def test_the_node_feeds_a_camera_input_model_its_camera(tmp_path: Path) -> None:
    """A model that takes the camera as an input gets [ln focal ratio, ln height ratio] from camera_info and
    camera_height; the tiny model's residual moves with it, so the published depth shows it was fed."""
    model = make_tiny_depth_model(tmp_path / "camera_input.onnx", outputs="separate", levels=16, max_depth=15.0,
                                  depth_camera="canonical_focal_height", canonical_focal_px=20.0,
                                  canonical_height_m=1.0, camera_input=True)
    logit = GREY_T - 0.5 + np.log(FOCAL_RATIO) + np.log(HEIGHT_RATIO)  # the tiny model adds the camera input's sum
    want = (LEVEL + 1.0 / (1.0 + np.exp(-logit))) * FOCAL_RATIO * HEIGHT_RATIO
    np.testing.assert_allclose(_published_depth(model), want, rtol=1e-5)


def test_a_range_correction_applies_to_its_model_and_camera_only(tmp_path: Path) -> None:
    """The node multiplies the depth by the correction measured for this model and camera, and reports it;
    a correction measured for another camera (or model) is refused with the reason, the depth left as it is."""
    model = make_tiny_depth_model(tmp_path / "aware.onnx", outputs="separate", levels=16, max_depth=15.0,
                                  depth_camera="canonical_focal_height", canonical_focal_px=20.0, canonical_height_m=1.0)
    digest = read_metadata(model).content_sha256
    plain = (LEVEL + 1.0 / (1.0 + np.exp(-(GREY_T - 0.5)))) * FOCAL_RATIO * HEIGHT_RATIO

    def correction(name: str, height_ratio: float, sha: str = digest) -> str:
        path = tmp_path / name
        curve = CameraCurve((1.0, 30.0), (1.1, 1.1))
        save_range_correction(RangeCorrection((FOCAL_RATIO,), (height_ratio,), ((curve,),), sha), path)
        return str(path)

    depth, values = _published(model, range_correction_file=correction("this_camera.yaml", HEIGHT_RATIO * 1.05))
    np.testing.assert_allclose(depth, plain * 1.1, rtol=1e-5)
    assert values["depth_range_correction"] == "applied"

    depth, values = _published(model, range_correction_file=correction("higher_camera.yaml", HEIGHT_RATIO * 1.5))
    np.testing.assert_allclose(depth, plain, rtol=1e-5)
    assert values["depth_range_correction"].startswith("measured for other cameras (height ratio 1.800")

    depth, values = _published(model, range_correction_file=correction("other_model.yaml", HEIGHT_RATIO, "0" * 64))
    np.testing.assert_allclose(depth, plain, rtol=1e-5)
    assert values["depth_range_correction"] == "off: measured for model 000000000000, running " + digest[:12]

    # A folder: the file measured for the running model is taken (the shipped config names config/range_correction).
    for name in ("this_camera.yaml", "higher_camera.yaml"):
        (tmp_path / name).unlink()
    depth, values = _published(model, range_correction_file=str(tmp_path))
    np.testing.assert_allclose(depth, plain, rtol=1e-5)
    assert values["depth_range_correction"] == (f"off: none of the 1 correction file(s) in {tmp_path} was measured "
                                                f"for model {digest[:12]}")
    correction("this_camera.yaml", HEIGHT_RATIO)
    depth, values = _published(model, range_correction_file=str(tmp_path))
    np.testing.assert_allclose(depth, plain * 1.1, rtol=1e-5)
    assert values["depth_range_correction"] == "applied"


def test_an_unreadable_range_correction_file_is_a_start_up_error_naming_it(tmp_path: Path) -> None:
    model = make_tiny_depth_model(tmp_path / "aware.onnx", depth_camera="canonical_focal_height",
                                  canonical_focal_px=20.0, canonical_height_m=1.0)
    broken = tmp_path / "broken.yaml"
    broken.write_text("format: perception_core.range_correction/2\nfocal_ratios: [1, 2]\n")
    with ros_context() as context:
        with pytest.raises(ConfigError, match=f"range correction {broken}: missing field.*curves"):
            _node(model, backend="cpu", camera_height=1.2, range_correction_file=str(broken))(context)


@pytest.mark.parametrize("interpolate", [True, False])
def test_the_node_interpolates_a_levels_models_staircase_unless_told_not_to(tmp_path: Path, interpolate: bool) -> None:
    """A staircase of levels down the image (bands of 8 camera rows, 4 model rows each) comes out as a smooth
    surface inside each band with interpolate_levels (the default), and as the flat composition without it."""
    model = make_tiny_depth_model(tmp_path / "sep.onnx", outputs="separate", levels=16, max_depth=15.0)
    bands = np.repeat(np.arange(12, 4, -1), 8)  # 64 rows, levels 12 (top) .. 5 (bottom)
    image = np.repeat(np.repeat(np.round(bands * 255 / 15).astype(np.uint8)[:, None], 64, axis=1)[:, :, None], 3,
                      axis=2)
    depth, values = _published(model, image=image, fy=50.0, interpolate_levels=interpolate)
    inner_bands = depth[:, 16][4:-4].reshape(-1, 4)  # the 6 bands with a level above and below
    if interpolate:
        assert np.all(np.diff(inner_bands, axis=1) < 0)  # nearer row by row down each band
        assert values["depth_level_interpolation"] == "on"
    else:
        assert np.all(np.diff(inner_bands, axis=1) == 0)
        assert values["depth_level_interpolation"] == "off"
