"""The depth task for the shared engine: dual-head model, losses, data, metrics.

Loss (each scale scored at its own resolution against a nearest-downsampled
target, averaged over ``loss.scales`` scales, valid pixels only = finite
GT > 0; GT beyond max_depth is clipped to it):

- integer: ``sigmoid`` kind -> L1(integer, floor(d/1 m)/max_depth);
  ``levels`` kind -> cross-entropy against the floor level index.
- fractional: L1 of the residual in units of one integer step
  (so the same weight fits both kinds; for ``sigmoid`` the step is 1 m).
- depth (consistency): L1 in metres of the composed depth against GT; for
  ``levels`` the integer part is the softmax expectation (differentiable).

Weights ``loss.w_integer`` / ``w_fractional`` / ``w_depth`` default to
1.0 / 10.0 / 0.5. ``loss.class_weights`` ({ontology class name: weight},
others 1) weights each pixel by its label in all three terms, so that the
few pixels the costmap places as obstacles are not outvoted by the ground
(frames without labels weigh 1 everywhere). ``loss.edge_weight`` (1: off)
multiplies in a weight for the pixels at a depth discontinuity of the ground
truth (:func:`depth_edge_weight`: outlines, brinks of drops). ``loss.relief_weight``
(1: off) multiplies in a weight for the ground pixels whose true point lies
more than ``loss.relief_band_m`` above or below the vehicle's ground plane
(:func:`relief_weight_map`: hills, ditches, the ground past a drop-off, where
the costmap reads steps, slopes and drops); it needs each frame's camera
(:class:`FrameCameras`). ``loss.range_weight_power`` (0: off) multiplies in
``(true depth / loss.range_weight_ref_m) ** power``, clipped to
``[1 / range_weight_max, range_weight_max]`` (:func:`range_weight_map`): the
costmap scores cells, and the far ground and obstacles that fill most of its
cells come in few rows, which a per-pixel mean outvotes with the near ground.
``loss.w_gradient`` (0: off) adds the log-depth
gradient-matching term (:func:`log_gradient_loss`): the error of neighbouring
pixels' depth differences, the relief's shape.

A camera-aware model (``model.camera`` ``canonical_focal`` or
``canonical_focal_height``) learns depth for a canonical camera: each
frame's ground truth is divided by ``focal_px / model.canonical_focal_px``
(``focal_px``: the frame camera's focal length at the model input) and, for
``canonical_focal_height``, by ``camera_height_m / model.canonical_height_m``
(the camera's height above the vehicle's ground plane); :class:`FrameCameras`
adds both item keys. Evaluation multiplies the prediction by the same factor.

Distillation (``distill.teacher``) adds an output-level loss
(and optionally a decoder-feature loss) against a frozen FP32 teacher, and can
fake-quantise the student's activations to 8 bits (quantisation-aware).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - torch convention
from torch import nn
from torch.utils.data import Dataset

from model_tools.data.datasets import to_model_image
from model_tools.models.depth_net import (
    NUM_SCALES,
    DepthModelConfig,
    DualHeadDepthNet,
    build_depth_net,
    normalize,
)
from model_tools.training.config import TrainConfig, dataclass_from_dict
from perception_core.depth_codec import decompose_depth, depth_to_level
from perception_core.errors import ConfigError

# ---- config sections ---------------------------------------------------------------------------


@dataclass
class DepthDataConfig:
    """``data:`` section: the sources (``model_tools.data.sources``: synthetic folders, KITTI depth, or a mix).

    ``root`` is shorthand for one synthetic folder; a non-empty ``sources`` list takes its place.
    Every source is resized whole-frame to the model input (``depth_transform``).
    """

    sources: list[dict[str, Any]] = field(default_factory=list)
    root: str = ""
    train_split: str = "train"
    val_split: str = "val"
    augment: bool = True
    max_val_samples: int = 0  # 0 = all; otherwise evenly spaced over the validation set

    def source_list(self) -> list[dict[str, Any]]:
        """``sources``, or the synthetic folder ``root`` as a one-source list."""
        if self.sources:
            return list(self.sources)
        return [{"format": "synthetic", "root": self.root}] if self.root else []


@dataclass
class DepthLossConfig:
    w_integer: float = 1.0
    w_fractional: float = 10.0
    w_depth: float = 0.5
    scales: int = NUM_SCALES  # how many scales carry loss (1..4)
    class_weights: dict[str, float] = field(default_factory=dict)  # per-pixel weight by label (ontology name)
    edge_weight: float = 1.0  # weight of the pixels at a depth discontinuity (1: off); see depth_edge_weight
    edge_jump: float = 0.15  # relative depth step between neighbouring GT pixels that makes a discontinuity
    edge_radius_px: int = 2  # pixels on either side of the step that take edge_weight
    relief_weight: float = 1.0  # weight of the ground pixels off the vehicle's ground plane (1: off)
    relief_band_m: float = 0.3  # how far off the plane (metres, along base z) a ground point must lie to count
    w_gradient: float = 0.0  # weight of the log-depth gradient-matching term (0: off); see log_gradient_loss
    range_weight_power: float = 0.0  # > 0: pixel weight (true depth / range_weight_ref_m) ** power (0: off)
    range_weight_ref_m: float = 4.0  # depth (metres) whose pixels weigh 1 under range_weight_power
    range_weight_max: float = 8.0  # the range weight is clipped to [1 / max, max]


@dataclass
class DistillConfig:
    teacher: str = ""  # checkpoint of the teacher (full checkpoint, or state dict + teacher_config)
    teacher_config: str = ""  # YAML training config of the teacher when ``teacher`` is a plain state dict
    w_ground_truth: float = 1.0
    w_output: float = 1.0
    w_feature: float = 0.0
    temperature: float = 1.0  # levels kind: softmax temperature of the KL term
    fake_quant_bits: int = 0  # > 0: fake-quantise student activations/outputs (e.g. 8)


def parse_depth_sections(config: TrainConfig, source: str = "config") -> tuple[DepthModelConfig, DepthDataConfig, DepthLossConfig, DistillConfig]:
    model = dataclass_from_dict(DepthModelConfig, config.model, f"{source}: model")
    model.validate(source)
    data = dataclass_from_dict(DepthDataConfig, config.data, f"{source}: data")
    loss = dataclass_from_dict(DepthLossConfig, config.loss, f"{source}: loss")
    if not 1 <= loss.scales <= NUM_SCALES:
        raise ConfigError(f"{source}: loss.scales = {loss.scales} must be in 1..{NUM_SCALES}")
    if not loss.edge_weight > 0 or not loss.edge_jump > 0 or loss.edge_radius_px < 0:
        raise ConfigError(f"{source}: loss.edge_weight ({loss.edge_weight}) and loss.edge_jump ({loss.edge_jump}) "
                          f"must be > 0 and loss.edge_radius_px ({loss.edge_radius_px}) >= 0")
    if not loss.relief_weight > 0 or not loss.relief_band_m > 0:
        raise ConfigError(f"{source}: loss.relief_weight ({loss.relief_weight}) and loss.relief_band_m "
                          f"({loss.relief_band_m}) must be > 0")
    if not loss.w_gradient >= 0:
        raise ConfigError(f"{source}: loss.w_gradient ({loss.w_gradient}) must be >= 0")
    if not loss.range_weight_power >= 0 or not loss.range_weight_ref_m > 0 or not loss.range_weight_max >= 1:
        raise ConfigError(f"{source}: loss.range_weight_power ({loss.range_weight_power}) must be >= 0, "
                          f"loss.range_weight_ref_m ({loss.range_weight_ref_m}) > 0 and loss.range_weight_max "
                          f"({loss.range_weight_max}) >= 1")
    if loss.relief_weight != 1.0 and model.camera == "fixed":
        raise ConfigError(f"{source}: loss.relief_weight needs each frame's camera (model.camera canonical_focal or "
                          "canonical_focal_height, synthetic data)")
    distill = dataclass_from_dict(DistillConfig, config.distill, f"{source}: distill")
    return model, data, loss, distill


# ---- losses ------------------------------------------------------------------------------------


def soft_integer(integer_out: torch.Tensor, kind: str, levels: int) -> torch.Tensor:
    """Differentiable integer value in [0,1] (levels: expectation of the softmax level)."""
    if kind == "sigmoid":
        return integer_out.float()
    probs = torch.softmax(integer_out.float(), dim=1)
    ks = torch.arange(levels, device=integer_out.device, dtype=probs.dtype).view(1, -1, 1, 1)
    return (probs * ks).sum(dim=1, keepdim=True) / float(levels - 1)


class _LevelsCrossEntropyAndExpectation(torch.autograd.Function):
    """Per pixel of [B, L, h, w] logits: cross-entropy against a level index, and the softmax expectation of the level.

    The two terms the ``levels`` loss needs from the logits, from one fp32
    log-softmax over the levels laid out last (channels_last logits are
    already so: no transposing copy), with a hand-written backward,
    ``p - onehot(t)`` and ``p * (k - E)``, over the saved probabilities. The
    autograd chain of ``cross_entropy`` + ``softmax`` + product + sum it
    replaces made and read back about ten full-resolution fp32 tensors of
    256 levels per scale, the bulk of a depth training step (docs/training.md).
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits [B, L, h, w]; target [B, h, w] level indices in [0, L). Returns (ce, expectation), each [B, h, w]."""
        log_p = torch.log_softmax(logits.movedim(1, -1), dim=-1, dtype=torch.float32)  # [B, h, w, L]
        index = target.unsqueeze(-1)
        ce = -log_p.gather(-1, index).squeeze(-1)
        probs = log_p.exp_()
        ks = torch.arange(probs.shape[-1], device=probs.device, dtype=probs.dtype)
        expectation = probs @ ks
        ctx.save_for_backward(probs, index, expectation)
        ctx.logits_dtype = logits.dtype
        return ce, expectation

    @staticmethod
    def backward(ctx: Any, grad_ce: torch.Tensor | None, grad_e: torch.Tensor | None) -> tuple[torch.Tensor, None]:
        probs, index, expectation = ctx.saved_tensors
        grad_ce = torch.zeros_like(expectation) if grad_ce is None else grad_ce
        grad_e = torch.zeros_like(expectation) if grad_e is None else grad_e
        ks = torch.arange(probs.shape[-1], device=probs.device, dtype=probs.dtype)
        # d ce / dz_k = p_k - [k == t];  d E / dz_k = p_k (k - E)
        coef = torch.addcmul((grad_ce - grad_e * expectation).unsqueeze(-1), grad_e.unsqueeze(-1), ks)
        grad = probs.mul_(coef)  # the saved probabilities are not needed again
        grad.scatter_add_(-1, index, -grad_ce.unsqueeze(-1))
        return grad.to(ctx.logits_dtype).movedim(-1, 1), None


def levels_ce_and_expectation(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy of the level ``target``, softmax expectation of the level index), per pixel, [B, h, w] each.

    On CUDA two Triton kernels (``tasks.levels_loss_kernels``: one read of
    the logits forward, one read and one write backward); elsewhere, or
    without Triton, :class:`_LevelsCrossEntropyAndExpectation`. Equal to ``F.cross_entropy(logits.float(), target, reduction="none")`` and
    ``(softmax(logits.float(), 1) * k).sum(1)`` (k = 0..L-1) and their
    gradients, up to float rounding; ``target`` must be in [0, L) everywhere
    (mask invalid pixels in the caller).
    """
    kernels = _levels_kernels() if logits.is_cuda else None
    function = kernels.LevelsCrossEntropyAndExpectation if kernels is not None else _LevelsCrossEntropyAndExpectation
    ce, expectation = function.apply(logits, target)
    return ce, expectation


@functools.cache
def _levels_kernels() -> Any:
    """The Triton kernels of the levels loss (``tasks.levels_loss_kernels``), or None where Triton is missing."""
    try:
        from model_tools.tasks import levels_loss_kernels
    except ImportError as err:
        warnings.warn(f"depth loss: Triton is not available ({err}); the levels loss runs as PyTorch ops "
                      "(same values, several times the GPU time)", stacklevel=2)
        return None
    return levels_loss_kernels


def label_weight_table(class_weights: dict[str, float], ontology: Any = None) -> torch.Tensor | None:
    """float [256]: the loss weight of each label id (ignore and unnamed ids 1), or None without class weights."""
    if not class_weights:
        return None
    from model_tools.losses import class_weights_by_name
    from perception_core.ontology import load_ontology

    names = (ontology or load_ontology()).names
    table = torch.ones(256, dtype=torch.float32)
    table[: len(names)] = class_weights_by_name(names, class_weights)
    return table


def per_item(batch: dict[str, Any], key: str, device: torch.device) -> torch.Tensor:
    """A per-item scalar of the batch (``FrameCameras``' keys) as float32 [B,1,1,1] on ``device``."""
    return torch.as_tensor(batch[key], dtype=torch.float32).to(device).view(-1, 1, 1, 1)


# FrameCameras' per-frame keys that place a pixel's true point relative to the vehicle's ground plane.
RELIEF_KEYS = ("camera_fx", "camera_fy", "camera_cx", "camera_cy", "camera_up_x", "camera_up_y", "camera_up_z")


def relief_weight_map(batch: dict[str, Any], surface_ids: torch.Tensor, weight: float, band_m: float) -> torch.Tensor:
    """[B,1,H,W] loss weight: ``weight`` on the ground pixels whose true point lies more than ``band_m`` off the
    vehicle's ground plane, else 1.

    The height of a pixel's point above the plane is ``camera_height_m + z * (up . ((u - cx) / fx, (v - cy) / fy,
    1))``, with ``up`` the base frame's z axis in the optical frame (row 2 of the optical-to-base rotation) and K at
    the batch's size (:class:`FrameCameras`). A horizontal flip mirrors the camera: its roll changes sign, which
    turns ``up_x`` and moves ``cx`` to ``W - 1 - cx``; the batch does not say which items were flipped, so each
    item takes whichever of the two cameras puts more of its ground pixels on the plane (the right one puts the
    level ground there; with no roll and a centred principal point the two agree).
    """
    depth = batch["depth"].float()
    if depth.dim() == 3:
        depth = depth[:, None]
    h, w = depth.shape[-2:]
    device = depth.device

    fx, fy, cx, cy, ux, uy, uz = (per_item(batch, key, device) for key in RELIEF_KEYS)
    mount = per_item(batch, "camera_height_m", device)
    label = batch["label"].to(device).long()
    if label.dim() == 3:
        label = label[:, None]
    ground = surface_ids.to(device)[label] & torch.isfinite(depth) & (depth > 0)
    us = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, 1, w)
    vs = torch.arange(h, device=device, dtype=torch.float32).view(1, 1, h, 1)
    row = uy * (vs - cy) / fy + uz
    z = torch.where(ground, depth, torch.zeros_like(depth))
    height = mount + z * (ux * (us - cx) / fx + row)
    height_mirrored = mount + z * (-ux * (us - (w - 1 - cx)) / fx + row)
    on_plane = ((height.abs() <= band_m) & ground).sum(dim=(1, 2, 3), keepdim=True)
    on_plane_mirrored = ((height_mirrored.abs() <= band_m) & ground).sum(dim=(1, 2, 3), keepdim=True)
    height = torch.where(on_plane_mirrored > on_plane, height_mirrored, height)
    relief = ground & (height.abs() > band_m)
    return 1.0 + (weight - 1.0) * relief.float()


def range_weight_map(depth: torch.Tensor, power: float, ref_m: float, max_weight: float) -> torch.Tensor:
    """[B,1,H,W] loss weight ``(depth / ref_m) ** power`` clipped to ``[1 / max_weight, max_weight]``; 1 where
    ``depth`` (metres, the frame's true depth) is invalid.

    With power 2 a pixel weighs about what it covers of a vertical surface (z^2 / (fx fy)), so the few rows of the
    far ground and of far obstacles, where the costmap loses, are not outvoted by the near ground's many rows.
    """
    depth = depth.float()
    valid = torch.isfinite(depth) & (depth > 0)
    ratio = torch.where(valid, depth, torch.full_like(depth, ref_m)) / ref_m
    return ratio.pow(power).clamp(1.0 / max_weight, max_weight)


def depth_edge_weight(depth: torch.Tensor, weight: float, jump: float, radius_px: int) -> torch.Tensor:
    """[B,1,H,W] loss weight: ``weight`` within ``radius_px`` of a depth discontinuity of ``depth``, else 1.

    A discontinuity is a pair of valid neighbouring pixels (row or column) whose depths differ by more
    than the factor ``1 + jump``: an obstacle's outline, or the brink of a ditch or a drop-off with the
    lower ground beyond. A network smooths the depth across such a step, and the costmap then sees no
    brink and a blurred outline, while the pixels of the step are few in the mean. Pixels next to an
    invalid one (sky, no return) are not edges. The ratio makes it scale-free: metric and canonical
    depth give the same mask.
    """
    depth = depth.float()
    valid = torch.isfinite(depth) & (depth > 0)
    log_depth = torch.where(valid, depth, torch.ones_like(depth)).log()
    threshold = math.log1p(jump)
    edge = torch.zeros_like(valid)
    across = (valid[..., :, 1:] & valid[..., :, :-1]) & ((log_depth[..., :, 1:] - log_depth[..., :, :-1]).abs() > threshold)
    edge[..., :, 1:] |= across
    edge[..., :, :-1] |= across
    down = (valid[..., 1:, :] & valid[..., :-1, :]) & ((log_depth[..., 1:, :] - log_depth[..., :-1, :]).abs() > threshold)
    edge[..., 1:, :] |= down
    edge[..., :-1, :] |= down
    near = edge.float()
    if radius_px > 0:
        near = F.max_pool2d(near, 2 * radius_px + 1, stride=1, padding=radius_px)
    return 1.0 + (weight - 1.0) * near


def log_gradient_loss(depth: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, in_range: torch.Tensor,
                      min_depth: float) -> torch.Tensor:
    """Weighted mean of |d(log depth - log target)| between row and column neighbours (0 without any pair).

    The error of a neighbouring pair's depth difference, the local shape of the surface: the rise of a slope, the
    edge of a step, the ground's climb from row to row that a staircase of integer levels flattens. The per-pixel
    terms score each pixel's depth on its own, so a depth that is right on average and wrong in its relief costs
    them little. In log depth the term is blind to a global scale and weighs a far pair's error like a near one's.
    A pair counts where both pixels are valid and inside the model's range (``in_range``: the target is clipped at
    max_depth, whose flat plateau is no surface); its weight is the smaller of the two pixels' ``weight``.
    """
    residual = depth.float().clamp(min=min_depth).log() - target.clamp(min=min_depth).log()
    pair_weight = torch.where(in_range, weight, torch.zeros_like(weight))
    total = residual.new_zeros(())
    count = residual.new_zeros(())
    for dim in (-1, -2):
        n = residual.shape[dim]
        w = torch.minimum(pair_weight.narrow(dim, 1, n - 1), pair_weight.narrow(dim, 0, n - 1))
        diff = (residual.narrow(dim, 1, n - 1) - residual.narrow(dim, 0, n - 1)).abs()
        total = total + (diff * w).sum()
        count = count + w.sum()
    return total / count.clamp(min=1e-6)


def depth_loss(
    out: dict[tuple[str, int], torch.Tensor], gt: torch.Tensor, model_cfg: DepthModelConfig, loss_cfg: DepthLossConfig,
    pixel_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Supervised dual-head loss; returns (total, parts averaged over scales).

    Each scale is scored at its own resolution against a nearest-downsampled
    target (invalid stays invalid). Upsampling four scales of 256-level logits
    to full resolution instead cost ~6x the network's own compute on an H100.
    ``pixel_weight`` [B,1,H,W] (None: 1) weighs each pixel; each term is the
    weighted mean over valid pixels.
    """
    gt = gt.float()
    step = model_cfg.step
    parts = {"integer": gt.new_zeros(()), "fractional": gt.new_zeros(()), "depth": gt.new_zeros(())}
    if loss_cfg.w_gradient > 0:
        parts["gradient"] = gt.new_zeros(())
    for s in range(loss_cfg.scales):
        int_out = out[("integer", s)]
        frac = out[("fractional", s)].float()
        size = (int_out.shape[-2], int_out.shape[-1])
        same = tuple(gt.shape[-2:]) == size
        gt_s = gt if same else F.interpolate(gt, size=size, mode="nearest")
        valid = torch.isfinite(gt_s) & (gt_s > 0)
        safe = torch.where(valid, gt_s, torch.zeros_like(gt_s)).clamp(max=model_cfg.max_depth)
        int_t, frac_t = decompose_depth(safe, model_cfg.max_depth, model_cfg.kind, model_cfg.levels)
        if pixel_weight is not None:
            weight_s = pixel_weight if same else F.interpolate(pixel_weight, size=size, mode="nearest")
            valid = valid * weight_s  # from here on the pixel's weight, 0 where invalid
        n_valid = valid.sum().clamp(min=1)
        if model_cfg.kind == "levels":
            # Invalid pixels get level 0 and weight 0: the same sums as cross_entropy's ignore_index.
            target = depth_to_level(safe, model_cfg.max_depth, "levels", model_cfg.levels).long()[:, 0]
            ce, expectation = levels_ce_and_expectation(int_out, target)
            l_int = (ce * valid[:, 0]).sum() / n_valid
            soft = (expectation / float(model_cfg.levels - 1)).unsqueeze(1)
        else:
            l_int = ((int_out.float() - int_t).abs() * valid).sum() / n_valid
            soft = soft_integer(int_out, model_cfg.kind, model_cfg.levels)
        l_frac = ((frac - frac_t).abs() * valid).sum() / n_valid / step
        depth = soft * model_cfg.max_depth + frac
        l_depth = ((depth - safe).abs() * valid).sum() / n_valid
        parts["integer"] = parts["integer"] + l_int / loss_cfg.scales
        parts["fractional"] = parts["fractional"] + l_frac / loss_cfg.scales
        parts["depth"] = parts["depth"] + l_depth / loss_cfg.scales
        if loss_cfg.w_gradient > 0:
            in_range = gt_s < model_cfg.max_depth
            l_grad = log_gradient_loss(depth, safe, valid.float(), in_range, model_cfg.min_depth)
            parts["gradient"] = parts["gradient"] + l_grad / loss_cfg.scales
    total = loss_cfg.w_integer * parts["integer"] + loss_cfg.w_fractional * parts["fractional"] + loss_cfg.w_depth * parts["depth"]
    if loss_cfg.w_gradient > 0:
        total = total + loss_cfg.w_gradient * parts["gradient"]
    return total, {k: v.detach() for k, v in parts.items()}


def distill_loss(
    student: dict[tuple[str, int], torch.Tensor],
    teacher: dict[tuple[str, int], torch.Tensor],
    model_cfg: DepthModelConfig,
    distill_cfg: DistillConfig,
    scales: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Output-level (and optional feature-level) loss of a student against a teacher, over all pixels."""
    step = model_cfg.step
    l_out = student[("fractional", 0)].new_zeros((), dtype=torch.float32)
    for s in range(scales):
        s_int, t_int = student[("integer", s)].float(), teacher[("integer", s)].float()
        if model_cfg.kind == "levels":
            temp = distill_cfg.temperature
            l_int = F.kl_div(F.log_softmax(s_int / temp, 1), F.log_softmax(t_int / temp, 1), log_target=True,
                             reduction="none").sum(1).mean() * temp**2
        else:
            l_int = (s_int - t_int).abs().mean()
        l_frac = (student[("fractional", s)].float() - teacher[("fractional", s)].float()).abs().mean() / step
        l_out = l_out + (l_int + l_frac) / scales
    parts = {"distill_output": l_out.detach()}
    total = distill_cfg.w_output * l_out
    if distill_cfg.w_feature > 0:
        l_feat = l_out.new_zeros(())
        keys = [k for k in student if k[0] == "feature"]
        for key in keys:
            if student[key].shape != teacher[key].shape:
                raise ConfigError(
                    f"distill.w_feature > 0 needs matching decoder features; {key} is {tuple(student[key].shape)} "
                    f"in the student but {tuple(teacher[key].shape)} in the teacher"
                )
            l_feat = l_feat + F.mse_loss(student[key].float(), teacher[key].float()) / len(keys)
        parts["distill_feature"] = l_feat.detach()
        total = total + distill_cfg.w_feature * l_feat
    return total, parts


# ---- evaluation --------------------------------------------------------------------------------


def camera_ratios(batch: dict[str, Any], model_cfg: DepthModelConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-item focal and height factors [B,1,1,1] of a camera-aware model (height None for ``canonical_focal``).

    The training side of ``perception_core.pipelines.camera_ratios``.

    Raises:
        ConfigError: a batch without ``focal_px`` (or ``camera_height_m``).
    """
    needed = ("focal_px", "camera_height_m") if model_cfg.camera == "canonical_focal_height" else ("focal_px",)
    missing = [k for k in needed if k not in batch]
    if missing:
        raise ConfigError(f"model.camera is {model_cfg.camera} but the data gives no per-frame {', '.join(missing)} "
                          "(wrap the data set in tasks.depth.FrameCameras)")
    focal = per_item(batch, "focal_px", device) / float(model_cfg.canonical_focal_px)
    if model_cfg.camera != "canonical_focal_height":
        return focal, None
    return focal, per_item(batch, "camera_height_m", device) / float(model_cfg.canonical_height_m)


def camera_scale(batch: dict[str, Any], model_cfg: DepthModelConfig, device: torch.device) -> torch.Tensor | float:
    """Per-item metres per model-output metre, [B,1,1,1] (1.0 for a fixed-camera model; see :func:`camera_ratios`)."""
    if model_cfg.camera == "fixed":
        return 1.0
    focal, height = camera_ratios(batch, model_cfg, device)
    return focal if height is None else focal * height


def camera_vector(batch: dict[str, Any], model_cfg: DepthModelConfig, device: torch.device) -> torch.Tensor | None:
    """The network's camera input [B, 2] for a ``model.camera_input`` model, else None.

    The logs of :func:`camera_ratios`, as ``perception_core.pipelines.camera_features`` gives the runtime.
    """
    if not model_cfg.camera_input:
        return None
    focal, height = camera_ratios(batch, model_cfg, device)
    return torch.log(torch.cat([focal.view(-1, 1), height.view(-1, 1)], dim=1))


@torch.no_grad()
def evaluate_depth(model: nn.Module, batches: Any, min_depth: float, max_depth: float, device: torch.device,
                   canonical_focal_px: float = 0.0) -> dict[str, float]:
    """Eigen metrics of the deployed prediction (ArgMax for levels) over batch dicts.

    With ``canonical_focal_px`` > 0 the prediction is for the model's canonical
    camera and is scaled to each item's camera before scoring.
    """
    from perception_core.metrics.depth import DepthMetricAccumulator

    net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    assert isinstance(net, DualHeadDepthNet)
    acc = DepthMetricAccumulator(min_depth, max_depth)
    for batch in batches:
        pred = net.predict_depth(normalize(to_model_image(batch["image"], device)),
                                 camera_vector(batch, net.config, device))
        if canonical_focal_px > 0:
            pred = pred * camera_scale(batch, net.config, pred.device)
        pred = pred.float().cpu().numpy()
        gt = batch["depth"].float().cpu().numpy()
        for p, g in zip(pred, gt, strict=True):
            acc.update(p[0], g[0])
    return acc.compute()


# ---- the task ----------------------------------------------------------------------------------

DatasetFactory = Callable[[str, bool], Dataset]


class DepthTask:
    """TrainingTask for the dual-head depth network."""

    name = "depth"
    higher_is_better = False  # headline metric abs_rel

    def __init__(self, config: TrainConfig, source: str = "config", dataset_factory: DatasetFactory | None = None) -> None:
        self.config = config
        self.model_cfg, self.data_cfg, self.loss_cfg, self.distill_cfg = parse_depth_sections(config, source)
        self.dataset_factory = dataset_factory
        self._teacher: DualHeadDepthNet | None = None
        self._label_weights = label_weight_table(self.loss_cfg.class_weights)
        self._surface_ids: torch.Tensor | None = None  # loss.relief_weight: which label ids lie flat (ground)
        if self.loss_cfg.relief_weight != 1.0:
            from perception_core.costmap import class_map_from_ontology

            self._surface_ids = torch.from_numpy(class_map_from_ontology().surface.copy())

    def build_model(self) -> nn.Module:
        net = build_depth_net(self.model_cfg)
        if self.model_cfg.init_weights:
            from model_tools.training.checkpoint import load_state_dict_checked, load_weights

            state, _ = load_weights(self.model_cfg.init_weights)
            state = {k: v.float() for k, v in state.items()}
            if net.camera_modulation is not None and not any(k.startswith("camera_modulation.") for k in state):
                # Weights of a model without the camera input: the modulation starts as built, the identity.
                state |= {f"camera_modulation.{k}": v for k, v in net.camera_modulation.state_dict().items()}
            load_state_dict_checked(net, state, f"model.init_weights {self.model_cfg.init_weights}")
        if self.distill_cfg.fake_quant_bits:
            net.decoder.fake_quant_bits = int(self.distill_cfg.fake_quant_bits)
        return net

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        """(train, val) over every configured source, resized whole-frame to the model input."""
        if self.dataset_factory is not None:
            return self.dataset_factory(self.data_cfg.train_split, True), self.dataset_factory(self.data_cfg.val_split, False)
        from model_tools.data.sources import build_sources

        transform = depth_transform(self.model_cfg.input_height, self.model_cfg.input_width, self.data_cfg.augment)
        train = build_sources(self.sources(), "train", transform, default_split=self.data_cfg.train_split,
                              seed=self.config.seed)
        return self.with_cameras(train), self.eval_dataset()

    def with_cameras(self, dataset: Dataset) -> Dataset:
        """``dataset`` with each item's camera added (FrameCameras) for a camera-aware model, else itself."""
        if self.model_cfg.camera == "fixed":
            return dataset
        return FrameCameras(dataset, (self.model_cfg.input_height, self.model_cfg.input_width))

    def sources(self) -> list[dict[str, Any]]:
        """The configured sources, checked: each well formed and carrying depth ground truth."""
        from model_tools.data.sources import check_sources
        from model_tools.registry import DEPTH

        sources = self.data_cfg.source_list()
        check_sources(sources, DEPTH.data_formats, self.name)
        return sources

    def eval_dataset(self, split: str | None = None, max_images: int | None = None) -> Dataset:
        """The validation sources (or their ``split``) without augmentation.

        At most ``max_images`` (0: all), evenly spaced; None applies the config's ``max_val_samples``.
        """
        from model_tools.data.sources import build_sources, evenly_spaced_subset

        if self.dataset_factory is not None:
            return self.dataset_factory(split or self.data_cfg.val_split, False)
        transform = depth_transform(self.model_cfg.input_height, self.model_cfg.input_width, False)
        val = build_sources(self.sources(), "val", transform, default_split=self.data_cfg.val_split, split=split,
                            seed=self.config.seed)
        return evenly_spaced_subset(self.with_cameras(val), self.data_cfg.max_val_samples if max_images is None else max_images)

    def _teacher_outputs(self, image: torch.Tensor, batch: dict[str, Any]) -> dict[tuple[str, int], torch.Tensor]:
        if self._teacher is None:
            self._teacher = load_teacher(self.distill_cfg, self.model_cfg).to(image.device).eval()
        with torch.no_grad(), torch.autocast(image.device.type, enabled=False):
            return self._teacher(image.float(), scales=tuple(range(self.loss_cfg.scales)), with_features=self.distill_cfg.w_feature > 0,
                                 camera=camera_vector(batch, self._teacher.config, image.device))

    def compute_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = normalize(batch["image"])
        with_features = bool(self.distill_cfg.teacher and self.distill_cfg.w_feature > 0)
        out = model(image, scales=tuple(range(self.loss_cfg.scales)), with_features=with_features,
                    camera=camera_vector(batch, self.model_cfg, image.device))
        target = batch["depth"] / camera_scale(batch, self.model_cfg, batch["depth"].device)
        loss, parts = depth_loss(out, target, self.model_cfg, self.loss_cfg, self._pixel_weight(batch))
        if self.distill_cfg.teacher:
            teacher = self._teacher_outputs(image, batch)
            d_loss, d_parts = distill_loss(out, teacher, self.model_cfg, self.distill_cfg, self.loss_cfg.scales)
            loss = self.distill_cfg.w_ground_truth * loss + d_loss
            parts |= d_parts
        return loss, parts

    def _pixel_weight(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """[B,1,H,W] loss weight of each pixel, or None for 1: its label's (``loss.class_weights``) times its
        depth edge's (``loss.edge_weight``) times its relief's (``loss.relief_weight``) times its depth's
        (``loss.range_weight_power``)."""
        weight = None
        if self._label_weights is not None and "label" in batch:
            label = batch["label"]
            if self._label_weights.device != label.device:
                self._label_weights = self._label_weights.to(label.device)
            weight = self._label_weights[label.long()].unsqueeze(1)
        cfg = self.loss_cfg
        if cfg.edge_weight != 1.0:
            edges = depth_edge_weight(batch["depth"], cfg.edge_weight, cfg.edge_jump, cfg.edge_radius_px)
            weight = edges if weight is None else weight * edges
        if self._surface_ids is not None and "label" in batch:
            if self._surface_ids.device != batch["depth"].device:
                self._surface_ids = self._surface_ids.to(batch["depth"].device)
            relief = relief_weight_map(batch, self._surface_ids, cfg.relief_weight, cfg.relief_band_m)
            weight = relief if weight is None else weight * relief
        if cfg.range_weight_power > 0:
            depth = batch["depth"] if batch["depth"].dim() == 4 else batch["depth"][:, None]
            ranged = range_weight_map(depth, cfg.range_weight_power, cfg.range_weight_ref_m, cfg.range_weight_max)
            weight = ranged if weight is None else weight * ranged
        return weight

    @torch.no_grad()
    def validate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        m = evaluate_depth(model, loader, self.model_cfg.min_depth, self.model_cfg.max_depth, device,
                           self.model_cfg.canonical_focal_px)
        return {k: m[k] for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")}


def load_teacher(distill_cfg: DistillConfig, student_cfg: DepthModelConfig) -> DualHeadDepthNet:
    """Frozen FP32 teacher from a checkpoint; its head must match the student's (kind, levels, max_depth)."""
    from model_tools.training.checkpoint import load_state_dict_checked, load_weights
    from model_tools.training.config import load_config

    state, saved = load_weights(distill_cfg.teacher)
    if saved is not None:
        teacher_model = saved.get("model", {})
    elif distill_cfg.teacher_config:
        teacher_model = load_config(distill_cfg.teacher_config).model
    else:
        raise ConfigError(f"distill.teacher {distill_cfg.teacher} is a plain state dict: set distill.teacher_config too")
    teacher_cfg = dataclass_from_dict(DepthModelConfig, teacher_model, f"teacher {distill_cfg.teacher}: model")
    for key in ("kind", "levels", "max_depth"):
        if getattr(teacher_cfg, key) != getattr(student_cfg, key):
            raise ConfigError(
                f"teacher {distill_cfg.teacher}: model.{key} is {getattr(teacher_cfg, key)!r} but the student's is "
                f"{getattr(student_cfg, key)!r}; distillation needs the same integer head"
            )
    teacher_cfg.encoder_weights = ""
    net = DualHeadDepthNet(teacher_cfg)
    load_state_dict_checked(net, state, f"teacher {distill_cfg.teacher}")
    net.float()
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


class FrameCameras(Dataset):
    """A depth data set's items plus their camera: ``focal_px``, ``camera_height_m`` and the :data:`RELIEF_KEYS`.

    The camera of every frame of the synthetic folders inside ``dataset`` (one
    folder, a mix of sources, or a subset) is read once
    (``synth.read_frame_rig``: ``camera/NNNNNN.json``, or the split's fixed
    camera). ``focal_px`` is ``pipelines.input_focal_px`` of it for a
    whole-frame resize to ``input_hw``, the node's preprocessing (a
    horizontal flip keeps it); ``camera_height_m`` is the mount height above
    base_link, whose origin is on the ground. ``camera_fx`` ... ``camera_cy``
    are K at ``input_hw``, and ``camera_up_*`` the base frame's z axis in the
    optical frame (what :func:`relief_weight_map` needs), for the unflipped frame.

    Raises:
        ConfigError: a source without per-frame cameras (only synthetic folders have them).
    """

    def __init__(self, dataset: Any, input_hw: tuple[int, int]) -> None:
        from model_tools.data.datasets import SyntheticFolderDataset
        from model_tools.data.synth import read_frame_rig
        from perception_core.geometry import camera_optical_pose
        from perception_core.pipelines import input_focal_px, scale_intrinsics

        self.dataset = dataset
        self.cameras: dict[str, dict[str, float]] = {}
        for leaf in _leaf_datasets(dataset):
            if not isinstance(leaf, SyntheticFolderDataset):
                raise ConfigError(f"a camera-aware depth model needs each frame's camera; source {leaf.source!r} has "
                                  "none (synthetic folders do)")
            for sample in leaf.samples:
                rig = read_frame_rig(leaf.split_dir, sample.image.stem)
                k = scale_intrinsics(rig.K, (rig.height, rig.width), input_hw)
                up = camera_optical_pose(*rig.mount)[2, :3]
                self.cameras[str(sample.image)] = {
                    "focal_px": input_focal_px(rig.K, (rig.height, rig.width), input_hw),
                    "camera_height_m": float(rig.mount_height),
                    **dict(zip(RELIEF_KEYS, (float(v) for v in (k[0, 0], k[1, 1], k[0, 2], k[1, 2], *up)), strict=True)),
                }

    def __len__(self) -> int:
        return len(self.dataset)

    def item_extras(self, path: str) -> dict[str, float]:
        """The values added to the item of image ``path`` (what the frame cache adds to its batches)."""
        return dict(self.cameras[path])

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        for key, value in self.cameras[item["path"]].items():
            item[key] = torch.tensor(value, dtype=torch.float32)
        return item

    def set_epoch(self, epoch: int) -> None:
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)


def _leaf_datasets(dataset: Any) -> list[Any]:
    """The per-source data sets inside a mix (``datasets``) or a subset (``dataset``)."""
    if hasattr(dataset, "datasets"):
        return [leaf for part in dataset.datasets for leaf in _leaf_datasets(part)]
    if isinstance(dataset, torch.utils.data.Subset):
        return _leaf_datasets(dataset.dataset)
    return [dataset]


def depth_transform(height: int, width: int, train: bool) -> Any:
    """Whole-frame resize to the model input, exactly as the node's preprocessing does.

    Cropping would keep fx == fy while the deployed node squashes the camera
    frame (1280x1080 -> 640x384), so a cropped-trained model would misread the
    ground plane's geometry. Training adds flip and mild colour jitter.
    """
    from model_tools.data import transforms as T  # noqa: N812 - short alias

    if not train:
        return T.Resize(height, width)
    return T.Compose([T.Resize(height, width), T.RandomHorizontalFlip(0.5), T.ColorJitter(0.3, 0.3, 0.3, 0.05)])
