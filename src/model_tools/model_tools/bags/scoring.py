"""One scorer for offline (eval-bag) and live (recorded node outputs) evaluation. Numpy only.

Each frame gives predicted and ground-truth depth, labels and costmap
categories; the scorer accumulates Eigen depth metrics, a segmentation
confusion matrix, a costmap category confusion, error-vs-depth bins and a
latency distribution, and keeps a few per-frame numbers for plots and for
comparing the two evaluation paths frame by frame.

Predictions at model resolution are resized (nearest, by pixel centres) to
the ground truth's resolution before scoring, as the Eigen protocol scores at
ground-truth resolution.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perception_core.costmap import CATEGORIES, UNKNOWN, Category, resize_nearest
from perception_core.metrics.costmap import BevGrid, CostmapMeasures, GeometryTruth, RangeBandMeasures
from perception_core.metrics.depth import DepthMetricAccumulator
from perception_core.metrics.segmentation import ConfusionMatrix

# Costmap cell states scored: unknown first, then the categories by severity.
CELL_STATES: tuple[str, ...] = ("unknown", *(c.name.lower() for c in CATEGORIES))


def category_from_layers(layers: Mapping[str, np.ndarray]) -> np.ndarray:
    """Winning category per cell from per-category layers (100 present, 0 absent, -1 unknown).

    The inverse of how perception_core.costmap fills ``CostmapResult.layers``: the
    most severe present category wins; cells no layer observed stay UNKNOWN.
    Used on recorded /perception/costmap/<category> grids, whose costs alone
    cannot tell BLOCKED from HAZARD when both cost 100.
    """
    shapes = {np.asarray(v).shape for v in layers.values()}
    if len(shapes) != 1:
        raise ValueError(f"category layers differ in shape: {sorted(shapes)}")
    shape = shapes.pop()
    category = np.full(shape, UNKNOWN, dtype=np.int8)
    for cat in CATEGORIES:
        layer = layers.get(cat.name.lower())
        if layer is None:
            raise ValueError(f"category layer {cat.name.lower()!r} is missing (have {', '.join(sorted(layers))})")
        category[np.asarray(layer) == 100] = int(cat)
    return category


@dataclass
class FrameRecord:
    """Per-frame numbers kept for plots and path-vs-path comparison."""

    stamp_ns: int
    depth: dict[str, float] = field(default_factory=dict)
    miou: float = math.nan
    costmap_agreement: float = math.nan
    latency_ms: dict[str, float] = field(default_factory=dict)


class EvalScorer:
    """Accumulates depth, segmentation and costmap scores over frames."""

    def __init__(
        self,
        class_names: list[str],
        min_depth: float = 1e-3,
        max_depth: float = 15.0,
        ignore_index: int = 255,
        depth_bin_m: float = 1.0,
    ) -> None:
        self.class_names = list(class_names)
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.depth = DepthMetricAccumulator(min_depth, max_depth)
        self.segmentation = ConfusionMatrix(len(self.class_names), ignore_index=ignore_index)
        n_states = len(CELL_STATES)
        self.cell_confusion = np.zeros((n_states, n_states), dtype=np.int64)  # rows GT, cols prediction
        self.bin_edges = np.arange(0.0, max_depth + depth_bin_m, depth_bin_m)
        n_bins = len(self.bin_edges) - 1
        self._bin_abs_error = np.zeros(n_bins)
        self._bin_abs_rel = np.zeros(n_bins)
        self._bin_count = np.zeros(n_bins, dtype=np.int64)
        self.latencies: dict[str, list[float]] = {}
        self.frames: dict[int, FrameRecord] = {}
        self.costmap_measures = CostmapMeasures()
        self.costmap_by_range = RangeBandMeasures()  # where along the way the costmap loses

    def _frame(self, stamp_ns: int) -> FrameRecord:
        return self.frames.setdefault(stamp_ns, FrameRecord(stamp_ns))

    # ----------------------------------------------------------------- adding

    def add_depth(self, stamp_ns: int, pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
        """Score predicted depth (metres, NaN invalid, any resolution) against GT (0/NaN invalid)."""
        gt = np.asarray(gt, dtype=np.float32)
        pred = resize_nearest(np.asarray(pred, dtype=np.float32), gt.shape[:2])
        metrics = self.depth.update(pred, gt)
        self._frame(stamp_ns).depth = metrics
        valid = np.isfinite(gt) & (gt > self.min_depth) & (gt < self.max_depth)
        g = gt[valid].astype(np.float64)
        p = pred[valid].astype(np.float64)
        p = np.clip(np.where(np.isfinite(p), p, self.min_depth), self.min_depth, self.max_depth)
        bins = np.clip(np.digitize(g, self.bin_edges) - 1, 0, len(self._bin_count) - 1)
        self._bin_abs_error += np.bincount(bins, weights=np.abs(p - g), minlength=len(self._bin_count))
        self._bin_abs_rel += np.bincount(bins, weights=np.abs(p - g) / g, minlength=len(self._bin_count))
        self._bin_count += np.bincount(bins, minlength=len(self._bin_count))
        return metrics

    def add_labels(self, stamp_ns: int, pred: np.ndarray, gt: np.ndarray) -> float:
        """Score predicted class ids (any resolution) against GT ids (255 ignored); return the frame's mIoU."""
        gt = np.asarray(gt)
        pred = resize_nearest(np.asarray(pred), gt.shape[:2])
        frame = ConfusionMatrix(self.segmentation.num_classes, self.segmentation.ignore_index)
        frame.update(pred, gt)
        self.segmentation.merge(frame)
        self._frame(stamp_ns).miou = frame.miou()
        return self._frame(stamp_ns).miou

    def add_costmap(self, stamp_ns: int, pred_category: np.ndarray, gt_category: np.ndarray) -> float:
        """Score costmap categories (UNKNOWN or a Category per cell) cell by cell; return the frame's agreement."""
        pred_category = np.asarray(pred_category)
        gt_category = np.asarray(gt_category)
        if pred_category.shape != gt_category.shape:
            raise ValueError(f"costmap shapes differ: prediction {pred_category.shape}, ground truth {gt_category.shape}")
        n = len(CELL_STATES)
        pred_state = pred_category.astype(np.int64).reshape(-1) + 1  # UNKNOWN (-1) -> state 0
        gt_state = gt_category.astype(np.int64).reshape(-1) + 1
        frame = np.bincount(gt_state * n + pred_state, minlength=n * n).reshape(n, n)
        self.cell_confusion += frame
        agreement = _observed_agreement(frame)
        self._frame(stamp_ns).costmap_agreement = agreement
        return agreement

    def add_costmap_measures(self, stamp_ns: int, pred_category: np.ndarray, truth: np.ndarray | GeometryTruth,
                             grid: BevGrid) -> dict[str, float]:
        """Score a costmap against the bird's-eye ground truth (perception_core.metrics.costmap), in total and by
        distance ahead; returns the frame's measures."""
        self._frame(stamp_ns)
        self.costmap_by_range.add(pred_category, truth, grid)
        return self.costmap_measures.add(pred_category, truth, grid)

    def add_latency(self, stamp_ns: int, timings_ms: Mapping[str, float]) -> None:
        """Record per-stage latencies (ms) of one frame; names are free-form (e.g. depth_inference_ms)."""
        for name, value in timings_ms.items():
            self.latencies.setdefault(name, []).append(float(value))
        self._frame(stamp_ns).latency_ms.update({k: float(v) for k, v in timings_ms.items()})

    # ----------------------------------------------------------------- results

    def costmap_summary(self) -> dict[str, Any]:
        """Cell-wise agreement and per-category precision/recall against the GT-derived costmap."""
        matrix = self.cell_confusion
        total = int(matrix.sum())
        per_category: dict[str, dict[str, float | int | None]] = {}
        for index, name in enumerate(CELL_STATES):
            if index == 0:
                continue
            tp = int(matrix[index, index])
            predicted = int(matrix[:, index].sum())
            actual = int(matrix[index, :].sum())
            per_category[name] = {
                "precision": tp / predicted if predicted else None,
                "recall": tp / actual if actual else None,
                "gt_cells": actual,
                "predicted_cells": predicted,
            }
        return {
            "agreement_observed": _observed_agreement(matrix),
            "agreement_all_cells": float(np.trace(matrix) / total) if total else math.nan,
            "per_category": per_category,
            "cell_confusion": matrix.tolist(),
            "cell_states": list(CELL_STATES),
            "cells_scored": total,
        }

    def depth_by_distance(self) -> dict[str, list[float | None]]:
        """Mean absolute and relative error per GT depth bin (None for empty bins)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            mae = np.where(self._bin_count > 0, self._bin_abs_error / np.maximum(self._bin_count, 1), np.nan)
            rel = np.where(self._bin_count > 0, self._bin_abs_rel / np.maximum(self._bin_count, 1), np.nan)
        return {
            "bin_edges_m": self.bin_edges.tolist(),
            "mean_abs_error_m": [None if np.isnan(v) else float(v) for v in mae],
            "mean_abs_rel": [None if np.isnan(v) else float(v) for v in rel],
            "pixels": self._bin_count.tolist(),
        }

    def latency_summary(self) -> dict[str, dict[str, float]]:
        return {name: latency_stats(values) for name, values in self.latencies.items()}

    def summary(self) -> dict[str, Any]:
        """Everything scored, as JSON-ready numbers (NaN where nothing was scored)."""
        seg = self.segmentation.to_dict(self.class_names)
        return {
            "frames": len(self.frames),
            "depth": self.depth.compute() if self.depth.frames else None,
            "depth_by_distance": self.depth_by_distance() if self.depth.frames else None,
            "segmentation": seg if self.segmentation.matrix.sum() or self.segmentation.out_of_range.sum() else None,
            "costmap": self.costmap_summary() if self.cell_confusion.sum() else None,
            "costmap_measures": self.costmap_measures.summary() if self.costmap_measures.frames else None,
            "costmap_by_range": self.costmap_by_range.summary() if self.costmap_by_range.frames else None,
            "latency_ms": self.latency_summary(),
        }


def _observed_agreement(matrix: np.ndarray) -> float:
    """Fraction of cells the GT costmap observed where the prediction has the same category."""
    observed = matrix[1:, :]
    total = observed.sum()
    return float(np.trace(matrix[1:, 1:]) / total) if total else math.nan


def latency_stats(values: Iterable[float]) -> dict[str, float]:
    """Count, mean and percentiles of a latency sample (ms)."""
    data = np.asarray(list(values), dtype=np.float64)
    if data.size == 0:
        return {"count": 0}
    return {
        "count": int(data.size),
        "mean": float(data.mean()),
        "p50": float(np.percentile(data, 50)),
        "p90": float(np.percentile(data, 90)),
        "p99": float(np.percentile(data, 99)),
        "max": float(data.max()),
    }


def category_name(value: int) -> str:
    return "unknown" if value == UNKNOWN else Category(value).name.lower()
