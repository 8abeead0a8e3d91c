"""Focal loss on hand-made logits with hand-computed values, and class weights by name."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from model_tools.losses import FocalLoss, class_weights_by_name, focal_loss
from perception_core.errors import ConfigError


def _two_class_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Four pixels of a 2-class problem in a [1,2,1,4] logit map.

    px0 logits (0, 0)     target 0 -> p = 1/2
    px1 logits (ln 3, 0)  target 0 -> p = 3/4
    px2 logits (0, 0)     target 1 -> p = 1/2
    px3 logits (5, -5)    target 255 (ignored)
    """
    logits = torch.tensor([[[[0.0, math.log(3.0), 0.0, 5.0]], [[0.0, 0.0, 0.0, -5.0]]]])
    target = torch.tensor([[[0, 0, 1, 255]]])
    return logits, target


def test_focal_loss_hand_computed_unweighted() -> None:
    logits, target = _two_class_case()
    expected = ((1 - 0.5) ** 2 * math.log(2) + (1 - 0.75) ** 2 * math.log(4 / 3) + (1 - 0.5) ** 2 * math.log(2)) / 3
    assert float(focal_loss(logits, target, gamma=2.0)) == pytest.approx(expected, rel=1e-6)


def test_focal_loss_hand_computed_class_weights() -> None:
    logits, target = _two_class_case()
    weight = torch.tensor([1.0, 5.0])
    # Weighted mean: divide by the summed weights of the counted pixels (1 + 1 + 5).
    expected = (0.25 * math.log(2) + 0.0625 * math.log(4 / 3) + 5 * 0.25 * math.log(2)) / 7
    assert float(FocalLoss(2.0, weight)(logits, target)) == pytest.approx(expected, rel=1e-6)


def test_gamma_zero_equals_weighted_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, 7, generator=gen)
    target = torch.randint(0, 5, (2, 6, 7), generator=gen)
    target[0, :2] = 255
    weight = torch.tensor([1.0, 2.0, 0.5, 5.0, 1.0])
    expected = F.cross_entropy(logits, target, weight=weight, ignore_index=255)
    assert float(focal_loss(logits, target, gamma=0.0, weight=weight)) == pytest.approx(float(expected), rel=1e-5)


def test_focal_loss_is_below_cross_entropy_on_easy_pixels() -> None:
    logits = torch.tensor([[[[4.0]], [[0.0]]]])  # p(class 0) ~ 0.982
    target = torch.tensor([[[0]]])
    ce = float(F.cross_entropy(logits, target))
    fl = float(focal_loss(logits, target, gamma=2.0))
    p = math.exp(4) / (math.exp(4) + 1)
    assert fl == pytest.approx((1 - p) ** 2 * ce, rel=1e-5)
    assert fl < ce / 1000


def test_all_ignored_batch_gives_zero_with_finite_gradient() -> None:
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.full((1, 2, 2), 255)
    loss = focal_loss(logits, target, weight=torch.ones(3))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert torch.isfinite(logits.grad).all()


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="do not match"):
        focal_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))


def test_negative_gamma_rejected() -> None:
    with pytest.raises(ConfigError, match="gamma"):
        FocalLoss(gamma=-1.0)


def test_class_weights_by_name() -> None:
    names = ["smooth_ground", "rough_ground", "water", "dynamic"]
    weights = class_weights_by_name(names, {"water": 5.0, "dynamic": 3.0})
    assert weights.tolist() == [1.0, 1.0, 5.0, 3.0]


def test_class_weights_unknown_name_rejected() -> None:
    with pytest.raises(ConfigError, match="watr"):
        class_weights_by_name(["water", "sky"], {"watr": 5.0})


def test_class_weights_nonpositive_rejected() -> None:
    with pytest.raises(ConfigError, match="water"):
        class_weights_by_name(["water", "sky"], {"water": 0.0})
