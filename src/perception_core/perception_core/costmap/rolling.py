"""The grid in a fixed frame: a window that rolls with the robot, and an optional memory of earlier frames.

- Window: axis-aligned with the fixed frame (as Nav2's rolling costmap),
  its corner at the robot's position plus (origin_x, origin_y), snapped down
  to whole cells of a lattice anchored at the fixed frame's origin. Cells of
  successive frames therefore coincide, and the memory shifts by whole cells
  without resampling.
- Memory (``decay_s`` > 0): each cell keeps the category of its newest
  observation and when that was (the image stamp). A newer observation of
  the cell replaces it, whatever it says; a cell not observed for more than
  ``decay_s`` returns to unknown. An obstacle that leaves the camera's lower
  field of view is so remembered for ``decay_s``, and a cell the camera sees
  again is never held against what it sees now.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from perception_core.costmap.config import CATEGORIES, UNKNOWN, CostmapConfig
from perception_core.costmap.projection import CostmapResult, GridWindow
from perception_core.errors import ConfigError
from perception_core.ontology import Category


def costs_of(category: np.ndarray, config: CostmapConfig) -> np.ndarray:
    """int8 OccupancyGrid costs of a category grid (UNKNOWN stays -1)."""
    table = np.array([UNKNOWN] + [config.category_costs[c] for c in CATEGORIES], dtype=np.int8)
    return table[category.astype(np.int64) + 1]


@dataclass
class FusedCostmap:
    """The remembered grid: the same views as a CostmapResult (category, grid, present, layers, heights)."""

    category: np.ndarray  # int8 [rows, cols]
    grid: np.ndarray  # int8 costs
    obstacle_height: np.ndarray  # float32 [rows, cols], NaN where not lethal
    window: GridWindow
    remembered_cells: int  # cells shown from memory (not observed in the newest frame)

    @functools.cached_property
    def present(self) -> np.ndarray:
        return np.stack([self.category == c for c in CATEGORIES])

    @functools.cached_property
    def layers(self) -> dict[str, np.ndarray]:
        unobserved_or_zero = np.where(self.category != UNKNOWN, np.int8(0), np.int8(UNKNOWN))
        return {c.name.lower(): np.where(self.category == c, np.int8(100), unobserved_or_zero) for c in CATEGORIES}

    @property
    def observed_cells(self) -> int:
        return int(np.count_nonzero(self.category != UNKNOWN))


def _shift(array: np.ndarray, rows: int, cols: int, fill: float | int) -> np.ndarray:
    """``array`` moved by (rows, cols) cells: out[r, c] = array[r + rows, c + cols], ``fill`` where nothing maps."""
    out = np.full_like(array, fill)
    h, w = array.shape
    if abs(rows) >= h or abs(cols) >= w:
        return out
    src_r = slice(max(rows, 0), h + min(rows, 0))
    dst_r = slice(max(-rows, 0), h + min(-rows, 0))
    src_c = slice(max(cols, 0), w + min(cols, 0))
    dst_c = slice(max(-cols, 0), w + min(-cols, 0))
    out[dst_r, dst_c] = array[src_r, src_c]
    return out


class RollingGrid:
    """Places each frame's window in the fixed frame and, with ``decay_s`` > 0, fuses frames over time."""

    def __init__(self, config: CostmapConfig, decay_s: float = 0.0) -> None:
        if not (math.isfinite(decay_s) and decay_s >= 0):
            raise ConfigError(f"costmap parameter fusion_decay_s must be >= 0 s, got {decay_s}")
        self.config = config
        self.decay_s = float(decay_s)
        self._window: GridWindow | None = None
        self._category: np.ndarray | None = None
        self._seen_at: np.ndarray | None = None  # stamp (s) of each cell's newest observation; -inf never
        self._height: np.ndarray | None = None

    def window_for(self, base_in_fixed: np.ndarray) -> GridWindow:
        """The window for a robot at pose ``base_in_fixed`` (4x4 T_fixed_base)."""
        pose = np.asarray(base_in_fixed, dtype=np.float64)
        res = self.config.resolution
        origin_x = math.floor((pose[0, 3] + self.config.origin_x) / res + 1e-9) * res
        origin_y = math.floor((pose[1, 3] + self.config.origin_y) / res + 1e-9) * res
        return GridWindow(res, origin_x, origin_y, self.config.rows, self.config.cols, pose.copy())

    def reset(self) -> None:
        """Forget every earlier frame (inputs went stale, or the fixed frame jumped)."""
        self._window = self._category = self._seen_at = self._height = None

    def fuse(self, result: CostmapResult, stamp_s: float) -> CostmapResult | FusedCostmap:
        """The grid to publish for ``result`` (built in a window from ``window_for``) observed at ``stamp_s``."""
        if self.decay_s <= 0:
            return result
        window = result.window
        if self._window is None or self._category is None or self._seen_at is None or self._height is None:
            self._category = np.full((window.rows, window.cols), UNKNOWN, np.int8)
            self._seen_at = np.full((window.rows, window.cols), -np.inf)
            self._height = np.full((window.rows, window.cols), np.nan, np.float32)
        else:
            d_rows = round((window.origin_y - self._window.origin_y) / window.resolution)
            d_cols = round((window.origin_x - self._window.origin_x) / window.resolution)
            if d_rows or d_cols:
                self._category = _shift(self._category, d_rows, d_cols, UNKNOWN)
                self._seen_at = _shift(self._seen_at, d_rows, d_cols, -np.inf)
                self._height = _shift(self._height, d_rows, d_cols, np.nan)
        self._window = window
        newer = (result.category != UNKNOWN) & (self._seen_at <= stamp_s)
        self._category[newer] = result.category[newer]
        self._seen_at[newer] = stamp_s
        self._height[newer] = result.obstacle_height[newer]
        expired = self._seen_at < stamp_s - self.decay_s
        self._category[expired] = UNKNOWN
        self._seen_at[expired] = -np.inf
        self._height[expired] = np.nan
        category = self._category.copy()
        lethal = (category == Category.BLOCKED) | (category == Category.HAZARD)
        return FusedCostmap(category=category, grid=costs_of(category, self.config),
                            obstacle_height=np.where(lethal, self._height, np.nan).astype(np.float32), window=window,
                            remembered_cells=int(((category != UNKNOWN) & (result.category == UNKNOWN)).sum()))
