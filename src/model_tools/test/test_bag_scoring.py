"""The eval-bag/live scorer: perfect predictions score perfectly, known corruptions score as worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model_tools.bags.scoring import CELL_STATES, EvalScorer, category_from_layers
from perception_core.costmap import UNKNOWN, Category, CostmapConfig, build_costmap, class_categories_from_ontology

NAMES = ["smooth_ground", "rough_ground", "low_vegetation", "water", "static_obstacle", "dynamic", "sky"]


def _depth(h: int = 12, w: int = 16) -> np.ndarray:
    """Depth rising down the rows from 2 m to 13 m, with a NaN (invalid) first row."""
    depth = np.repeat(np.linspace(13.0, 2.0, h, dtype=np.float32)[:, None], w, axis=1)
    depth[0] = np.nan
    return depth


def test_perfect_predictions_score_perfectly() -> None:
    scorer = EvalScorer(NAMES, max_depth=15.0)
    gt_depth = _depth()
    gt_labels = np.zeros((12, 16), np.uint8)
    gt_labels[:, 8:] = 4
    gt_labels[0] = 255  # ignored
    category = np.full((5, 6), UNKNOWN, np.int8)
    category[2:, :3] = Category.FREE
    category[2:, 3:] = Category.BLOCKED
    for stamp in (1, 2):
        scorer.add_depth(stamp, gt_depth, gt_depth)
        scorer.add_labels(stamp, gt_labels, gt_labels)
        scorer.add_costmap(stamp, category, category)
    summary = scorer.summary()
    depth = summary["depth"]
    assert depth["abs_rel"] == 0.0 and depth["rmse"] == 0.0 and depth["a1"] == 1.0
    assert depth["n_valid"] == 2 * 11 * 16  # the NaN row is not scored
    seg = summary["segmentation"]
    assert seg["miou"] == 1.0 and seg["pixel_accuracy"] == 1.0
    assert seg["per_class_iou"]["smooth_ground"] == 1.0 and seg["per_class_iou"]["water"] is None
    costmap = summary["costmap"]
    assert costmap["agreement_observed"] == 1.0 and costmap["agreement_all_cells"] == 1.0
    assert costmap["per_category"]["free"] == {"precision": 1.0, "recall": 1.0, "gt_cells": 18, "predicted_cells": 18}  # 3x3 cells, 2 frames
    assert costmap["per_category"]["hazard"]["precision"] is None  # never predicted, never present
    assert summary["frames"] == 2


def test_depth_scaled_by_known_factors_scores_as_computed_by_hand() -> None:
    gt = _depth()
    valid = gt[np.isfinite(gt)].astype(np.float64)
    scorer = EvalScorer(NAMES, max_depth=15.0)
    scorer.add_depth(1, gt * 1.2, gt)  # every pixel 20 % too far: ratio 1.2 < 1.25
    metrics = scorer.summary()["depth"]
    assert metrics["abs_rel"] == pytest.approx(0.2, rel=1e-6)
    assert metrics["sq_rel"] == pytest.approx(np.mean(0.04 * valid), rel=1e-5)
    assert metrics["rmse"] == pytest.approx(0.2 * math.sqrt(np.mean(valid**2)), rel=1e-5)
    assert metrics["rmse_log"] == pytest.approx(math.log(1.2), rel=1e-5)
    assert (metrics["a1"], metrics["a2"], metrics["a3"]) == (1.0, 1.0, 1.0)

    scorer = EvalScorer(NAMES, max_depth=15.0)
    # 1.5x: fails 1.25, passes 1.25^2 = 1.5625. Scaled depths above max_depth are clipped to 15 m, so keep them below.
    near = np.where(gt < 9.0, gt, np.nan).astype(np.float32)
    scorer.add_depth(1, near * 1.5, near)
    metrics = scorer.summary()["depth"]
    assert (metrics["a1"], metrics["a2"]) == (0.0, 1.0)
    assert metrics["abs_rel"] == pytest.approx(0.5, rel=1e-6)


def test_error_vs_depth_bins_hold_the_offset() -> None:
    gt = _depth()
    scorer = EvalScorer(NAMES, max_depth=15.0, depth_bin_m=1.0)
    scorer.add_depth(1, gt + 0.5, gt)
    bins = scorer.depth_by_distance()
    populated = [(e, c) for e, c in zip(bins["mean_abs_error_m"], bins["pixels"], strict=True) if c]
    assert populated and all(e == pytest.approx(0.5, abs=1e-5) for e, _ in populated)
    assert sum(bins["pixels"]) == np.isfinite(gt).sum()
    assert bins["mean_abs_error_m"][0] is None  # nothing nearer than 1 m


def test_shifted_class_boundary_gives_hand_computed_iou() -> None:
    height, width, shift = 4, 20, 3
    gt = np.zeros((height, width), np.uint8)
    gt[:, width // 2 :] = 1
    pred = np.zeros_like(gt)
    pred[:, width // 2 + shift :] = 1  # class 0 grows by `shift` columns into class 1
    scorer = EvalScorer(["a", "b"])
    frame_miou = scorer.add_labels(7, pred, gt)
    iou = scorer.summary()["segmentation"]["per_class_iou"]
    half = width // 2
    assert iou["a"] == pytest.approx(half / (half + shift))
    assert iou["b"] == pytest.approx((half - shift) / half)
    assert frame_miou == pytest.approx((half / (half + shift) + (half - shift) / half) / 2)
    assert scorer.summary()["segmentation"]["pixel_accuracy"] == pytest.approx(1 - shift / width)


def test_low_resolution_prediction_is_resized_to_ground_truth() -> None:
    gt = np.zeros((8, 8), np.uint8)
    gt[:, 4:] = 1
    pred = np.array([[0, 1], [0, 1]], np.uint8)  # the same layout at quarter resolution
    scorer = EvalScorer(["a", "b"])
    assert scorer.add_labels(1, pred, gt) == 1.0


def test_costmap_changes_give_hand_computed_agreement_and_precision_recall() -> None:
    gt = np.full((4, 5), UNKNOWN, np.int8)
    gt[1:, :] = Category.FREE  # 15 observed cells
    gt[3, 4] = Category.HAZARD
    pred = gt.copy()
    pred[1, 0] = Category.CAUTION  # a FREE cell called CAUTION
    pred[3, 4] = Category.FREE  # the hazard missed
    pred[0, 0] = Category.FREE  # a cell GT never observed, predicted FREE
    scorer = EvalScorer(NAMES)
    agreement = scorer.add_costmap(1, pred, gt)
    assert agreement == pytest.approx(13 / 15)
    summary = scorer.costmap_summary()
    free = summary["per_category"]["free"]
    assert free["gt_cells"] == 14 and free["predicted_cells"] == 15
    assert free["precision"] == pytest.approx(13 / 15) and free["recall"] == pytest.approx(13 / 14)
    assert summary["per_category"]["hazard"] == {"precision": None, "recall": 0.0, "gt_cells": 1, "predicted_cells": 0}
    assert summary["per_category"]["caution"]["precision"] == 0.0
    assert summary["agreement_all_cells"] == pytest.approx(17 / 20)  # 4 unknown==unknown + 13 agreeing cells
    assert summary["cell_states"] == list(CELL_STATES)
    with pytest.raises(ValueError, match="shapes differ"):
        scorer.add_costmap(2, pred[:2], gt)


def test_category_from_layers_inverts_build_costmap() -> None:
    config = CostmapConfig(resolution=0.25, width_m=10.0, height_m=10.0, origin_x=0.0, origin_y=-5.0,
                           mount_z=1.5, mount_pitch=0.3, min_points_per_cell=1)
    k = np.array([[40.0, 0, 32.0], [0, 40.0, 24.0], [0, 0, 1]])
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, size=(48, 64)).astype(np.uint8)
    depth = rng.uniform(1.0, 9.0, size=(48, 64)).astype(np.float32)
    result = build_costmap(depth, labels, k, config, class_categories_from_ontology())
    assert len(np.unique(result.category)) >= 3  # a meaningful mix of unknown and categories
    np.testing.assert_array_equal(category_from_layers(result.layers), result.category)
    with pytest.raises(ValueError, match="hazard"):
        category_from_layers({k: v for k, v in result.layers.items() if k != "hazard"})


def test_latency_summary_percentiles() -> None:
    scorer = EvalScorer(NAMES)
    for stamp, value in enumerate([10.0, 20.0, 30.0, 40.0, 50.0]):
        scorer.add_latency(stamp, {"total_ms": value})
    stats = scorer.latency_summary()["total_ms"]
    assert stats["count"] == 5 and stats["mean"] == 30.0 and stats["p50"] == 30.0 and stats["max"] == 50.0


def test_costmap_measures_are_kept_per_frame_and_summarised() -> None:
    from perception_core.metrics.costmap import BevGrid

    grid = BevGrid(0.5, 0.0, -1.0, 4, 20)  # x in [0, 10), y in [-1, 1)
    truth = np.full((4, 20), Category.FREE, np.int8)
    truth[1:3, 8:11] = Category.BLOCKED
    pred = truth.copy()
    pred[0, :4] = UNKNOWN
    scorer = EvalScorer(NAMES, max_depth=15.0)
    frame = scorer.add_costmap_measures(7, pred, truth, grid)
    assert frame["obstacle_recall"] == 1.0 and frame["holes"] == pytest.approx(4 / 74)
    summary = scorer.summary()["costmap_measures"]
    assert summary["frames"] == 1 and summary["obstacle_precision"] == 1.0 and 7 in scorer.frames
    by_range = scorer.summary()["costmap_by_range"]  # the obstacle at x 4-5.5 m: the 3-6 m band holds it all
    assert by_range["counts"]["gt_all_cells"] == [0, 6, 0, 0] and by_range["recall_all"][1] == 1.0
    assert math.isnan(by_range["recall_all"][0]) and by_range["precision_all"][1] == 1.0
