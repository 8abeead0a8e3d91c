"""Costmap quality against a bird's-eye ground truth: the five measures a planner cares about (numpy + cv2).

The ground truth (``ground_truth_bev``) is built from ground-truth depth and
labels at full camera resolution, independently of the costmap's own
projection code:

- obstacle cells: every pixel whose class maps to BLOCKED or HAZARD is
  back-projected at its depth (vertical faces are dense in the image, so a
  forward projection at full resolution covers them);
- visible ground: each cell centre is projected *into* the image and the
  surface seen there is read back by bilinear interpolation of inverse depth
  (exact on a plane). The cell is visible when that surface point lies
  within half a cell of the centre; the point's height then refines the
  guess of the local ground height, so tilted or uneven ground converges
  too. A cell whose ray meets something nearer (an obstacle) or farther (a
  depth discontinuity) is not visible: it stays unknown.

The measures (``CostmapMeasures``), on cells whose centre lies at
``0 <= x <= x_max_m`` in the base frame:

- obstacle recall: GT obstacle cells with a predicted lethal cell within ``tolerance_m``;
- obstacle precision: predicted lethal cells with a GT obstacle cell within ``tolerance_m``;
- object recall: GT obstacle groups (8-connected, >= ``min_group_cells`` cells) with a
  predicted lethal cell within ``tolerance_m`` of one of their cells;
- holes: visible GT traversable cells with ``x <= holes_x_max_m`` that the prediction leaves unknown;
- false lethal: GT traversable cells with no GT obstacle within ``tolerance_m`` that the prediction
  marks lethal.

"Lethal" is the category (BLOCKED or HAZARD), not the cost value, so a
configuration that gives HAZARD a non-lethal cost scores the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perception_core.ontology import NOT_PROJECTED, Category

UNKNOWN = -1
LETHAL_CATEGORIES = (Category.BLOCKED, Category.HAZARD)
MEASURE_NAMES = ("obstacle_recall", "obstacle_precision", "object_recall", "holes", "false_lethal")
# The goals the costmap is built to (a planner's needs); the bench prints each measure against its goal.
GOALS: dict[str, tuple[str, float]] = {
    "obstacle_recall": (">=", 0.95),
    "obstacle_precision": (">=", 0.90),
    "object_recall": (">=", 0.98),
    "holes": ("<=", 0.02),
    "false_lethal": ("<=", 0.01),
}


@dataclass(frozen=True)
class BevGrid:
    """A base-frame grid: cell (row, col) covers x in [origin_x + col*res, +res), y in [origin_y + row*res, +res)."""

    resolution: float
    origin_x: float
    origin_y: float
    rows: int
    cols: int

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """x [cols] and y [rows] of the cell centres."""
        res = self.resolution
        return (self.origin_x + (np.arange(self.cols) + 0.5) * res, self.origin_y + (np.arange(self.rows) + 0.5) * res)


def _backproject(u: np.ndarray, v: np.ndarray, z: np.ndarray, k: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Grid-frame points [N, 3] of pixels (u, v) at optical depth z."""
    y = (v - k[1, 2]) / k[1, 1]
    x = (u - k[0, 2] - k[0, 1] * y) / k[0, 0]
    optical = np.stack([x * z, y * z, z], axis=-1)
    return optical @ transform[:3, :3].T + transform[:3, 3]


def ground_truth_bev(
    depth: np.ndarray,
    labels: np.ndarray,
    k_matrix: np.ndarray,
    camera_to_grid: np.ndarray,
    grid: BevGrid,
    class_to_category: np.ndarray,
    *,
    ground_z: float = 0.0,
    max_point_height: float = 3.0,
    min_range: float = 0.3,
    max_range: float = 15.0,
    refinements: int = 3,
) -> np.ndarray:
    """int8 [rows, cols] GT category per cell: a Category value, or UNKNOWN where the camera does not see it.

    ``depth`` (metres along the optical axis, NaN/inf/<= 0 invalid) and
    ``labels`` share one resolution, which ``k_matrix`` describes.
    ``camera_to_grid`` takes optical-frame points to the grid frame. Points
    higher than ``max_point_height`` above ``ground_z`` (canopy the vehicle
    passes under) and depths outside (min_range, max_range] are ignored, as in
    the costmap itself.
    """
    depth = np.asarray(depth, dtype=np.float64)
    labels = np.asarray(labels)
    if depth.shape != labels.shape:
        raise ValueError(f"GT depth {depth.shape} and labels {labels.shape} differ in size")
    k = np.asarray(k_matrix, dtype=np.float64).reshape(3, 3)
    transform = np.asarray(camera_to_grid, dtype=np.float64)
    table = np.asarray(class_to_category, dtype=np.int8)
    categories = table[np.clip(labels.astype(np.int64), 0, table.size - 1)]
    categories[labels.astype(np.int64) >= table.size] = NOT_PROJECTED
    h, w = depth.shape
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth > min_range) & (depth <= max_range)
    result = np.full((grid.rows, grid.cols), UNKNOWN, dtype=np.int8)
    res = grid.resolution

    # Visible surface under each cell centre, read from the image.
    xs, ys = grid.centres()
    cx, cy = np.meshgrid(xs, ys)
    cz = np.full(cx.shape, float(ground_z))
    to_camera = np.linalg.inv(transform)
    inverse_depth = np.where(valid, 1.0 / np.where(valid, depth, 1.0), np.nan)
    seen = np.zeros(cx.shape, dtype=bool)
    surface = np.zeros((*cx.shape, 3))
    pixel_u = pixel_v = np.zeros(cx.shape)
    for _ in range(max(1, refinements)):
        optical = np.stack([cx, cy, cz], axis=-1) @ to_camera[:3, :3].T + to_camera[:3, 3]
        in_front = optical[..., 2] > 1e-6
        zc = np.where(in_front, optical[..., 2], 1.0)
        v = k[1, 1] * optical[..., 1] / zc + k[1, 2]
        u = k[0, 0] * optical[..., 0] / zc + k[0, 1] * optical[..., 1] / zc + k[0, 2]
        inside = in_front & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
        u0 = np.clip(np.floor(u).astype(np.int64), 0, max(w - 2, 0))
        v0 = np.clip(np.floor(v).astype(np.int64), 0, max(h - 2, 0))
        fu, fv = np.clip(u - u0, 0.0, 1.0), np.clip(v - v0, 0.0, 1.0)
        u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
        corners = (inverse_depth[v0, u0], inverse_depth[v0, u1], inverse_depth[v1, u0], inverse_depth[v1, u1])
        with np.errstate(invalid="ignore"):
            interpolated = ((1 - fv) * ((1 - fu) * corners[0] + fu * corners[1])
                            + fv * ((1 - fu) * corners[2] + fu * corners[3]))
            seen = inside & np.isfinite(interpolated) & (interpolated > 0)
        z = np.where(seen, 1.0 / np.where(seen, interpolated, 1.0), 1.0)
        surface = _backproject(u, v, z, k, transform)
        pixel_u, pixel_v = u, v
        cz = np.where(seen, surface[..., 2], cz)
    within = (np.abs(surface[..., 0] - cx) <= res / 2) & (np.abs(surface[..., 1] - cy) <= res / 2)
    low_enough = surface[..., 2] - ground_z <= max_point_height
    seen &= within & low_enough
    nearest_u = np.clip(np.rint(pixel_u).astype(np.int64), 0, w - 1)
    nearest_v = np.clip(np.rint(pixel_v).astype(np.int64), 0, h - 1)
    cell_category = categories[nearest_v, nearest_u]
    seen &= cell_category != NOT_PROJECTED
    result[seen] = cell_category[seen]

    # Obstacle pixels where they are.
    is_obstacle = valid & np.isin(categories, np.array([int(c) for c in LETHAL_CATEGORIES], dtype=np.int8))
    rows_px, cols_px = np.nonzero(is_obstacle)
    if rows_px.size:
        points = _backproject(cols_px.astype(np.float64), rows_px.astype(np.float64), depth[rows_px, cols_px], k,
                              transform)
        cats = categories[rows_px, cols_px]
        col = np.floor((points[:, 0] - grid.origin_x) / res).astype(np.int64)
        row = np.floor((points[:, 1] - grid.origin_y) / res).astype(np.int64)
        keep = ((points[:, 2] - ground_z <= max_point_height) & (col >= 0) & (col < grid.cols) & (row >= 0)
                & (row < grid.rows))
        # HAZARD outranks BLOCKED where both land in one cell, as in the costmap.
        order = np.argsort(cats[keep], kind="stable")
        result[row[keep][order], col[keep][order]] = cats[keep][order]
    return result


def _distance_to(mask: np.ndarray) -> np.ndarray:
    """Distance in cells from every cell to the nearest True cell of ``mask`` (inf when there is none)."""
    import cv2

    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


@dataclass
class CostmapMeasures:
    """Accumulates the five costmap measures over frames (micro-averaged: totals of cells and groups)."""

    tolerance_m: float = 0.3
    x_max_m: float = 12.0
    holes_x_max_m: float = 10.0
    min_group_cells: int = 3
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("gt_obstacle_cells", "gt_obstacle_cells_hit", "lethal_cells", "lethal_cells_near_gt", "gt_groups",
         "gt_groups_touched", "gt_traversable_cells", "gt_traversable_cells_unknown", "clear_cells",
         "clear_cells_lethal"), 0))
    frames: int = 0

    def add(self, predicted: np.ndarray, ground_truth: np.ndarray, grid: BevGrid) -> dict[str, float]:
        """Score one frame: ``predicted`` and ``ground_truth`` are category grids (UNKNOWN or a Category)."""
        import cv2

        predicted = np.asarray(predicted)
        ground_truth = np.asarray(ground_truth)
        if predicted.shape != ground_truth.shape or predicted.shape != (grid.rows, grid.cols):
            raise ValueError(f"costmap shapes differ: prediction {predicted.shape}, ground truth {ground_truth.shape}, "
                             f"grid {(grid.rows, grid.cols)}")
        xs, _ = grid.centres()
        window = np.broadcast_to((xs >= 0) & (xs <= self.x_max_m), predicted.shape)
        holes_window = np.broadcast_to((xs >= 0) & (xs <= self.holes_x_max_m), predicted.shape)
        lethal_values = [int(c) for c in LETHAL_CATEGORIES]
        lethal = np.isin(predicted, lethal_values)
        gt_obstacle = np.isin(ground_truth, lethal_values)
        gt_traversable = (ground_truth != UNKNOWN) & ~gt_obstacle
        tolerance_cells = self.tolerance_m / grid.resolution + 1e-6
        near_lethal = _distance_to(lethal) <= tolerance_cells
        near_gt = _distance_to(gt_obstacle) <= tolerance_cells

        gt_in = gt_obstacle & window
        lethal_in = lethal & window
        frame = {
            "gt_obstacle_cells": int(gt_in.sum()),
            "gt_obstacle_cells_hit": int((gt_in & near_lethal).sum()),
            "lethal_cells": int(lethal_in.sum()),
            "lethal_cells_near_gt": int((lethal_in & near_gt).sum()),
            "gt_traversable_cells": int((gt_traversable & holes_window).sum()),
            "gt_traversable_cells_unknown": int((gt_traversable & holes_window & (predicted == UNKNOWN)).sum()),
            "clear_cells": int((gt_traversable & window & ~near_gt).sum()),
            "clear_cells_lethal": int((gt_traversable & window & ~near_gt & lethal).sum()),
        }
        _, group_of, stats, _ = cv2.connectedComponentsWithStats(gt_in.astype(np.uint8), connectivity=8)
        big = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= self.min_group_cells)
        big = big[big > 0]  # label 0 is the background
        touched = np.unique(group_of[gt_in & near_lethal])
        frame["gt_groups"] = int(big.size)
        frame["gt_groups_touched"] = int(np.isin(big, touched).sum())
        for key, value in frame.items():
            self.counts[key] += value
        self.frames += 1
        return measures_from_counts(frame)

    def summary(self) -> dict[str, Any]:
        """The five measures over every frame added, their goals, and the counts behind them."""
        return {
            **measures_from_counts(self.counts),
            "frames": self.frames,
            "counts": dict(self.counts),
            "goals": {name: f"{op} {value}" for name, (op, value) in GOALS.items()},
            "definition": {"tolerance_m": self.tolerance_m, "x_max_m": self.x_max_m,
                           "holes_x_max_m": self.holes_x_max_m, "min_group_cells": self.min_group_cells},
        }


def measures_from_counts(counts: dict[str, int]) -> dict[str, float]:
    """The five measures from cell and group counts (NaN where a measure has nothing to count)."""
    def ratio(num: str, den: str) -> float:
        return counts[num] / counts[den] if counts[den] else math.nan

    return {
        "obstacle_recall": ratio("gt_obstacle_cells_hit", "gt_obstacle_cells"),
        "obstacle_precision": ratio("lethal_cells_near_gt", "lethal_cells"),
        "object_recall": ratio("gt_groups_touched", "gt_groups"),
        "holes": ratio("gt_traversable_cells_unknown", "gt_traversable_cells"),
        "false_lethal": ratio("clear_cells_lethal", "clear_cells"),
    }


def meets_goal(name: str, value: float) -> bool:
    """Whether a measure's value meets its goal (NaN never does)."""
    op, goal = GOALS[name]
    if not math.isfinite(value):
        return False
    return value >= goal if op == ">=" else value <= goal
