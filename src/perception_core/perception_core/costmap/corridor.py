"""The driving corridor ahead of the robot: distances to the nearest lethal cells, and a verdict.

The corridor is the rectangle x in [0, length], |y| <= width / 2 of the base
frame. It is evaluated on the grid whatever its frame: each cell's centre is
taken back into the base frame, and the cells whose centres lie inside are the
corridor. A cell's distance is its centre's x minus half a cell (its near
edge on a base-frame grid; conservative by at most half a cell on a rotated
one), clamped at 0.

The verdict (``status``) is what a controller needs when it cannot read a map:
STOP when a BLOCKED/HAZARD cell lies within ``stop_distance``; UNKNOWN when the
corridor was not seen (no observed cell in it, or more than
``max_unknown_fraction`` of it unknown); CLEAR otherwise. An empty corridor
is never "clear" by default: unknown is not free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from perception_core.costmap.config import UNKNOWN, CorridorConfig, CostmapConfig
from perception_core.costmap.projection import GridWindow
from perception_core.errors import ConfigError
from perception_core.ontology import Category


class CorridorVerdict(IntEnum):
    """Values of perception_msgs/CorridorStatus.status."""

    CLEAR = 0
    STOP = 1
    UNKNOWN = 2


@dataclass(frozen=True)
class CorridorReport:
    nearest_blocked_m: float
    nearest_hazard_m: float
    unknown_fraction: float
    stop_required: bool
    status: CorridorVerdict


def corridor_cells(window: GridWindow, corridor: CorridorConfig) -> tuple[np.ndarray, np.ndarray]:
    """(bool [rows, cols] cells in the corridor, float [rows, cols] their base-frame distance ahead)."""
    res = window.resolution
    xs = window.origin_x + (np.arange(window.cols) + 0.5) * res
    ys = window.origin_y + (np.arange(window.rows) + 0.5) * res
    grid_x, grid_y = np.meshgrid(xs, ys)
    to_base = np.linalg.inv(np.asarray(window.base_to_grid, dtype=np.float64))
    base_x = to_base[0, 0] * grid_x + to_base[0, 1] * grid_y + to_base[0, 3]
    base_y = to_base[1, 0] * grid_x + to_base[1, 1] * grid_y + to_base[1, 3]
    inside = (base_x >= 0) & (base_x <= corridor.length) & (np.abs(base_y) <= corridor.width / 2)
    return inside, np.maximum(base_x - res / 2, 0.0)


def corridor_report(present: np.ndarray, category: np.ndarray, window: GridWindow, corridor: CorridorConfig,
                    max_unknown_fraction: float = 0.5) -> CorridorReport:
    """Distances to the nearest BLOCKED / HAZARD cells in the corridor (inf when none), and the verdict.

    ``present`` is bool [4, rows, cols] (a cell holding both BLOCKED and HAZARD evidence counts for both);
    ``category`` the winning category per cell (UNKNOWN where unobserved).
    """
    inside, ahead = corridor_cells(window, corridor)
    distances = {}
    for key, cat in (("blocked", Category.BLOCKED), ("hazard", Category.HAZARD)):
        hit = inside & present[cat]
        distances[key] = float(ahead[hit].min()) if hit.any() else math.inf
    n_cells = int(inside.sum())
    observed = int((inside & (category != UNKNOWN)).sum())
    unknown_fraction = 1.0 - observed / n_cells if n_cells else 1.0
    nearest = min(distances["blocked"], distances["hazard"])
    stop = bool(nearest <= corridor.stop_distance)
    if stop:
        status = CorridorVerdict.STOP
    elif observed == 0 or unknown_fraction > max_unknown_fraction:
        status = CorridorVerdict.UNKNOWN
    else:
        status = CorridorVerdict.CLEAR
    return CorridorReport(distances["blocked"], distances["hazard"], unknown_fraction, stop, status)


def unknown_report() -> CorridorReport:
    """The report when nothing is known (stale inputs): no distances, status UNKNOWN."""
    return CorridorReport(math.inf, math.inf, 1.0, False, CorridorVerdict.UNKNOWN)


def corridor_distances(result: object, config: CostmapConfig, length: float, width: float,
                       stop_distance: float = 0.0) -> dict[str, float | bool]:
    """The corridor report of a ``CostmapResult`` as a dict (nearest_blocked_m, nearest_hazard_m, ...)."""
    del config
    report = corridor_report(result.present, result.category, result.window,  # type: ignore[attr-defined]
                             CorridorConfig(length, width, stop_distance))
    return {"nearest_blocked_m": report.nearest_blocked_m, "nearest_hazard_m": report.nearest_hazard_m,
            "unknown_fraction": report.unknown_fraction, "stop_required": report.stop_required}


def check_corridor_fits(corridor: CorridorConfig, config: CostmapConfig, rolling: bool) -> None:
    """ConfigError unless the corridor lies inside the grid window (for any heading when ``rolling``)."""
    if rolling:
        reach = math.hypot(corridor.length, corridor.width / 2)
        half = min(-config.origin_x, config.origin_x + config.width_m, -config.origin_y, config.origin_y + config.height_m)
        if reach > half + 1e-9:
            raise ConfigError(f"costmap parameter corridor_length ({corridor.length} m) with corridor_width "
                              f"({corridor.width} m) reaches {reach:.2f} m, beyond the {max(half, 0.0):.2f} m the "
                              "rolling window extends from the robot in every direction (width_m, height_m, "
                              "origin_x, origin_y)")
        return
    inside = (config.origin_x <= 0 and corridor.length <= config.origin_x + config.width_m
              and config.origin_y <= -corridor.width / 2 and corridor.width / 2 <= config.origin_y + config.height_m)
    if not inside:
        raise ConfigError(f"costmap parameters corridor_length ({corridor.length} m) and corridor_width "
                          f"({corridor.width} m) reach outside the grid (origin_x {config.origin_x}, origin_y "
                          f"{config.origin_y}, width_m {config.width_m}, height_m {config.height_m})")
