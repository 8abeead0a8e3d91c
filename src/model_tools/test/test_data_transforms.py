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
    RandomScale,
    Resize,
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
    # Image colour matches the label away from block borders (bilinear blends only at borders).
    pad = np.pad(label, 2, mode="edge")
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
    pipeline = Compose([RandomScale(0.5, 2.0), RandomCrop(48, 64), RandomHorizontalFlip(0.5)])
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
    out = RandomScale(0.5, 0.5)(sample, np.random.default_rng(0))
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
