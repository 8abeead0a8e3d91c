"""Preprocessor: resize + normalisation + NCHW as the metadata says, checked against a float64 oracle."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from perception_core.errors import ImageEncodingError, ModelFileError
from perception_core.model_metadata import ModelMetadata
from perception_core.preprocess import Preprocessor


def _meta(h: int = 8, w: int = 12, **kw: object) -> ModelMetadata:
    return ModelMetadata(task="segmentation", input_name="image", input_shape=[1, 3, h, w], output_names=["logits"],
                         class_names=["a", "b"], class_colors=[[0, 0, 0], [1, 1, 1]], seg_output="logits", **kw)


def _oracle(image: np.ndarray, meta: ModelMetadata, interpolation: int | None) -> np.ndarray:
    h, w = meta.input_hw
    resized = image if interpolation is None else cv2.resize(image, (w, h), interpolation=interpolation)
    x = resized.astype(np.float64) * meta.input_scale
    x = (x - np.array(meta.mean)) / np.array(meta.std)
    return x.transpose(2, 0, 1)[None]


def test_same_size_imagenet_normalisation_matches_the_formula() -> None:
    meta = _meta(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    image = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    out = Preprocessor(meta)(image)
    assert out.shape == (1, 3, 8, 12) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, _oracle(image, meta, None), rtol=1e-5, atol=1e-5)


def test_downscale_uses_area_and_upscale_uses_linear() -> None:
    meta = _meta(h=8, w=12)
    pre = Preprocessor(meta)
    big = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    np.testing.assert_allclose(pre(big), _oracle(big, meta, cv2.INTER_AREA), atol=1e-6)
    small = np.random.default_rng(2).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    np.testing.assert_allclose(pre(small), _oracle(small, meta, cv2.INTER_LINEAR), atol=1e-6)


def test_bgr_input_is_reordered_for_an_rgb_model_and_back() -> None:
    image = np.random.default_rng(3).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    rgb_model = Preprocessor(_meta())
    want = rgb_model(image).copy()
    np.testing.assert_array_equal(rgb_model(np.ascontiguousarray(image[:, :, ::-1]), channel_order="BGR"), want)
    bgr_model = Preprocessor(_meta(color_order="BGR"))
    np.testing.assert_array_equal(bgr_model(image)[0], want[0, ::-1])


def test_output_buffer_is_reused_between_calls() -> None:
    pre = Preprocessor(_meta())
    first = pre(np.zeros((16, 24, 3), np.uint8))
    second = pre(np.full((16, 24, 3), 255, np.uint8))
    assert first is second and np.allclose(second, 1.0)


def test_bad_inputs_are_rejected_with_what_was_expected() -> None:
    pre = Preprocessor(_meta())
    with pytest.raises(ImageEncodingError, match=r"uint8 HxWx3 image, got uint8 \(8, 12\)"):
        pre(np.zeros((8, 12), np.uint8))
    with pytest.raises(ImageEncodingError, match=r"uint8 HxWx3 image, got float32"):
        pre(np.zeros((8, 12, 3), np.float32))
    with pytest.raises(ImageEncodingError, match=r"channel order 'YUV'"):
        pre(np.zeros((8, 12, 3), np.uint8), channel_order="YUV")
    with pytest.raises(ModelFileError, match=r"input layout 'NHWC' unsupported"):
        Preprocessor(_meta(input_layout="NHWC"))


def test_shrink_of_at_most_2x_per_axis_is_linear_and_integer_factors_use_area_first() -> None:
    """1280x1080 -> 640x544 (ratios 2.0 and 1.99) is one INTER_LINEAR; 1280x1080 -> 640x384 is AREA 2x then LINEAR."""
    image = np.random.default_rng(4).integers(0, 256, (108, 128, 3), dtype=np.uint8)
    seg_like = _meta(h=54 + 1, w=64)  # 108 -> 55 rows (1.96x), 128 -> 64 cols (2x)
    np.testing.assert_allclose(Preprocessor(seg_like)(image), _oracle(image, seg_like, cv2.INTER_LINEAR), atol=1e-5)
    depth_like = _meta(h=38, w=64)  # 108 -> 38 rows (2.84x): block-average by 2, then LINEAR 54 -> 38
    halved = cv2.resize(image, (64, 54), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(Preprocessor(depth_like)(image), _oracle(halved, depth_like, cv2.INTER_LINEAR),
                               atol=1e-5)


def test_resized_keeps_the_callers_channel_order_and_the_tensor_is_written_in_place() -> None:
    pre = Preprocessor(_meta(mean=[0.5, 0.5, 0.5], std=[0.25, 0.5, 1.0]))
    pre.tensor[:] = np.nan
    image = np.random.default_rng(5).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    out = pre(np.ascontiguousarray(image[:, :, ::-1]), channel_order="BGR")
    assert out is pre.tensor and not np.isnan(out).any()
    np.testing.assert_array_equal(pre.resized, cv2.resize(image[:, :, ::-1], (12, 8), interpolation=cv2.INTER_AREA))
