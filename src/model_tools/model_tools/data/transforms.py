"""Training augmentations that keep image, label and depth aligned (numpy HWC + cv2, before tensors).

A sample is a dict with ``image`` uint8 or float32 [H,W,3] RGB, ``depth``
float32 [H,W] metres (0 = invalid) and ``label`` uint8 [H,W] (255 = ignore).
Geometric transforms move all three together; labels and depth are
resampled nearest-neighbour only, so an invalid depth (0) or ignore label is
never blended into valid pixels. Photometric transforms touch the image
only. Every transform takes the sample and an ``np.random.Generator``: pass
a seeded one for reproducible augmentation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

IGNORE_INDEX = 255
Sample = dict[str, Any]


class Transform(Protocol):
    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample: ...


def _cv2() -> Any:
    import cv2

    return cv2


def _resize_sample(sample: Sample, width: int, height: int) -> Sample:
    cv2 = _cv2()
    out = dict(sample)
    out["image"] = cv2.resize(sample["image"], (width, height), interpolation=cv2.INTER_LINEAR)
    out["label"] = cv2.resize(sample["label"], (width, height), interpolation=cv2.INTER_NEAREST)
    out["depth"] = cv2.resize(sample["depth"], (width, height), interpolation=cv2.INTER_NEAREST)
    return out


class Compose:
    """Apply transforms in order with one generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = rng if rng is not None else np.random.default_rng()
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample


class RandomScale:
    """Zoom by a factor drawn uniformly from [low, high] (image bilinear; label and depth nearest).

    Depth values are kept by default (the seed recipe). ``scale_depth=True``
    divides depth by the factor instead, keeping the apparent-size cue
    consistent for metric depth (a zoom looks like moving closer).
    """

    def __init__(self, low: float = 0.5, high: float = 2.0, scale_depth: bool = False) -> None:
        self.low, self.high, self.scale_depth = low, high, scale_depth

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        factor = float(rng.uniform(self.low, self.high))
        h, w = sample["label"].shape[:2]
        out = _resize_sample(sample, max(1, round(w * factor)), max(1, round(h * factor)))
        if self.scale_depth:
            out["depth"] = out["depth"] / np.float32(factor)  # 0 stays 0
        return out


class RandomCrop:
    """Crop to (height, width); pad first where smaller (image 0, label ignore, depth invalid 0)."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = sample["label"].shape[:2]
        pad_h, pad_w = max(0, self.height - h), max(0, self.width - w)
        out = dict(sample)
        if pad_h or pad_w:
            widths = ((0, pad_h), (0, pad_w))
            out["image"] = np.pad(sample["image"], (*widths, (0, 0)), constant_values=0)
            out["label"] = np.pad(sample["label"], widths, constant_values=IGNORE_INDEX)
            out["depth"] = np.pad(sample["depth"], widths, constant_values=0)
            h, w = h + pad_h, w + pad_w
        top = int(rng.integers(0, h - self.height + 1))
        left = int(rng.integers(0, w - self.width + 1))
        window = (slice(top, top + self.height), slice(left, left + self.width))
        for key in ("image", "label", "depth"):
            out[key] = np.ascontiguousarray(out[key][window])
        return out


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        out = dict(sample)
        for key in ("image", "label", "depth"):
            out[key] = np.ascontiguousarray(sample[key][:, ::-1])
        return out


class ColorJitter:
    """Brightness, contrast, saturation factors in [1-x, 1+x] and hue shift in [-hue, hue] turns, random order.

    Image only; works in float32 [0, 255] and returns the input dtype.
    """

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.15) -> None:
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        cv2 = _cv2()
        image = sample["image"]
        dtype = image.dtype
        img = image.astype(np.float32) * (1.0 if dtype == np.uint8 else 255.0)
        for op in rng.permutation(4):
            if op == 0 and self.brightness > 0:
                img *= rng.uniform(1 - self.brightness, 1 + self.brightness)
            elif op == 1 and self.contrast > 0:
                gray_mean = float(cv2.cvtColor(np.clip(img, 0, 255), cv2.COLOR_RGB2GRAY).mean())
                f = rng.uniform(1 - self.contrast, 1 + self.contrast)
                img = img * f + gray_mean * (1 - f)
            elif op == 2 and self.saturation > 0:
                gray = cv2.cvtColor(np.clip(img, 0, 255), cv2.COLOR_RGB2GRAY)[:, :, None]
                f = rng.uniform(1 - self.saturation, 1 + self.saturation)
                img = img * f + gray * (1 - f)
            elif op == 3 and self.hue > 0:
                hsv = cv2.cvtColor(np.clip(img, 0, 255) / 255.0, cv2.COLOR_RGB2HSV)  # H in degrees
                hsv[:, :, 0] = (hsv[:, :, 0] + 360.0 * rng.uniform(-self.hue, self.hue)) % 360.0
                img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
        img = np.clip(img, 0, 255)
        out = dict(sample)
        out["image"] = (img + 0.5).astype(np.uint8) if dtype == np.uint8 else (img / 255.0).astype(dtype)
        return out


class RandomErasing:
    """With probability p, fill one random rectangle of the image with noise (image only).

    Area 2-33% of the image, aspect ratio 0.3-3.3 (log-uniform), as torchvision's default.
    """

    def __init__(self, p: float = 0.3, scale: tuple[float, float] = (0.02, 0.33), ratio: tuple[float, float] = (0.3, 3.3)) -> None:
        self.p, self.scale, self.ratio = p, scale, ratio

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        image = sample["image"]
        h, w = image.shape[:2]
        for _ in range(10):
            area = rng.uniform(*self.scale) * h * w
            aspect = math.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            eh, ew = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < eh < h and 0 < ew < w:
                top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
                out = dict(sample)
                erased = image.copy()
                if image.dtype == np.uint8:
                    noise = rng.integers(0, 256, size=(eh, ew, image.shape[2]), dtype=np.uint8)
                else:
                    noise = rng.random((eh, ew, image.shape[2]), dtype=np.float32).astype(image.dtype)
                erased[top:top + eh, left:left + ew] = noise
                out["image"] = erased
                return out
        return sample


class Resize:
    """Deterministic resize to (height, width) for validation (label and depth nearest)."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        if sample["label"].shape[:2] == (self.height, self.width):
            return sample
        return _resize_sample(sample, self.width, self.height)


def train_transforms(height: int, width: int, scale: tuple[float, float] = (0.5, 2.0), scale_depth: bool = False) -> Compose:
    """The seed recipe: RandomScale 0.5-2.0, RandomCrop, flip, ColorJitter 0.4/0.4/0.4/0.15, RandomErasing p=0.3."""
    return Compose([
        RandomScale(*scale, scale_depth=scale_depth),
        RandomCrop(height, width),
        RandomHorizontalFlip(0.5),
        ColorJitter(0.4, 0.4, 0.4, 0.15),
        RandomErasing(0.3),
    ])


def val_transforms(height: int, width: int) -> Compose:
    return Compose([Resize(height, width)])
