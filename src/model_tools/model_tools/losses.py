"""Segmentation losses (depth losses live with the depth task in ``tasks/depth.py``).

Focal loss (Lin et al., 2017) down-weights pixels the model already gets
right, so rare classes (water, dynamic obstacles) are not drowned by ground
and sky; per-class weights add a fixed prior on top.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from torch import nn

from perception_core.errors import ConfigError


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    weight: torch.Tensor | None = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Class-weighted focal loss, averaged over non-ignored pixels.

    Per pixel with true class ``c`` and softmax probability ``p``:
    ``w_c * (1 - p)^gamma * -log(p)``. The mean divides by the sum of the
    pixels' weights ``w_c`` (as ``F.cross_entropy`` does with ``weight``), so
    with ``gamma = 0`` this equals weighted cross-entropy. A batch where every
    pixel is ignored gives 0 (with a gradient path), not NaN.

    Args:
        logits: [B, C, H, W] (any float dtype; computed in float32).
        target: [B, H, W] int64 class ids, ``ignore_index`` to skip.
        weight: [C] per-class weights, or None for 1.
    """
    if logits.dim() != 4 or target.dim() != 3 or logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"focal_loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    log_prob = F.log_softmax(logits.float(), dim=1)
    valid = target != ignore_index
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    log_p = log_prob.gather(1, safe_target.unsqueeze(1)).squeeze(1)
    prob = log_p.exp()
    loss = -((1.0 - prob).clamp(min=0.0) ** gamma) * log_p
    pixel_weight = valid.to(loss.dtype)
    if weight is not None:
        pixel_weight = pixel_weight * weight.to(device=loss.device, dtype=loss.dtype)[safe_target]
    total_weight = pixel_weight.sum()
    return (loss * pixel_weight).sum() / total_weight.clamp(min=torch.finfo(loss.dtype).tiny)


class FocalLoss(nn.Module):
    """Module form of :func:`focal_loss`; the class weights are a buffer (moves with ``.to``)."""

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None, ignore_index: int = 255) -> None:
        super().__init__()
        if gamma < 0:
            raise ConfigError(f"focal loss gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.ignore_index = int(ignore_index)
        self.register_buffer("weight", None if weight is None else weight.detach().float().clone())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, target, self.gamma, self.weight, self.ignore_index)


def class_weights_by_name(
    class_names: Sequence[str], weights: Mapping[str, float] | None, default: float = 1.0
) -> torch.Tensor:
    """Per-class weight tensor from ``{class name: weight}``; unnamed classes get ``default``.

    Names are checked against the ontology so a typo ("watr") fails loudly
    instead of silently training without the intended weight.
    """
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(class_names))
    if unknown:
        raise ConfigError(
            f"loss class_weights name unknown classes {unknown}; the ontology's classes are {list(class_names)}"
        )
    for name, value in weights.items():
        if not value > 0:
            raise ConfigError(f"loss class_weights[{name!r}] must be > 0, got {value}")
    return torch.tensor([float(weights.get(name, default)) for name in class_names], dtype=torch.float32)
