"""Batched augmentation (tensors, run here on the CPU) against the per-sample CPU transforms it replaces.

Two oracles: with the same generator both must produce the same sample
(within resampling rounding), and with independent seeds the distributions
of what they produce must agree (two-sample Kolmogorov-Smirnov tests).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model_tools.data.batch_augment import BatchAugment, UnsupportedAugmentationError
from model_tools.data.transforms import (
    ColorJitter,
    Compose,
    RandomErasing,
    RandomHorizontalFlip,
    RandomScaleCrop,
    Resize,
    train_transforms,
)
from model_tools.tasks.depth import depth_transform


def _scene(h: int, w: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Smooth colour ramps (bilinear rounding stays small) with label blocks and a depth that follows the label."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    image = np.stack([40 + 150 * xx / w, 60 + 120 * yy / h, 200 - 100 * (xx + yy) / (h + w)], -1)
    image = np.clip(image + rng.normal(0, 0.5, image.shape), 0, 255).astype(np.uint8)
    label = (((yy // 12) * 3 + (xx // 16) * 5) % 7).astype(np.uint8)
    depth = (1.0 + label).astype(np.float32)
    return {"image": image, "label": label, "depth": depth}


def _batched(augment: BatchAugment, frames: list[dict[str, np.ndarray]], seeds: list[int],
             cached: list[dict[str, np.ndarray]] | None = None) -> dict[str, torch.Tensor]:
    """Run ``augment`` on ``frames`` (or their shrunk ``cached`` copies) packed into slots as the frame cache packs them."""
    stored = cached or frames
    slot_h, slot_w = max(f["label"].shape[0] for f in stored), max(f["label"].shape[1] for f in stored)
    n = len(frames)
    image = np.zeros((n, slot_h, slot_w, 3), np.uint8)
    label = np.full((n, slot_h, slot_w), 255, np.uint8)
    depth = np.zeros((n, slot_h, slot_w), np.float32)
    for i, f in enumerate(stored):
        h, w = f["label"].shape
        image[i, :h, :w], label[i, :h, :w], depth[i, :h, :w] = f["image"], f["label"], f["depth"]
    frame_hw = np.array([f["label"].shape for f in stored])
    source_hw = np.array([f["label"].shape for f in frames])
    draws = augment.draw([np.random.default_rng(s) for s in seeds], source_hw)
    return augment.apply(torch.from_numpy(image), torch.from_numpy(label), torch.from_numpy(depth), draws,
                         frame_hw, source_hw)


def _cpu(transform: Compose, frame: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    return transform(dict(frame), np.random.default_rng(seed))


def test_same_generator_gives_the_same_crop_flip_and_colours_as_the_cpu_transforms() -> None:
    crop, flip, jitter = RandomScaleCrop(40, 56, 0.5, 2.0), RandomHorizontalFlip(0.5), ColorJitter(0.4, 0.4, 0.4, 0.15)
    cpu = Compose([crop, flip, jitter])
    frames = [_scene(60 + 4 * i, 80 - 2 * i, seed=i) for i in range(8)]  # sizes differ per frame, as across sources
    seeds = list(range(100, 108))
    out = _batched(BatchAugment([crop, flip, jitter]), frames, seeds)
    assert out["image"].shape == (8, 3, 40, 56) and out["image"].dtype == torch.float32
    for i, (frame, seed) in enumerate(zip(frames, seeds, strict=True)):
        ref = _cpu(cpu, frame, seed)
        image = (out["image"][i].permute(1, 2, 0).numpy() * 255).round()
        label = out["label"][i].numpy()
        assert np.array_equal(label == 255, ref["label"] == 255)  # the same padding: same factor and window
        assert (label == ref["label"]).mean() > 0.97  # nearest ties at block borders only
        inside = ref["label"] != 255
        error = np.abs(image - ref["image"].astype(np.float64))[inside]
        assert error.max() <= 3 and error.mean() < 0.6, (i, error.max(), error.mean())
        assert np.array_equal(out["depth"][i, 0].numpy()[label == ref["label"]], ref["depth"][label == ref["label"]])


def test_erasing_draws_the_cpu_rectangle_and_fills_it_with_uniform_noise() -> None:
    erasing = RandomErasing(1.0)
    frames = [_scene(40, 56, seed=i) for i in range(32)]
    augment = BatchAugment([erasing])
    # Erasing alone needs frames of one size (no crop): they are.
    augment.out_hw = (40, 56)
    seeds = list(range(32))
    out = _batched(augment, frames, seeds)
    noise = []
    for i, seed in enumerate(seeds):
        rectangle = erasing.draw(np.random.default_rng(seed), 40, 56)
        ref = _cpu(Compose([erasing]), frames[i], seed)
        changed_cpu = np.any(ref["image"] != frames[i]["image"], axis=-1)
        image = (out["image"][i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        changed = np.any(image != frames[i]["image"], axis=-1)
        assert rectangle is not None
        top, left, h, w = rectangle
        box = np.zeros_like(changed)
        box[top:top + h, left:left + w] = True
        assert not changed[~box].any() and not changed_cpu[~box].any()  # both touch only the drawn rectangle
        assert changed[box].mean() > 0.9
        noise.append(image[box].ravel())
    values = np.concatenate(noise)
    counts = np.bincount(values, minlength=256)
    expected = len(values) / 256
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 255 + 6 * math.sqrt(2 * 255)  # uniform bytes: chi-square within 6 sigma of its mean


def test_shrunk_cache_frames_give_the_same_geometry_in_source_pixels() -> None:
    import cv2

    crop = RandomScaleCrop(40, 56, 0.5, 2.0)
    frames = [_scene(120, 160, seed=i) for i in range(4)]
    cached = [{"image": cv2.resize(f["image"], (80, 60), interpolation=cv2.INTER_AREA),
               "label": cv2.resize(f["label"], (80, 60), interpolation=cv2.INTER_NEAREST),
               "depth": cv2.resize(f["depth"], (80, 60), interpolation=cv2.INTER_NEAREST)} for f in frames]
    seeds = [7, 8, 9, 10]
    out = _batched(BatchAugment([crop]), frames, seeds, cached)
    for i, seed in enumerate(seeds):
        ref = _cpu(Compose([crop]), frames[i], seed)
        label = out["label"][i].numpy()
        assert np.array_equal(label == 255, ref["label"] == 255)
        assert (label == ref["label"]).mean() > 0.9  # a half-resolution source moves block borders by a pixel or two
        inside = ref["label"] != 255
        error = np.abs((out["image"][i].permute(1, 2, 0).numpy() * 255) - ref["image"])[inside]
        assert np.median(error) <= 2.0  # smooth ramps: the shrunk copy samples the same places


def _stats(image: np.ndarray, label: np.ndarray) -> list[float]:
    """What the augmentation changes: colour means and spread, padding share, left/right balance of the labels."""
    valid = label != 255
    left = (label[:, : label.shape[1] // 2] == 0).mean()
    right = (label[:, label.shape[1] // 2:] == 0).mean()
    return [*image.reshape(-1, 3).mean(0), image.std(), 1 - valid.mean(), left - right]


def _ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov D."""
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def test_distributions_match_the_cpu_recipe_with_independent_seeds() -> None:
    recipe = train_transforms(32, 40)  # the recipe's: scale 0.5-2 + crop, flip, jitter, erasing
    prefix, augment = BatchAugment.split(recipe)
    assert prefix == [] and augment.out_hw == (32, 40)
    base = _scene(48, 64, seed=1)
    base["label"] = np.where(np.mgrid[0:48, 0:64][1] < 20, 0, base["label"]).astype(np.uint8)  # class 0 on the left
    n = 400
    cpu = np.array([_stats(*(lambda s: (s["image"].astype(np.float64), s["label"]))(_cpu(recipe, base, seed)))
                    for seed in range(n)])
    out = _batched(augment, [base] * n, list(range(10_000, 10_000 + n)))
    images = (out["image"].permute(0, 2, 3, 1).numpy() * 255).round()
    batched = np.array([_stats(images[i], out["label"][i].numpy()) for i in range(n)])
    critical = 1.95 * math.sqrt(2 / n)  # alpha = 0.001
    for k, name in enumerate(["mean R", "mean G", "mean B", "spread", "padding", "left-right"]):
        d = _ks_statistic(cpu[:, k], batched[:, k])
        assert d < critical, f"{name}: KS D = {d:.3f} >= {critical:.3f}"
    # The statistics do vary (the test would be empty on constant outputs).
    assert cpu[:, 4].std() > 0.05 and cpu[:, 5].std() > 0.05


def test_depth_recipe_resizes_once_then_flips_and_jitters_exactly_like_the_cpu() -> None:
    transform = depth_transform(24, 32, train=True)
    prefix, augment = BatchAugment.split(transform)
    assert [type(t) for t in prefix] == [Resize] and augment.out_hw == (24, 32)
    frames = [_scene(48, 64, seed=i) for i in range(6)]
    resized = [prefix[0](dict(f), None) for f in frames]
    seeds = list(range(6))
    out = _batched(augment, resized, seeds)
    for i, seed in enumerate(seeds):
        ref = _cpu(transform, frames[i], seed)
        image = (out["image"][i].permute(1, 2, 0).numpy() * 255).round()
        assert np.abs(image - ref["image"]).max() <= 1  # float colour map vs cv2.transform: rounding only
        assert np.array_equal(out["depth"][i, 0].numpy(), ref["depth"])
        assert np.array_equal(out["label"][i].numpy(), ref["label"])


def test_transforms_without_a_batched_version_are_refused_with_the_reason() -> None:
    class Blur:
        def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
            return sample

    with pytest.raises(UnsupportedAugmentationError, match="Blur has no batched version"):
        BatchAugment.split(Compose([RandomScaleCrop(8, 8), Blur()]))
    with pytest.raises(UnsupportedAugmentationError, match="RandomErasing must come last"):
        BatchAugment([RandomScaleCrop(8, 8), RandomErasing(), RandomHorizontalFlip()])
    with pytest.raises(UnsupportedAugmentationError, match="no common size"):
        BatchAugment.split(Compose([RandomHorizontalFlip()]))
