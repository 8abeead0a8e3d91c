"""Costmap parameters, validated once at start-up so that a bad value never reaches a frame.

Every check raises ConfigError with one line naming the parameter, what it
must be and what it was, so a node can print it and exit 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from perception_core.errors import ConfigError
from perception_core.ontology import Category

CATEGORIES: tuple[Category, ...] = tuple(Category)
UNKNOWN = -1  # OccupancyGrid value of a cell nothing was observed in
# Upper bound on grid cells (rows x cols): 4 M cells is 200 m x 200 m at 0.1 m. Each frame holds a few arrays of
# this size per category, so the bound keeps a mistyped extent from exhausting memory at the first frame.
MAX_GRID_CELLS = 4_000_000
# Nav2 rejects an OccupancyGrid wider or taller than INT16_MAX cells (nav2_util/validate_messages.hpp, jazzy).
MAX_GRID_SIDE = 32767


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"costmap parameter {name} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ConfigError(f"costmap parameter {name} must be finite, got {value}")
    return float(value)


@dataclass
class CostmapConfig:
    """Grid geometry, category costs, camera mount, projection and evidence rules.

    The grid is a window around the robot: cell (0, 0)'s corner lies at
    (origin_x, origin_y) from the robot's position, in the grid frame's axes
    (the base frame, or the fixed frame when the node has a pose source).
    Default: 0.1 m cells, 30 m x 30 m centred on the robot, which holds the
    15 m depth range in every direction the robot may face in a fixed frame.
    """

    resolution: float = 0.1
    width_m: float = 30.0  # extent along grid x (OccupancyGrid info.width = width_m / resolution)
    height_m: float = 30.0  # extent along grid y (info.height = height_m / resolution)
    origin_x: float = -15.0  # corner of cell (0, 0) relative to the robot, grid x
    origin_y: float = -15.0
    cost_free: int = 0
    cost_caution: int = 50
    cost_blocked: int = 100
    cost_hazard: int = 100
    mount_x: float = 0.0
    mount_y: float = 0.0
    mount_z: float = 1.5
    mount_roll: float = 0.0
    mount_pitch: float = 0.0
    mount_yaw: float = 0.0
    ground_z: float = 0.0  # height of the ground plane in the base frame (0 for base_footprint; -0.3 for a base 0.3 m up)
    min_range: float = 0.3  # depth (optical z, metres) at or below which points are dropped
    max_range: float = 15.0  # depth at or beyond which points are dropped (a depth model reports its max for "farther")
    max_point_height: float = 3.0  # points higher above the ground are dropped (canopy, overhangs)
    min_points_per_cell: int = 1  # points (and surface samples) a traversable category needs in a cell
    min_obstacle_area_m2: float = 0.001  # surface area a BLOCKED/HAZARD category needs in a cell (see docs/costmap.md)
    max_obstacle_depth_m: float = 1.5  # how far behind its ground contact an obstacle pixel may lie (an object's depth)
    column_step: int = 0  # work on every n-th depth column; 0: the largest n that keeps columns a cell apart at max_range
    near_row_spacing: float = 0.35  # near rows that flat ground packs closer are thinned to this spacing (cells); 0: off
    dense_ground: bool = True  # fill the ground surface between neighbouring pixel rows
    surface_step_ratio: float = 3.0  # largest inverse-depth step between rows, relative to flat ground's, still a surface
    max_surface_slope_deg: float = 35.0  # steepest segment between neighbouring surface pixels still one surface
    surface_depth_noise: float = 0.05  # relative depth noise of the source, allowed between rows of one surface
    ground_geometry: bool = True  # cost from the observed ground's slope, steps and drops (costmap/terrain.py)
    step_caution_m: float = 0.15  # height step to a neighbouring cell above which traversable ground is CAUTION
    step_blocked_m: float = 0.3  # ... BLOCKED; also the largest drop (ditch, cliff edge) the vehicle may step down
    slope_caution_deg: float = 20.0  # slope over slope_window_m above which traversable ground is CAUTION
    slope_blocked_deg: float = 30.0  # ... BLOCKED
    slope_window_m: float = 0.5  # side of the square the slope is averaged over (about a track's contact length)
    category_costs: dict[Category, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first field that is out of range, not finite or inconsistent."""
        for f in fields(self):
            if f.init and f.name not in ("dense_ground", "ground_geometry"):
                _finite(f.name, getattr(self, f.name))
        for name in ("dense_ground", "ground_geometry"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"costmap parameter {name} must be true or false, got {getattr(self, name)!r}")
        if not self.resolution > 0:
            raise ConfigError(f"costmap parameter resolution must be > 0 m, got {self.resolution}")
        for name in ("width_m", "height_m"):
            value = getattr(self, name)
            if not value >= self.resolution:
                raise ConfigError(f"costmap parameter {name} must be >= resolution ({self.resolution} m), got {value}")
        for name, cells in (("width_m", self.cols), ("height_m", self.rows)):
            if cells > MAX_GRID_SIDE:
                raise ConfigError(f"costmap parameter {name} gives {cells} cells at resolution {self.resolution} m; "
                                  f"Nav2 rejects grids with more than {MAX_GRID_SIDE} cells on a side")
        cells = self.rows * self.cols
        if cells > MAX_GRID_CELLS:
            raise ConfigError(f"costmap parameters width_m, height_m and resolution give {self.cols} x {self.rows} "
                              f"cells, which exceeds {MAX_GRID_CELLS} cells; use a coarser resolution or a smaller "
                              "extent")
        for category in CATEGORIES:
            name = f"cost_{category.name.lower()}"
            cost = getattr(self, name)
            if int(cost) != cost or not 0 <= int(cost) <= 100:
                raise ConfigError(f"costmap parameter {name} must be an OccupancyGrid cost 0..100, got {cost}")
        if not 0 <= self.min_range < self.max_range:
            raise ConfigError(f"costmap parameters need 0 <= min_range < max_range, got min_range={self.min_range}, "
                              f"max_range={self.max_range}")
        if not self.max_point_height > 0:
            raise ConfigError(f"costmap parameter max_point_height must be > 0 m, got {self.max_point_height}")
        if not self.mount_z > self.ground_z:
            raise ConfigError(f"costmap parameter mount_z ({self.mount_z} m) puts the camera at or below the ground "
                              f"(ground_z = {self.ground_z} m)")
        if int(self.min_points_per_cell) != self.min_points_per_cell or self.min_points_per_cell < 1:
            raise ConfigError(f"costmap parameter min_points_per_cell must be an integer >= 1, got "
                              f"{self.min_points_per_cell}")
        if int(self.column_step) != self.column_step or self.column_step < 0:
            raise ConfigError(f"costmap parameter column_step must be an integer >= 0 (0: automatic), got "
                              f"{self.column_step}")
        if not 0.0 <= self.near_row_spacing <= 1.0:
            raise ConfigError(f"costmap parameter near_row_spacing must be in [0, 1] cells (0: every row), got "
                              f"{self.near_row_spacing}")
        for name in ("min_obstacle_area_m2", "max_obstacle_depth_m"):
            if getattr(self, name) < 0:
                raise ConfigError(f"costmap parameter {name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.max_surface_slope_deg < 90:
            raise ConfigError(f"costmap parameter max_surface_slope_deg must be in (0, 90), got "
                              f"{self.max_surface_slope_deg}")
        if not 0 <= self.surface_depth_noise < 0.5:
            raise ConfigError(f"costmap parameter surface_depth_noise must be in [0, 0.5), got "
                              f"{self.surface_depth_noise}")
        if not self.surface_step_ratio >= 1:
            raise ConfigError(f"costmap parameter surface_step_ratio must be >= 1, got {self.surface_step_ratio}")
        if not 0 < self.step_caution_m <= self.step_blocked_m:
            raise ConfigError(f"costmap parameters need 0 < step_caution_m <= step_blocked_m, got "
                              f"step_caution_m={self.step_caution_m}, step_blocked_m={self.step_blocked_m}")
        if not 0 < self.slope_caution_deg <= self.slope_blocked_deg < 90:
            raise ConfigError(f"costmap parameters need 0 < slope_caution_deg <= slope_blocked_deg < 90, got "
                              f"slope_caution_deg={self.slope_caution_deg}, slope_blocked_deg={self.slope_blocked_deg}")
        if not self.slope_window_m > 0:
            raise ConfigError(f"costmap parameter slope_window_m must be > 0 m (3 cells at least are used), got "
                              f"{self.slope_window_m}")
        self.category_costs = {c: int(getattr(self, f"cost_{c.name.lower()}")) for c in CATEGORIES}

    @property
    def cols(self) -> int:
        return max(1, round(self.width_m / self.resolution))

    @property
    def rows(self) -> int:
        return max(1, round(self.height_m / self.resolution))

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.init]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> CostmapConfig:
        """Build from a dict (e.g. node parameters), ignoring keys that are not fields."""
        names = set(cls.field_names())
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclass(frozen=True)
class CorridorConfig:
    """The driving corridor ahead of the robot: x in [0, length], |y| <= width / 2 in the base frame."""

    length: float = 10.0
    width: float = 2.0
    stop_distance: float = 3.0

    def __post_init__(self) -> None:
        for name in ("length", "width", "stop_distance"):
            _finite(f"corridor_{name}" if name != "stop_distance" else name, getattr(self, name))
        if not (self.length > 0 and self.width > 0):
            raise ConfigError(f"costmap parameters corridor_length and corridor_width must be > 0 m, got "
                              f"{self.length}, {self.width}")
        if self.stop_distance < 0:
            raise ConfigError(f"costmap parameter stop_distance must be >= 0 m, got {self.stop_distance}")
