"""Costmap quality against a bird's-eye ground truth: the measures a planner cares about (numpy + cv2).

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

On terrain (``ground_truth_geometry``, from the exact terrain height per
cell) the ground truth also holds what the vehicle cannot drive: cells whose
step or slope exceeds its limits are obstacles (``perception_core.costmap.terrain``
defines both, for the costmap and its truth alike), and two more measures are
kept:

- drop recall: GT cells at a drop larger than ``step_blocked_m`` (the upper
  edge of a ditch wall or a cliff) with a predicted lethal cell within ``tolerance_m``;
- false lethal on slopes: clear GT traversable cells on a slope of at least
  ``SLOPED_DEG`` (drivable hillside) that the prediction marks lethal;
- labelled object recall: object recall over the groups that hold a cell
  the labels make lethal (a rock, a tree, water). On terrain most groups are
  steps and drops that only the geometry finds; this measure shows apart how
  the objects a segmentation model names fare (on flat truth it equals
  object recall).

"Lethal" is the category (BLOCKED or HAZARD), not the cost value, so a
configuration that gives HAZARD a non-lethal cost scores the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from perception_core.ontology import NOT_PROJECTED, Category

UNKNOWN = -1
LETHAL_CATEGORIES = (Category.BLOCKED, Category.HAZARD)
_LETHAL_VALUES = np.array([int(c) for c in LETHAL_CATEGORIES], dtype=np.int8)  # for np.isin on category grids
MEASURE_NAMES = ("obstacle_recall", "obstacle_precision", "object_recall", "holes", "false_lethal")
TERRAIN_MEASURE_NAMES = ("drop_recall", "false_lethal_on_slopes", "labelled_object_recall")
HIDDEN_REACH_M = 0.8  # how far past the seen ground a hidden geometric hazard still excuses a predicted lethal cell
SLOPED_DEG = 10.0  # a cell on at least this slope counts as hillside for false_lethal_on_slopes
# The goals the costmap is built to (a planner's needs); the bench prints each measure against its goal.
GOALS: dict[str, tuple[str, float]] = {
    "obstacle_recall": (">=", 0.95),
    "obstacle_precision": (">=", 0.90),
    "object_recall": (">=", 0.98),
    "holes": ("<=", 0.02),
    "false_lethal": ("<=", 0.01),
    "drop_recall": (">=", 0.95),
    "false_lethal_on_slopes": ("<=", 0.01),
    "labelled_object_recall": (">=", 0.98),
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


# Terrain (or a true point) this far above or below the vehicle's ground plane is relief (hills, ditches, the ground
# past a drop-off); within it, level. The costmap bench and the held-out camera report split depth errors by it.
RELIEF_BAND_M = 0.3


def pixel_points(depth: np.ndarray, k_matrix: np.ndarray, camera_to_grid: np.ndarray) -> np.ndarray:
    """float64 [H*W, 3]: every pixel's point at ``depth`` in the grid (base) frame, row-major; NaN/inf depth
    gives a non-finite point."""
    depth = np.asarray(depth, dtype=np.float64)
    v, u = np.mgrid[0 : depth.shape[0], 0 : depth.shape[1]]
    with np.errstate(invalid="ignore"):
        return _backproject(u.ravel(), v.ravel(), depth.ravel(), np.asarray(k_matrix, np.float64), camera_to_grid)


def terrain_under_pixels(depth: np.ndarray, k_matrix: np.ndarray, camera_to_grid: np.ndarray, grid: BevGrid,
                         ground_height: np.ndarray) -> np.ndarray:
    """float [H, W]: the terrain height (``ground_height``, per cell) under each pixel's point at ``depth``.

    NaN where the depth is invalid or the point falls outside the grid. Splits a depth model's error by where
    the terrain stands relative to the vehicle's ground plane (a pixel of a rock on a hill lies over high terrain).
    """
    depth = np.asarray(depth, dtype=np.float64)
    points = pixel_points(depth, k_matrix, camera_to_grid)
    with np.errstate(invalid="ignore"):
        col = np.floor((points[:, 0] - grid.origin_x) / grid.resolution)
        row = np.floor((points[:, 1] - grid.origin_y) / grid.resolution)
        inside = (np.isfinite(depth.ravel()) & (depth.ravel() > 0) & (col >= 0) & (col < grid.cols) & (row >= 0)
                  & (row < grid.rows))
    out = np.full(depth.size, np.nan)
    out[inside] = np.asarray(ground_height)[row[inside].astype(np.int64), col[inside].astype(np.int64)]
    return out.reshape(depth.shape)


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
    ground_height: np.ndarray | None = None,
) -> np.ndarray:
    """int8 [rows, cols] GT category per cell: a Category value, or UNKNOWN where the camera does not see it.

    ``depth`` (metres along the optical axis, NaN/inf/<= 0 invalid) and
    ``labels`` share one resolution, which ``k_matrix`` describes.
    ``camera_to_grid`` takes optical-frame points to the grid frame. Obstacle
    points higher than ``max_point_height`` above the ground (canopy the
    vehicle passes under) and depths outside (min_range, max_range] are
    ignored, as in the costmap itself. The ground is ``ground_height`` (the
    exact terrain height per cell, NaN unknown) where given, else the plane
    ``ground_z``; traversable ground is never "too high".
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
    # The guess of the ground's height under each centre: the terrain where known (then the first projection
    # already lands), else the plane, refined by what the image shows.
    terrain = np.full(cx.shape, float(ground_z)) if ground_height is None else np.where(
        np.isfinite(ground_height), ground_height, float(ground_z))
    cz = terrain.copy()
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
    seen &= within
    nearest_u = np.clip(np.rint(pixel_u).astype(np.int64), 0, w - 1)
    nearest_v = np.clip(np.rint(pixel_v).astype(np.int64), 0, h - 1)
    # Next to a depth discontinuity (the brink of a drop) the interpolation mixes the two sides: there the
    # nearest pixel's own point decides, if it lies in the cell.
    retry = inside & ~seen & valid[nearest_v, nearest_u]
    if retry.any():
        own = _backproject(nearest_u[retry].astype(np.float64), nearest_v[retry].astype(np.float64),
                           depth[nearest_v[retry], nearest_u[retry]], k, transform)
        hit = (np.abs(own[:, 0] - cx[retry]) <= res / 2) & (np.abs(own[:, 1] - cy[retry]) <= res / 2)
        surface[retry] = np.where(hit[:, None], own, surface[retry])
        seen[retry] = hit
    cell_category = categories[nearest_v, nearest_u]
    too_high = np.isin(cell_category, _LETHAL_VALUES) & (surface[..., 2] - terrain > max_point_height)
    seen &= (cell_category != NOT_PROJECTED) & ~too_high
    result[seen] = cell_category[seen]

    # Obstacle pixels where they are.
    is_obstacle = valid & np.isin(categories, _LETHAL_VALUES)
    rows_px, cols_px = np.nonzero(is_obstacle)
    if rows_px.size:
        points = _backproject(cols_px.astype(np.float64), rows_px.astype(np.float64), depth[rows_px, cols_px], k,
                              transform)
        cats = categories[rows_px, cols_px]
        col = np.floor((points[:, 0] - grid.origin_x) / res).astype(np.int64)
        row = np.floor((points[:, 1] - grid.origin_y) / res).astype(np.int64)
        inside = (col >= 0) & (col < grid.cols) & (row >= 0) & (row < grid.rows)
        below = points[:, 2] - terrain[np.clip(row, 0, grid.rows - 1), np.clip(col, 0, grid.cols - 1)]
        keep = inside & (below <= max_point_height)
        # HAZARD outranks BLOCKED where both land in one cell, as in the costmap.
        order = np.argsort(cats[keep], kind="stable")
        result[row[keep][order], col[keep][order]] = cats[keep][order]
    return result


@dataclass(frozen=True)
class GeometryTruth:
    """The bird's-eye truth raised by the exact terrain's geometry, and the cells the terrain measures count."""

    category: np.ndarray  # int8 [rows, cols]: ground_truth_bev's categories, raised where geometry says so
    drops: np.ndarray  # bool: seen cells at a drop larger than step_blocked_m (ditch walls, cliff edges)
    slopes: np.ndarray  # bool: traversable cells on at least SLOPED_DEG that geometry does not block
    unseen_lethal: np.ndarray  # bool: cells lethal by geometry that the camera does not see (never "missed")
    labelled_lethal: np.ndarray  # bool: cells the labels alone make lethal (the truth before geometry)


def ground_truth_geometry(truth: np.ndarray, ground_height: np.ndarray, config: Any) -> GeometryTruth:
    """Raise ``truth`` (``ground_truth_bev``) by the step and slope of the exact terrain (``ground_height``).

    Geometry raises the cells where the camera sees ground (traversable GT cells), judged on the exact
    terrain around them, hidden neighbours included. Cells lethal by geometry up to ``HIDDEN_REACH_M``
    past the seen ground (the face of a drop below its brink, a ditch wall the sight line passes over)
    are lethal too, but only as what a predicted lethal cell may lie next to: the camera cannot see
    them, so recall does not count them. ``config`` is the costmap's CostmapConfig (its limits and
    resolution).
    """
    import cv2

    from perception_core.costmap.terrain import ground_geometry

    heights = np.asarray(ground_height, dtype=np.float32)
    # Highest / lowest ground in a cell from the centre heights: half-way to the highest / lowest neighbour
    # (cells of unknown height, NaN, take no part).
    kernel = np.ones((3, 3), np.uint8)
    known = np.isfinite(heights)
    highest = cv2.dilate(np.where(known, heights, -np.inf).astype(np.float32), kernel, borderType=cv2.BORDER_REPLICATE)
    lowest = cv2.erode(np.where(known, heights, np.inf).astype(np.float32), kernel, borderType=cv2.BORDER_REPLICATE)
    top, bottom = (heights + highest) / 2, (heights + lowest) / 2
    geometry = ground_geometry(heights, config, top=top, bottom=bottom)
    truth = np.asarray(truth)
    labelled_lethal = np.isin(truth, _LETHAL_VALUES)
    ground = (truth != UNKNOWN) & ~labelled_lethal
    radius = max(1, round(HIDDEN_REACH_M / config.resolution))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    reach = cv2.dilate(ground.astype(np.uint8), disk) > 0
    raised = truth.copy()
    caution = geometry.caution & ground & (truth < int(Category.CAUTION))
    raised[caution] = int(Category.CAUTION)
    blocked = geometry.blocked & reach & ~labelled_lethal
    raised[blocked] = int(Category.BLOCKED)
    with np.errstate(invalid="ignore"):
        drops = ground & (geometry.step_m > config.step_blocked_m)
        slopes = ground & ~geometry.blocked & (geometry.slope_deg >= SLOPED_DEG)
    return GeometryTruth(raised, drops, slopes, blocked & ~ground, labelled_lethal)


def _distance_to(mask: np.ndarray) -> np.ndarray:
    """Distance in cells from every cell to the nearest True cell of ``mask`` (inf when there is none)."""
    import cv2

    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


class _TruthMasks(NamedTuple):
    """bool [rows, cols] each, from a frame's ground truth (``CostmapMeasures._truth_masks``)."""

    obstacle: np.ndarray  # BLOCKED or HAZARD
    traversable: np.ndarray  # observed and not an obstacle
    window: np.ndarray  # 0 <= x <= x_max_m
    near_obstacle: np.ndarray  # within tolerance_m of an obstacle cell
    clear: np.ndarray  # traversable, in the window, not near an obstacle: where false lethal is counted


@dataclass
class CostmapMeasures:
    """Accumulates the costmap measures over frames (micro-averaged: totals of cells and groups)."""

    tolerance_m: float = 0.3
    x_max_m: float = 12.0
    holes_x_max_m: float = 10.0
    min_group_cells: int = 3
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("gt_obstacle_cells", "gt_obstacle_cells_hit", "lethal_cells", "lethal_cells_near_gt", "gt_groups",
         "gt_groups_touched", "gt_traversable_cells", "gt_traversable_cells_unknown", "clear_cells",
         "clear_cells_lethal", "gt_drop_cells", "gt_drop_cells_hit", "sloped_clear_cells",
         "sloped_clear_cells_lethal", "gt_labelled_groups", "gt_labelled_groups_touched"), 0))
    frames: int = 0

    def clear_cells(self, ground_truth: np.ndarray | GeometryTruth, grid: BevGrid) -> np.ndarray:
        """bool [rows, cols]: the cells false lethal is counted on: GT traversable, 0 <= x <= ``x_max_m``, and
        farther than ``tolerance_m`` from every GT obstacle cell."""
        category = ground_truth.category if isinstance(ground_truth, GeometryTruth) else ground_truth
        return self._truth_masks(np.asarray(category), grid).clear

    def false_lethal_cells(self, predicted: np.ndarray, ground_truth: np.ndarray | GeometryTruth,
                           grid: BevGrid) -> np.ndarray:
        """bool [rows, cols]: the clear cells (``clear_cells``) that ``predicted`` marks lethal."""
        return self.clear_cells(ground_truth, grid) & np.isin(np.asarray(predicted), _LETHAL_VALUES)

    def _near(self, mask: np.ndarray, grid: BevGrid) -> np.ndarray:
        """Cells within ``tolerance_m`` of a True cell of ``mask``."""
        return _distance_to(mask) <= self.tolerance_m / grid.resolution + 1e-6

    def _truth_masks(self, category: np.ndarray, grid: BevGrid) -> _TruthMasks:
        xs, _ = grid.centres()
        window = np.broadcast_to((xs >= 0) & (xs <= self.x_max_m), category.shape)
        obstacle = np.isin(category, _LETHAL_VALUES)
        traversable = (category != UNKNOWN) & ~obstacle
        near_obstacle = self._near(obstacle, grid)
        return _TruthMasks(obstacle, traversable, window, near_obstacle, traversable & window & ~near_obstacle)

    def add(self, predicted: np.ndarray, ground_truth: np.ndarray | GeometryTruth, grid: BevGrid) -> dict[str, float]:
        """Score one frame: ``predicted`` and ``ground_truth`` are category grids (UNKNOWN or a Category).

        A GeometryTruth (terrain) also counts drop recall, false lethal on slopes and labelled object recall.
        """
        terrain = ground_truth if isinstance(ground_truth, GeometryTruth) else None
        if terrain is not None:
            ground_truth = terrain.category
        import cv2

        predicted = np.asarray(predicted)
        ground_truth = np.asarray(ground_truth)
        if predicted.shape != ground_truth.shape or predicted.shape != (grid.rows, grid.cols):
            raise ValueError(f"costmap shapes differ: prediction {predicted.shape}, ground truth {ground_truth.shape}, "
                             f"grid {(grid.rows, grid.cols)}")
        xs, _ = grid.centres()
        holes_window = np.broadcast_to((xs >= 0) & (xs <= self.holes_x_max_m), predicted.shape)
        gt_obstacle, gt_traversable, window, near_gt, clear = self._truth_masks(ground_truth, grid)
        lethal = np.isin(predicted, _LETHAL_VALUES)
        near_lethal = self._near(lethal, grid)

        gt_in = gt_obstacle & window
        if terrain is not None:
            gt_in &= ~terrain.unseen_lethal
        lethal_in = lethal & window
        frame = {
            "gt_obstacle_cells": int(gt_in.sum()),
            "gt_obstacle_cells_hit": int((gt_in & near_lethal).sum()),
            "lethal_cells": int(lethal_in.sum()),
            "lethal_cells_near_gt": int((lethal_in & near_gt).sum()),
            "gt_traversable_cells": int((gt_traversable & holes_window).sum()),
            "gt_traversable_cells_unknown": int((gt_traversable & holes_window & (predicted == UNKNOWN)).sum()),
            "clear_cells": int(clear.sum()),
            "clear_cells_lethal": int((clear & lethal).sum()),
            "gt_drop_cells": 0, "gt_drop_cells_hit": 0, "sloped_clear_cells": 0, "sloped_clear_cells_lethal": 0,
        }
        if terrain is not None:
            drops = terrain.drops & window
            sloped = terrain.slopes & clear
            frame.update(gt_drop_cells=int(drops.sum()), gt_drop_cells_hit=int((drops & near_lethal).sum()),
                         sloped_clear_cells=int(sloped.sum()), sloped_clear_cells_lethal=int((sloped & lethal).sum()))
        _, group_of, stats, _ = cv2.connectedComponentsWithStats(gt_in.astype(np.uint8), connectivity=8)
        big = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= self.min_group_cells)
        big = big[big > 0]  # label 0 is the background
        touched = np.unique(group_of[gt_in & near_lethal])
        frame["gt_groups"] = int(big.size)
        frame["gt_groups_touched"] = int(np.isin(big, touched).sum())
        labelled = gt_in & (terrain.labelled_lethal if terrain is not None else gt_obstacle)
        big_labelled = big[np.isin(big, np.unique(group_of[labelled]))]
        frame["gt_labelled_groups"] = int(big_labelled.size)
        frame["gt_labelled_groups_touched"] = int(np.isin(big_labelled, touched).sum())
        for key, value in frame.items():
            self.counts[key] += value
        self.frames += 1
        return measures_from_counts(frame)

    def summary(self) -> dict[str, Any]:
        """The measures over every frame added, their goals, and the counts behind them."""
        return {
            **measures_from_counts(self.counts),
            "frames": self.frames,
            "counts": dict(self.counts),
            "goals": {name: f"{op} {value}" for name, (op, value) in GOALS.items()},
            "definition": {"tolerance_m": self.tolerance_m, "x_max_m": self.x_max_m,
                           "holes_x_max_m": self.holes_x_max_m, "min_group_cells": self.min_group_cells},
        }


RANGE_BANDS_M = (0.0, 3.0, 6.0, 9.0, 12.0)  # bands of distance ahead (x in the base frame) for RangeBandMeasures
OBSTACLE_KINDS = ("labelled", "drop", "terrain")  # what makes a GT obstacle cell lethal (RangeBandMeasures)


@dataclass
class RangeBandMeasures:
    """Obstacle recall and precision per band of distance ahead, split by what makes a cell lethal.

    The totals of :class:`CostmapMeasures` hide where a costmap loses: a depth network's error grows with
    range, and the obstacles of terrain (drops, steps, slopes) need the ground's shape, where labelled ones
    (a rock, a tree) need only its position. Per band of ``edges_m`` (a cell's centre x; the last band
    includes its top, like ``CostmapMeasures``' window), with the same tolerance:

    - recall of the GT obstacle cells by kind: ``labelled`` (lethal by their labels), ``drop`` (seen cells at
      a drop, ``GeometryTruth.drops``), ``terrain`` (any other cell that geometry makes lethal), and of all;
    - precision of the predicted lethal cells, of all and, when the caller passes them, of each source's
      (e.g. the cells the labels alone make lethal, and the rest).

    A truth without terrain (a plain category grid) has only labelled obstacles.
    """

    edges_m: tuple[float, ...] = RANGE_BANDS_M
    tolerance_m: float = 0.3
    counts: dict[str, list[int]] = field(default_factory=dict)
    frames: int = 0

    def _count(self, key: str, per_band: list[int]) -> None:
        if key not in self.counts:
            self.counts[key] = [0] * len(per_band)
        self.counts[key] = [a + b for a, b in zip(self.counts[key], per_band, strict=True)]

    def add(self, predicted: np.ndarray, ground_truth: np.ndarray | GeometryTruth, grid: BevGrid,
            lethal_sources: dict[str, np.ndarray] | None = None) -> None:
        """Score one frame; ``lethal_sources`` maps a source name to a bool grid of the cells it makes lethal."""
        terrain = ground_truth if isinstance(ground_truth, GeometryTruth) else None
        category = np.asarray(terrain.category if terrain is not None else ground_truth)
        predicted = np.asarray(predicted)
        if predicted.shape != category.shape or predicted.shape != (grid.rows, grid.cols):
            raise ValueError(f"costmap shapes differ: prediction {predicted.shape}, ground truth {category.shape}, "
                             f"grid {(grid.rows, grid.cols)}")
        xs, _ = grid.centres()
        x = np.broadcast_to(xs, category.shape)
        reach = self.tolerance_m / grid.resolution + 1e-6
        gt_obstacle = np.isin(category, _LETHAL_VALUES)
        if terrain is not None:
            gt_obstacle &= ~terrain.unseen_lethal
            labelled = gt_obstacle & terrain.labelled_lethal
            drop = gt_obstacle & terrain.drops & ~labelled
            kinds = {"labelled": labelled, "drop": drop, "terrain": gt_obstacle & ~labelled & ~drop}
        else:
            kinds = {"labelled": gt_obstacle, "drop": np.zeros_like(gt_obstacle), "terrain": np.zeros_like(gt_obstacle)}
        lethal = np.isin(predicted, _LETHAL_VALUES)
        near_lethal = _distance_to(lethal) <= reach
        near_gt = _distance_to(np.isin(category, _LETHAL_VALUES)) <= reach
        sources = {"all": lethal, **{name: lethal & np.asarray(cells, bool) for name, cells in (lethal_sources or {}).items()}}
        bands = []
        last = len(self.edges_m) - 2
        for i, (low, high) in enumerate(zip(self.edges_m[:-1], self.edges_m[1:], strict=True)):
            bands.append((x >= low) & ((x <= high) if i == last else (x < high)))
        for kind, cells in {**kinds, "all": gt_obstacle}.items():
            self._count(f"gt_{kind}_cells", [int((cells & band).sum()) for band in bands])
            self._count(f"gt_{kind}_cells_hit", [int((cells & near_lethal & band).sum()) for band in bands])
        for name, cells in sources.items():
            self._count(f"lethal_{name}_cells", [int((cells & band).sum()) for band in bands])
            self._count(f"lethal_{name}_cells_near_gt", [int((cells & near_gt & band).sum()) for band in bands])
        self.frames += 1

    def summary(self) -> dict[str, Any]:
        """Per band: ``recall_<kind>``, ``precision_<source>`` (NaN where a band has nothing to count), the
        counts behind them, and the band edges."""
        def ratios(num: str, den: str) -> list[float]:
            return [n / d if d else math.nan for n, d in zip(self.counts[num], self.counts[den], strict=True)]

        recall = {f"recall_{kind}": ratios(f"gt_{kind}_cells_hit", f"gt_{kind}_cells")
                  for kind in (*OBSTACLE_KINDS, "all") if f"gt_{kind}_cells" in self.counts}
        sources = [key[len("lethal_"):-len("_cells")] for key in self.counts
                   if key.startswith("lethal_") and key.endswith("_cells")]
        precision = {f"precision_{name}": ratios(f"lethal_{name}_cells_near_gt", f"lethal_{name}_cells")
                     for name in sources}
        return {"bands_m": [[low, high] for low, high in zip(self.edges_m[:-1], self.edges_m[1:], strict=True)],
                **recall, **precision, "frames": self.frames, "counts": {k: list(v) for k, v in self.counts.items()},
                "definition": {"tolerance_m": self.tolerance_m, "kinds": "labelled: lethal by the labels; drop: seen "
                               "cells at a drop (GeometryTruth.drops); terrain: the rest that geometry makes lethal"}}


def measures_from_counts(counts: dict[str, int]) -> dict[str, float]:
    """The measures from cell and group counts (NaN where a measure has nothing to count)."""
    def ratio(num: str, den: str) -> float:
        return counts[num] / counts[den] if counts.get(den) else math.nan

    return {
        "obstacle_recall": ratio("gt_obstacle_cells_hit", "gt_obstacle_cells"),
        "obstacle_precision": ratio("lethal_cells_near_gt", "lethal_cells"),
        "object_recall": ratio("gt_groups_touched", "gt_groups"),
        "holes": ratio("gt_traversable_cells_unknown", "gt_traversable_cells"),
        "false_lethal": ratio("clear_cells_lethal", "clear_cells"),
        "drop_recall": ratio("gt_drop_cells_hit", "gt_drop_cells"),
        "false_lethal_on_slopes": ratio("sloped_clear_cells_lethal", "sloped_clear_cells"),
        "labelled_object_recall": ratio("gt_labelled_groups_touched", "gt_labelled_groups"),
    }


def meets_goal(name: str, value: float) -> bool:
    """Whether a measure's value meets its goal (NaN never does)."""
    op, goal = GOALS[name]
    if not math.isfinite(value):
        return False
    return value >= goal if op == ">=" else value <= goal
