"""Traversability costmap from a depth image and a label image (pure numpy, no ROS).

The costmap node and offline evaluation share this module, so the geometry is
tested without DDS. Conventions (see docs/costmap.md):

- Grid frame (default ``base_link``, REP 103): x forward, y left, z up; the
  ground is the plane z = 0. The grid is a ``nav_msgs/OccupancyGrid``: cell
  (row, col) covers x in [origin_x + col*res, +res), y in [origin_y + row*res,
  +res); data is row-major from that origin corner.
- Camera optical frame (REP 103 ``*_optical_frame``): z forward, x right,
  y down. Pixel (u, v) has its centre at integer coordinates (OpenCV/ROS K).
- Camera mount: the pose of the camera *body* frame (x forward, y left, z up)
  in the grid frame as x, y, z, roll, pitch, yaw (R = Rz(yaw) Ry(pitch)
  Rx(roll)); positive pitch tilts the camera down towards the ground.
- Categories, by severity: FREE < CAUTION < BLOCKED < HAZARD. When several
  points land in one cell the most severe category with at least
  ``min_points_per_cell`` points wins. Classes mapped to no category (sky,
  ignore) are not projected. Unknown cells are -1.

With depth every labelled pixel becomes a 3D point where it really is, so an
obstacle is marked at its own distance and cells it hides stay unknown. The
flat-ground fallback (no depth) intersects pixel rays with z = 0; it smears
anything that sticks out of the ground to behind its true position, so results
carry ``used_flat_ground`` for callers to flag.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from perception_core.errors import ConfigError, DataError
from perception_core.geometry import OPTICAL_TO_BODY, rotation_rpy
from perception_core.ontology import NOT_PROJECTED, Category, Ontology, load_ontology, parse_category
from perception_core.pipelines import scale_intrinsics  # numpy-only; the one K-resize rule of the stack

CATEGORIES: tuple[Category, ...] = tuple(Category)
UNKNOWN = -1  # OccupancyGrid value of a cell nothing was observed in


@dataclass
class CostmapConfig:
    """Grid geometry, category costs, camera mount and point filtering.

    Default grid: 0.1 m cells, 20 m x 20 m, forward-biased (x in [-5, 15) m,
    y in [-10, 10) m) because a forward camera sees nothing behind the vehicle.
    """

    resolution: float = 0.1
    width_m: float = 20.0  # extent along grid x (OccupancyGrid info.width = width_m / resolution)
    height_m: float = 20.0  # extent along grid y (info.height = height_m / resolution)
    origin_x: float = -5.0  # grid x of the corner of cell (0, 0)
    origin_y: float = -10.0
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
    min_range: float = 0.3  # depth (optical z, metres) below which points are dropped
    max_range: float = 15.0  # depth beyond which points are dropped (model max_depth)
    max_point_height: float = 3.0  # points higher above the ground are dropped (canopy, overhangs)
    min_points_per_cell: int = 3  # fewer points of a category in a cell are treated as noise
    category_costs: dict[Category, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first inconsistent field."""
        if not (self.resolution > 0 and math.isfinite(self.resolution)):
            raise ConfigError(f"costmap resolution must be > 0 m, got {self.resolution}")
        for name in ("width_m", "height_m"):
            value = getattr(self, name)
            if not value >= self.resolution:
                raise ConfigError(f"costmap {name} must be >= resolution ({self.resolution} m), got {value}")
        for category in CATEGORIES:
            name = f"cost_{category.name.lower()}"
            cost = getattr(self, name)
            if not 0 <= int(cost) <= 100:
                raise ConfigError(f"costmap {name} must be an OccupancyGrid cost in [0, 100], got {cost}")
        if not 0 <= self.min_range < self.max_range:
            raise ConfigError(f"costmap needs 0 <= min_range < max_range, got {self.min_range}, {self.max_range}")
        if self.min_points_per_cell < 1:
            raise ConfigError(f"costmap min_points_per_cell must be >= 1, got {self.min_points_per_cell}")
        self.category_costs = {c: int(getattr(self, f"cost_{c.name.lower()}")) for c in CATEGORIES}

    @property
    def cols(self) -> int:
        return round(self.width_m / self.resolution)

    @property
    def rows(self) -> int:
        return round(self.height_m / self.resolution)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> CostmapConfig:
        """Build from a dict (e.g. node parameters), ignoring keys that are not fields."""
        names = {f.name for f in cls.__dataclass_fields__.values() if f.init}
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclass
class CostmapResult:
    """One built costmap. ``grid`` and every layer are int8 [rows, cols], row-major as OccupancyGrid data."""

    grid: np.ndarray  # cost of the winning category, UNKNOWN where unobserved
    category: np.ndarray  # winning Category value per cell, UNKNOWN where unobserved
    layers: dict[str, np.ndarray]  # per category name: 100 present, 0 observed without it, -1 unknown
    counts: np.ndarray  # int32 [4, rows, cols] points per category and cell
    used_flat_ground: bool
    points_projected: int  # points that landed inside the grid
    resolution: float
    origin_x: float
    origin_y: float


# --------------------------------------------------------------------------- geometry


def camera_to_grid_transform(config: CostmapConfig) -> np.ndarray:
    """4x4 transform taking points in the camera *optical* frame to the grid frame, from the mount fields."""
    transform = np.eye(4)
    transform[:3, :3] = rotation_rpy(config.mount_roll, config.mount_pitch, config.mount_yaw) @ OPTICAL_TO_BODY
    transform[:3, 3] = (config.mount_x, config.mount_y, config.mount_z)
    return transform


def resize_nearest(image: np.ndarray, to_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize by pixel centres (class ids must never be blended)."""
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == tuple(to_hw):
        return image
    rows = np.minimum(((np.arange(to_hw[0]) + 0.5) * src_h / to_hw[0]).astype(np.int64), src_h - 1)
    cols = np.minimum(((np.arange(to_hw[1]) + 0.5) * src_w / to_hw[1]).astype(np.int64), src_w - 1)
    return image[rows[:, None], cols[None, :]]


# --------------------------------------------------------------------------- categories


def class_categories_from_ontology(
    ontology: Ontology | str | Path | None = None, overrides: Mapping[int, str | None] | None = None
) -> np.ndarray:
    """Lookup table class id -> Category value (NOT_PROJECTED for sky, ignore and unlisted ids), int8 [256].

    ``ontology`` is a loaded Ontology, a path to ontology YAML, or None for the packaged default.
    ``overrides`` maps class ids to category names (or None: not projected), e.g. from a node parameter.
    """
    if not isinstance(ontology, Ontology):
        ontology = load_ontology(ontology)
    table = np.full(256, NOT_PROJECTED, dtype=np.int8)
    for cls in ontology.classes:
        if cls.id != ontology.ignore_index and cls.category is not None:
            table[cls.id] = int(Category[cls.category])
    for class_id, name in (overrides or {}).items():
        category = parse_category(name, where=f"category override for class {class_id}")
        table[int(class_id)] = NOT_PROJECTED if category is None else int(category)
    return table


# --------------------------------------------------------------------------- building


def _check_inputs(depth: np.ndarray | None, labels: np.ndarray, k_matrix: np.ndarray) -> None:
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be a 2D integer class-id image, got {labels.dtype} {labels.shape}")
    if depth is not None and (depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating)):
        raise DataError(f"depth must be a 2D float image in metres, got {depth.dtype} {depth.shape}")
    k = np.asarray(k_matrix, dtype=np.float64)
    if k.size != 9 or not (k.reshape(3, 3)[0, 0] > 0 and k.reshape(3, 3)[1, 1] > 0):
        raise DataError(f"camera intrinsics K must be 3x3 with fx, fy > 0, got {k.ravel().tolist()}")


def _pixel_grid(hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    v, u = np.mgrid[0 : hw[0], 0 : hw[1]]
    return u.astype(np.float64), v.astype(np.float64)


def project_points(
    depth: np.ndarray | None,
    categories: np.ndarray,
    k_matrix: np.ndarray,
    camera_to_grid: np.ndarray,
    config: CostmapConfig,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Grid-frame points [N, 3] and their categories [N] of the pixels that have a category.

    With ``depth`` each pixel is back-projected at its own depth; without it,
    rays are intersected with the ground plane z = 0 (flat-ground fallback).
    Returns (points, categories, used_flat_ground).
    """
    k = np.asarray(k_matrix, dtype=np.float64).reshape(3, 3)
    u, v = _pixel_grid(categories.shape)
    ray_x = (u - k[0, 2] - k[0, 1] * (v - k[1, 2]) / k[1, 1]) / k[0, 0]
    ray_y = (v - k[1, 2]) / k[1, 1]
    rotation, translation = camera_to_grid[:3, :3], camera_to_grid[:3, 3]
    keep = categories >= 0
    if depth is not None:
        z = depth.astype(np.float64)
        with np.errstate(invalid="ignore"):
            keep &= np.isfinite(z) & (z > config.min_range) & (z <= config.max_range)
        z = z[keep]
        optical = np.stack([ray_x[keep] * z, ray_y[keep] * z, z], axis=1)
        points = optical @ rotation.T + translation
        used_flat_ground = False
    else:
        rays = np.stack([ray_x[keep], ray_y[keep], np.ones(int(keep.sum()))], axis=1) @ rotation.T
        with np.errstate(divide="ignore", invalid="ignore"):
            t_hit = -translation[2] / rays[:, 2]  # optical depth of the hit, since the optical ray has z = 1
        hits = (rays[:, 2] < 0) & (t_hit > config.min_range) & (t_hit <= config.max_range)
        points = translation + rays[hits] * t_hit[hits, None]
        keep[keep] = hits
        used_flat_ground = True
    cats = categories[keep].astype(np.int64)
    low_enough = points[:, 2] <= config.max_point_height
    return points[low_enough], cats[low_enough], used_flat_ground


def build_costmap(
    depth: np.ndarray | None,
    labels: np.ndarray,
    k_matrix: np.ndarray,
    config: CostmapConfig,
    class_to_category: np.ndarray,
    camera_to_grid: np.ndarray | None = None,
    k_hw: tuple[int, int] | None = None,
) -> CostmapResult:
    """Project labelled pixels into the grid; most severe category per cell wins.

    Args:
        depth: [H, W] metres (NaN/inf/<= 0 invalid), or None for the flat-ground fallback.
        labels: [h, w] class ids, any resolution; resampled (nearest) to the depth's.
        k_matrix: 3x3 intrinsics of an image of size ``k_hw`` (default: the depth's size, or the
            labels' without depth); scaled to the working resolution.
        config: grid geometry, costs, mount and filters.
        class_to_category: int8 [256] table from ``class_categories_from_ontology``.
        camera_to_grid: 4x4 optical->grid transform (from TF); default from the mount fields.
    Raises:
        DataError: an image or K is malformed.
    """
    labels = np.asarray(labels)
    _check_inputs(depth, labels, k_matrix)
    work_hw = depth.shape if depth is not None else labels.shape
    # Depth, labels and camera_info are whole-frame resizes of one camera image (the nodes squash
    # the frame to each model's input), so their aspect ratios may differ: K scales per axis.
    labels = resize_nearest(labels, work_hw)
    k = scale_intrinsics(k_matrix, tuple(k_hw) if k_hw else tuple(work_hw), tuple(work_hw))
    categories = _categories_of(labels, class_to_category)
    transform = camera_to_grid_transform(config) if camera_to_grid is None else np.asarray(camera_to_grid)
    if depth is not None:
        counts, projected = _count_depth_points(depth, categories, k, transform, config)
        return _result_from_counts(counts, projected, config, used_flat_ground=False)
    points, cats, used_flat_ground = project_points(depth, categories, k, transform, config)
    return grid_from_points(points, cats, config, used_flat_ground)


def _categories_of(labels: np.ndarray, class_to_category: np.ndarray) -> np.ndarray:
    """int8 Category value per pixel (NOT_PROJECTED for classes outside the table)."""
    lut = np.asarray(class_to_category, dtype=np.int8)
    if labels.dtype == np.uint8 and lut.size == 256:
        import cv2

        return cv2.LUT(np.ascontiguousarray(labels), lut)  # one C pass; the int64 round trip below costs ~10x more
    categories = lut[np.clip(labels.astype(np.int64), 0, lut.size - 1)]
    categories[labels.astype(np.int64) >= lut.size] = NOT_PROJECTED
    return categories


# --------------------------------------------------------------------------- fast path with depth
#
# With depth, a pixel (u, v) at optical depth z lands at grid point z * d(u, v) + t, where d = R @ ray(u, v) and
# ray = K^-1 (u, v, 1) has optical z = 1. d only depends on K, the image size and the mount, so it is computed
# once (float64, then stored as float32 planes already divided by the cell size) and cached. Per frame the work
# is then three float32 multiply-adds over the image, range tests with cv2.inRange into uint8 masks, and one
# np.bincount over "category * cells + cell + 1" with every rejected pixel sent to bin 0: no float64, no
# boolean-mask copies of big arrays, no N x 3 point array. The cell of a point is floor(col_f) where
# col_f = (x - origin_x) / resolution is evaluated in float32 (error ~1e-5 cell at 20 m): only points within
# that distance of a cell edge can land in the neighbouring cell compared with the float64 reference path
# (project_points + grid_from_points, still used for the flat-ground fallback and as the tests' oracle).


@dataclass(frozen=True)
class _RayGeometry:
    col_gain: np.ndarray  # float32 [H, W]: d_x / resolution
    row_gain: np.ndarray  # float32 [H, W]: d_y / resolution
    z_gain: np.ndarray  # float32 [H, W]: d_z
    col_offset: float  # (t_x - origin_x) / resolution
    row_offset: float  # (t_y - origin_y) / resolution
    z_offset: float  # t_z


_GEOMETRY_CACHE: OrderedDict[tuple, _RayGeometry] = OrderedDict()
_GEOMETRY_CACHE_SIZE = 4  # a few cameras / mounts; a moving TF just recomputes (~2 ms at 640x384)


def _ray_geometry(k: np.ndarray, hw: tuple[int, int], transform: np.ndarray, config: CostmapConfig) -> _RayGeometry:
    """Per-pixel grid-frame ray directions for (K, size, camera->grid transform, grid origin/resolution), cached."""
    k = np.asarray(k, dtype=np.float64).reshape(3, 3)
    transform = np.asarray(transform, dtype=np.float64)
    key = (tuple(hw), k.tobytes(), transform[:3].tobytes(), config.resolution, config.origin_x, config.origin_y)
    cached = _GEOMETRY_CACHE.get(key)
    if cached is not None:
        _GEOMETRY_CACHE.move_to_end(key)
        return cached
    u, v = _pixel_grid(hw)
    ray_x = (u - k[0, 2] - k[0, 1] * (v - k[1, 2]) / k[1, 1]) / k[0, 0]
    ray_y = (v - k[1, 2]) / k[1, 1]
    rotation, translation = transform[:3, :3], transform[:3, 3]
    direction = [rotation[i, 0] * ray_x + rotation[i, 1] * ray_y + rotation[i, 2] for i in range(3)]
    res = config.resolution
    geometry = _RayGeometry(
        col_gain=(direction[0] / res).astype(np.float32),
        row_gain=(direction[1] / res).astype(np.float32),
        z_gain=direction[2].astype(np.float32),
        col_offset=float((translation[0] - config.origin_x) / res),
        row_offset=float((translation[1] - config.origin_y) / res),
        z_offset=float(translation[2]),
    )
    _GEOMETRY_CACHE[key] = geometry
    while len(_GEOMETRY_CACHE) > _GEOMETRY_CACHE_SIZE:
        _GEOMETRY_CACHE.popitem(last=False)
    return geometry


def _f32_at_least_above(value: float) -> float:
    """Smallest float32 x with x > value: ``z > value`` <=> ``z >= x`` for float32 z, exactly."""
    x = np.float32(value)
    if float(x) <= value:
        x = np.nextafter(x, np.float32(np.inf))
    return float(x)


def _f32_at_most(value: float) -> float:
    """Largest float32 x with x <= value: ``z <= value`` <=> ``z <= x`` for float32 z, exactly."""
    x = np.float32(value)
    if float(x) > value:
        x = np.nextafter(x, np.float32(-np.inf))
    return float(x)


def _count_depth_points(
    depth: np.ndarray, categories: np.ndarray, k: np.ndarray, transform: np.ndarray, config: CostmapConfig
) -> tuple[np.ndarray, int]:
    """Points per (category, row, col) of the depth pixels, and how many landed in the grid.

    Same selection as ``project_points`` + ``grid_from_points``: a category, min_range < z <= max_range,
    height <= max_point_height, inside the grid.
    """
    import cv2

    rows, cols = config.rows, config.cols
    cells = rows * cols
    geometry = _ray_geometry(k, depth.shape, transform, config)
    z = np.asarray(depth, dtype=np.float32)
    lowest = -float(np.finfo(np.float32).max)
    # uint8 masks (255 = keep); NaN fails every inRange test.
    keep = cv2.inRange(z, _f32_at_least_above(config.min_range), _f32_at_most(config.max_range))
    keep &= cv2.compare(np.ascontiguousarray(categories, np.int8), 0, cv2.CMP_GE)
    scratch = np.empty(z.shape, np.float32)
    np.multiply(z, geometry.z_gain, out=scratch)
    scratch += np.float32(geometry.z_offset)
    keep &= cv2.inRange(scratch, lowest, _f32_at_most(config.max_point_height))
    np.multiply(z, geometry.row_gain, out=scratch)
    scratch += np.float32(geometry.row_offset)
    keep &= cv2.inRange(scratch, 0.0, float(np.nextafter(np.float32(rows), np.float32(0))))
    with np.errstate(invalid="ignore"):  # NaN/inf rows of dropped pixels cast to garbage that is masked anyway
        flat = scratch.astype(np.int32)  # truncation == floor on the kept, non-negative values
        np.multiply(z, geometry.col_gain, out=scratch)
        scratch += np.float32(geometry.col_offset)
        keep &= cv2.inRange(scratch, 0.0, float(np.nextafter(np.float32(cols), np.float32(0))))
        col = scratch.astype(np.int32)
    flat *= cols
    flat += col
    # Category offset per pixel by a 256-entry int32 LUT on the int8 categories read as uint8 (-1 -> 255,
    # masked below); one C pass instead of an int32 cast plus a multiply.
    offsets = np.zeros(256, np.int32)
    offsets[: len(CATEGORIES)] = np.arange(len(CATEGORIES), dtype=np.int32) * np.int32(cells)
    flat += cv2.LUT(np.ascontiguousarray(categories, np.int8).view(np.uint8), offsets)
    # Bin 0 collects the rejected pixels: (index + 1) & mask with mask = -1 (keep) or 0, branch-free
    # (np.copyto(where=) or a boolean-mask copy on a ~60 % mask is ~10x slower: unpredictable branches).
    flat += np.int32(1)
    flat &= keep.view(np.int8).astype(np.int32)
    counts = np.bincount(flat.ravel(), minlength=len(CATEGORIES) * cells + 1)[1:]
    return counts.astype(np.int32).reshape(len(CATEGORIES), rows, cols), int(cv2.countNonZero(keep))


def grid_from_points(
    points: np.ndarray, cats: np.ndarray, config: CostmapConfig, used_flat_ground: bool = False
) -> CostmapResult:
    """Bin grid-frame points into cells and resolve each cell's category by severity."""
    rows, cols = config.rows, config.cols
    col = np.floor((points[:, 0] - config.origin_x) / config.resolution).astype(np.int64)
    row = np.floor((points[:, 1] - config.origin_y) / config.resolution).astype(np.int64)
    inside = (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
    flat_index = (cats[inside] * rows + row[inside]) * cols + col[inside]
    counts = np.bincount(flat_index, minlength=len(CATEGORIES) * rows * cols).astype(np.int32)
    counts = counts.reshape(len(CATEGORIES), rows, cols)
    return _result_from_counts(counts, int(inside.sum()), config, used_flat_ground)


def _result_from_counts(
    counts: np.ndarray, points_projected: int, config: CostmapConfig, used_flat_ground: bool
) -> CostmapResult:
    """Resolve each cell's category (most severe with >= min_points_per_cell points) and build the layers."""
    present = counts >= config.min_points_per_cell
    # Severity rank + 1 of the winning category per cell, 0 where none: a max over 4 small planes.
    rank = (present * np.arange(1, len(CATEGORIES) + 1, dtype=np.uint8)[:, None, None]).max(axis=0)
    category = rank.astype(np.int8) - np.int8(1)  # Category values are ranks 0..3; 0 - 1 = UNKNOWN (-1)
    cost_of_rank = np.array([UNKNOWN] + [config.category_costs[c] for c in CATEGORIES], dtype=np.int8)
    grid = cost_of_rank[rank]
    unobserved_or_zero = np.where(rank > 0, np.int8(0), np.int8(UNKNOWN))
    layers = {cat.name.lower(): np.where(present[cat], np.int8(100), unobserved_or_zero) for cat in CATEGORIES}
    return CostmapResult(
        grid=grid,
        category=category,
        layers=layers,
        counts=counts,
        used_flat_ground=used_flat_ground,
        points_projected=points_projected,
        resolution=config.resolution,
        origin_x=config.origin_x,
        origin_y=config.origin_y,
    )


# --------------------------------------------------------------------------- driving corridor


def corridor_distances(
    result: CostmapResult, config: CostmapConfig, length: float, width: float, stop_distance: float = 0.0
) -> dict[str, float | bool]:
    """Forward distances to the nearest BLOCKED and HAZARD cells in the corridor ahead.

    The corridor is x in [0, length], |y| <= width / 2 in the grid frame (cells
    whose centres lie inside). A cell's distance is its near edge along +x
    (clamped at 0), so the answer errs on the safe side. ``inf`` when none.
    """
    if not (length > 0 and width > 0):
        raise ConfigError(f"corridor length and width must be > 0, got {length}, {width}")
    rows, cols = result.grid.shape
    res = result.resolution
    centre_x = result.origin_x + (np.arange(cols) + 0.5) * res
    centre_y = result.origin_y + (np.arange(rows) + 0.5) * res
    in_x = (centre_x >= 0) & (centre_x <= length)
    in_y = np.abs(centre_y) <= width / 2
    corridor = in_y[:, None] & in_x[None, :]
    near_edge_x = np.maximum(centre_x - res / 2, 0.0)
    distances: dict[str, float | bool] = {}
    for key, cat in (("nearest_blocked_m", Category.BLOCKED), ("nearest_hazard_m", Category.HAZARD)):
        hit = corridor & (result.counts[cat] >= config.min_points_per_cell)
        hit_cols = np.nonzero(hit.any(axis=0))[0]
        distances[key] = float(near_edge_x[hit_cols].min()) if hit_cols.size else math.inf
    n_cells = int(corridor.sum())
    unknown = int((corridor & (result.grid == UNKNOWN)).sum())
    distances["unknown_fraction"] = unknown / n_cells if n_cells else 1.0
    nearest = min(distances["nearest_blocked_m"], distances["nearest_hazard_m"])
    distances["stop_required"] = bool(nearest <= stop_distance)
    return distances


# --------------------------------------------------------------------------- depth/label pairing

ItemT = TypeVar("ItemT")


class ExactStampPairer(Generic[ItemT]):
    """Pairs messages of two streams by identical stamp, keeping only the latest few of each.

    A small stand-in for message_filters' exact-time synchronizer (not
    installable here). When a pair completes, it and everything older on both
    streams is dropped, so a late frame can never be paired after a newer one.
    Each waiting message keeps its arrival time, so a caller can give up on a
    partner after a timeout (``waiting`` + ``take``) without breaking that order.

    With ``max_skew_ns`` > 0, a message whose exact partner is not waiting pairs
    with the nearest waiting stamp of the other stream within that skew. Each
    stream delivers stamps in increasing order, so a waiting stamp other than
    ours means one stream already moved past the other's frame: the exact
    partner can no longer come. This keeps an overloaded host, where each
    latest-frame-wins node skips different frames, from starving the pairing.
    """

    def __init__(self, streams: tuple[str, str] = ("depth", "labels"), capacity: int = 3, max_skew_ns: int = 0) -> None:
        if capacity < 1:
            raise ConfigError(f"pairing buffer capacity must be >= 1, got {capacity}")
        if max_skew_ns < 0:
            raise ConfigError(f"pairing max skew must be >= 0 ns, got {max_skew_ns}")
        self.streams = streams
        self.capacity = capacity
        self.max_skew_ns = int(max_skew_ns)
        self.approximate_pairs = 0  # pairs made within max_skew_ns rather than by identical stamp
        # stream -> stamp_ns -> (message, arrival time in seconds), in arrival order
        self._pending: dict[str, OrderedDict[int, tuple[ItemT, float]]] = {name: OrderedDict() for name in streams}
        self.dropped = 0  # messages discarded without ever being paired or taken

    def add(self, stream: str, stamp_ns: int, item: ItemT, arrival: float | None = None) -> dict[str, ItemT] | None:
        """Add one message; return {stream: item} for both streams when its partner is waiting.

        ``arrival`` is when the message arrived (seconds on the caller's clock, default
        ``time.monotonic()``); ``waiting`` reports it back.
        """
        queue = self._queue(stream)
        other = self.streams[1] if stream == self.streams[0] else self.streams[0]
        if stamp_ns in self._pending[other]:
            pair = {stream: item, other: self._pending[other].pop(stamp_ns)[0]}
            self._drop_older(stamp_ns)
            return pair
        near = [s for s in self._pending[other] if abs(s - stamp_ns) <= self.max_skew_ns] if self.max_skew_ns else []
        if near:
            partner = min(near, key=lambda s: (abs(s - stamp_ns), -s))  # nearest; on a tie, the newer frame
            pair = {stream: item, other: self._pending[other].pop(partner)[0]}
            self._drop_older(max(stamp_ns, partner))
            self.approximate_pairs += 1
            return pair
        if stamp_ns in queue:
            self.dropped += 1  # a duplicate stamp replaces the older message
        queue[stamp_ns] = (item, time.monotonic() if arrival is None else float(arrival))
        queue.move_to_end(stamp_ns)
        while len(queue) > self.capacity:
            queue.popitem(last=False)
            self.dropped += 1
        return None

    def take(self, stream: str, stamp_ns: int) -> ItemT:
        """Remove and return a waiting message, to be used without its partner (e.g. after a timeout).

        Like a completed pair, everything older on both streams is dropped (counted).
        """
        queue = self._queue(stream)
        if stamp_ns not in queue:
            raise KeyError(f"no message with stamp {stamp_ns} is waiting on stream {stream!r}")
        item = queue.pop(stamp_ns)[0]
        self._drop_older(stamp_ns)
        return item

    def pending(self, stream: str) -> list[int]:
        """Stamps waiting for a partner on ``stream`` (oldest first)."""
        return list(self._queue(stream))

    def waiting(self, stream: str) -> list[tuple[int, float]]:
        """(stamp, arrival time) of the messages waiting for a partner on ``stream`` (in arrival order)."""
        return [(stamp, arrival) for stamp, (_, arrival) in self._queue(stream).items()]

    def _queue(self, stream: str) -> OrderedDict[int, tuple[ItemT, float]]:
        if stream not in self._pending:
            raise ValueError(f"unknown stream {stream!r}; expected one of {self.streams}")
        return self._pending[stream]

    def _drop_older(self, stamp_ns: int) -> None:
        for queue in self._pending.values():
            for old in [s for s in queue if s < stamp_ns]:
                del queue[old]
                self.dropped += 1
