"""One frame's traversability costmap from a depth image and a label image (numpy + cv2, no ROS).

Conventions (see docs/costmap.md and ``perception_core.geometry``):

- Base frame (``base_link``/``base_footprint``, REP 103): x forward, y left,
  z up; the ground is the plane z = ``ground_z``. Heights (``max_point_height``)
  are measured above it.
- Grid frame: the base frame, or a fixed frame (``odom``) when the caller
  passes a ``GridWindow`` with ``base_to_grid``. Cell (row, col) covers x in
  [origin_x + col*res, +res), y in [origin_y + row*res, +res): row-major
  ``nav_msgs/OccupancyGrid`` data.
- Camera optical frame: z forward, x right, y down; pixel centres at integer
  coordinates. ``camera_to_base`` takes optical points into the base frame.
- Categories by severity FREE < CAUTION < BLOCKED < HAZARD; the most severe
  category present in a cell wins it. Unknown cells are -1.

How a frame becomes cells (``build_costmap`` with depth):

1. Each labelled pixel with valid depth (min_range < z < max_range) is
   back-projected where it is, so an obstacle is marked at its own distance
   and what it hides stays unknown.
2. Sharp obstacles: a pixel of a standing obstacle class (anything lethal
   that is not a flat class such as water) stands on the surface pixel found
   first below it in its column. Depth networks blur depth across an
   object's outline and misjudge low, ground-coloured objects, so such a
   pixel lying more than ``max_obstacle_depth_m`` behind its ground contact
   is pulled onto that limit. Mixed pixels therefore land on the object, not
   in the free space behind it.
3. Dense ground: a pixel covers a footprint, not a point. Between two
   vertically neighbouring surface pixels, where the step in inverse depth is
   no more than ``surface_step_ratio`` times flat ground's (a continuous
   surface, not an occlusion edge), the surface is sampled at sub-row steps
   (inverse depth interpolated linearly, which is exact on a plane), so far
   ground is covered without stripes. Nothing is filled across a depth
   discontinuity, next to a standing obstacle, or behind it.
4. Evidence per cell: a traversable category needs ``min_points_per_cell``
   points or samples; a standing obstacle needs ``min_obstacle_area_m2`` of
   surface, each pixel counting its footprint z^2 / (fx fy). So near
   obstacles need many pixels (noise rejection) and a far or small one a few
   (it does not vanish under a fixed point count). Flat hazards count like
   ground.

5. Ground geometry (``ground_geometry``): the ground's height per cell (mean,
   top, bottom) gives step and slope against the vehicle's limits
   (``terrain``), and drops seen as a gap in the image (a ditch wall, a
   cliff's brink) are marked at their edge (``_drop_edges``).

Without depth, rays are intersected with the ground plane (the flat-ground
fallback): ground lands right, anything standing is smeared behind itself,
and results carry ``used_flat_ground`` for callers to flag.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perception_core.costmap import kernels
from perception_core.costmap.classes import ClassMap, as_class_map
from perception_core.costmap.config import CATEGORIES, UNKNOWN, CostmapConfig
from perception_core.costmap.terrain import GroundGeometry, ground_geometry
from perception_core.errors import DataError
from perception_core.geometry import camera_optical_pose
from perception_core.ontology import Category
from perception_core.pipelines import scale_intrinsics  # numpy-only; the one K-resize rule of the stack

LETHAL = (Category.BLOCKED, Category.HAZARD)
MAX_SURFACE_SAMPLES = 64  # samples between two pixels at most (6.4 m of 0.1 m cells)
SURFACE_SAMPLE_STEP = 1.0  # sample spacing along a surface segment, in cells (at most one cell between samples)
FILL_ROW_SPACING = 0.35  # row pairs whose flat-ground spacing is at least this many cells are checked for gaps
MAX_ROW_STEP = 8  # near rows are thinned to every n-th at most (near_row_spacing)
MAX_EDGE_SPAN_CELLS = 8  # the most cells a drop's edge is marked over, from the last ground seen towards the brink
SURFACE_HEIGHT_NOISE = 0.05  # metres of height noise allowed on top of the slope limit between two surface pixels
GROUND_BLOCK_M = 1.0  # contact-less obstacle pixels take the mean ground seen in this square around them


@dataclass(frozen=True)
class GridWindow:
    """Where the grid lies: cell size, the corner of cell (0, 0) and the size, in the grid frame.

    ``base_to_grid`` (4x4) takes base-frame points into the grid frame; the
    identity means the grid frame is the base frame.
    """

    resolution: float
    origin_x: float
    origin_y: float
    rows: int
    cols: int
    base_to_grid: np.ndarray = field(default_factory=lambda: np.eye(4))

    @classmethod
    def base_frame(cls, config: CostmapConfig) -> GridWindow:
        """The base-frame window of ``config``: the robot at the base origin."""
        return cls(config.resolution, config.origin_x, config.origin_y, config.rows, config.cols)

    @property
    def is_base_frame(self) -> bool:
        return bool(np.array_equal(self.base_to_grid, np.eye(4)))

    def cell_of(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[Any, Any]:
        """(row, col) indices of grid-frame points (not bounds-checked)."""
        col = np.floor((np.asarray(x) - self.origin_x) / self.resolution).astype(np.int64)
        row = np.floor((np.asarray(y) - self.origin_y) / self.resolution).astype(np.int64)
        return row, col


@dataclass
class CostmapResult:
    """One built costmap. ``grid``, ``category`` and every layer are int8 [rows, cols], row-major as OccupancyGrid data."""

    grid: np.ndarray  # cost of the winning category, UNKNOWN where unobserved
    category: np.ndarray  # winning Category value per cell, UNKNOWN where unobserved
    present: np.ndarray  # bool [4, rows, cols]: category has enough evidence in the cell
    evidence: dict[str, Any] = field(repr=False)  # bins of counts, standing area, lethal height sums
    window: GridWindow = field(repr=False, default=None)  # type: ignore[assignment]
    evidence_window: GridWindow | None = field(repr=False, default=None)  # what evidence's arrays cover (None: window)
    used_flat_ground: bool = False
    points_projected: int = 0  # pixels that landed in the grid
    surface_samples: int = 0  # dense-ground samples that landed in the grid
    clamped_pixels: int = 0  # standing-obstacle pixels pulled onto their ground contact
    unknown_label_pixels: int = 0  # pixels (of the columns the build uses) whose label id the ontology lacks
    ground_offset_m: float = float("nan")  # median height of the observed surface above the ground plane
    ground: GroundGeometry | None = field(repr=False, default=None)  # step, slope and limits (ground_geometry)

    @property
    def resolution(self) -> float:
        return self.window.resolution

    @property
    def origin_x(self) -> float:
        return self.window.origin_x

    @property
    def origin_y(self) -> float:
        return self.window.origin_y

    @property
    def observed_cells(self) -> int:
        return int(np.count_nonzero(self.category != UNKNOWN))

    def evidence_map(self, name: str, fill: Any = 0) -> np.ndarray:
        """An evidence array over the whole window (the build may have kept it on ``evidence_window``)."""
        part = self.evidence[name]
        box = self.evidence_window
        if box is None or box is self.window:
            return part
        res = self.window.resolution
        corner = (round((box.origin_y - self.window.origin_y) / res), round((box.origin_x - self.window.origin_x) / res))
        return _in_window(part, self.window, corner, fill)

    @property
    def elevation(self) -> np.ndarray | None:
        """float32 [rows, cols]: mean height of the observed ground above the ground plane, NaN where unseen."""
        return self.evidence_map("elevation", np.nan) if "elevation" in self.evidence else None

    @property
    def drop_edge_cells(self) -> int:
        """Cells marked at the edge of a drop larger than step_blocked_m."""
        drops = self.evidence.get("drop_edges")
        return 0 if drops is None else int(np.count_nonzero(drops[1]))

    @functools.cached_property
    def layers(self) -> dict[str, np.ndarray]:
        """Per category name: 100 where present, 0 where observed without it, -1 where unobserved."""
        unobserved_or_zero = np.where(self.category != UNKNOWN, np.int8(0), np.int8(UNKNOWN))
        return {c.name.lower(): np.where(self.present[c], np.int8(100), unobserved_or_zero) for c in CATEGORIES}

    @functools.cached_property
    def counts(self) -> np.ndarray:
        """int32 [4, rows, cols]: points and surface samples per category and cell."""
        counts = self.evidence_map("counts").astype(np.int32)
        standing = self.evidence_map("standing")
        for category, index in _LETHAL_INDEX.items():
            counts[category] += standing[index]
        return counts

    @property
    def obstacle_area(self) -> np.ndarray:
        """float32 [2, rows, cols]: standing BLOCKED / HAZARD surface area (m^2) per cell."""
        return self.evidence_map("area").astype(np.float32)

    @functools.cached_property
    def obstacle_height(self) -> np.ndarray:
        """float32 [rows, cols]: mean height above the ground of the lethal points in a lethal cell, else NaN."""
        lethal = self.present[Category.BLOCKED] | self.present[Category.HAZARD]
        n = self.evidence_map("height_n")
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.evidence_map("height_sum") / np.maximum(n, 1)
        return np.where(lethal & (n > 0), mean, np.nan).astype(np.float32)


# --------------------------------------------------------------------------- geometry


def camera_to_grid_transform(config: CostmapConfig) -> np.ndarray:
    """4x4 transform taking camera optical-frame points to the base frame, from the mount fields."""
    return _mount_pose(config.mount_x, config.mount_y, config.mount_z, config.mount_roll, config.mount_pitch,
                       config.mount_yaw).copy()


@functools.lru_cache(maxsize=8)
def _mount_pose(*mount: float) -> np.ndarray:
    return camera_optical_pose(*mount)  # a few trigonometric matrices per frame otherwise


@functools.lru_cache(maxsize=16)
def _nearest_source(size: int, to_size: int) -> np.ndarray:
    """Source index of each of ``to_size`` pixels along an axis of ``size``, by pixel centres (read-only)."""
    index = np.minimum(((np.arange(to_size) + 0.5) * size / to_size).astype(np.int64), size - 1)
    index.flags.writeable = False
    return index


def resize_nearest(image: np.ndarray, to_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize by pixel centres (class ids must never be blended)."""
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == tuple(to_hw):
        return image
    out = image
    if src_h != to_hw[0]:
        out = np.take(out, _nearest_source(src_h, to_hw[0]), axis=0)
    if src_w != to_hw[1]:
        out = np.take(out, _nearest_source(src_w, to_hw[1]), axis=1)
    return out


def _worked_index(src_hw: tuple[int, int], work_hw: tuple[int, int], rows: np.ndarray | None,
                  step: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) indices in an image of ``src_hw`` of the pixels the build works on: ``resize_nearest`` to
    ``work_hw``, then ``rows`` (None: all) and every ``step``-th column."""
    row_index = np.arange(src_hw[0]) if src_hw[0] == work_hw[0] else _nearest_source(src_hw[0], work_hw[0])
    if rows is not None:
        row_index = row_index[rows]
    col_index = np.arange(src_hw[1]) if src_hw[1] == work_hw[1] else _nearest_source(src_hw[1], work_hw[1])
    # Fresh contiguous copies (a few hundred entries): the compiled scan then sees one array type whatever the
    # step and the cache (numba compiles once per layout and write flag).
    return np.array(row_index), np.array(col_index[::step])


def _worked_labels(labels: np.ndarray, row_index: np.ndarray, col_index: np.ndarray) -> np.ndarray:
    """The labels at the pixels the build works on (their indices: ``_worked_index``), in one gather of those
    pixels alone (contiguous)."""
    return np.ascontiguousarray(np.take(np.take(labels, row_index, axis=0), col_index, axis=1))


def _check_inputs(depth: np.ndarray | None, labels: np.ndarray, k_matrix: np.ndarray) -> None:
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be a 2D integer class-id image, got {labels.dtype} {labels.shape}")
    if depth is not None and (depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating)):
        raise DataError(f"depth must be a 2D float image in metres, got {depth.dtype} {depth.shape}")
    k = np.asarray(k_matrix, dtype=np.float64)
    if k.size != 9 or not np.isfinite(k).all() or not (k.reshape(3, 3)[0, 0] > 0 and k.reshape(3, 3)[1, 1] > 0):
        raise DataError(f"camera intrinsics K must be 3x3 and finite with fx, fy > 0, got {k.ravel().tolist()}")


def _pixel_rays(k: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Optical-frame ray (x/z, y/z) per pixel of an image of size ``hw`` with intrinsics ``k``, as arrays that
    broadcast to ``hw``: y is [H, 1], x is [1, W] (or [H, W] with a skewed K). Per pixel the same float64 values
    as whole planes, for a fraction of the work (the ray geometry is recomputed when a camera moves on its mount).
    """
    ray_y = (np.arange(hw[0], dtype=np.float64)[:, None] - k[1, 2]) / k[1, 1]
    u = np.arange(hw[1], dtype=np.float64)[None, :]
    if k[0, 1] == 0:  # subtracting 0 * ray_y changes no value: x depends on the column alone
        return (u - k[0, 2]) / k[0, 0], ray_y
    return (u - k[0, 2] - k[0, 1] * ray_y) / k[0, 0], ray_y


def _base_rays(rotation: np.ndarray, ray_x: np.ndarray, ray_y: np.ndarray) -> tuple[np.ndarray, ...]:
    """float64 base-frame (x, y, z) per metre of optical depth: ``rotation`` applied to the optical rays
    (``_pixel_rays``, broadcast to their image or to some of its rows)."""
    return tuple(rotation[i, 0] * ray_x + rotation[i, 1] * ray_y + rotation[i, 2] for i in range(3))


def _categories_of(labels: np.ndarray, classes: ClassMap) -> np.ndarray:
    """int8 Category value per pixel (NOT_PROJECTED for sky and ignore)."""
    lut = classes.category
    if labels.dtype == np.uint8:
        import cv2

        return cv2.LUT(np.ascontiguousarray(labels), lut)  # one C pass; the int64 round trip below costs ~10x more
    ids = labels.astype(np.int64)
    categories = lut[np.clip(ids, 0, 255)]
    categories[(ids < 0) | (ids > 255)] = lut[255] if not classes.known[255] else int(Category.BLOCKED)
    return categories


def _surface_of(labels: np.ndarray, classes: ClassMap) -> np.ndarray:
    """uint8 per pixel: 255 where the class lies flat on the ground, else 0."""
    lut = np.where(classes.surface, np.uint8(255), np.uint8(0)).astype(np.uint8)
    if labels.dtype == np.uint8:
        import cv2

        return cv2.LUT(np.ascontiguousarray(labels), lut)
    ids = labels.astype(np.int64)
    out = lut[np.clip(ids, 0, 255)]
    out[(ids < 0) | (ids > 255)] = 0
    return out


# --------------------------------------------------------------------------- depth path
#
# A pixel (u, v) at optical depth z lands at base-frame point z * g(u, v) + t, with g = R @ ray(u, v) (ray with
# optical z = 1). g depends only on K, the image size and the mount, so it is computed once (float64, stored as
# float32 planes) and cached. The grid cell follows from an affine map of the base point (the identity, or the
# base's pose in a fixed frame), folded into per-pixel gains for column and row. Per frame the work is a few
# float32 multiply-adds over the image, uint8 masks from cv2, and np.bincount over "bin * cells + cell" of the
# kept pixels. The cell of a point is floor(col_f) with col_f evaluated in float32 (error ~1e-5 cell at 20 m),
# so only points that close to a cell edge may differ from the float64 reference (``project_points`` +
# ``grid_from_points``, still used for the flat-ground fallback and as the tests' oracle).
#
# Four choices keep the work to what the grid can hold. The build takes every ``column_step``-th column of the
# depth image (by default as many as keep columns within a cell of each other at max_range), and of the near
# rows, which flat ground packs a few millimetres apart, only as many as keep them ``near_row_spacing`` cells
# apart (``_thinned_rows``); it starts at the row above the first projected pixel (``_first_row_used``: the sky
# above holds nothing), and it works on the box of the window in front of the camera (``_reach_window``),
# placing the result in the whole window.


@dataclass(frozen=True)
class _RayGeometry:
    gx: np.ndarray  # float32 [H, W]: base-frame x per metre of optical depth
    gy: np.ndarray
    gz: np.ndarray
    t: np.ndarray  # float64 (3,): camera origin in the base frame
    near_rows: int  # first row below those that flat ground spreads over a cell: many pixels per cell from here
    # (of the rows worked on: negative when the build starts below it)
    step_limit: np.ndarray  # float32 [H - 1, W]: largest inverse-depth step of a surface between rows r, r + 1
    slope_limit: float  # tan of the steepest surface slope between neighbouring pixels
    wide_quads: np.ndarray  # bool [H - 1, W - 1]: quads whose columns are a cell apart on flat ground
    any_wide_quads: bool
    area_per_z2: float  # footprint of a pixel per squared metre of depth: 1 / (fx fy)
    max_range: float  # the config's: nothing is placed deeper
    rows: np.ndarray | None = None  # int64: the image rows worked on (None: every row; _thinned_rows)
    row_weight: np.ndarray | None = None  # float32 [H]: image rows each worked row stands for (None: 1 each)


# Per (K, size, config, mount): the geometry and the mount its tables were computed for.
_GEOMETRY_CACHE: OrderedDict[tuple, tuple[_RayGeometry, np.ndarray]] = OrderedDict()
_GEOMETRY_CACHE_SIZE = 4  # a few cameras / mounts; a mount moved past TABLES_REUSE_* recomputes: 20-30 ms at 768 rows
# A camera moving on its mount by less than this since a cached geometry's tables were computed keeps those tables
# (rows worked, continuity limits, wide quads: thresholds that a hundredth of a degree does not move) and gets
# exact ray gains for its own mount; farther, all is computed anew (bench/bench_ray_geometry.py: 0.08x the time).
TABLES_REUSE_DEG = 0.1
TABLES_REUSE_M = 0.01
_GAIN_CACHE: OrderedDict[tuple, tuple[np.ndarray, np.ndarray, float, float]] = OrderedDict()


def _thinned_rows(widest: np.ndarray, config: CostmapConfig) -> np.ndarray | None:
    """The image rows to work on: every row, but where flat ground packs rows closer than ``near_row_spacing``
    cells, only as many as keep them that far apart (at most every ``MAX_ROW_STEP``-th); None when that is all.

    ``widest`` [H - 1]: flat ground's widest spacing between rows r and r + 1 (metres), inf where some column of
    the pair does not meet the ground in range: what it sees is not known to be near, so it is never skipped.
    Below ~4 m a 768-row image of the vehicle camera puts rows 1-25 mm apart on 0.1 m cells; dense ground and the
    geometry tests work on any row pair, so fewer of them cost no cell.
    """
    if config.near_row_spacing <= 0 or widest.shape[0] < 2:
        return None
    rows = kernels.thinned_rows(widest, config.near_row_spacing * config.resolution, MAX_ROW_STEP)
    return None if rows.size == widest.shape[0] + 1 else rows


def _ray_geometry(k: np.ndarray, hw: tuple[int, int], camera_to_base: np.ndarray, config: CostmapConfig) -> _RayGeometry:
    """Per-pixel base-frame ray gains and the dense-ground tables for (K, size, mount, ground, cells), cached.

    Its planes cover the rows the build works on (``rows``; every row of ``hw`` when None).
    """
    k = np.asarray(k, dtype=np.float64).reshape(3, 3)
    transform = np.asarray(camera_to_base, dtype=np.float64)
    camera = (tuple(hw), k.tobytes(), config.ground_z, config.resolution, config.max_range,
              config.surface_step_ratio, config.max_surface_slope_deg, config.near_row_spacing)
    key = (*camera, transform[:3].tobytes())
    cached = _GEOMETRY_CACHE.get(key)
    if cached is not None:
        _GEOMETRY_CACHE.move_to_end(key)
        return cached[0]
    near = _geometry_near(camera, transform)
    if near is not None:
        geometry = _moved_geometry(near[0], k, hw, transform)
        _cache_geometry(key, geometry, near[1])
        return geometry
    translation = transform[:3, 3]
    gx, gy, gz = _base_rays(transform[:3, :3], *_pixel_rays(k, hw))
    # Flat ground z = ground_z: a ray with gz < 0 meets it at depth (ground_z - t_z) / gz, i.e. inverse depth
    # gz / (ground_z - t_z), linear in v. Its step between rows bounds what a continuous surface may do.
    drop = translation[2] - config.ground_z  # camera height above the ground (> 0, checked by the config)
    depth_hit, hit_x, hit_y = kernels.flat_ground_hits(gx, gy, gz, translation[0], translation[1], drop)
    # Flat ground's spacing between each row and the next where both meet it in range (rays above the horizon
    # meet it at infinity).
    worked = np.arange(hw[0])
    widest, spacing = kernels.row_pair_spacing(hit_x, hit_y, depth_hit, worked, config.max_range, np.empty(0))
    rows = _thinned_rows(widest, config)
    row_weight = None
    if rows is not None:  # the worked rows alone, and the spacing of their pairs
        worked = rows
        gx, gy, gz = (plane[rows] for plane in (gx, gy, gz))
        row_weight = np.gradient(rows.astype(np.float64)).astype(np.float32)  # halfway to each neighbour
        spacing = kernels.row_pair_spacing(hit_x, hit_y, depth_hit, worked, config.max_range, spacing)[1]
    wide_rows = np.flatnonzero(spacing >= config.resolution * FILL_ROW_SPACING)
    near_rows = int(wide_rows[-1]) + 1 if wide_rows.size else 0  # below it, many pixels per cell on flat ground
    step = np.abs(gz[1:] - gz[:-1]) / drop
    # Quads whose columns are more than a cell apart, judged where flat ground lies in range like the rows'
    # spacing (a quad's columns are far apart only where the image is coarse for the ground it sees); a ray at
    # the horizon has its hit (and its spacing) at infinity.
    wide_quads = kernels.wide_quads(hit_x, hit_y, depth_hit, worked, config.resolution * SURFACE_SAMPLE_STEP,
                                    config.max_range)
    geometry = _RayGeometry(
        gx=gx.astype(np.float32), gy=gy.astype(np.float32), gz=gz.astype(np.float32), t=translation.copy(),
        near_rows=near_rows, step_limit=(step * config.surface_step_ratio).astype(np.float32),
        slope_limit=float(np.tan(np.radians(config.max_surface_slope_deg))), wide_quads=wide_quads,
        any_wide_quads=bool(wide_quads.any()),
        area_per_z2=float(1.0 / (k[0, 0] * k[1, 1])), max_range=float(config.max_range), rows=rows,
        row_weight=row_weight,
    )
    _cache_geometry(key, geometry, transform.copy())  # not the caller's array, which it may change later
    return geometry


def _cache_geometry(key: tuple, geometry: _RayGeometry, tables_transform: np.ndarray) -> None:
    _GEOMETRY_CACHE[key] = (geometry, tables_transform)
    while len(_GEOMETRY_CACHE) > _GEOMETRY_CACHE_SIZE:
        _GEOMETRY_CACHE.popitem(last=False)


def _geometry_near(camera: tuple, transform: np.ndarray) -> tuple[_RayGeometry, np.ndarray] | None:
    """A cached (geometry, tables' mount) of the same camera and config whose tables were computed for a mount
    within TABLES_REUSE_DEG / TABLES_REUSE_M of ``transform`` (compared with the tables' own mount, so that
    small moves cannot add up), or None."""
    for key, (geometry, tables_transform) in reversed(_GEOMETRY_CACHE.items()):
        if key[:-1] != camera:
            continue
        moved = np.linalg.norm(transform[:3, 3] - tables_transform[:3, 3])
        cos_turn = (np.trace(tables_transform[:3, :3].T @ transform[:3, :3]) - 1.0) / 2.0
        if moved <= TABLES_REUSE_M and math.degrees(math.acos(min(1.0, max(-1.0, cos_turn)))) <= TABLES_REUSE_DEG:
            return geometry, tables_transform
    return None


def _moved_geometry(tables: _RayGeometry, k: np.ndarray, hw: tuple[int, int], transform: np.ndarray) -> _RayGeometry:
    """``tables``' rows and limits with the ray gains and origin of ``transform``: per pixel the float64 values a
    full computation for ``transform`` would give on those rows."""
    ray_x, ray_y = _pixel_rays(k, hw)
    if tables.rows is not None:
        ray_y = ray_y[tables.rows]
        ray_x = ray_x if ray_x.shape[0] == 1 else ray_x[tables.rows]
    gx, gy, gz = (g.astype(np.float32) for g in _base_rays(transform[:3, :3], ray_x, ray_y))
    return dataclasses.replace(tables, gx=gx, gy=gy, gz=gz, t=transform[:3, 3].copy())


def _cell_gains(geometry: _RayGeometry, window: GridWindow) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(col gain, row gain, col offset, row offset): col_f = z * col_gain + col_offset, likewise rows."""
    col_gain, row_gain = _gain_planes(geometry, window)[:2]
    affine = np.asarray(window.base_to_grid, dtype=np.float64)[:2]
    offsets = (affine[:, :3] @ geometry.t + affine[:, 3] - (window.origin_x, window.origin_y)) / window.resolution
    return col_gain, row_gain, float(offsets[0]), float(offsets[1])


def _gain_planes(geometry: _RayGeometry, window: GridWindow) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Per-pixel cells per metre of depth along the window's x and y, and their (min, max) each; cached.

    They depend on the window's axes and cell size, not on where it lies: every window of one pose shares them.
    """
    affine = np.asarray(window.base_to_grid, dtype=np.float64)[:2]
    key = (id(geometry), affine[:, :3].tobytes(), window.resolution)
    cached = _GAIN_CACHE.get(key)
    if cached is not None and cached[0] is geometry:
        return cached[1]
    planes = (geometry.gx, geometry.gy, geometry.gz)
    gains = []
    for axis in range(2):
        a = affine[axis, :3] / window.resolution
        gain = planes[0] * np.float32(a[0])
        for i in (1, 2):
            if a[i] != 0:
                gain += planes[i] * np.float32(a[i])
        gains.append(gain)
    # A pinhole ray is affine in (u, v), and so is each gain: its extremes lie at the image's corners.
    corners = [g[[0, 0, -1, -1], [0, -1, 0, -1]] for g in gains]
    entry = (gains[0], gains[1], tuple(float(f(c)) for c in corners for f in (np.min, np.max)))
    _GAIN_CACHE.clear()  # one entry: a moving fixed-frame pose changes it every frame
    _GAIN_CACHE[key] = (geometry, entry)  # the geometry itself, so that a recycled id() never matches
    return entry


def _reach_window(geometry: _RayGeometry, window: GridWindow) -> tuple[GridWindow, int, int]:
    """The box of ``window`` that the camera's rays reach up to max_range, and its (row, col) corner.

    Every point the build places lies on a ray at a depth in [0, max_range] or between two such points
    (dense ground), and a drop edge's marks lie within ``MAX_EDGE_SPAN_CELLS`` of one, so all fall in this
    box; the cells outside it stay unknown. Working on the box alone spares the grid-sized steps the cells
    behind the camera and out of its reach (half the default window, three quarters of a diagonal one).
    """
    extremes = _gain_planes(geometry, window)[2]
    *_, col_offset, row_offset = _cell_gains(geometry, window)
    reach, pad = float(geometry.max_range), MAX_EDGE_SPAN_CELLS + 1
    corner, size = [], []
    for (low, high), offset, cells in ((extremes[2:], row_offset, window.rows), (extremes[:2], col_offset, window.cols)):
        # z * gain + offset over z in [0, max_range]: extremes at the camera or at max_range.
        first = min(max(math.floor(offset + min(0.0, reach * low)) - pad, 0), cells)
        last = min(max(math.floor(offset + max(0.0, reach * high)) + 1 + pad, 0), cells)
        corner.append(first)
        size.append(max(last - first, 1))
    if corner == [0, 0] and size == [window.rows, window.cols]:
        return window, 0, 0
    res = window.resolution
    box = GridWindow(res, window.origin_x + corner[1] * res, window.origin_y + corner[0] * res, size[0], size[1],
                     window.base_to_grid)
    return box, corner[0], corner[1]


def _at_least(image: np.ndarray, value: int) -> np.ndarray:
    """uint8 mask (255 where ``image >= value``); array-op-array, so a 1x1 image is not read as a scalar."""
    import cv2

    return cv2.compare(image, np.full_like(image, value), cv2.CMP_GE)


def _f32_at_least_above(value: float) -> float:
    """Smallest float32 x with x > value: ``z > value`` <=> ``z >= x`` for float32 z, exactly."""
    x = np.float32(value)
    if float(x) <= value:
        x = np.nextafter(x, np.float32(np.inf))
    return float(x)


def _f32_below(value: float) -> float:
    """Largest float32 x with x < value: ``z < value`` <=> ``z <= x`` for float32 z, exactly."""
    x = np.float32(value)
    if float(x) >= value:
        x = np.nextafter(x, np.float32(-np.inf))
    return float(x)


def _f32_at_most(value: float) -> float:
    """Largest float32 x with x <= value: ``z <= value`` <=> ``z <= x`` for float32 z, exactly."""
    x = np.float32(value)
    if float(x) > value:
        x = np.nextafter(x, np.float32(-np.inf))
    return float(x)


# Evidence: "counts" [4] = points and samples of each category that does not stand up (surface pixels, and every
# pixel without depth); "standing" [2] = standing BLOCKED / HAZARD pixels and "area" [2] their footprint area.
_LETHAL_INDEX = {Category.BLOCKED: 0, Category.HAZARD: 1}


def _pull_onto_contact(z: np.ndarray, valid: np.ndarray, standing: np.ndarray, surface_ok: np.ndarray,
                       geometry: _RayGeometry, limit: float,
                       config: CostmapConfig) -> tuple[int, tuple[np.ndarray, np.ndarray], np.ndarray, np.ndarray]:
    """Place standing-obstacle pixels lying farther than ``limit`` m behind their foot at the foot (in place).

    ``standing`` (uint8 or bool) is non-zero at standing-obstacle pixels. The contact of a pixel is the first
    pixel below it in its column that is not a standing obstacle; it must be a valid surface pixel. The
    obstacle's foot lies between the contact's depth and the depth at which the run's bottom pixel's ray
    meets the contact's height (one row further on the ground). A pixel
    deeper than that by more than ``limit`` is placed there: on the foot's far bound, which keeps the
    object's extent better than its near bound in the measurements (docs/costmap.md). A run whose bottom
    pixel is itself beyond that bound stands behind a hidden gap (past a brink or a crest), not on the
    contact, and stays where its depth puts it.

    Returns how many pixels were pulled, the (contact, bottom pixel) flat indices of the runs that stand on
    a contact in front of them (the ground between the two is seen up to the obstacle's foot), the flat
    indices of every standing pixel, and each one's contact (its local ground; -1 where it has none).
    """
    pulled, contact, bottom, own, contacts = kernels.pull_onto_contact(
        z, valid, standing, surface_ok, geometry.gz, np.float32(limit), np.float32(config.min_range),
        np.float32(config.max_range), np.float32(1 - config.surface_depth_noise))
    return pulled, (contact, bottom), own, contacts


def _spread(per_item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For items with ``per_item`` samples each: (item index of every sample, sample number within its item)."""
    ends = np.cumsum(per_item)
    item = np.repeat(np.arange(per_item.size), per_item)
    return item, np.arange(int(ends[-1]) if ends.size else 0) - (ends - per_item)[item]


def _surface_samples(z: np.ndarray, inverse: np.ndarray, surface_ok: np.ndarray, categories: np.ndarray,
                     geometry: _RayGeometry, col_f: np.ndarray, row_f: np.ndarray, height: np.ndarray,
                     resolution: float, feet: tuple[np.ndarray, np.ndarray, np.ndarray], depth_noise: float,
                     ) -> tuple[tuple[np.ndarray, ...] | None, tuple[np.ndarray, ...] | None]:
    """The dense ground that numpy prepares: (feet segment, quad samples), each None when there is none.

    The ground between a standing obstacle's ground contact and its bottom pixel (``feet``: the contacts, and
    the column and row where each foot ends) is one 3-D segment per foot, of the contact's category: (col_a,
    row_a, d_col, d_row, gap, cat_a, cat_b, h_a, d_h, use) arrays that ``kernels.bin_segment_samples`` samples
    every ``SURFACE_SAMPLE_STEP`` cells. Two vertically neighbouring pixels (r, r + 1) are one surface when both
    are valid surface pixels, the step in inverse depth between them is within ``step_limit`` (plus depth
    noise) and the segment between their points is no steeper than the geometry's slope limit (an occlusion
    edge seen obliquely is a small depth step but a steep segment): ``kernels.bin_surface_pairs`` samples
    those. Where horizontal neighbours are also more than a cell apart (a low-resolution depth image), the quad
    of four such pairs' pixels is sampled inside as a bilinear patch: quad samples are the (col_f, row_f,
    category, height) of those points. ``inverse`` is 1 / z.
    """
    cats = categories.ravel()
    step = np.float32(SURFACE_SAMPLE_STEP)
    quad_samples = None

    feet_segment = None  # (col_a, row_a, d_col, d_row, gap, cat_a, cat_b, h_a, d_h, use)
    if feet[0].size:
        col_flat, row_flat = col_f.ravel(), row_f.ravel()
        lower, upper_col, upper_row = feet
        d_col, d_row = upper_col - col_flat[lower], upper_row - row_flat[lower]
        ground = height.ravel()[lower]  # the ground up to the foot continues at the contact's height
        feet_segment = (col_flat[lower], row_flat[lower], d_col, d_row, np.maximum(np.abs(d_col), np.abs(d_row)),
                        cats[lower], cats[lower], ground, np.zeros_like(ground), np.ones(lower.size, bool))

    # Pairs of vertically neighbouring pixels are kernels.bin_surface_pairs' (the caller's). Quads whose columns are
    # more than a cell apart (on flat ground; a low-resolution depth image) are sampled between their two vertical
    # segments: the same tests on every pair of the band of rows that hold a surface pixel (such an image is small).
    lo = hi = 0
    if geometry.any_wide_quads:
        surface_rows = np.flatnonzero(surface_ok.any(axis=1))  # (cv2.reduce along rows is 30x slower)
        lo, hi = (int(surface_rows[0]), int(surface_rows[-1])) if surface_rows.size else (0, 0)
    if hi > lo:  # pairs (r, r + 1) for r in lo..hi-1: rows lo..hi
        in_band = slice(lo, hi)  # the per-pair tables, cut alike
        w = z.shape[1]
        inverse = inverse[lo : hi + 1]  # 1 / z
        ok = surface_ok[lo : hi + 1] != 0
        cf, rf, hf = col_f[lo : hi + 1], row_f[lo : hi + 1], height[lo : hi + 1]
        rise_per_cell = np.float32(geometry.slope_limit * resolution)
        limit = geometry.step_limit[in_band] + np.float32(depth_noise) * inverse[1:]
        with np.errstate(invalid="ignore"):  # invalid pixels (NaN, inf) are masked out by ok
            d_col, d_row = cf[:-1] - cf[1:], rf[:-1] - rf[1:]
            vertical = ok[:-1] & ok[1:] & (np.abs(inverse[1:] - inverse[:-1]) <= limit)
            # A surface segment rises at most slope_limit per metre run (plus height noise).
            vertical &= np.abs(hf[:-1] - hf[1:]) <= (rise_per_cell * np.hypot(d_col, d_row)
                                                     + np.float32(SURFACE_HEIGHT_NOISE))
        quads = vertical[:, :-1] & vertical[:, 1:] & geometry.wide_quads[in_band]
        with np.errstate(invalid="ignore"):
            across = np.abs(inverse[:, 1:] - inverse[:, :-1]) <= np.max(limit)
        quads &= across[:-1] & across[1:]
        quad, quad_col = np.nonzero(quads)
        if quad.size:
            rows_top = lo + quad
            corners = [(rows_top + 1) * w + quad_col, (rows_top + 1) * w + quad_col + 1, rows_top * w + quad_col,
                       rows_top * w + quad_col + 1]  # lower-left, lower-right, upper-left, upper-right
            col_flat, row_flat = col_f.ravel(), row_f.ravel()
            cq = [col_flat[c] for c in corners]
            rq = [row_flat[c] for c in corners]
            across_gap = np.maximum.reduce([np.abs(cq[1] - cq[0]), np.abs(rq[1] - rq[0]),
                                            np.abs(cq[3] - cq[2]), np.abs(rq[3] - rq[2])])
            along_gap = np.maximum.reduce([np.abs(cq[2] - cq[0]), np.abs(rq[2] - rq[0]),
                                           np.abs(cq[3] - cq[1]), np.abs(rq[3] - rq[1])])
            n_across = np.minimum(np.ceil(across_gap / step), MAX_SURFACE_SAMPLES).astype(np.int64)
            n_along = np.minimum(np.ceil(along_gap / step), MAX_SURFACE_SAMPLES).astype(np.int64)
            keep = n_across >= 2
            if keep.any():
                n_across, n_along = n_across[keep], np.maximum(n_along[keep], 1)
                per_quad = (n_across - 1) * (n_along + 1)  # interior columns j = 1..n_across-1, rows i = 0..n_along
                item, number = _spread(per_quad)
                j = number // (n_along[item] + 1) + 1
                i = number % (n_along[item] + 1)
                u = (j / n_across[item]).astype(np.float32)
                v = (i / n_along[item]).astype(np.float32)
                weights = ((1 - u) * (1 - v), u * (1 - v), (1 - u) * v, u * v)
                hq = [height.ravel()[c][keep][item] for c in corners]
                nearest = np.rint(v).astype(np.int64) * 2 + np.rint(u).astype(np.int64)
                corner_cats = np.stack([cats[c[keep]] for c in corners])
                quad_samples = (sum(wt * c[keep][item] for wt, c in zip(weights, cq, strict=True)),
                                sum(wt * r[keep][item] for wt, r in zip(weights, rq, strict=True)),
                                corner_cats[nearest, item],
                                sum(wt * h for wt, h in zip(weights, hq, strict=True)))
    return feet_segment, quad_samples


_LABEL_TABLES: dict[int, tuple[ClassMap, int, tuple[np.ndarray, np.ndarray]]] = {}


def _label_tables(classes: ClassMap, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """256-entry LUTs on label ids: category bin offset (int32) and class code (uint8): 2 * kind + 1 if the
    ontology lacks the id, with kind 0 not projected, 1 projected, 2 a surface, 3 standing up (each class is one).

    Cached for the last class map and cell count (a node keeps both for its life).
    """
    cached = _LABEL_TABLES.get(id(classes))
    if cached is not None and cached[0] is classes and cached[1] == cells:
        return cached[2]
    category = classes.category.astype(np.int64)
    kind = np.where(category >= 0, 1, 0)
    kind[classes.surface & (category >= 0)] = 2
    kind[classes.standing] = 3
    tables = ((np.maximum(category, 0) * cells).astype(np.int32), (2 * kind + ~classes.known).astype(np.uint8))
    _LABEL_TABLES.clear()
    _LABEL_TABLES[id(classes)] = (classes, cells, tables)
    return tables


def _label_masks(labels: np.ndarray, categories: np.ndarray, classes: ClassMap,
                 cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """uint8 masks (255 = yes) of standing-obstacle, surface and projected pixels, and how many pixels carry
    an id the ontology lacks."""
    import cv2

    code_lut = _label_tables(classes, cells)[1]
    if labels.dtype == np.uint8:
        code = cv2.LUT(np.ascontiguousarray(labels), code_lut)  # one LUT pass; each mask is then a cheap range test
        return (cv2.inRange(code, 6, 7), cv2.inRange(code, 4, 5), cv2.inRange(code, 2, 7),
                cv2.countNonZero(code & np.uint8(1)))
    ids = np.clip(labels.astype(np.int64), 0, 255)
    code = code_lut[ids]
    return ((code >= 6).view(np.uint8) * np.uint8(255), ((code >> 1) == 2).view(np.uint8) * np.uint8(255),
            _at_least(categories, 0), classes.unknown_ids(labels))


def _first_row_used(labels: np.ndarray, row_index: np.ndarray, col_index: np.ndarray, classes: ClassMap,
                    cells: int) -> tuple[int, int]:
    """(the first of the worked rows the build needs, pixels with ids the ontology lacks in the rows above it):
    one above the first row with a projected pixel, as a multiple of 4 (0 when none has one).

    Rows above it hold sky and ignored pixels alone, which neither land nor stand on anything; the row above
    the first projected pixel may be the far side of a drop edge, and a multiple of 4 keeps the every-4th-row
    sample of the ground offset on the same rows. Scans the labels at the worked pixels (``_worked_index``) row by
    row and stops at the first such row.
    """
    first, unknown_before = kernels.first_used_row(labels, row_index, col_index, _label_tables(classes, cells)[1],
                                                   classes.known)
    if first < 0:
        return 0, 0
    top = max(first - 1, 0)
    top -= top % 4
    return top, int(unknown_before[top])


def _observe_depth(
    depth: np.ndarray, labels: np.ndarray, categories: np.ndarray, masks: tuple[np.ndarray, np.ndarray, np.ndarray],
    classes: ClassMap, geometry: _RayGeometry, top: int, window: GridWindow, config: CostmapConfig,
) -> dict[str, Any]:
    """Evidence per bin and cell, lethal area and height sums, the ground's heights and drop edges, for one frame.

    ``depth``, ``labels``, ``categories`` and ``masks`` (the standing, surface and projected pixels,
    ``_label_masks``) are of the worked rows from the ``top``-th on; ``geometry``: the depth's ``_ray_geometry``,
    of every worked row.
    """
    import cv2

    rows, cols = window.rows, window.cols
    cells = rows * cols
    col_gain, row_gain, col_offset, row_offset = _cell_gains(geometry, window)
    standing, surface, projected = masks
    # A depth of 0 or below (a driver's "no return"; REP 117's -Inf, too near to measure) is no measurement: NaN,
    # so that every later test (an obstacle's foot, its bottom pixel) treats it as one. valid: uint8 mask (255 =
    # keep) of the projected pixels in range.
    z, valid = kernels.working_depth(np.asarray(depth, np.float32), projected,
                                     np.float32(_f32_at_least_above(config.min_range)),
                                     np.float32(_f32_below(config.max_range)))
    cats8 = np.ascontiguousarray(categories, np.int8)
    if top:
        geometry = dataclasses.replace(geometry, gx=geometry.gx[top:], gy=geometry.gy[top:], gz=geometry.gz[top:],
                                       step_limit=geometry.step_limit[top:], wide_quads=geometry.wide_quads[top:],
                                       near_rows=geometry.near_rows - top,
                                       row_weight=None if geometry.row_weight is None else geometry.row_weight[top:])
        col_gain, row_gain = col_gain[top:], row_gain[top:]
    surface_ok = surface & valid
    clamped, feet = 0, (np.empty(0, np.int64), np.empty(0, np.int64))
    standing_pixels = contacts = np.empty(0, np.int64)
    if cv2.countNonZero(standing):
        clamped, feet, standing_pixels, contacts = _pull_onto_contact(z, valid, standing, surface_ok, geometry,
                                                                      config.max_obstacle_depth_m, config)

    # Heights above the ground plane, grid positions and inverse depth, in one pass. REP 117 depth is +Inf beyond
    # range (free up to max range, no point) and -Inf too near to measure; times a zero gain (a ray parallel to a
    # grid axis) that is NaN. Those pixels already failed the range test above, so the NaN is never used.
    # Points higher than max_point_height above their ground (canopy, overhangs) are dropped. The ground is the
    # plane, or for a standing pixel its ground contact (a tree on a hillside); surface pixels are the ground.
    height, row_f, col_f, inverse, low_enough = kernels.heights_and_positions(
        z, geometry.gz, row_gain, col_gain, np.float32(row_offset), np.float32(col_offset), surface,
        np.float32(geometry.t[2] - config.ground_z), np.float32(_f32_at_most(config.max_point_height)))
    height_above = np.zeros(standing_pixels.size, np.float32)
    unsure = np.empty(0, np.int64)  # standing pixels without a contact that stand too high above the plane
    if standing_pixels.size:
        flat_height = height.ravel()
        grounded = contacts >= 0
        height_above = flat_height[standing_pixels] - np.where(grounded, flat_height[np.maximum(contacts, 0)], 0)
        with np.errstate(invalid="ignore"):
            too_high = height_above > config.max_point_height
        # A run with no contact (sky or nothing in range below it: a canopy seen against the sky) has only the
        # plane for its ground, which rising terrain lies above: such pixels are judged again once the ground
        # around them is binned (_above_seen_ground).
        unsure = np.flatnonzero(too_high & ~grounded)
        low_enough.ravel()[standing_pixels] = np.where(too_high & grounded, 0, 255)
    valid &= low_enough
    # Surface pixels anywhere in range feed the dense ground (their samples may fall inside the grid).
    surface_ok &= valid
    # Where the observed ground lies relative to the ground plane (median of every 4th pixel in each direction):
    # far from 0 when the depth's scale or the camera pose disagrees with the mount / TF.
    ground_heights = height[::4, ::4][surface_ok[::4, ::4] != 0]
    ground_offset = float(np.median(ground_heights)) if ground_heights.size >= 16 else float("nan")
    drops = _drop_edges(z, inverse, height, surface_ok, cats8, geometry, config) if config.ground_geometry else None
    # Bins: category * cells + cell. Kept pixels that do not stand up, and the dense ground's samples, are counted
    # per category and their heights binned (near rows hold many pixels per cell: every other row there, from
    # row near_rows). Standing obstacles count by area: their own (small) bincounts below.
    with_elevation = bool(config.ground_geometry)
    counts = np.zeros(4 * cells, np.int64)
    lethal_n = np.zeros(cells, np.int64)  # lethal points per cell: standing ones added below
    elevation = tuple(np.zeros(cells, dtype) for dtype in (np.int64, np.float64, np.float64))
    # Ids outside 0..255 are binned by the clipped id's category, as they always were (uint8 labels: cats8).
    bin_cats = cats8 if labels.dtype == np.uint8 else (
        np.maximum(classes.category[np.clip(labels.astype(np.int64), 0, 255)], 0).astype(np.int8))
    cell = kernels.bin_ground_pixels(valid, standing, row_f, col_f, height, bin_cats, rows, cols,
                                     geometry.near_rows, counts, lethal_n, *elevation, with_elevation)
    kept = valid.ravel()[standing_pixels] != 0
    standing_kept, height_above = standing_pixels[kept], height_above[kept]
    standing_bins = (bin_cats.ravel()[standing_kept].astype(np.int32) - 2) * np.int32(cells)
    standing_bins += cell.ravel()[standing_kept]  # (category - BLOCKED) * cells + cell

    samples = 0
    if config.dense_ground:
        # The ground up to an obstacle's foot ends at the foot's point, or where its ray reaches max_range: past
        # that nothing is placed (a depth at max_range means "farther").
        upper, at_range = feet[1], np.float32(config.max_range)
        upper_col, upper_row = col_f.ravel()[upper], row_f.ravel()[upper]
        with np.errstate(invalid="ignore"):
            beyond = z.ravel()[upper] > at_range  # NaN (no depth): no foot, as before
        if beyond.any():
            upper_col[beyond] = at_range * col_gain.ravel()[upper[beyond]] + np.float32(col_offset)
            upper_row[beyond] = at_range * row_gain.ravel()[upper[beyond]] + np.float32(row_offset)
        feet_segment, quads = _surface_samples(z, inverse, surface_ok, cats8, geometry, col_f, row_f, height,
                                               config.resolution, (feet[0], upper_col, upper_row),
                                               config.surface_depth_noise)
        sampling = (np.float32(SURFACE_SAMPLE_STEP), MAX_SURFACE_SAMPLES, rows, cols, counts, *elevation,
                    with_elevation)
        if feet_segment is not None:
            samples += kernels.bin_segment_samples(*feet_segment, *sampling)
        # Every row pair is examined: on flat ground only the pairs that the ground spreads over a cell would need
        # it, but a hill rising ahead is seen in rows at and above the flat horizon, and a depth that comes in
        # steps (a network's levels) or with noise leaves cells between the near rows too. Depth is noisy
        # (surface_depth_noise): a relative allowance keeps uneven rows of one surface together.
        samples += kernels.bin_surface_pairs(
            surface_ok, inverse, col_f, row_f, height, cats8, geometry.step_limit, np.float32(config.surface_depth_noise),
            np.float32(geometry.slope_limit * config.resolution), np.float32(SURFACE_HEIGHT_NOISE), *sampling)
        if quads is not None:
            samples += kernels.bin_points(*quads, rows, cols, counts, *elevation, with_elevation)
    counts = counts.reshape(4, rows, cols)
    evidence: dict[str, Any] = {}
    if with_elevation:
        evidence["ground_n"], evidence["ground_sum"], evidence["ground_sq"] = (a.reshape(rows, cols)
                                                                               for a in elevation)
    if unsure.size:  # contact-less pixels too high above the plane: judged against the ground binned around them
        if with_elevation:
            seen_n, seen_sum = elevation[:2]
        else:  # every 4th ground pixel each way: plenty for a 1 m block's mean, a sixteenth of the work
            sparse = valid[::4, ::4] > standing[::4, ::4]  # kept, and not standing up (both masks are 0 or 255)
            seen_cells = cell[::4, ::4][sparse].astype(np.intp)
            seen_n = np.bincount(seen_cells, minlength=cells)
            seen_sum = np.bincount(seen_cells, weights=height[::4, ::4][sparse].astype(np.float64), minlength=cells)
        position = np.cumsum(kept) - 1  # each standing pixel's index among the kept ones
        unsure = unsure[kept[unsure]]  # those still kept (in range, on the grid)
        above = _above_seen_ground(standing_pixels[unsure], height, cell, seen_n, seen_sum, window, config)
        height_above[position[unsure]] = above
        dropped = unsure[above > config.max_point_height]
        valid.ravel()[standing_pixels[dropped]] = 0
        stay = np.ones(standing_kept.size, dtype=bool)
        stay[position[dropped]] = False
        standing_kept, standing_bins, height_above = standing_kept[stay], standing_bins[stay], height_above[stay]
    if with_elevation:
        evidence["drop_edges"] = _drop_edge_cells(drops, z, height, row_f, col_f, valid, geometry,
                                                  (col_gain, row_gain, col_offset, row_offset), window, config)

    # Footprint area and count of standing lethal pixels, and the height sum of every lethal point (its mean).
    z_standing = z.ravel()[standing_kept].astype(np.float64)
    footprint = z_standing * z_standing * geometry.area_per_z2
    if geometry.row_weight is not None:  # a pixel of a thinned row stands for the rows skipped around it
        footprint *= geometry.row_weight[standing_kept // z.shape[1]]
    area = np.bincount(standing_bins, weights=footprint, minlength=2 * cells).reshape(2, rows, cols)
    standing_counts = np.bincount(standing_bins, minlength=2 * cells).reshape(2, rows, cols)
    # Surface BLOCKED / HAZARD points (water) lie on the ground: they count in lethal_n with height 0.
    standing_cells = standing_bins % np.int32(cells)
    # (float64 also with no standing pixel: bincount of an empty input gives int64 zeros)
    height_sum = np.bincount(standing_cells, weights=height_above, minlength=cells).astype(np.float64, copy=False)
    height_n = np.bincount(standing_cells, minlength=cells) + lethal_n
    evidence.update({
        "counts": counts, "standing": standing_counts, "area": area, "height_sum": height_sum.reshape(rows, cols),
        "height_n": height_n.reshape(rows, cols), "projected": int(cv2.countNonZero(valid)), "samples": samples,
        "clamped": clamped, "ground_offset": ground_offset,
    })
    return evidence


def _above_seen_ground(pixels: np.ndarray, height: np.ndarray, cell: np.ndarray, seen_n: np.ndarray,
                       seen_sum: np.ndarray, window: GridWindow, config: CostmapConfig) -> np.ndarray:
    """float32 height of each of ``pixels`` (flat indices of kept pixels) above the ground seen around its cell: the
    mean of the ground heights binned per cell (``seen_n`` counts, ``seen_sum`` sums, flat over the window) in the
    GROUND_BLOCK_M square block that holds the cell, or above the plane where that block shows no ground."""
    rows, cols = window.rows, window.cols
    block = max(1, round(GROUND_BLOCK_M / config.resolution))
    cells = cell.ravel()[pixels].astype(np.int64)
    block_cols = -(-cols // block)
    # Only the blocks that hold such pixels (a few dozen), each summed over its cells.
    blocks, which = np.unique((cells // cols // block) * block_cols + (cells % cols) // block, return_inverse=True)
    d_row, d_col = np.divmod(np.arange(block * block), block)
    rr = (blocks // block_cols * block)[:, None] + d_row
    cc = (blocks % block_cols * block)[:, None] + d_col
    inside = (rr < rows) & (cc < cols)
    flat = np.where(inside, rr * cols + cc, 0)
    n = np.where(inside, seen_n[flat], 0).sum(axis=1)
    total = np.where(inside, seen_sum[flat], 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        base = np.where(n > 0, total / np.maximum(n, 1), 0.0)
    return (height.ravel()[pixels] - base[which]).astype(np.float32)


_PixelPairs = tuple[np.ndarray, np.ndarray]  # (near, far) flat pixel indices


def _drop_edges(z: np.ndarray, inverse: np.ndarray, height: np.ndarray, surface_ok: np.ndarray,
                categories: np.ndarray, geometry: _RayGeometry, config: CostmapConfig) -> tuple[_PixelPairs, _PixelPairs]:
    """(near, far) flat pixel indices of pairs at the edge of a drop: (CAUTION-sized, BLOCKED-sized) drops.

    A ground pixel (row r + 1) whose neighbour above (row r) sees something farther than a continuous
    surface allows (a depth discontinuity: the ground between is hidden below the line of sight) and lower
    by more than a step limit stands at a drop's edge: a ditch or a cliff. The neighbour may be ground or
    an obstacle: an obstacle whose foot is hidden stands on ground lower still than the point seen. A neighbour beyond max_range (REP 117
    +Inf, or the model's max), or sky seen along a descending ray (past a cliff whose foot is out of
    sight), passed over ground that lies below its ray there, so the ray's height at max_range bounds
    that ground from above.
    """
    limits = (config.min_range, config.max_range, 1.0 / config.max_range, config.surface_depth_noise,
              config.step_caution_m, config.step_blocked_m)
    near_c, far_c, near_b, far_b = kernels.drop_edge_pairs(
        z, inverse, height, surface_ok, categories, geometry.gz, geometry.step_limit,
        np.float32(geometry.t[2] - config.ground_z), *(np.float32(v) for v in limits))
    return (near_c, far_c), (near_b, far_b)


def _drop_edge_cells(drops: tuple[_PixelPairs, _PixelPairs] | None, z: np.ndarray, height: np.ndarray, row_f: np.ndarray, col_f: np.ndarray,
                     valid: np.ndarray, geometry: _RayGeometry, gains: tuple[np.ndarray, np.ndarray, float, float],
                     window: GridWindow, config: CostmapConfig) -> np.ndarray:
    """int32 [2, rows, cols]: drop-edge samples per cell, CAUTION-sized and BLOCKED-sized drops.

    The brink lies between the near pixel's point and where the far pixel's ray comes down to the near
    point's height (the next row would have seen ground there); the cells along that span, up to
    ``MAX_EDGE_SPAN_CELLS``, are marked, so a coarse image does not place the edge a row short.
    """
    if drops is None:
        return np.zeros((2, window.rows, window.cols), np.int32)
    col_gain, row_gain, col_offset, row_offset = gains
    (near_caution, far_caution), (near_blocked, far_blocked) = drops
    return kernels.drop_edge_cells((near_caution, far_caution, near_blocked, far_blocked), z, height, row_f, col_f,
                                   valid, geometry.gz, col_gain, row_gain, np.float32(col_offset),
                                   np.float32(row_offset), np.float32(geometry.t[2] - config.ground_z), window.rows,
                                   window.cols, np.float32(MAX_EDGE_SPAN_CELLS))


# --------------------------------------------------------------------------- float64 reference path


def project_points(
    depth: np.ndarray | None,
    categories: np.ndarray,
    k_matrix: np.ndarray,
    camera_to_base: np.ndarray,
    config: CostmapConfig,
) -> tuple[np.ndarray, np.ndarray, bool, np.ndarray, np.ndarray]:
    """(base-frame points [N, 3], categories [N], used_flat_ground, footprint areas [N], flat pixel indices [N]).

    With ``depth`` each pixel is back-projected at its own depth (no dense ground, no contact rule: the
    plain projection the fast path is checked against); without it, rays are intersected with the
    ground plane z = ground_z (flat-ground fallback).
    """
    k = np.asarray(k_matrix, dtype=np.float64).reshape(3, 3)
    ray_x, ray_y = np.broadcast_arrays(*_pixel_rays(k, categories.shape))
    transform = np.asarray(camera_to_base, dtype=np.float64)
    rotation, translation = transform[:3, :3], transform[:3, 3]
    keep = categories >= 0
    if depth is not None:
        z = np.asarray(depth, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            keep &= np.isfinite(z) & (z > config.min_range) & (z < config.max_range)
        z = z[keep]
    else:
        rays_z = rotation[2, 0] * ray_x + rotation[2, 1] * ray_y + rotation[2, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            z_all = (config.ground_z - translation[2]) / rays_z  # optical depth of the hit (rays have optical z 1)
            keep &= (rays_z < 0) & (z_all > config.min_range) & (z_all < config.max_range)
        z = z_all[keep]
    points = np.stack([ray_x[keep] * z, ray_y[keep] * z, z], axis=1) @ rotation.T + translation
    index = np.flatnonzero(keep)
    low_enough = points[:, 2] - config.ground_z <= config.max_point_height
    areas = z[low_enough] ** 2 / (k[0, 0] * k[1, 1])
    return (points[low_enough], categories.ravel()[index[low_enough]].astype(np.int64), depth is None, areas,
            index[low_enough])


def grid_from_points(
    points: np.ndarray,
    cats: np.ndarray,
    config: CostmapConfig,
    used_flat_ground: bool = False,
    areas: np.ndarray | None = None,
    standing: np.ndarray | None = None,
    window: GridWindow | None = None,
) -> CostmapResult:
    """Bin base-frame points into cells and resolve each cell's category by severity.

    ``standing`` marks points of standing obstacles, whose evidence is their footprint area (``areas``,
    default: each counts ``min_obstacle_area_m2``, i.e. one point is enough); every other point counts
    towards ``min_points_per_cell``. Default: no point is standing.
    """
    window = window or GridWindow.base_frame(config)
    rows, cols, cells = window.rows, window.cols, window.rows * window.cols
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    cats = np.asarray(cats, dtype=np.int64)
    grid_points = points @ window.base_to_grid[:3, :3].T + window.base_to_grid[:3, 3]
    row, col = window.cell_of(grid_points[:, 0], grid_points[:, 1])
    inside = (col >= 0) & (col < cols) & (row >= 0) & (row < rows) & (cats >= 0)
    standing = np.zeros(len(points), bool) if standing is None else np.asarray(standing, bool)
    areas = np.full(len(points), config.min_obstacle_area_m2) if areas is None else np.asarray(areas, np.float64)
    lethal = cats >= int(Category.BLOCKED)
    cell = row * cols + col
    pick = inside & ~(standing & lethal)
    counts = np.bincount(cats[pick] * cells + cell[pick], minlength=4 * cells).reshape(4, rows, cols)
    pick = inside & standing & lethal
    standing_bins = (cats[pick] - 2) * cells + cell[pick]
    area = np.bincount(standing_bins, weights=areas[pick], minlength=2 * cells).reshape(2, rows, cols)
    standing_counts = np.bincount(standing_bins, minlength=2 * cells).reshape(2, rows, cols)
    pick = inside & lethal
    height_sum = np.bincount(cell[pick], weights=points[pick, 2] - config.ground_z, minlength=cells).reshape(rows, cols)
    height_n = np.bincount(cell[pick], minlength=cells).reshape(rows, cols)
    evidence = {"counts": counts, "standing": standing_counts, "area": area, "height_sum": height_sum,
                "height_n": height_n,
                "projected": int(inside.sum()), "samples": 0, "clamped": 0}
    return _resolve(evidence, config, window, used_flat_ground)


def _ground_statistics(evidence: dict[str, Any], config: CostmapConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 (mean, top, bottom) ground height per cell, NaN where unseen.

    Top and bottom are mean -+ sqrt(3) sigma: the ends of heights spread evenly over a cell (a wall in it).
    """
    n_all = evidence["ground_n"]
    stats = kernels.ground_statistics(n_all.ravel(), evidence["ground_sum"].ravel(), evidence["ground_sq"].ravel(),
                                      int(config.min_points_per_cell))
    return tuple(a.reshape(n_all.shape) for a in stats)


def _resolve(evidence: dict[str, Any], config: CostmapConfig, window: GridWindow, used_flat_ground: bool,
             unknown_label_pixels: int = 0) -> CostmapResult:
    """Each cell's category (the most severe with enough evidence) and its cost."""
    counts = evidence["counts"]
    raise_caution = raise_blocked = np.zeros(counts.shape[1:], bool)
    ground = None
    if "ground_sum" in evidence:
        # Geometry raises what the ground is: slopes and steps over the vehicle's limits, and drop edges.
        elevation, top, bottom = _ground_statistics(evidence, config)
        ground = ground_geometry(elevation, config, top=top, bottom=bottom)
        drops = evidence["drop_edges"] >= config.min_points_per_cell
        raise_caution, raise_blocked = ground.caution | drops[0], ground.blocked | drops[1]
        evidence["elevation"] = elevation  # float32 already (_ground_statistics)
    # Which categories have enough evidence, the severity rank + 1 of the winner per cell (0 where none), its cost.
    cost_of_rank = np.array([UNKNOWN] + [config.category_costs[c] for c in CATEGORIES], np.int8)
    present, rank, grid = kernels.resolve_cells(counts, evidence["standing"], evidence["area"], raise_caution,
                                                raise_blocked, int(config.min_points_per_cell),
                                                float(config.min_obstacle_area_m2), cost_of_rank)
    return CostmapResult(
        grid=grid, category=rank.view(np.int8) - np.int8(1), present=present, evidence=evidence,
        window=window, used_flat_ground=used_flat_ground, points_projected=evidence["projected"],
        surface_samples=evidence["samples"], clamped_pixels=evidence["clamped"],
        unknown_label_pixels=unknown_label_pixels, ground_offset_m=evidence.get("ground_offset", float("nan")),
        ground=ground,
    )


def _in_window(part: np.ndarray, window: GridWindow, corner: tuple[int, int], fill: Any) -> np.ndarray:
    """``part`` ([..., rows, cols] of a box whose cell (0, 0) is ``corner`` of ``window``) over the whole window."""
    row0, col0 = corner
    out = np.full((*part.shape[:-2], window.rows, window.cols), fill, part.dtype)
    out[..., row0 : row0 + part.shape[-2], col0 : col0 + part.shape[-1]] = part
    return out


def _placed_in(result: CostmapResult, window: GridWindow, row0: int, col0: int) -> CostmapResult:
    """A result built on a box of ``window`` (corner ``row0``, ``col0``), as the whole window: unknown elsewhere.

    The evidence stays on the box (``evidence_window``): copying its dozen grid-sized arrays would cost
    what the box saved.
    """

    def whole(part: np.ndarray, fill: Any) -> np.ndarray:
        return _in_window(part, window, (row0, col0), fill)

    ground = result.ground
    if ground is not None:
        ground = GroundGeometry(whole(ground.step_m, np.nan), whole(ground.slope_tan, np.nan),
                                whole(ground.caution, False), whole(ground.blocked, False))
    return dataclasses.replace(result, grid=whole(result.grid, UNKNOWN), category=whole(result.category, UNKNOWN),
                               present=whole(result.present, False), window=window, evidence_window=result.window,
                               ground=ground)


# --------------------------------------------------------------------------- entry point


def column_step(k: np.ndarray, config: CostmapConfig) -> int:
    """Every how many depth-image columns the build works on: ``config.column_step``, or with 0 the largest step
    whose columns lie at most one cell apart at max_range (z / fx apart at depth z).

    Finer columns add no cell, only work: a 640-column depth image of a 90 degree lens puts columns 4.7 cm
    apart at 15 m, so with 0.1 m cells every other column covers every cell the image sees.
    """
    if config.column_step > 0:
        return int(config.column_step)
    return max(1, int(config.resolution * float(k[0, 0]) / config.max_range))


def _depth_geometry(k: np.ndarray, depth_hw: tuple[int, int], camera_to_base: np.ndarray,
                    config: CostmapConfig) -> tuple[int, _RayGeometry]:
    """(column step, ray geometry) of the pixels the build works on in a depth image of ``depth_hw`` whose
    intrinsics are ``k``: every step-th column (column j is the image's column step * j, so u scales by 1 / step)
    and the rows the geometry keeps (``rows``)."""
    step = column_step(k, config)
    if step > 1:
        k = k.copy()
        k[0] /= step
    return step, _ray_geometry(k, (depth_hw[0], -(-depth_hw[1] // step)), camera_to_base, config)


def build_costmap(
    depth: np.ndarray | None,
    labels: np.ndarray,
    k_matrix: np.ndarray,
    config: CostmapConfig,
    classes: ClassMap | np.ndarray,
    camera_to_base: np.ndarray | None = None,
    k_hw: tuple[int, int] | None = None,
    window: GridWindow | None = None,
) -> CostmapResult:
    """Project labelled pixels into the grid; most severe category per cell wins.

    Args:
        depth: [H, W] metres (NaN/inf/<= 0 invalid), or None for the flat-ground fallback.
        labels: [h, w] class ids, any resolution; resampled (nearest) to the depth's.
        k_matrix: 3x3 intrinsics of an image of size ``k_hw`` (default: the depth's size, or the
            labels' without depth); scaled to the working resolution.
        config: grid geometry, costs, mount and evidence rules.
        classes: a ClassMap (``class_map_from_ontology``) or a bare int8 [256] category table.
        camera_to_base: 4x4 optical->base transform (from TF); default from the mount fields.
        window: where the grid lies (a fixed-frame rolling window); default the base-frame window.
    Raises:
        DataError: an image or K is malformed, or the camera is not above the ground.
    """
    labels = np.asarray(labels)
    _check_inputs(depth, labels, k_matrix)
    classes = as_class_map(classes)
    work_hw = depth.shape if depth is not None else labels.shape
    # Depth, labels and camera_info are whole-frame resizes of one camera image (the nodes squash
    # the frame to each model's input), so their aspect ratios may differ: K scales per axis.
    k = scale_intrinsics(k_matrix, tuple(k_hw) if k_hw else tuple(work_hw), tuple(work_hw))
    transform = camera_to_grid_transform(config) if camera_to_base is None else np.asarray(camera_to_base, np.float64)
    if not transform[2, 3] > config.ground_z:
        raise DataError(f"camera is at height {transform[2, 3]:.3f} m, not above the ground plane "
                        f"(ground_z = {config.ground_z} m): check the camera pose")
    window = window or GridWindow.base_frame(config)
    if depth is not None:
        step, geometry = _depth_geometry(k, depth.shape, transform, config)
        reach, row0, col0 = _reach_window(geometry, window)
        # Work on the rows from the one above the first that can hold a point down: the sky above holds nothing
        # (a third of the image). Unknown ids above it are counted all the same.
        rows = np.arange(depth.shape[0]) if geometry.rows is None else geometry.rows
        row_index, col_index = _worked_index(labels.shape, work_hw, rows, step)
        top, unknown_above = _first_row_used(labels, row_index, col_index, classes, reach.rows * reach.cols)
        depth = depth[rows[top:], ::step]
        labels = _worked_labels(labels, row_index[top:], col_index)
        categories = _categories_of(labels, classes)
        *masks, unknown = _label_masks(labels, categories, classes, reach.rows * reach.cols)  # of the pixels used
        evidence = _observe_depth(depth, labels, categories, masks, classes, geometry, top, reach, config)
        unknown += unknown_above
        result = _resolve(evidence, config, reach, used_flat_ground=False, unknown_label_pixels=unknown)
        return result if reach is window else _placed_in(result, window, row0, col0)
    categories = _categories_of(labels, classes)
    points, cats, used_flat_ground, areas, index = project_points(None, categories, k, transform, config)
    standing = _surface_of(labels, classes).ravel()[index] == 0
    result = grid_from_points(points, cats, config, used_flat_ground, areas, standing, window)
    result.unknown_label_pixels = classes.unknown_ids(labels)  # of the pixels the build uses
    return result


def warm_up(config: CostmapConfig, classes: ClassMap | np.ndarray) -> float:
    """Build a small synthetic frame with ``config`` and ``classes`` so that the compiled loops (costmap.kernels)
    are compiled, or loaded from their cache, before the first real frame; returns the seconds it took.

    Numba compiles a loop on its first call: seconds for all of them on a new install, under a second to load them
    from the cache after that (``warm_up_s`` in docs/measurements/costmap_build_turns.json). A node calls this while it configures, so its first
    frame is not late by that much. The frame: flat ground at the mount's height (a surface class) with a wall
    of a standing class on it 4 m ahead, mono8 labels and float32 depth, as the nodes publish them.
    """
    import time

    start = time.perf_counter()
    classes = as_class_map(classes)
    h, w = 48, 64
    k = np.array([[40.0, 0.0, w / 2 - 0.5], [0.0, 40.0, h / 2 - 0.5], [0.0, 0.0, 1.0]])
    transform = camera_to_grid_transform(config)
    _, _, gz = _base_rays(transform[:3, :3], *_pixel_rays(k, (h, w)))
    gz = np.broadcast_to(gz, (h, w))
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(gz < 0, (config.ground_z - transform[2, 3]) / gz, np.nan).astype(np.float32)
    ids = np.arange(256)
    surface_ids = ids[classes.surface & (classes.category == int(Category.FREE))]
    standing_ids = ids[classes.standing]
    labels = np.full((h, w), surface_ids[0] if surface_ids.size else 0, np.uint8)
    if standing_ids.size:
        wall = (np.abs(ids[:w] - w / 2) < w / 6)[None, :] & ~(depth < 4.0)  # every row above 4 m of ground
        depth[wall] = 4.0
        labels[wall] = standing_ids[0]
    build_costmap(depth, labels, k, config, classes)
    return time.perf_counter() - start
