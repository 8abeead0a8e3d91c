"""Training augmentations that keep image, label and depth aligned (numpy HWC + cv2, before tensors).

A sample is a dict with ``image`` uint8 or float32 [H,W,3] RGB, ``label``
uint8 [H,W] (255 = ignore) and, unless the data set was told to leave it out
(segmentation training does), ``depth`` float32 [H,W] metres (0 = invalid).
Geometric transforms move all three together; labels and depth are
resampled nearest-neighbour only, so an invalid depth (0) or ignore label is
never blended into valid pixels. Photometric transforms touch the image
only. Every transform takes the sample and an ``np.random.Generator``: pass
a seeded one for reproducible augmentation.

Each random transform splits into ``draw`` (its random numbers, in a fixed
order of generator calls) and ``apply`` (the pixel work), so that
``model_tools.data.batch_augment`` can draw the very same parameters and
apply them to whole batches of tensors on the GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

IGNORE_INDEX = 255
Sample = dict[str, Any]
# Per-pixel arrays that move with the geometry, and their fill value where a crop pads.
_SPATIAL_FILL = {"image": 0, "label": IGNORE_INDEX, "depth": 0}
# ITU-R BT.601 luma weights: what cv2's RGB2GRAY uses.
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float64)


class Transform(Protocol):
    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample: ...


def _cv2() -> Any:
    import cv2

    return cv2


def _spatial_keys(sample: Sample) -> list[str]:
    return [key for key in _SPATIAL_FILL if key in sample]


def _resize_sample(sample: Sample, width: int, height: int) -> Sample:
    cv2 = _cv2()
    out = dict(sample)
    for key in _spatial_keys(sample):
        interpolation = cv2.INTER_LINEAR if key == "image" else cv2.INTER_NEAREST
        out[key] = cv2.resize(sample[key], (width, height), interpolation=interpolation)
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


class RandomScaleCrop:
    """Zoom by a factor drawn uniformly from [low, high], then take a random (height, width) window.

    Equivalent to resizing the whole sample by the factor (image bilinear,
    label and depth nearest), padding it at the bottom/right where smaller
    than the window (image 0, label ignore, depth invalid 0) and cropping, but
    computed as one ``cv2.warpAffine`` straight into the window. Only the
    output pixels are touched: a 2x zoom of a 1920x1200 RELLIS frame would
    otherwise resample 9 Mpx to keep 0.35 Mpx.

    Depth values are kept by default (the segmentation recipe's choice). ``scale_depth=True``
    divides depth by the factor instead, keeping the apparent-size cue
    consistent for metric depth (a zoom looks like moving closer).
    """

    def __init__(self, height: int, width: int, low: float = 0.5, high: float = 2.0, scale_depth: bool = False) -> None:
        self.height, self.width = height, width
        self.low, self.high, self.scale_depth = low, high, scale_depth

    def draw(self, rng: np.random.Generator, h: int, w: int) -> ScaleCropDraw:
        """The zoom factor and window for a source of h x w pixels."""
        factor = float(rng.uniform(self.low, self.high))
        scaled_h, scaled_w = max(1, round(h * factor)), max(1, round(w * factor))
        top = int(rng.integers(0, max(0, scaled_h - self.height) + 1))
        left = int(rng.integers(0, max(0, scaled_w - self.width) + 1))
        return ScaleCropDraw(factor, scaled_h, scaled_w, top, left)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = sample["label"].shape[:2]
        return self.apply(sample, self.draw(rng, h, w))

    def apply(self, sample: Sample, draw: ScaleCropDraw) -> Sample:
        cv2 = _cv2()
        h, w = sample["label"].shape[:2]
        # Output pixel (x, y) samples the source at ((x + left + 0.5) / f - 0.5, ...): pixel centres
        # aligned as cv2.resize aligns them, with the exact factor of the rounded scaled size.
        fx, fy = draw.scaled_w / w, draw.scaled_h / h
        inverse = np.array([[1 / fx, 0, (draw.left + 0.5) / fx - 0.5], [0, 1 / fy, (draw.top + 0.5) / fy - 0.5]])
        out = dict(sample)
        for key in _spatial_keys(sample):
            interpolation = cv2.INTER_LINEAR if key == "image" else cv2.INTER_NEAREST
            # Edge pixels replicate (as cv2.resize does); the padding beyond the scaled extent is set after.
            warped = cv2.warpAffine(sample[key], inverse, (self.width, self.height),
                                    flags=interpolation | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
            warped[max(0, draw.scaled_h - draw.top):] = _SPATIAL_FILL[key]
            warped[:, max(0, draw.scaled_w - draw.left):] = _SPATIAL_FILL[key]
            out[key] = warped
        if self.scale_depth and "depth" in out:
            out["depth"] = out["depth"] / np.float32(draw.factor)  # 0 stays 0
        return out


@dataclass(frozen=True)
class ScaleCropDraw:
    """One draw of :class:`RandomScaleCrop`: the factor, the rounded scaled size and the window's corner."""

    factor: float
    scaled_h: int
    scaled_w: int
    top: int
    left: int


class RandomCrop:
    """Crop to (height, width); pad first where smaller (image 0, label ignore, depth invalid 0)."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = sample["label"].shape[:2]
        pad_h, pad_w = max(0, self.height - h), max(0, self.width - w)
        out = dict(sample)
        keys = _spatial_keys(sample)
        if pad_h or pad_w:
            widths = ((0, pad_h), (0, pad_w))
            for key in keys:
                extra = ((0, 0),) * (sample[key].ndim - 2)
                out[key] = np.pad(sample[key], (*widths, *extra), constant_values=_SPATIAL_FILL[key])
            h, w = h + pad_h, w + pad_w
        top = int(rng.integers(0, h - self.height + 1))
        left = int(rng.integers(0, w - self.width + 1))
        window = (slice(top, top + self.height), slice(left, left + self.width))
        for key in keys:
            out[key] = np.ascontiguousarray(out[key][window])
        return out


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def draw(self, rng: np.random.Generator) -> bool:
        """Whether to mirror (one uniform draw either way)."""
        return bool(rng.random() < self.p)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if not self.draw(rng):
            return sample
        cv2 = _cv2()
        out = dict(sample)
        for key in _spatial_keys(sample):
            out[key] = cv2.flip(sample[key], 1)  # one pass; numpy's [:, ::-1] copy is several times slower
        return out


class ColorJitter:
    """Brightness, contrast, saturation factors in [1-x, 1+x] and a hue rotation in [-hue, hue] turns, random order.

    Image only. Each of the four is affine in RGB, so they compose into one
    3x4 colour matrix applied in a single ``cv2.transform`` pass (uint8 in,
    saturated uint8 out; float images stay in [0, 1]). That is ~10x cheaper
    than converting to float and through HSV, and the loader is the training
    bottleneck. Hue turns the colour about the grey axis (R->G->B at 1/3
    turn) rather than shifting HSV hue; greys stay grey either way.
    Contrast blends towards the mean luma of the image as jittered so far.
    """

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.15) -> None:
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One draw as its 3x7 colour map [M | B | c]: out = M @ rgb + B @ mean_rgb + c.

        Every part is affine in RGB and the mean colour moves through them
        linearly, so the contrast's blend target (the mean luma of the image
        as jittered so far) is B @ mean_rgb + c with B, c known before the
        mean is: the map can be drawn without looking at the image.
        """
        matrix, mean_gain, offset = np.eye(3), np.zeros((3, 3)), np.zeros(3)
        for op in rng.permutation(4):
            if op == 0 and self.brightness > 0:
                f = rng.uniform(1 - self.brightness, 1 + self.brightness)
                matrix, mean_gain, offset = f * matrix, f * mean_gain, f * offset
            elif op == 1 and self.contrast > 0:
                f = rng.uniform(1 - self.contrast, 1 + self.contrast)
                to_luma = np.outer(np.ones(3), _GRAY_WEIGHTS)  # rgb -> its luma in all three channels
                mean_gain = f * mean_gain + (1 - f) * to_luma @ (matrix + mean_gain)
                offset = f * offset + (1 - f) * to_luma @ offset
                matrix = f * matrix
            elif op == 2 and self.saturation > 0:
                f = rng.uniform(1 - self.saturation, 1 + self.saturation)
                blend = f * np.eye(3) + (1 - f) * np.outer(np.ones(3), _GRAY_WEIGHTS)
                matrix, mean_gain, offset = blend @ matrix, blend @ mean_gain, blend @ offset
            elif op == 3 and self.hue > 0:
                rotation = grey_axis_rotation(2 * math.pi * rng.uniform(-self.hue, self.hue))
                matrix, mean_gain, offset = rotation @ matrix, rotation @ mean_gain, rotation @ offset
        return np.hstack([matrix, mean_gain, offset[:, None]])

    def colour_matrix(self, mean_rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The 3x4 affine [M | b] (out = M @ rgb + b) for one draw; ``mean_rgb`` is the image's mean colour."""
        return affine_for_mean(self.draw(rng), mean_rgb)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        cv2 = _cv2()
        image = sample["image"]
        mean_rgb = np.asarray(cv2.mean(image)[:3], np.float64)
        colour = self.colour_matrix(mean_rgb, rng)
        out = dict(sample)
        if image.dtype == np.uint8:
            out["image"] = cv2.transform(image, colour)  # rounds and saturates to 0..255
        else:
            out["image"] = np.clip(cv2.transform(image.astype(np.float32), colour), 0.0, 1.0).astype(image.dtype)
        return out


def affine_for_mean(colour_map: np.ndarray, mean_rgb: np.ndarray) -> np.ndarray:
    """A :meth:`ColorJitter.draw` map [M | B | c] as the 3x4 [M | B @ mean + c] for an image of that mean colour."""
    return np.hstack([colour_map[:, :3], (colour_map[:, 3:6] @ mean_rgb + colour_map[:, 6])[:, None]])


def grey_axis_rotation(angle: float) -> np.ndarray:
    """3x3 rotation of RGB by ``angle`` radians about the (1,1,1) grey axis (Rodrigues)."""
    axis = np.ones(3) / math.sqrt(3.0)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return math.cos(angle) * np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * np.outer(axis, axis)


class RandomErasing:
    """With probability p, fill one random rectangle of the image with noise (image only).

    Area 2-33% of the image, aspect ratio 0.3-3.3 (log-uniform), as torchvision's default.
    """

    def __init__(self, p: float = 0.3, scale: tuple[float, float] = (0.02, 0.33), ratio: tuple[float, float] = (0.3, 3.3)) -> None:
        self.p, self.scale, self.ratio = p, scale, ratio

    def draw(self, rng: np.random.Generator, h: int, w: int) -> tuple[int, int, int, int] | None:
        """The rectangle (top, left, height, width) to erase in an h x w image, or None (no erasing).

        Up to 10 tries for a rectangle that fits, as torchvision does; the
        noise inside it is drawn after, by whoever fills it.
        """
        if rng.random() >= self.p:
            return None
        for _ in range(10):
            area = rng.uniform(*self.scale) * h * w
            aspect = math.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            eh, ew = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < eh < h and 0 < ew < w:
                return int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1)), eh, ew
        return None

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        image = sample["image"]
        rectangle = self.draw(rng, *image.shape[:2])
        if rectangle is None:
            return sample
        top, left, eh, ew = rectangle
        out = dict(sample)
        erased = image.copy()
        if image.dtype == np.uint8:
            noise = rng.integers(0, 256, size=(eh, ew, image.shape[2]), dtype=np.uint8)
        else:
            noise = rng.random((eh, ew, image.shape[2]), dtype=np.float32).astype(image.dtype)
        erased[top:top + eh, left:left + ew] = noise
        out["image"] = erased
        return out


class Resize:
    """Deterministic resize to (height, width) for validation (label and depth nearest)."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        if sample["label"].shape[:2] == (self.height, self.width):
            return sample
        return _resize_sample(sample, self.width, self.height)


def train_transforms(height: int, width: int, scale: tuple[float, float] = (0.5, 2.0), scale_depth: bool = False) -> Compose:
    """The segmentation recipe's augmentation (config/train/seg_ddrnet23s.yaml): random scale 0.5-2.0 + crop, flip, ColorJitter 0.4/0.4/0.4/0.15, RandomErasing p=0.3."""
    return Compose([
        RandomScaleCrop(height, width, *scale, scale_depth=scale_depth),
        RandomHorizontalFlip(0.5),
        ColorJitter(0.4, 0.4, 0.4, 0.15),
        RandomErasing(0.3),
    ])


def val_transforms(height: int, width: int) -> Compose:
    return Compose([Resize(height, width)])
