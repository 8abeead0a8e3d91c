"""Pipelines on real tiny ONNX models (CPU EP) and the pure helpers they share with offline evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perception_core.errors import ConfigError, DataError, ModelFileError
from perception_core.model_metadata import ModelMetadata
from perception_core.pipelines import (
    DepthPipeline,
    SegPipeline,
    camera_features,
    class_ids_to_labels,
    colorize_depth,
    colorize_labels,
    depth_to_points,
    input_focal_px,
    logits_to_labels,
    mark_depth_range,
    model_feeds,
    overlay,
    pack_points,
    probe_feeds,
    scale_intrinsics,
    unpack_xyz,
)
from perception_core.runtime.loader import load_model
from perception_core.testing.tiny_models import make_tiny_depth_model, make_tiny_seg_model


def _grey(levels: np.ndarray, n: int) -> np.ndarray:
    """uint8 RGB image whose mean intensity sits exactly on level ``levels`` of ``n``."""
    grey = np.round(levels * 255.0 / (n - 1)).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "separate": make_tiny_depth_model(root / "sep.onnx", kind="levels", outputs="separate", levels=16,
                                          max_depth=15.0, min_depth=0.5),
        "composed": make_tiny_depth_model(root / "comp.onnx", kind="levels", outputs="composed", levels=16,
                                          max_depth=15.0, min_depth=0.5),
        "logits": make_tiny_seg_model(root / "logits.onnx", output="logits"),
        "class_id": make_tiny_seg_model(root / "cid.onnx", output="class_id"),
    }


def test_separate_depth_is_composed_on_the_host_with_rep117_values_outside_the_range(models: dict[str, Path]) -> None:
    pipe = DepthPipeline(load_model(models["separate"], backend="cpu", num_threads=1))
    level = np.tile(np.arange(16), (32, 2))  # 32x32, every level present
    rgb = _grey(level, 16)
    out = pipe.infer(rgb)
    t = rgb[..., 0] / 255.0
    want = level * 1.0 + 1.0 / (1.0 + np.exp(-(t - 0.5)))  # step 1 m per level + sigmoid fractional
    want[level == 15] = np.inf  # top level + residual: at or beyond max range (REP 117 +Inf), not a wall at 15 m
    want[want < 0.5] = -np.inf  # level 0 + residual 0.38 m < min_depth 0.5 m: too close (REP 117 -Inf)
    assert out.depth.dtype == np.float32 and out.depth.shape == (32, 32)
    np.testing.assert_allclose(out.depth, want, atol=1e-4)
    assert np.isposinf(out.depth[level == 15]).all() and np.isneginf(out.depth[level == 0]).all()
    assert not np.isnan(out.depth).any() and not (out.depth == 15.0).any()
    np.testing.assert_allclose(out.integer, level / 15.0, atol=1e-6)
    assert out.fractional is not None and set(out.timings) == {"preprocess_ms", "inference_ms", "postprocess_ms"}


def test_level_interpolation_smooths_a_separate_levels_models_staircase_and_only_that(models: dict[str, Path]) -> None:
    # levels climbing one at a time up the image, four rows each: a ground plane's staircase (32x32, the input)
    level = np.repeat(np.arange(13, 5, -1), 4)[:, None] * np.ones((1, 32), int)
    rgb = _grey(level, 16)
    composed = DepthPipeline(load_model(models["separate"], backend="cpu", num_threads=1)).infer(rgb)
    smooth_pipe = DepthPipeline(load_model(models["separate"], backend="cpu", num_threads=1), interpolate_levels=True)
    smooth = smooth_pipe.infer(rgb)
    assert smooth_pipe.interpolate_levels and smooth_pipe.level_step == 1.0
    inner = (level > 6) & (level < 13)  # runs with a level on both sides
    assert np.array_equal(smooth.depth[~inner], composed.depth[~inner])
    # within a run the depth now falls row by row down the image, inside its own level
    column = smooth.depth[:, 0]
    runs = column[np.flatnonzero(inner[:, 0])].reshape(-1, 4)
    assert np.all(np.diff(runs, axis=1) < 0)
    lv = level[inner[:, 0], 0].reshape(-1, 4)
    assert np.all(runs >= lv) and np.all(runs <= lv + 1)
    np.testing.assert_allclose(smooth.integer, composed.integer)
    # a composed model has no levels to read: the option is off for it
    assert not DepthPipeline(load_model(models["composed"], backend="cpu"), interpolate_levels=True).interpolate_levels


def test_a_range_correction_applies_to_its_model_only_and_another_models_is_dropped_once(models: dict[str, Path]) -> None:
    """The pipeline checks a correction's model when it is built (the model never changes), and reports the
    reason on every frame; the camera (here the fixed model's, ratios 1 and 1) is checked per frame."""
    from perception_core.range_correction import CameraCurve, RangeCorrection

    model = load_model(models["separate"], backend="cpu", num_threads=1)
    rgb = _grey(np.tile(np.arange(3, 12), (32, 4))[:, :32], 16)
    curve = ((CameraCurve((1.0, 14.0), (1.1, 1.1)),),)  # 10 % farther everywhere
    plain = DepthPipeline(model).infer(rgb)
    assert plain.range_correction == "off"
    mine = DepthPipeline(model, range_correction=RangeCorrection((1.0,), (1.0,), curve, model.metadata.content_sha256))
    out = mine.infer(rgb)
    finite = np.isfinite(plain.depth)
    assert out.range_correction == "applied" and finite.any()
    np.testing.assert_allclose(out.depth[finite], plain.depth[finite] * 1.1, rtol=1e-5)
    other = DepthPipeline(model, range_correction=RangeCorrection((1.0,), (1.0,), curve, "0" * 64))
    assert other.range_correction is None
    assert other.range_correction_off == other.infer(rgb).range_correction == (
        f"off: measured for model 000000000000, running {model.metadata.content_sha256[:12]}")
    np.testing.assert_array_equal(other.infer(rgb).depth, plain.depth)
    elsewhere = DepthPipeline(model, range_correction=RangeCorrection((2.0,), (1.0,), curve,
                                                                      model.metadata.content_sha256))
    assert elsewhere.infer(rgb).range_correction.startswith("measured for other cameras (focal ratio 2.000")


def test_max_depth_override_rescales_separate_and_only_clips_composed(models: dict[str, Path]) -> None:
    rgb = _grey(np.full((32, 32), 8), 16)
    sep = DepthPipeline(load_model(models["separate"], backend="cpu", num_threads=1), max_depth=10.0)
    frac = 1.0 / (1.0 + np.exp(-(rgb[0, 0, 0] / 255.0 - 0.5)))
    np.testing.assert_allclose(sep.infer(rgb).depth, 8 / 15 * 10.0 + frac, atol=1e-4)
    comp = DepthPipeline(load_model(models["composed"], backend="cpu", num_threads=1), max_depth=5.0)
    out = comp.infer(rgb)
    assert np.isposinf(out.depth).all() and out.fractional is None  # 8.x m is beyond the 5 m range: +Inf
    with pytest.raises(ConfigError, match=r"depth range \[6.0, 5.0\] m is empty"):
        DepthPipeline(load_model(models["composed"], backend="cpu"), max_depth=5.0, min_depth=6.0)


def test_rep117_marks_invalid_too_near_and_beyond_range() -> None:
    depth = np.array([[-1.0, 0.0, np.nan, 0.2, 0.5, 7.5, 14.999, 15.0, 15.6, np.inf, -np.inf]], np.float32)
    mark_depth_range(depth, min_depth=0.5, max_depth=15.0)
    want = [np.nan, np.nan, np.nan, -np.inf, 0.5, 7.5, 14.999, np.inf, np.inf, np.inf, np.nan]
    np.testing.assert_array_equal(depth[0], np.asarray(want, np.float32))


def test_composed_depth_matches_separate_and_resizes_camera_images(models: dict[str, Path]) -> None:
    level = np.tile(np.arange(16), (32, 2))
    camera = np.kron(_grey(level, 16), np.ones((3, 2, 1), np.uint8))  # 96x64 camera image of the same scene
    sep = DepthPipeline(load_model(models["separate"], backend="cpu", num_threads=1)).infer(camera)
    comp = DepthPipeline(load_model(models["composed"], backend="cpu", num_threads=1)).infer(camera)
    np.testing.assert_allclose(comp.depth, sep.depth, atol=1e-4, equal_nan=True)


@pytest.mark.parametrize("kind", ["logits", "class_id"])
def test_seg_pipeline_labels_and_fractions(models: dict[str, Path], kind: str) -> None:
    pipe = SegPipeline(load_model(models[kind], backend="cpu", num_threads=1))
    classes = np.zeros((32, 32), np.int64)
    classes[:, 8:] = 3
    classes[24:, :] = 6
    out = pipe.infer(_grey(classes, 7))
    assert out.labels.dtype == np.uint8
    np.testing.assert_array_equal(out.labels, classes)
    want_counts = np.bincount(classes.ravel(), minlength=7)
    np.testing.assert_array_equal(out.pixel_counts, want_counts)
    np.testing.assert_allclose(out.class_fractions, want_counts / 1024.0)
    assert out.ignored_pixels == 0


def test_input_focal_px_follows_the_resize_per_axis() -> None:
    k = [[500.0, 0, 640], [0, 400.0, 540], [0, 0, 1]]
    # 1280x1080 -> 640x384: fx' = 500 * 0.5 = 250, fy' = 400 * 384/1080 = 142.2; one length: their geometric mean.
    assert input_focal_px(k, (1080, 1280), (384, 640)) == pytest.approx((250.0 * 400.0 * 384 / 1080) ** 0.5)
    assert input_focal_px(np.asarray(k).ravel(), (100, 200), (100, 200)) == pytest.approx((500.0 * 400.0) ** 0.5)
    p = np.zeros((3, 4))
    p[:3, :3] = k
    assert input_focal_px(p, (1080, 1280), (1080, 1280)) == pytest.approx((500.0 * 400.0) ** 0.5)
    with pytest.raises(ConfigError, match="fx, fy > 0"):
        input_focal_px(np.zeros((3, 3)), (10, 10), (10, 10))
    with pytest.raises(ConfigError, match="3x3 or 3x4"):
        input_focal_px([1.0, 2.0], (10, 10), (10, 10))


@pytest.mark.parametrize("outputs", ["separate", "composed"])
def test_camera_aware_depth_is_rescaled_by_the_cameras_focal_length_and_height(tmp_path: Path, outputs: str) -> None:
    """The tiny model's outputs are known; the camera only rescales them: f_input / 20 px * height / 2 m."""
    fixed = DepthPipeline(load_model(make_tiny_depth_model(tmp_path / "fixed.onnx", outputs=outputs, levels=16,
                                                           max_depth=15.0, min_depth=0.5), backend="cpu"))
    aware = DepthPipeline(load_model(make_tiny_depth_model(
        tmp_path / "aware.onnx", outputs=outputs, levels=16, max_depth=15.0, min_depth=0.5,
        depth_camera="canonical_focal_height", canonical_focal_px=20.0, canonical_height_m=2.0), backend="cpu"))
    level = np.tile(np.arange(16), (32, 2))  # what the 32x32 input sees
    rgb = np.repeat(np.repeat(_grey(level[:1], 16), 48, axis=0), 2, axis=1)  # the 48x64 camera image of it
    k = [[50.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]]
    scale = (50.0 * 32 / 64 * 60.0 * 32 / 48) ** 0.5 / 20.0 * 1.2 / 2.0  # = 0.949
    canonical = fixed.infer(rgb)
    out = aware.infer(rgb, camera_k=k, camera_height=1.2)
    assert out.depth_scale == pytest.approx(scale, rel=1e-6)
    t = _grey(level, 16)[..., 0] / 255.0  # the tiny model: level k of 1 m each + a sigmoid residual
    want = (level * 1.0 + 1.0 / (1.0 + np.exp(-(t - 0.5)))) * scale
    # REP 117 in metres, after the rescale: at or beyond max_depth +Inf, below min_depth -Inf.
    want[want >= 15.0] = np.inf
    want[want < 0.5] = -np.inf
    assert np.isinf(want).any() and np.isfinite(want).any()
    np.testing.assert_allclose(out.depth, want, rtol=1e-5)
    np.testing.assert_allclose(out.integer, canonical.integer)  # the heads stay the model's own
    # A fixed-camera model ignores the camera; a camera-aware one refuses to guess it.
    np.testing.assert_array_equal(fixed.infer(rgb, camera_k=k, camera_height=1.2).depth, canonical.depth)
    with pytest.raises(ConfigError, match="needs the camera's K"):
        aware.infer(rgb)
    with pytest.raises(ConfigError, match="needs the camera's height"):
        aware.infer(rgb, camera_k=k)


def test_a_camera_input_model_is_fed_the_logs_of_the_cameras_two_factors(tmp_path: Path) -> None:
    """The tiny camera-input model shifts its fractional logit by c0 + c1: the pipeline must feed
    c = [ln(f_input / 20 px), ln(height / 2 m)] and still rescale the output by their product."""
    model = load_model(make_tiny_depth_model(
        tmp_path / "cam.onnx", outputs="separate", levels=16, max_depth=15.0, depth_camera="canonical_focal_height",
        canonical_focal_px=20.0, canonical_height_m=2.0, camera_input=True), backend="cpu")
    assert model.metadata.input_names == ["image", "camera"]
    pipe = DepthPipeline(model)
    rgb = np.full((48, 64, 3), round(6 * 255 / 15), np.uint8)
    k = [[50.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]]
    focal_ratio, height_ratio = (50.0 * 32 / 64 * 60.0 * 32 / 48) ** 0.5 / 20.0, 1.6 / 2.0
    feeds = pipe.extra_feeds(camera_k=k, camera_hw=(48, 64), camera_height=1.6)
    np.testing.assert_allclose(feeds["camera"], [[np.log(focal_ratio), np.log(height_ratio)]], rtol=1e-6)
    np.testing.assert_allclose(camera_features(model.metadata, k, (48, 64), 1.6), feeds["camera"])
    out = pipe.infer(rgb, camera_k=k, camera_height=1.6)
    t = round(6 * 255 / 15) / 255.0
    logit = t - 0.5 + np.log(focal_ratio) + np.log(height_ratio)
    want = (6.0 + 1.0 / (1.0 + np.exp(-logit))) * focal_ratio * height_ratio
    np.testing.assert_allclose(out.depth, np.full((32, 32), want, np.float32), rtol=1e-5)
    # Another camera height changes what the network is told, not only the output scale.
    lower = pipe.infer(rgb, camera_k=k, camera_height=1.0)
    lower_logit = t - 0.5 + np.log(focal_ratio) + np.log(0.5)
    np.testing.assert_allclose(lower.depth, (6.0 + 1.0 / (1.0 + np.exp(-lower_logit))) * focal_ratio * 0.5, rtol=1e-5)
    with pytest.raises(ConfigError, match="needs the camera's height"):
        pipe.infer(rgb, camera_k=k)
    # Every graph input for offline tools: the camera of a frame, or a clear error naming it.
    np.testing.assert_allclose(model_feeds(model.metadata, np.zeros((1, 3, 32, 32), np.float32),
                                           {"camera_k": k, "camera_hw": (48, 64), "camera_height": 1.6})["camera"],
                               feeds["camera"])
    with pytest.raises(ConfigError, match=r"frame 7: .* takes its camera as an input"):
        model_feeds(model.metadata, np.zeros((1, 3, 32, 32), np.float32), None, "frame 7")
    probe = probe_feeds(model.metadata, np.zeros((1, 3, 32, 32), np.float32))
    assert set(probe) == {"image", "camera"}
    np.testing.assert_array_equal(probe["camera"], np.zeros((1, 2), np.float32))


@pytest.mark.reliability(case="depth model whose camera input and metadata disagree (runtime loader)",
                         outcome="ModelFileError naming the file and both input lists")
def test_the_loader_checks_the_camera_input_against_the_metadata(tmp_path: Path) -> None:
    import onnx

    from perception_core.model_metadata import read_metadata, set_model_metadata

    path = make_tiny_depth_model(tmp_path / "cam.onnx", depth_camera="canonical_focal_height", canonical_focal_px=20.0,
                                 canonical_height_m=2.0, camera_input=True)
    meta = read_metadata(path)
    meta.camera_input = ""  # metadata that forgets the graph's second input
    proto = onnx.load(str(path))
    set_model_metadata(proto, meta)
    onnx.save(proto, str(tmp_path / "forgot.onnx"))
    with pytest.raises(ModelFileError, match=r"forgot.onnx: graph inputs are \['image', 'camera'\] but the metadata says \['image'\]"):
        load_model(tmp_path / "forgot.onnx", backend="cpu")
    plain = make_tiny_depth_model(tmp_path / "plain.onnx", depth_camera="canonical_focal_height",
                                  canonical_focal_px=20.0, canonical_height_m=2.0)
    meta = read_metadata(plain)
    meta.camera_input = "camera"  # metadata that promises an input the graph lacks
    proto = onnx.load(str(plain))
    set_model_metadata(proto, meta)
    onnx.save(proto, str(tmp_path / "promised.onnx"))
    with pytest.raises(ModelFileError, match=r"promised\.onnx: graph inputs are"):
        load_model(tmp_path / "promised.onnx", backend="cpu")


def test_depth_camera_metadata_is_validated_and_survives_the_round_trip() -> None:
    base = {"task": "depth", "input_name": "rgb", "input_shape": [1, 3, 32, 32], "output_names": ["depth"],
            "max_depth": 15.0, "integer_head_kind": "levels", "levels": 16, "depth_outputs": "composed"}
    meta = ModelMetadata(**base, depth_camera="canonical_focal_height", canonical_focal_px=180.0, canonical_height_m=0.8)
    again = ModelMetadata.from_props(meta.to_props(), "m.onnx")
    assert (again.depth_camera, again.canonical_focal_px, again.canonical_height_m) == ("canonical_focal_height", 180.0, 0.8)
    assert again.needs_camera and again.needs_camera_height and again.input_names == ["rgb"]
    with_input = ModelMetadata.from_props(ModelMetadata(**{**base, "input_name": "rgb"}, depth_camera="canonical_focal_height",
                                                        canonical_focal_px=180.0, canonical_height_m=0.8,
                                                        camera_input="camera").to_props(), "m.onnx")
    assert with_input.input_names == ["rgb", "camera"]
    old = {k: v for k, v in meta.to_props().items() if "camera" not in k and "canonical" not in k}
    assert not ModelMetadata.from_props(old, "old.onnx").needs_camera  # models without the fields are fixed-camera
    for fields, message in (({"depth_camera": "pinhole"}, "depth_camera 'pinhole' is not one of"),
                            ({"depth_camera": "canonical_focal"}, "needs canonical_focal_px > 0"),
                            ({"depth_camera": "canonical_focal_height", "canonical_focal_px": 180.0},
                             "needs canonical_height_m > 0"),
                            ({"depth_camera": "canonical_focal", "canonical_focal_px": 180.0, "camera_input": "camera"},
                             "a camera input .* needs a depth model with depth_camera 'canonical_focal_height'"),
                            ({"depth_camera": "canonical_focal_height", "canonical_focal_px": 180.0,
                              "canonical_height_m": 0.8, "camera_input": "rgb"}, "camera_input and input_name are both")):
        with pytest.raises(ModelFileError, match=f"m.onnx: .*{message}"):
            ModelMetadata(**base, **fields).validate("m.onnx")


def test_pipelines_refuse_the_wrong_task(models: dict[str, Path]) -> None:
    with pytest.raises(ModelFileError, match="DepthPipeline needs a depth model"):
        DepthPipeline(load_model(models["logits"], backend="cpu"))
    with pytest.raises(ModelFileError, match="SegPipeline needs a segmentation model"):
        SegPipeline(load_model(models["separate"], backend="cpu"))


def test_logits_to_labels_equals_argmax_with_first_max_on_ties() -> None:
    logits = np.random.default_rng(0).integers(0, 4, (5, 6, 7)).astype(np.float32)  # many ties
    np.testing.assert_array_equal(logits_to_labels(logits), logits.argmax(axis=0))


def test_colorize_labels_and_overlay() -> None:
    labels = np.array([[0, 1], [255, 2]], np.uint8)
    colors = [[10, 20, 30], [40, 50, 60], [70, 80, 90]]
    rgb = colorize_labels(labels, colors)
    np.testing.assert_array_equal(rgb, [[[10, 20, 30], [40, 50, 60]], [[0, 0, 0], [70, 80, 90]]])
    base = np.full((2, 2, 3), 200, np.uint8)
    np.testing.assert_array_equal(overlay(base, rgb, 0.25)[0, 0], np.round(0.25 * np.array([10, 20, 30]) + 150))
    with pytest.raises(ConfigError, match="alpha must be in"):
        overlay(base, rgb, 1.5)


def test_colorize_depth_is_black_where_invalid_and_ordered_near_to_far() -> None:
    depth = np.array([[0.5, 5.0, 14.5, np.nan]], np.float32)
    rgb = colorize_depth(depth, 15.0)
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 3], [0, 0, 0])
    assert rgb[0, 0, 0] > rgb[0, 0, 2] and rgb[0, 2, 2] > rgb[0, 2, 0]  # near red, far blue (TURBO)


def test_scale_intrinsics_follows_the_pixel_centre_convention() -> None:
    k = np.array([[1000.0, 0, 639.5], [0, 1000.0, 539.5], [0, 0, 1]])
    half = scale_intrinsics(k, (1080, 1280), (540, 640))
    np.testing.assert_allclose(half, [[500, 0, 319.5], [0, 500, 269.5], [0, 0, 1]])
    p = np.hstack([k, [[-100.0], [0], [0]]])
    np.testing.assert_allclose(scale_intrinsics(p.ravel(), (1080, 1280), (540, 640))[0], [500, 0, 319.5, -50])
    with pytest.raises(ConfigError, match="3x3 or 3x4"):
        scale_intrinsics(np.eye(2), (1, 1), (1, 1))


def test_depth_to_points_back_projects_pixels_exactly() -> None:
    k = np.array([[100.0, 0, 2.0], [0, 50.0, 1.0], [0, 0, 1]])
    depth = np.full((3, 5), 2.0, np.float32)
    depth[0, 0] = np.nan
    points, pixels = depth_to_points(depth, k)
    assert points.shape == (14, 3) and points.dtype == np.float32
    i = np.flatnonzero((pixels[:, 0] == 2) & (pixels[:, 1] == 4))[0]
    np.testing.assert_allclose(points[i], [(4 - 2) / 100 * 2.0, (2 - 1) / 50 * 2.0, 2.0])
    strided, px = depth_to_points(depth, k, stride=2)
    assert len(strided) == 5 and set(map(tuple, px)) == {(0, 2), (0, 4), (2, 0), (2, 2), (2, 4)}


def test_pack_points_writes_pointcloud2_records() -> None:
    points = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 9.0]], np.float32)
    colours = np.array([[255, 0, 16], [1, 2, 3]], np.uint8)
    cloud = pack_points(points, colours)
    assert cloud["point_step"] == 16 and cloud["row_step"] == 32 and cloud["width"] == 2
    assert [f[:2] for f in cloud["fields"]] == [("x", 0), ("y", 4), ("z", 8), ("rgb", 12)]
    raw = cloud["data"].tobytes()
    assert np.frombuffer(raw[16:28], "<f4").tolist() == [-1.0, 0.5, 9.0]
    assert np.frombuffer(raw[12:16], "<u4")[0] == 0xFF0010
    assert pack_points(points)["point_step"] == 12


def test_unpack_xyz_reads_an_organised_cloud_and_names_what_is_wrong() -> None:
    """The inverse of pack_points for x, y, z (with an extra field in the record), as a 2 x 3 organised cloud."""
    from types import SimpleNamespace

    points = np.arange(18, dtype=np.float32).reshape(6, 3)
    packed = pack_points(points, np.zeros((6, 3), np.uint8))
    fields = [SimpleNamespace(name=n, offset=o, datatype=d, count=c) for n, o, d, c in packed["fields"]]
    cloud = SimpleNamespace(**{**packed, "fields": fields, "height": 2, "width": 3, "data": packed["data"].tobytes()})
    np.testing.assert_array_equal(unpack_xyz(cloud, "/gt/elevation"), points.reshape(2, 3, 3))
    with pytest.raises(DataError, match=r"/gt/elevation: .*z missing"):
        unpack_xyz(SimpleNamespace(**{**vars(cloud), "fields": fields[:2]}), "/gt/elevation")
    with pytest.raises(DataError, match=r"/gt/elevation: .*needs 96 bytes of data, has 50"):
        unpack_xyz(SimpleNamespace(**{**vars(cloud), "data": cloud.data[:50]}), "/gt/elevation")


def test_class_ids_round_half_to_even_and_clip_to_uint8() -> None:
    ids = np.array([[-3.0, -0.4, 2.5, 3.5, 5.0000005, 254.6, 300.0]], np.float32)
    labels = class_ids_to_labels(ids)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.clip(np.rint(ids), 0, 255).astype(np.uint8))
    assert labels.tolist() == [[0, 0, 2, 4, 5, 255, 255]]
    np.testing.assert_array_equal(class_ids_to_labels(ids.astype(np.float64)), labels)


def test_colorize_depth_bins_truncate_and_clip_like_the_formula() -> None:
    depth = np.array([[-1.0, 0.0, 0.05, 7.5, 14.99, 15.0, 20.0, np.inf, np.nan]], np.float32)
    index = np.clip(depth * np.float32(254.0 / 15.0), 0, 254)  # float32 maths, as the node's depth is
    index[np.isnan(index)] = 255
    from perception_core.pipelines import _depth_table

    np.testing.assert_array_equal(colorize_depth(depth, 15.0)[0], _depth_table()[index.astype(np.uint8)][0])
