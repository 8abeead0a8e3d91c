"""The training augmentations as batched tensor operations on the training device.

:class:`BatchAugment` runs the random tail of a training transform
(``RandomScaleCrop``, ``RandomHorizontalFlip``, ``ColorJitter``,
``RandomErasing`` from ``model_tools.data.transforms``) on a whole batch of
uint8 frames at once: one ``grid_sample`` for every scale + crop, one
batched 3x3 colour map, masked flips and rectangles. The numbers come from
the CPU transforms' own ``draw`` methods, so for the same generator the
parameters are the same and the pixels agree within resampling rounding
(bilinear interpolation in float instead of OpenCV's 5-bit fixed point;
nearest-neighbour ties rounded to even). The erasing noise is drawn on the
device from a per-sample seed instead of from the generator. The code runs
on CPU tensors as on CUDA ones; the tests compare it with the CPU
transforms there.

Frames arrive as the frame cache stores them (``model_tools.data.frame_cache``):
uint8 [B, H, W, 3] slots, each holding a frame of ``frame_hw`` pixels in its
top-left corner, which may be a shrunk copy of a ``source_hw`` source (the
size the CPU transforms would see). Geometry is computed in source pixels
and sampled from the cached copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias

from model_tools.data.transforms import (
    IGNORE_INDEX,
    ColorJitter,
    Compose,
    RandomErasing,
    RandomHorizontalFlip,
    RandomScaleCrop,
    Resize,
)


class UnsupportedAugmentationError(ValueError):
    """The transform has a part with no batched version (the caller keeps the per-sample loader)."""


def unwrap_transform(transform: Any) -> list[Any]:
    """The flat list of transforms inside ``transform`` (through Compose and single-transform wrappers)."""
    if isinstance(transform, Compose):
        return [t for inner in transform.transforms for t in unwrap_transform(inner)]
    inner = getattr(transform, "transform", None)  # wrappers that only choose the generator
    if inner is not None and inner is not transform:
        return unwrap_transform(inner)
    return [transform]


@dataclass
class BatchDraws:
    """Per-sample parameters of one batch, as host arrays (one row per sample) for :meth:`BatchAugment.apply`."""

    crop: np.ndarray | None  # [B, 5] factor, scaled_h, scaled_w, top, left
    flips: list[np.ndarray]  # per flip op: [B] bool
    colour: list[np.ndarray]  # per jitter op: [B, 3, 7] maps [M | B | c]
    erase: np.ndarray | None  # [B, 5] applied, top, left, height, width
    noise_seeds: np.ndarray | None  # [B] int64


class BatchAugment:
    """A training transform's random part, applied to batches of tensors (see the module docstring).

    ``transforms`` is the random tail in order: at most one RandomScaleCrop,
    first; flips and colour jitter in any order; at most one RandomErasing,
    last (its noise is not drawn from the generator, so nothing may draw after it).
    """

    def __init__(self, transforms: Sequence[Any], frame_hw: tuple[int, int] | None = None) -> None:
        self.ops = list(transforms)
        for position, op in enumerate(self.ops):
            if isinstance(op, RandomScaleCrop):
                if position != 0:
                    raise UnsupportedAugmentationError("RandomScaleCrop must come first in the batched augmentation")
            elif isinstance(op, RandomErasing):
                if position != len(self.ops) - 1:
                    raise UnsupportedAugmentationError("RandomErasing must come last in the batched augmentation")
            elif not isinstance(op, (RandomHorizontalFlip, ColorJitter)):
                raise UnsupportedAugmentationError(f"{type(op).__name__} has no batched version")
        crop = self.ops[0] if self.ops and isinstance(self.ops[0], RandomScaleCrop) else None
        self.crop: RandomScaleCrop | None = crop
        self.out_hw = (crop.height, crop.width) if crop is not None else frame_hw

    @classmethod
    def split(cls, transform: Any) -> tuple[list[Resize], BatchAugment]:
        """(deterministic prefix to apply once when caching, batched random tail) of a training transform."""
        parts = unwrap_transform(transform)
        prefix: list[Resize] = []
        while parts and isinstance(parts[0], Resize):
            prefix.append(parts.pop(0))
        if any(isinstance(p, Resize) for p in parts):
            raise UnsupportedAugmentationError("a Resize after a random transform has no batched version")
        frame_hw = (prefix[-1].height, prefix[-1].width) if prefix else None
        augment = cls(parts, frame_hw)
        if augment.out_hw is None:
            raise UnsupportedAugmentationError("without RandomScaleCrop or a leading Resize the frames have no common size")
        return prefix, augment

    # -- parameters (host) --------------------------------------------------------------------------

    def draw(self, rngs: Sequence[np.random.Generator], source_hw: np.ndarray) -> BatchDraws:
        """Each sample's parameters from its own generator, in the CPU transforms' order of calls."""
        n = len(rngs)
        crop = np.zeros((n, 5)) if self.crop is not None else None
        flips = [np.zeros(n, bool) for op in self.ops if isinstance(op, RandomHorizontalFlip)]
        colour = [np.zeros((n, 3, 7)) for op in self.ops if isinstance(op, ColorJitter)]
        erasing = any(isinstance(op, RandomErasing) for op in self.ops)
        erase = np.zeros((n, 5), np.int64) if erasing else None
        seeds = np.zeros(n, np.int64) if erasing else None
        assert self.out_hw is not None
        for i, rng in enumerate(rngs):
            h, w = int(source_hw[i, 0]), int(source_hw[i, 1])
            flip_k = colour_k = 0
            for op in self.ops:
                if isinstance(op, RandomScaleCrop):
                    d = op.draw(rng, h, w)
                    crop[i] = (d.factor, d.scaled_h, d.scaled_w, d.top, d.left)  # type: ignore[index]
                    h, w = op.height, op.width
                elif isinstance(op, RandomHorizontalFlip):
                    flips[flip_k][i] = op.draw(rng)
                    flip_k += 1
                elif isinstance(op, ColorJitter):
                    colour[colour_k][i] = op.draw(rng)
                    colour_k += 1
                elif isinstance(op, RandomErasing):
                    rectangle = op.draw(rng, h, w)
                    if rectangle is not None:
                        erase[i] = (1, *rectangle)  # type: ignore[index]
                    seeds[i] = rng.integers(0, 2**62)  # type: ignore[index]
        return BatchDraws(crop, flips, colour, erase, seeds)

    # -- pixels (device) ----------------------------------------------------------------------------

    def apply(self, image: torch.Tensor, label: torch.Tensor | None, depth: torch.Tensor | None, draws: BatchDraws,
              frame_hw: np.ndarray, source_hw: np.ndarray) -> dict[str, torch.Tensor]:
        """Augment one batch on its device.

        ``image`` uint8 [B, H, W, 3], ``label`` uint8 [B, H, W], ``depth``
        float32 [B, H, W] (slots as cached); ``frame_hw`` / ``source_hw``
        [B, 2] host arrays. Returns ``image`` float32 [B, 3, h, w] in [0, 1],
        ``label`` uint8 [B, h, w] and ``depth`` float32 [B, 1, h, w] at the
        output size.
        """
        device = image.device
        img = image.permute(0, 3, 1, 2).float()
        lab = label[:, None].float() if label is not None else None
        dep = depth[:, None].float() if depth is not None else None
        flip_k = colour_k = 0
        for op in self.ops:
            if isinstance(op, RandomScaleCrop):
                assert draws.crop is not None
                img, lab, dep = self._scale_crop(op, img, lab, dep, draws.crop, frame_hw, source_hw)
            elif isinstance(op, RandomHorizontalFlip):
                mask = to_device(draws.flips[flip_k], device).view(-1, 1, 1, 1)
                flip_k += 1
                img = torch.where(mask, img.flip(-1), img)
                lab = torch.where(mask, lab.flip(-1), lab) if lab is not None else None
                dep = torch.where(mask, dep.flip(-1), dep) if dep is not None else None
            elif isinstance(op, ColorJitter):
                img = self._colour(img, draws.colour[colour_k])
                colour_k += 1
            elif isinstance(op, RandomErasing):
                assert draws.erase is not None and draws.noise_seeds is not None
                img = self._erase(img, draws.erase, draws.noise_seeds)
        out = {"image": img.div_(255.0)}
        if lab is not None:
            out["label"] = lab[:, 0].to(torch.uint8)
        if dep is not None:
            out["depth"] = dep
        return out

    def _scale_crop(self, op: RandomScaleCrop, img: torch.Tensor, lab: torch.Tensor | None, dep: torch.Tensor | None,
                    crop: np.ndarray, frame_hw: np.ndarray, source_hw: np.ndarray
                    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """RandomScaleCrop.apply for the batch: sampling positions as the CPU warp computes them."""
        device = img.device
        slot_h, slot_w = img.shape[-2:]
        # Per-sample constants on the host (float64), then one small copy: [B, 8].
        factor, scaled_h, scaled_w, top, left = (crop[:, k] for k in range(5))
        src_h, src_w = source_hw[:, 0].astype(np.float64), source_hw[:, 1].astype(np.float64)
        cache_h, cache_w = frame_hw[:, 0].astype(np.float64), frame_hw[:, 1].astype(np.float64)
        consts = np.stack([src_w / scaled_w, src_h / scaled_h, left, top, src_w, src_h, cache_w / src_w, cache_h / src_h,
                           cache_w, cache_h, scaled_w - left, scaled_h - top, factor], axis=1)
        c = to_device(consts.astype(np.float32), device)
        inv_fx, inv_fy, left_t, top_t, sw, sh, kx, ky, cw, ch, keep_w, keep_h, factor_t = (c[:, k, None] for k in range(13))
        xs = torch.arange(op.width, device=device, dtype=torch.float32)[None]
        ys = torch.arange(op.height, device=device, dtype=torch.float32)[None]
        # Source position of each output pixel centre, replicated at the frame's edges (BORDER_REPLICATE) ...
        src_x = ((xs + left_t + 0.5) * inv_fx - 0.5).clamp_(min=0.0).minimum(sw - 1)
        src_y = ((ys + top_t + 0.5) * inv_fy - 0.5).clamp_(min=0.0).minimum(sh - 1)
        # ... then in the cached copy's pixels, and as grid_sample's [-1, 1] over the slot.
        cx = ((src_x + 0.5) * kx - 0.5).clamp_(min=0.0).minimum(cw - 1)
        cy = ((src_y + 0.5) * ky - 0.5).clamp_(min=0.0).minimum(ch - 1)
        gx = (2 * cx + 1) / slot_w - 1
        gy = (2 * cy + 1) / slot_h - 1
        b = img.shape[0]
        grid = torch.stack([gx[:, None, :].expand(b, op.height, op.width), gy[:, :, None].expand(b, op.height, op.width)], -1)
        # Beyond the scaled frame the CPU version pads: image 0, label ignore, depth invalid.
        outside = (xs[:, None, :] >= keep_w[:, :, None]) | (ys[:, :, None] >= keep_h[:, :, None])
        outside = outside[:, None]
        img = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False).round_()
        img = img.masked_fill_(outside, 0.0)
        if lab is not None:
            lab = F.grid_sample(lab, grid, mode="nearest", padding_mode="border", align_corners=False)
            lab = lab.masked_fill_(outside, float(IGNORE_INDEX))
        if dep is not None:
            dep = F.grid_sample(dep, grid, mode="nearest", padding_mode="border", align_corners=False)
            dep = dep.masked_fill_(outside, 0.0)
            if op.scale_depth:
                dep = dep / factor_t[:, :, None, None]
        return img, lab, dep

    @staticmethod
    def _colour(img: torch.Tensor, maps: np.ndarray) -> torch.Tensor:
        """out = M @ rgb + B @ mean + c per sample, rounded and saturated to 0..255 as cv2.transform does."""
        m = to_device(maps.astype(np.float32), img.device)  # [B, 3, 7]
        mean = img.mean(dim=(2, 3))  # [B, 3]
        offset = torch.einsum("bij,bj->bi", m[:, :, 3:6], mean) + m[:, :, 6]
        out = torch.einsum("bij,bjhw->bihw", m[:, :, :3], img) + offset[:, :, None, None]
        return out.round_().clamp_(0.0, 255.0)

    @staticmethod
    def _erase(img: torch.Tensor, erase: np.ndarray, seeds: np.ndarray) -> torch.Tensor:
        """Fill each drawn rectangle with uniform 0..255 noise from the sample's own seed."""
        for i in np.flatnonzero(erase[:, 0]):
            _, top, left, h, w = (int(v) for v in erase[i])
            generator = _generator(img.device)
            generator.manual_seed(int(seeds[i]))
            noise = torch.randint(0, 256, (img.shape[1], h, w), generator=generator, device=img.device, dtype=torch.uint8)
            img[i, :, top:top + h, left:left + w] = noise.float()
        return img


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A small host array on ``device`` without waiting for the device.

    On CUDA it goes through pinned memory (PyTorch's caching host allocator
    keeps the block until the copy has run): a copy from pageable memory may
    wait for all queued work first, and the host must stay ahead of the GPU.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


_GENERATORS: dict[torch.device, torch.Generator] = {}


def _generator(device: torch.device) -> torch.Generator:
    """One reusable generator per device (reseeded per use)."""
    if device not in _GENERATORS:
        _GENERATORS[device] = torch.Generator(device=device)
    return _GENERATORS[device]
