"""Ground geometry per cell: slope and step from the observed ground's heights, against the vehicle's limits.

Labels say what the ground is; geometry says whether the vehicle can drive
it. The projection bins the height of every surface point and sample into
per-cell statistics of the ground (NaN where no ground was seen): the mean
height, and the highest and lowest ground in the cell (``top`` and
``bottom``; from the mean and spread of the heights, so a wall inside one
cell is a step too). From them, per cell:

- step: how far the cell's top stands above the lowest bottom of its 3x3
  neighbourhood (a kerb, a rock shelf, a ditch wall). The upper cells of a
  step are marked: that is the edge the vehicle must not drive off or climb,
  and the ground at the foot of a step stays what it is. Across an unknown
  gap there is no neighbour: drops seen as a depth discontinuity are found in
  the image instead (``projection``: drop edges).
- slope: the gradient of the elevation averaged over a window of
  ``slope_window_m`` (a vehicle-sized plane, not the noise of one cell),
  from central differences of the window means, each placed at the centroid
  of its known cells (``window_slope``).

A cell is CAUTION above ``slope_caution_deg`` or ``step_caution_m`` and
BLOCKED above ``slope_blocked_deg`` or ``step_blocked_m``. The same operator
scores the exact terrain in the benchmark, so "what the vehicle can take" has
one definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perception_core.costmap import kernels
from perception_core.costmap.config import CostmapConfig


@dataclass(frozen=True)
class GroundGeometry:
    """Per-cell step (m), slope and the cells over the vehicle's limits; NaN / False where unknown."""

    step_m: np.ndarray  # float32 [rows, cols]
    slope_tan: np.ndarray  # float32 [rows, cols]: rise over run of the window-averaged ground
    caution: np.ndarray  # bool [rows, cols]: over a caution limit, not over a blocked one
    blocked: np.ndarray  # bool [rows, cols]

    @property
    def slope_deg(self) -> np.ndarray:
        return np.degrees(np.arctan(self.slope_tan)).astype(np.float32)


def bounding_box(mask: np.ndarray, pad: int = 0) -> tuple[slice, slice] | None:
    """(rows, cols) slices of the box around a 2-D mask's non-zero cells, widened by ``pad``; None if empty."""
    import cv2

    mask = np.asarray(mask)
    mask8 = mask.view(np.uint8) if mask.dtype in (np.bool_, np.uint8) else (mask != 0).view(np.uint8)
    col, row, width, height = cv2.boundingRect(np.ascontiguousarray(mask8))  # of the non-zero cells, in one C pass
    if width == 0:
        return None
    return slice(max(row - pad, 0), row + height + pad), slice(max(col - pad, 0), col + width + pad)


def _set_where(target: np.ndarray, value: float, mask: np.ndarray) -> None:
    """``target[mask] = value`` in place (``mask`` uint8 or bool): cv2.copyTo, several times faster than numpy's
    masked assignment."""
    import cv2

    if not target.flags.c_contiguous:  # cv2 would write into a copy
        np.copyto(target, value, where=mask != 0)
        return
    cv2.copyTo(np.full_like(target, value), mask.view(np.uint8), target)


def slope_window_cells(config: CostmapConfig) -> int:
    """Odd side length (cells, >= 3) of the window the slope is averaged over."""
    return max(3, 2 * round(config.slope_window_m / config.resolution / 2) + 1)


def ground_geometry(elevation: np.ndarray, config: CostmapConfig, top: np.ndarray | None = None,
                    bottom: np.ndarray | None = None) -> GroundGeometry:
    """Step, slope and limit masks of the ground's mean height per cell (float, NaN where unknown).

    ``top`` and ``bottom`` are the highest and lowest ground per cell (default: the mean). Work is
    confined to the bounding box of the known cells (the camera sees a wedge of the window).
    """
    import cv2

    elevation = np.asarray(elevation, dtype=np.float32)
    shape = elevation.shape
    step = np.full(shape, np.nan, np.float32)
    slope = np.full(shape, np.nan, np.float32)
    known = cv2.compare(elevation, elevation, cv2.CMP_EQ)  # uint8 255 where not NaN
    box = bounding_box(known, pad=slope_window_cells(config) // 2 + 1)
    if box is not None:
        top = elevation if top is None else np.asarray(top, dtype=np.float32)
        bottom = elevation if bottom is None else np.asarray(bottom, dtype=np.float32)
        step[box], slope[box] = _step_and_slope(elevation[box], top[box], bottom[box], known[box], config)
    tan_caution, tan_blocked = (np.float32(np.tan(np.radians(d))) for d in (config.slope_caution_deg,
                                                                             config.slope_blocked_deg))
    with np.errstate(invalid="ignore"):
        blocked = (step > np.float32(config.step_blocked_m)) | (slope > tan_blocked)
        caution = (step > np.float32(config.step_caution_m)) | (slope > tan_caution)
    caution &= ~blocked
    return GroundGeometry(step, slope, caution, blocked)


def _step_and_slope(elevation: np.ndarray, top: np.ndarray, bottom: np.ndarray, known: np.ndarray,
                    config: CostmapConfig) -> tuple[np.ndarray, np.ndarray]:
    """(step, tan slope) of a box of the map; NaN where the cell is unknown."""
    import cv2

    unknown = known == 0
    # Lowest known bottom in the 3x3 neighbourhood (unknown cells +inf, so they never count).
    filled = np.array(bottom, np.float32)
    _set_where(filled, np.inf, unknown)
    lowest = cv2.erode(filled, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=np.inf)
    step = cv2.subtract(np.ascontiguousarray(top), lowest)
    _set_where(step, np.nan, unknown)

    slope = window_slope(elevation, unknown, slope_window_cells(config), config.resolution)
    _set_where(slope, np.nan, unknown)
    return step, slope


# Smallest spacing, in cells, of the compared window centroids in any direction for window_slope to solve
# for the gradient rather than take the nominal difference.
SOLVE_MIN_SPREAD = 0.75


def window_slope(elevation: np.ndarray, unknown: np.ndarray, side: int, resolution: float) -> np.ndarray:
    """tan of the slope of the ground over side x side windows: central differences of window means.

    The means of the windows one cell either side are compared, each placed at the centroid of its
    known cells, not at its centre: where a window is partly unseen (the far side of a crest, the edge
    of the view) its known cells sit off-centre, and differences over the nominal two cells read a
    35-degree face as about 20 (docs/costmap.md, "Measured"). The differences along rows and along
    columns then fix the plane's two gradients exactly, whatever the centroids; with every cell known
    this is the plain central difference. A window needs a third of its cells known (NaN otherwise); where
    the compared centroids are less than ``SOLVE_MIN_SPREAD`` cells apart in some direction (a band of seen
    cells) the plain central difference stands. ``elevation`` is NaN exactly where ``unknown``.
    """
    import cv2

    rows, cols = elevation.shape
    if rows < 3 or cols < 3:
        return np.full((rows, cols), np.nan, np.float32)
    known = np.logical_not(unknown).view(np.uint8)  # 0 / 1
    z = elevation.astype(np.float32, copy=True)
    cv2.patchNaNs(z, 0)  # unknown cells are NaN in the elevation: they add nothing to a window's sums

    def window_sum(values: np.ndarray, depth: int = -1) -> np.ndarray:
        return cv2.boxFilter(values, depth, (side, side), normalize=False, borderType=cv2.BORDER_CONSTANT)

    # Counts and cell coordinates sum to integers, exact from integer images too (and faster than from float32).
    n = window_sum(known, cv2.CV_32F)
    # 1 / n where a window has a third of its cells known, NaN where it has fewer (no mean there).
    inverse = cv2.divide(np.float32(1), n)
    _set_where(inverse, np.nan, n < side * side / 3.0)
    coordinate = np.uint16 if max(rows, cols) <= np.iinfo(np.uint16).max else np.int32
    u = np.arange(cols, dtype=coordinate)[None, :] * known  # cell coordinates within the box
    v = np.arange(rows, dtype=coordinate)[:, None] * known
    means = [np.multiply(window_sum(values, depth), inverse)
             for values, depth in ((z, -1), (u, cv2.CV_32F), (v, cv2.CV_32F))]  # of z, u and v
    # The differences, the 2x2 solve and the magnitude per cell, compiled (kernels.slope_from_window_means).
    # The compared centroids must stand at least SOLVE_MIN_SPREAD cells apart in every direction (the 2x2
    # system's smaller singular value: 2 with every cell known, a little under 1 for windows cut by a crest
    # or the ragged edge of the view). A band of seen cells along the edge of the field of view at range has
    # them apart along the band mostly, and the solve would extrapolate the band's noise across it into a
    # steep slope; there the nominal two-cell difference is kept.
    return kernels.slope_from_window_means(*means,
                                           np.float32(SOLVE_MIN_SPREAD * SOLVE_MIN_SPREAD),
                                           np.float32(1.0 / resolution))
