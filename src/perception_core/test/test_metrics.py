"""Metrics on hand-made arrays with hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perception_core.metrics.depth import DepthMetricAccumulator, eigen_metrics
from perception_core.metrics.segmentation import ConfusionMatrix


def test_eigen_metrics_hand_computed() -> None:
    gt = np.array([2.0, 4.0, 10.0, 0.0, 100.0])  # 0 invalid, 100 beyond max_depth
    pred = np.array([1.0, 5.0, 10.0, 3.0, 3.0])
    m = eigen_metrics(pred, gt, min_depth=0.1, max_depth=80.0)
    assert m["n_valid"] == 3
    assert m["abs_rel"] == pytest.approx((1 / 2 + 1 / 4 + 0) / 3)
    assert m["sq_rel"] == pytest.approx((1 / 2 + 1 / 4 + 0) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 1 + 0) / 3))
    assert m["rmse_log"] == pytest.approx(math.sqrt((math.log(2) ** 2 + math.log(1.25) ** 2) / 3))
    # ratios 2.0, 1.25, 1.0: strict < 1.25 excludes the exact 1.25; 2.0 > 1.25**3 = 1.953
    assert m["a1"] == pytest.approx(1 / 3)
    assert m["a2"] == pytest.approx(2 / 3)
    assert m["a3"] == pytest.approx(2 / 3)
    assert m["scale"] == pytest.approx((0.5 * 1.25 * 1.0) ** (1 / 3))  # geometric mean of pred / gt


def test_scale_says_whether_a_prediction_is_too_near_or_too_far() -> None:
    gt = np.linspace(1, 10, 50)
    assert eigen_metrics(0.8 * gt, gt, 0.5, 20)["scale"] == pytest.approx(0.8)
    assert eigen_metrics(1.1 * gt, gt, 0.5, 20)["scale"] == pytest.approx(1.1)
    # Errors either way that abs_rel counts alike cancel in the scale: no bias.
    both = np.where(np.arange(50) % 2 == 0, gt * 1.25, gt / 1.25)
    assert eigen_metrics(both, gt, 0.5, 20)["scale"] == pytest.approx(1.0)


def test_perfect_prediction_and_nonfinite_prediction() -> None:
    gt = np.linspace(1, 10, 50).reshape(5, 10)
    perfect = eigen_metrics(gt.copy(), gt, 0.5, 20)
    assert perfect["abs_rel"] == 0 and perfect["rmse"] == 0 and perfect["a1"] == 1
    pred = gt.copy()
    pred[0, 0] = np.nan  # NaN predictions are penalised, not dropped
    assert eigen_metrics(pred, gt, 0.5, 20)["n_valid"] == 50
    assert eigen_metrics(pred, gt, 0.5, 20)["abs_rel"] > 0


def test_rep117_infinities_clip_to_the_range_ends() -> None:
    gt = np.array([[19.0, 0.6, 5.0]])
    pred = np.array([[np.inf, -np.inf, 5.0]])  # "beyond range" near the top, "too near" near the bottom
    same = eigen_metrics(np.array([[20.0, 0.5, 5.0]]), gt, 0.5, 20)
    assert eigen_metrics(pred, gt, 0.5, 20) == same
    assert same["abs_rel"] == pytest.approx((1 / 19 + 0.1 / 0.6) / 3)


def test_accumulator_pools_pixels_across_frames() -> None:
    rng = np.random.default_rng(0)
    gts = [rng.uniform(1, 10, (4, 6)) for _ in range(3)]
    preds = [g * rng.uniform(0.8, 1.2, g.shape) for g in gts]
    acc = DepthMetricAccumulator(0.5, 20)
    for p, g in zip(preds, gts, strict=True):
        acc.update(p, g)
    pooled = eigen_metrics(np.stack(preds), np.stack(gts), 0.5, 20)
    result = acc.compute()
    assert result["frames"] == 3
    for key in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "scale"):
        assert result[key] == pytest.approx(pooled[key])


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        eigen_metrics(np.ones((2, 2)), np.ones((2, 3)))


def test_confusion_matrix_iou_hand_computed() -> None:
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 9]])  # 9 is out of range
    cm = ConfusionMatrix(num_classes=4)
    cm.update(pred, gt)
    # class 0: tp 1, gt 2, pred 2 -> 1/3 ; class 1: tp 2, gt 3, pred 3 -> 2/4 ; class 2: tp 1, gt 2, pred 1 -> 1/2
    iou = cm.iou()
    assert iou[0] == pytest.approx(1 / 3)
    assert iou[1] == pytest.approx(1 / 2)
    assert iou[2] == pytest.approx(1 / 2)
    assert np.isnan(iou[3])
    assert cm.miou() == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert cm.pixel_accuracy() == pytest.approx(4 / 7)
    d = cm.to_dict(["a", "b", "c", "d"])
    assert d["per_class_iou"]["d"] is None and d["per_class_iou"]["b"] == pytest.approx(1 / 2)


def test_confusion_matrix_plot(tmp_path) -> None:
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1]))
    out = cm.plot(tmp_path / "cm.png", ["x", "y", "z"])
    assert out.stat().st_size > 1000
