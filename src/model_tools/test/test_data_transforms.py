"""Augmentations keep image, label and depth aligned, and invalid depth invalid."""

from __future__ import annotations

import numpy as np
import pytest

from model_tools.data.transforms import (
    ColorJitter,
    Compose,
    RandomCrop,
    RandomErasing,
    RandomHorizontalFlip,
    RandomScaleCrop,
    Resize,
    grey_axis_rotation,
    train_transforms,
    val_transforms,
)

PALETTE = np.array([[250, 10, 10], [10, 250, 10], [10, 10, 250], [250, 250, 10], [10, 250, 250], [250, 10, 250], [128, 128, 128]],
                   np.uint8)
INVALID_CLASS = 2  # pixels of this class have invalid depth (0)


def _pattern(h: int = 60, w: int = 80) -> dict:
    """Blocks of classes; the image colour and the depth are functions of the class (so alignment is checkable)."""
    yy, xx = np.mgrid[0:h, 0:w]
    label = ((yy // 10) * 3 + (xx // 10) * 5) % 7
    label = label.astype(np.uint8)
    depth = np.where(label == INVALID_CLASS, 0.0, 1.0 + label).astype(np.float32)
    return {"image": PALETTE[label], "label": label, "depth": depth, "source": "t", "path": "p"}


def _assert_aligned(sample: dict) -> None:
    label, depth, image = sample["label"], sample["depth"], sample["image"]
    assert label.shape == depth.shape == image.shape[:2]
    valid = label != 255
    expected = np.where(label == INVALID_CLASS, 0.0, 1.0 + label.astype(np.float32))
    assert np.array_equal(depth[valid], expected[valid])  # depth never interpolated, never misaligned
    assert (depth[~valid] == 0).all()  # padding is invalid depth
    # Image colour matches the label away from block borders (bilinear blends only at borders). Pixels
    # within 2 px of the frame edge are left out: a block border may lie just outside the crop.
    pad = np.pad(label, 2, constant_values=254)
    uniform = np.ones_like(valid)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            uniform &= pad[2 + dy : 2 + dy + label.shape[0], 2 + dx : 2 + dx + label.shape[1]] == label
    inner = uniform & valid
    assert inner.sum() >= 20
    err = np.abs(image[inner].astype(int) - PALETTE[label[inner]].astype(int)).max()
    assert err <= 2


@pytest.mark.parametrize("seed", range(6))
def test_geometric_transforms_keep_alignment(seed):
    rng = np.random.default_rng(seed)
    pipeline = Compose([RandomScaleCrop(48, 64, 0.5, 2.0), RandomHorizontalFlip(0.5)])
    out = pipeline(_pattern(), rng)
    assert out["image"].shape == (48, 64, 3)
    _assert_aligned(out)


def test_crop_larger_than_image_pads_with_ignore_and_invalid():
    out = RandomCrop(80, 100)(_pattern(60, 80), np.random.default_rng(0))
    assert out["label"].shape == (80, 100)
    assert (out["label"][60:] == 255).all() and (out["label"][:, 80:] == 255).all()
    assert (out["depth"][60:] == 0).all() and (out["image"][60:] == 0).all()
    _assert_aligned(out)


def test_downscale_never_blends_invalid_depth_into_valid():
    sample = _pattern()
    sample["depth"][::2, ::2] = 0.0  # speckled invalid pixels
    out = RandomScaleCrop(60, 80, 0.5, 0.5)(sample, np.random.default_rng(0))
    values = set(np.unique(out["depth"]).tolist())
    assert values <= set(np.unique(sample["depth"]).tolist())


def test_flip_mirrors_all_three():
    sample = _pattern()
    out = RandomHorizontalFlip(1.0)(sample, np.random.default_rng(0))
    assert np.array_equal(out["label"], sample["label"][:, ::-1])
    assert np.array_equal(out["depth"], sample["depth"][:, ::-1])
    assert np.array_equal(out["image"], sample["image"][:, ::-1])


def test_photometric_transforms_touch_only_the_image():
    sample = _pattern()
    rng = np.random.default_rng(3)
    jittered = ColorJitter(0.4, 0.4, 0.4, 0.15)(sample, rng)
    assert not np.array_equal(jittered["image"], sample["image"]) and jittered["image"].dtype == np.uint8
    erased = RandomErasing(p=1.0)(sample, rng)
    changed = np.any(erased["image"] != sample["image"], axis=2)
    assert 0.01 < changed.mean() < 0.4
    for out in (jittered, erased):
        assert out["label"] is sample["label"] and out["depth"] is sample["depth"]


def test_seed_recipe_is_reproducible_and_sized():
    pipeline = train_transforms(32, 40)
    a = pipeline(_pattern(), np.random.default_rng(11))
    b = pipeline(_pattern(), np.random.default_rng(11))
    assert all(np.array_equal(a[k], b[k]) for k in ("image", "label", "depth"))
    assert a["image"].shape == (32, 40, 3) and a["depth"].shape == (32, 40)
    # Invalid depth pixels are exactly the invalid class and the padding, after the full recipe.
    assert np.array_equal(a["depth"] == 0, (a["label"] == INVALID_CLASS) | (a["label"] == 255))
    v = val_transforms(30, 40)(_pattern(), None)
    assert v["label"].shape == (30, 40) and Resize(30, 40)(v)["label"] is v["label"]


def test_colour_jitter_is_one_affine_map_with_the_intended_parts():
    rng = np.random.default_rng(5)
    mean = np.array([100.0, 120.0, 80.0])
    assert np.allclose(ColorJitter(0, 0, 0, 0).colour_matrix(mean, rng), np.hstack([np.eye(3), np.zeros((3, 1))]))
    # A third of a turn about the grey axis cycles the primaries; any turn keeps greys grey.
    assert np.allclose(grey_axis_rotation(2 * np.pi / 3) @ [255, 0, 0], [0, 255, 0])
    assert np.allclose(grey_axis_rotation(0.7) @ [9, 9, 9], [9, 9, 9])
    brightness = ColorJitter(0.4, 0, 0, 0).colour_matrix(mean, rng)
    f = brightness[0, 0]
    assert 0.6 <= f <= 1.4 and np.allclose(brightness, np.hstack([f * np.eye(3), np.zeros((3, 1))]))
    luma = np.array([0.299, 0.587, 0.114])
    for _ in range(20):
        contrast = ColorJitter(0, 0.4, 0, 0).colour_matrix(mean, rng)
        assert luma @ (contrast[:, :3] @ mean + contrast[:, 3]) == pytest.approx(luma @ mean)  # blends about mean luma
        full = ColorJitter(0.4, 0.4, 0.4, 0.15).colour_matrix(mean, rng)
        grey = full[:, :3] @ [50.0, 50.0, 50.0] + full[:, 3]
        assert np.ptp(grey) < 1e-6  # brightness, contrast, saturation and hue all keep greys grey


def test_colour_jitter_applies_its_matrix_to_uint8_and_float_images():
    sample = _pattern()
    image = sample["image"]
    jitter = ColorJitter(0.4, 0.4, 0.4, 0.15)
    out = jitter(sample, np.random.default_rng(9))
    matrix = jitter.colour_matrix(image.reshape(-1, 3).mean(axis=0), np.random.default_rng(9))
    expected = np.clip(image.astype(np.float64) @ matrix[:, :3].T + matrix[:, 3], 0, 255)
    assert out["image"].dtype == np.uint8 and np.abs(out["image"] - expected).max() <= 0.51
    as_float = dict(sample, image=image.astype(np.float32) / 255.0)
    out_f = jitter(as_float, np.random.default_rng(9))
    assert out_f["image"].dtype == np.float32 and 0.0 <= out_f["image"].min() and out_f["image"].max() <= 1.0
    assert np.abs(out_f["image"] * 255.0 - expected).max() < 0.05


def test_geometric_transforms_work_without_depth():
    sample = _pattern()
    del sample["depth"]
    out = train_transforms(32, 40)(sample, np.random.default_rng(2))
    assert "depth" not in out and out["image"].shape == (32, 40, 3) and out["label"].shape == (32, 40)
    padded = RandomCrop(80, 100)(sample, np.random.default_rng(0))
    assert (padded["label"][60:] == 255).all() and "depth" not in padded


@pytest.mark.parametrize("seed", range(8))
def test_scale_crop_matches_resize_pad_then_crop(seed):
    """The one-warp window equals resizing the whole sample, padding and cropping (same draws)."""
    import cv2

    sample, (out_h, out_w) = _pattern(), (48, 64)
    out = RandomScaleCrop(out_h, out_w, 0.5, 2.0)(sample, np.random.default_rng(seed))
    rng = np.random.default_rng(seed)
    factor = rng.uniform(0.5, 2.0)
    sh, sw = round(60 * factor), round(80 * factor)
    top, left = int(rng.integers(0, max(0, sh - out_h) + 1)), int(rng.integers(0, max(0, sw - out_w) + 1))
    image = cv2.resize(sample["image"], (sw, sh), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(sample["label"], (sw, sh), interpolation=cv2.INTER_NEAREST)
    pad = ((0, max(0, out_h - sh)), (0, max(0, out_w - sw)))
    image = np.pad(image, (*pad, (0, 0)))[top:top + out_h, left:left + out_w]
    label = np.pad(label, pad, constant_values=255)[top:top + out_h, left:left + out_w]
    assert np.abs(out["image"].astype(int) - image.astype(int)).max() <= 1
    assert np.array_equal(out["label"] == 255, label == 255)  # the same padding
    # Nearest-neighbour: cv2.resize takes floor(x / f), the warp rounds the centre-aligned position,
    # so the two may pick the neighbouring source pixel, and only at block borders.
    assert (out["label"] == label).mean() > 0.85
