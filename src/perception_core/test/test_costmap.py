"""Costmap projection on analytic scenes: placement, dense ground, sharp obstacles, evidence, classes, config."""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest

from perception_core.costmap import (
    MAX_GRID_CELLS,
    NOT_PROJECTED,
    UNKNOWN,
    Category,
    ClassMap,
    CostmapConfig,
    GridWindow,
    build_costmap,
    camera_to_grid_transform,
    class_categories_from_ontology,
    class_map_from_ontology,
    column_step,
    grid_from_points,
    project_points,
)
from perception_core.errors import ConfigError, DataError
from perception_core.geometry import pose_matrix
from perception_core.ontology import parse_ontology

GROUND, ROUGH, WATER, BOX, SKY = 0, 1, 3, 4, 6  # smooth_ground (FREE), rough_ground, water (HAZARD), static_obstacle
ONTOLOGY = parse_ontology({"version": "test", "ignore_index": 255, "classes": [
    {"id": i, "name": name, "category": category, "color": [i, i, i]} for i, (name, category) in enumerate([
        ("smooth_ground", "FREE"), ("rough_ground", "CAUTION"), ("low_vegetation", None), ("water", "HAZARD"),
        ("static_obstacle", "BLOCKED"), ("dynamic", "HAZARD"), ("sky", None)])
]})
CAM_HEIGHT, CAM_PITCH = 1.5, 0.2
BOX_X, BOX_HALF_WIDTH, BOX_HEIGHT = 6.1, 1.0, 1.5


def pinhole_k(width: int, height: int, focal: float) -> np.ndarray:
    return np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)


def camera_rays(width: int, height: int, k: np.ndarray, pitch: float = CAM_PITCH) -> np.ndarray:
    """World ray per pixel with unit optical-z component (so the ray parameter is the depth), written
    independently of the module under test: forward + a*right + b*down."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    a = (u - k[0, 2]) / k[0, 0]
    b = (v - k[1, 2]) / k[1, 1]
    forward = np.array([math.cos(pitch), 0.0, -math.sin(pitch)])
    right = np.array([0.0, -1.0, 0.0])
    down = np.array([-math.sin(pitch), 0.0, -math.cos(pitch)])
    return forward + a[..., None] * right + b[..., None] * down


def render_scene(width: int, height: int, k: np.ndarray, with_box: bool = True, box_height: float = BOX_HEIGHT,
                 box_label: int = BOX, box_x: float = BOX_X) -> tuple[np.ndarray, np.ndarray]:
    """Analytic depth (optical z, NaN = sky) and labels of flat ground plus a box face at x = box_x."""
    rays = camera_rays(width, height, k)
    origin = np.array([0.0, 0.0, CAM_HEIGHT])
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(rays[..., 2] < 0, -origin[2] / rays[..., 2], np.inf)
        t_box = np.where(rays[..., 0] > 0, box_x / rays[..., 0], np.inf)
    hit_box = origin + rays * t_box[..., None]
    on_box = with_box & (np.abs(hit_box[..., 1]) <= BOX_HALF_WIDTH) & (hit_box[..., 2] >= 0) & (
        hit_box[..., 2] <= box_height)
    t_box = np.where(on_box, t_box, np.inf)
    depth = np.minimum(t_ground, t_box)
    labels = np.where(t_box < t_ground, box_label, np.where(np.isfinite(t_ground), GROUND, SKY)).astype(np.uint8)
    depth[~np.isfinite(depth)] = np.nan
    return depth.astype(np.float32), labels


def scene_config(**overrides: float) -> CostmapConfig:
    values = {"resolution": 0.2, "mount_z": CAM_HEIGHT, "mount_pitch": CAM_PITCH, "min_obstacle_area_m2": 0.0}
    values.update(overrides)
    return CostmapConfig(**values)


def cell_of(config: CostmapConfig, x: float, y: float) -> tuple[int, int]:
    """(row, col) of a point; points should sit inside cells, not on their edges (y = 0 is an edge)."""
    return (math.floor((y - config.origin_y) / config.resolution + 1e-9),
            math.floor((x - config.origin_x) / config.resolution + 1e-9))


def visible_ground(config: CostmapConfig, k: np.ndarray, hw: tuple[int, int], box_height: float = BOX_HEIGHT,
                   margin_px: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(ground cells the camera sees, ground cells the box hides): cell centres projected into the image.

    A ground point is seen when it projects inside the image (``margin_px`` from the edge), lies in
    (min_range, max_range), and its ray passes above or beside the box face.
    """
    xs = config.origin_x + (np.arange(config.cols) + 0.5) * config.resolution
    ys = config.origin_y + (np.arange(config.rows) + 0.5) * config.resolution
    gx, gy = np.meshgrid(xs, ys)
    rel = np.stack([gx, gy, np.full(gx.shape, -CAM_HEIGHT)], axis=-1)
    forward = np.array([math.cos(CAM_PITCH), 0.0, -math.sin(CAM_PITCH)])
    right = np.array([0.0, -1.0, 0.0])
    down = np.array([-math.sin(CAM_PITCH), 0.0, -math.cos(CAM_PITCH)])
    z = rel @ forward
    u = k[0, 0] * (rel @ right) / z + k[0, 2]
    v = k[1, 1] * (rel @ down) / z + k[1, 2]
    inside = (z > config.min_range) & (z < config.max_range) & (u >= margin_px) & (u <= hw[1] - 1 - margin_px) & (
        v >= margin_px) & (v <= hw[0] - 1 - margin_px)
    def behind_box(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            s = BOX_X / px  # fraction of the way to the point at which the ray crosses the box plane
        return (px > BOX_X) & (np.abs(s * py) <= BOX_HALF_WIDTH) & (CAM_HEIGHT * (1 - s) <= box_height)

    half = config.resolution / 2
    # Hidden: every corner of the cell is hidden (a cell on the shadow's edge is partly seen), and the cell lies
    # wholly behind the face (the cell holding the face holds the box).
    hidden = gx - half > BOX_X + 1e-6
    for dx in (-half, half):
        for dy in (-half, half):
            hidden &= behind_box(gx + dx, gy + dy)
    return inside & ~behind_box(gx, gy), inside & hidden


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    return class_categories_from_ontology(ONTOLOGY)


@pytest.fixture(scope="module")
def classes() -> ClassMap:
    return class_map_from_ontology(ONTOLOGY)


def test_mount_transform_puts_optical_axis_forward_and_down() -> None:
    transform = camera_to_grid_transform(CostmapConfig(mount_x=0.5, mount_z=1.2, mount_pitch=0.3))
    forward = transform[:3, :3] @ np.array([0.0, 0.0, 1.0])
    right = transform[:3, :3] @ np.array([1.0, 0.0, 0.0])
    assert forward == pytest.approx([math.cos(0.3), 0.0, -math.sin(0.3)])
    assert right == pytest.approx([0.0, -1.0, 0.0])
    assert transform[:3, 3] == pytest.approx([0.5, 0.0, 1.2])


def test_box_lands_in_its_cells_and_hides_what_is_behind(classes: ClassMap) -> None:
    k = pinhole_k(160, 120, 100.0)
    depth, labels = render_scene(160, 120, k)
    config = scene_config()
    result = build_costmap(depth, labels, k, config, classes)

    assert not result.used_flat_ground
    box_col = cell_of(config, BOX_X, 0.0)[1]
    blocked_rows, blocked_cols = np.nonzero(result.category == Category.BLOCKED)
    assert set(blocked_cols.tolist()) == {box_col}, "the box face must be marked only where it is"
    blocked_y = config.origin_y + (blocked_rows + 0.5) * config.resolution
    assert blocked_y.min() == pytest.approx(-BOX_HALF_WIDTH + 0.1) and blocked_y.max() == pytest.approx(
        BOX_HALF_WIDTH - 0.1)
    assert (result.grid[result.category == Category.BLOCKED] == 100).all()
    _, hidden = visible_ground(config, k, (120, 160))
    assert hidden.sum() > 100 and (result.category[hidden] == UNKNOWN).all(), "hidden cells stay unknown"
    row, col = cell_of(config, -1.0, 0.0)
    assert result.grid[row, col] == UNKNOWN, "nothing is seen behind the camera"
    assert result.layers["blocked"][cell_of(config, BOX_X, 0.0)] == 100
    assert result.layers["blocked"][cell_of(config, 4.0, 0.0)] == 0
    assert result.layers["free"][cell_of(config, 4.0, 0.0)] == 100
    assert result.obstacle_height[cell_of(config, BOX_X, 0.0)] == pytest.approx(BOX_HEIGHT / 2, abs=0.2)


@pytest.mark.parametrize("focal, width, height", [(100.0, 160, 120), (40.0, 64, 48)])
def test_dense_ground_covers_every_visible_ground_cell_and_no_hidden_one(classes: ClassMap, focal: float,
                                                                          width: int, height: int) -> None:
    """Rows of a low camera are far apart beyond a few metres; the surface between them is filled."""
    k = pinhole_k(width, height, focal)
    depth, labels = render_scene(width, height, k)
    config = scene_config(resolution=0.1)
    visible, hidden = visible_ground(config, k, (height, width))
    sparse = build_costmap(depth, labels, k, config.__class__(**{**_fields(config), "dense_ground": False}), classes)
    dense = build_costmap(depth, labels, k, config, classes)
    ground = visible & (config.origin_x + (np.arange(config.cols) + 0.5) * config.resolution < BOX_X - 0.2)[None, :]
    holes_sparse = (sparse.category[ground] == UNKNOWN).mean()
    holes_dense = (dense.category[ground] == UNKNOWN).mean()
    assert holes_sparse > 0.2, "precondition: without dense ground the far rows leave stripes"
    assert holes_dense < 0.01
    assert (dense.category[ground & (dense.category != UNKNOWN)] == Category.FREE).all()
    assert (dense.category[hidden] == UNKNOWN).all(), "nothing is filled behind the box"


@pytest.mark.parametrize("width, hfov_deg, resolution, step", [
    (640, 90.0, 0.1, 2),  # the vehicle camera's depth image: columns 4.7 cm apart at 15 m
    (1280, 90.0, 0.1, 4),  # ground truth at the camera's size
    (640, 110.0, 0.1, 1),  # a wide lens: 6.7 cm apart already
    (640, 90.0, 0.05, 1),  # finer cells
])
def test_automatic_column_step_keeps_columns_within_a_cell_at_max_range(width: int, hfov_deg: float,
                                                                          resolution: float, step: int) -> None:
    focal = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    config = CostmapConfig(resolution=resolution, max_range=15.0)
    assert column_step(pinhole_k(width, 100, focal), config) == step
    assert step * config.max_range / focal <= resolution < (step + 1) * config.max_range / focal
    assert column_step(pinhole_k(width, 100, focal), CostmapConfig(resolution=resolution, column_step=3)) == 3


def test_the_automatic_column_step_leaves_the_box_and_the_ground_where_they_are(classes: ClassMap) -> None:
    """Every other column with K scaled to match: the same box face, the same free ground (but where the
    wider columns miss a cell at the field of view's edge), nothing behind the box."""
    k = pinhole_k(640, 480, 400.0)
    depth, labels = render_scene(640, 480, k)
    config = scene_config(resolution=0.1, column_step=1)
    automatic = CostmapConfig(**{**_fields(config), "column_step": 0})
    assert column_step(k, automatic) == 2
    every = build_costmap(depth, labels, k, config, classes)
    stepped = build_costmap(depth, labels, k, automatic, classes)
    blocked = every.category == Category.BLOCKED
    assert blocked.sum() > 10 and np.array_equal(stepped.category == Category.BLOCKED, blocked)
    free = every.category == Category.FREE
    assert (stepped.category[free] == Category.FREE).mean() > 0.99
    assert not ((stepped.category != UNKNOWN) & (every.category == UNKNOWN)).any(), "nothing seen that was not"


def test_near_rows_are_thinned_to_the_set_spacing_of_flat_ground() -> None:
    """Rows that flat ground packs closer than near_row_spacing cells are thinned (at most every 8th), each pair
    of worked rows at most that far apart there; the rows above, where flat ground spreads, are all kept."""
    from perception_core.costmap.projection import MAX_ROW_STEP, _ray_geometry

    k = pinhole_k(640, 480, 400.0)
    config = scene_config(resolution=0.1)  # near_row_spacing 0.35 cells by default: 3.5 cm
    geometry = _ray_geometry(k, (480, 640), camera_to_grid_transform(config), config)
    rows = geometry.rows
    assert rows is not None and rows[-1] == 479 and np.all(np.diff(rows) >= 1)
    assert geometry.gz.shape == (rows.size, 640) and geometry.step_limit.shape == (rows.size - 1, 640)
    # Flat-ground x of each row's centre column, written independently of the module (camera_rays).
    rays = camera_rays(640, 480, k)[:, 320]
    ground_x = rays[:, 0] * CAM_HEIGHT / -rays[:, 2]
    steps = np.diff(rows)
    assert steps.max() <= MAX_ROW_STEP and steps.max() > 1 and rows.size < 480
    apart = np.abs(np.diff(ground_x[rows]))
    assert (apart[steps > 1] <= 0.035 + 1e-9).all()
    first_thinned = rows[np.flatnonzero(steps > 1)[0]]
    assert np.array_equal(rows[rows <= first_thinned], np.arange(first_thinned + 1))
    assert np.abs(np.diff(ground_x[: first_thinned + 2])).max() >= 0.0175 - 1e-9  # kept: two would exceed 3.5 cm
    # Each worked row stands for the rows halfway to its neighbours: all 480 rows once.
    assert geometry.row_weight.sum() == pytest.approx(480.0)
    off = _ray_geometry(k, (480, 640), camera_to_grid_transform(config),
                        CostmapConfig(**{**_fields(config), "near_row_spacing": 0.0}))
    assert off.rows is None and off.row_weight is None and off.gz.shape == (480, 640)


@pytest.mark.parametrize("skew", [0.0, 2.5])
def test_pixel_rays_broadcast_to_the_whole_image_planes_exactly(skew: float) -> None:
    """The ray geometry builds its planes from a row of x and a column of y (a camera moving on its mount
    recomputes them every frame); per pixel they must be the very float64 values of the whole-image formula,
    written here independently, with and without a skewed K."""
    from perception_core.costmap.projection import _pixel_rays

    k = np.array([[301.7, skew, 159.3], [0.0, 297.1, 121.9], [0.0, 0.0, 1.0]])
    ray_x, ray_y = _pixel_rays(k, (240, 320))
    assert ray_y.shape == (240, 1) and ray_x.shape == ((1, 320) if skew == 0 else (240, 320))
    v, u = np.mgrid[0:240, 0:320].astype(np.float64)
    whole_y = (v - k[1, 2]) / k[1, 1]
    whole_x = (u - k[0, 2] - k[0, 1] * whole_y) / k[0, 0]
    bx, by = np.broadcast_arrays(ray_x, ray_y)
    assert np.array_equal(bx, whole_x) and np.array_equal(by, whole_y)


def test_a_camera_moving_a_little_on_its_mount_keeps_the_tables_and_gets_exact_gains(classes: ClassMap) -> None:
    """A mount moved by 0.05 deg (under TABLES_REUSE_DEG) reuses the cached tables (rows, limits) with ray gains
    exact for the new mount; moves are measured from the tables' own mount (0.05 then 0.12 deg: the second
    recomputes); a move of 0.5 deg recomputes. Reused tables change next to nothing in the grid against a fresh computation."""
    from perception_core.costmap import projection
    from perception_core.costmap.projection import _pixel_rays, _ray_geometry

    k = pinhole_k(640, 480, 400.0)
    config = scene_config(resolution=0.1)

    def mount(pitch_deg: float) -> np.ndarray:
        return camera_to_grid_transform(CostmapConfig(**{**_fields(config),
                                                         "mount_pitch": CAM_PITCH + math.radians(pitch_deg)}))

    projection._GEOMETRY_CACHE.clear()
    base = _ray_geometry(k, (480, 640), mount(0.0), config)
    moved = _ray_geometry(k, (480, 640), mount(0.05), config)
    assert moved.step_limit is base.step_limit and moved.rows is base.rows and moved.near_rows == base.near_rows
    ray_x, ray_y = np.broadcast_arrays(*_pixel_rays(k, (480, 640)))
    rotation = mount(0.05)[:3, :3]
    expected_gz = (rotation[2, 0] * ray_x + rotation[2, 1] * ray_y + rotation[2, 2])[base.rows].astype(np.float32)
    assert np.array_equal(moved.gz, expected_gz) and not np.array_equal(moved.gz, base.gz)
    assert np.array_equal(moved.t, mount(0.05)[:3, 3])
    further = _ray_geometry(k, (480, 640), mount(0.12), config)  # 0.07 deg from the last, 0.12 from the tables
    assert further.step_limit is not base.step_limit
    projection._GEOMETRY_CACHE.clear()
    fresh = _ray_geometry(k, (480, 640), mount(0.5), config)
    projection._GEOMETRY_CACHE.clear()
    _ray_geometry(k, (480, 640), mount(0.0), config)
    far = _ray_geometry(k, (480, 640), mount(0.5), config)
    assert np.array_equal(far.step_limit, fresh.step_limit) and np.array_equal(far.rows, fresh.rows)

    depth, labels = render_scene(640, 480, k)
    projection._GEOMETRY_CACHE.clear()
    build_costmap(depth, labels, k, config, classes, camera_to_base=mount(0.0))
    reused = build_costmap(depth, labels, k, config, classes, camera_to_base=mount(0.05))
    projection._GEOMETRY_CACHE.clear()
    exact = build_costmap(depth, labels, k, config, classes, camera_to_base=mount(0.05))
    seen = exact.category != UNKNOWN
    assert seen.sum() > 1000 and (reused.category != exact.category).sum() <= 0.002 * seen.sum()


def test_thinned_near_rows_place_the_same_box_and_ground(classes: ClassMap) -> None:
    """A low box 2.5 m ahead, seen in the thinned rows: the same lethal cells, about the same surface area
    in them (thinned pixels count for the rows they stand for), the same ground, nothing seen that was not."""
    k = pinhole_k(640, 480, 400.0)
    depth, labels = render_scene(640, 480, k, box_x=2.5, box_height=0.3)
    config = scene_config(resolution=0.1, column_step=1)
    every_row = CostmapConfig(**{**_fields(config), "near_row_spacing": 0.0})
    thinned, every = build_costmap(depth, labels, k, config, classes), build_costmap(depth, labels, k, every_row, classes)
    blocked = every.category == Category.BLOCKED
    assert blocked.sum() > 10 and np.array_equal(thinned.category == Category.BLOCKED, blocked)
    area, area_every = thinned.obstacle_area[0][blocked], every.obstacle_area[0][blocked]
    assert area.sum() == pytest.approx(area_every.sum(), rel=0.02)
    free = every.category == Category.FREE
    assert (thinned.category[free] == Category.FREE).mean() > 0.999
    assert not ((thinned.category != UNKNOWN) & (every.category == UNKNOWN)).any()
    assert thinned.points_projected < 0.8 * every.points_projected


@pytest.mark.parametrize(("src_hw", "work_hw", "thinned", "step"), [
    ((544, 640), (768, 896), True, 2),  # the shipped models: labels upsampled, near rows thinned, every 2nd column
    ((768, 896), (768, 896), False, 1),  # labels at the depth's size: given back as they are
    ((7, 5), (13, 11), False, 3),
    ((13, 11), (7, 5), True, 1),  # labels larger than the depth
])
def test_worked_labels_are_the_resized_labels_at_the_worked_pixels(src_hw, work_hw, thinned: bool, step: int) -> None:
    """One gather of the pixels the build works on equals resizing all (nearest, by pixel centres), then taking
    the worked rows and every step-th column."""
    from perception_core.costmap.projection import _worked_index, _worked_labels, resize_nearest

    labels = np.random.default_rng(3).integers(0, 7, src_hw).astype(np.uint8)
    rows = np.array([0, 1, 2, 4, work_hw[0] - 1]) if thinned else None
    expected = resize_nearest(labels, work_hw)
    expected = (expected if rows is None else expected[rows])[:, ::step]
    worked = _worked_labels(labels, *_worked_index(labels.shape, work_hw, rows, step))
    assert worked.flags.c_contiguous and worked.dtype == np.uint8 and np.array_equal(worked, expected)
    # By pixel centres: upsampling 2x repeats each label twice.
    assert np.array_equal(resize_nearest(np.arange(3)[None, :], (1, 6)), [[0, 0, 1, 1, 2, 2]])


def test_the_build_works_on_the_part_of_the_window_the_camera_reaches(classes: ClassMap) -> None:
    """The grid-sized work is done on the box that the camera's rays reach up to max_range (plus the reach of a
    drop edge's marks, 9 cells); the result is the whole window, unknown outside the box."""
    k = pinhole_k(160, 120, 100.0)
    depth, labels = render_scene(160, 120, k)
    config = scene_config(resolution=0.1)  # max_range 15 m; the lens sees 0.8 m sideways per metre ahead
    result = build_costmap(depth, labels, k, config, classes)
    box = result.evidence_window
    assert result.grid.shape == (config.rows, config.cols) and box is not None
    assert box.origin_x == pytest.approx(-0.9) and box.origin_x + box.cols * 0.1 == pytest.approx(15.0)
    assert box.origin_y == pytest.approx(-(15.0 * 0.8 + 0.9)) and box.rows == 258
    assert (result.category[:, : config.cols // 2 - 9] == UNKNOWN).all()
    assert result.counts.shape == (4, config.rows, config.cols) and result.counts.sum() > 0
    assert result.elevation.shape == (config.rows, config.cols)
    # Turned round, the camera reaches the other half; the grid is the same one, mirrored.
    back = build_costmap(depth, labels, k, config, classes,
                         camera_to_base=pose_matrix(0, 0, 0, 0, 0, math.pi) @ camera_to_grid_transform(config))
    assert back.evidence_window.origin_x + back.evidence_window.cols * config.resolution == pytest.approx(1.0)
    mirrored = back.category[::-1, ::-1]
    assert (mirrored != UNKNOWN).sum() == pytest.approx((result.category != UNKNOWN).sum(), rel=0.01)
    assert (mirrored != result.category).mean() < 0.001  # cells on a cell edge may round the other way


def test_nothing_is_placed_past_max_range_not_even_the_ground_up_to_a_far_obstacle(classes: ClassMap) -> None:
    """The box reads 20 m away (a depth error, or an obstacle behind a crest), past the 15 m max_range, above
    ground seen at 6 m: its pixels are dropped, and the ground up to its foot is filled only to where the
    foot's ray reaches max_range."""
    k = pinhole_k(160, 120, 100.0)
    depth, labels = render_scene(160, 120, k)
    depth = np.where(labels == BOX, depth * np.float32(20.0 / BOX_X), depth)
    config = scene_config(resolution=0.1, width_m=60.0, height_m=60.0, origin_x=-30.0, origin_y=-30.0)
    result = build_costmap(depth, labels, k, config, classes)
    xs = np.broadcast_to(config.origin_x + (np.arange(config.cols) + 0.5) * config.resolution, result.grid.shape)
    observed = result.category != UNKNOWN
    assert observed[(xs > 8.0) & (xs < 14.0)].sum() > 100, "the ground up to the foot, within range"
    # Optical depth 15 m is at most 15 m / cos(half the vertical field of view) ahead along the ground.
    assert xs[observed].max() < 15.0 / math.cos(math.atan(60 / 100)) + config.resolution


def test_dense_ground_covers_a_hill_seen_above_the_flat_horizon(classes: ClassMap) -> None:
    """A 20 deg ramp rising from 4 m ahead: its far part is seen in rows at and above where flat ground's
    horizon would be, rows that flat ground never puts in range. Its ground is filled all the same."""
    k = pinhole_k(640, 384, 320.0)
    rays = camera_rays(640, 384, k)
    origin, rise, foot = np.array([0.0, 0.0, CAM_HEIGHT]), math.tan(math.radians(20.0)), 4.0
    with np.errstate(divide="ignore", invalid="ignore"):
        t_flat = np.where(rays[..., 2] < 0, -origin[2] / rays[..., 2], np.inf)
        t_ramp = ((origin[0] - foot) * rise - origin[2]) / (rays[..., 2] - rise * rays[..., 0])
    on_flat = origin[0] + t_flat * rays[..., 0] <= foot
    depth = np.where(on_flat, t_flat, np.where(t_ramp > 0, t_ramp, np.nan)).astype(np.float32)
    labels = np.where(np.isfinite(depth), GROUND, SKY).astype(np.uint8)
    config = scene_config(resolution=0.1, ground_geometry=False)
    result = build_costmap(depth, labels, k, config, classes)
    ahead = [cell_of(config, x, y) for x in np.arange(7.05, 12.0, 0.1) for y in np.arange(-0.95, 1.0, 0.1)]
    rows, cols = np.array(ahead).T
    assert (result.category[rows, cols] == Category.FREE).mean() > 0.98


def test_dense_ground_fills_the_gaps_of_a_depth_that_comes_in_steps(classes: ClassMap) -> None:
    """A depth network with integer levels gives ground depth in steps (here 0.15 m): rows of one level land
    close together, then the next level jumps. Near the vehicle, where flat ground puts rows far closer than
    a cell, the jumps still leave cells between rows; those are filled like the far rows' gaps."""
    k = pinhole_k(640, 384, 320.0)  # the vehicle camera's depth image
    depth, labels = render_scene(640, 384, k, with_box=False)
    stepped = (np.floor(depth / 0.15) + 0.5) * 0.15
    config = scene_config(resolution=0.1)
    visible, _ = visible_ground(config, k, (384, 640), margin_px=2.0)
    xs = config.origin_x + (np.arange(config.cols) + 0.5) * config.resolution
    near = visible & (xs < 4.0)[None, :]
    assert near.sum() > 1000
    exact = build_costmap(depth, labels, k, config, classes)
    result = build_costmap(stepped, labels, k, config, classes)
    assert (exact.category[near] == UNKNOWN).mean() < 0.01
    # Filled up to the jumps that no continuous surface makes (7 % of the depth at 2 m); 19 % unknown when only
    # the far rows were filled.
    assert (result.category[near] == UNKNOWN).mean() < 0.05
    assert (result.category[near & (result.category != UNKNOWN)] == Category.FREE).all()


def _fields(config: CostmapConfig) -> dict:
    return {name: getattr(config, name) for name in CostmapConfig.field_names()}


def test_dense_ground_never_bridges_a_depth_discontinuity(classes: ClassMap) -> None:
    """A low box labelled as ground (a segmentation error): its top edge and the ground seen above it are
    neighbouring surface pixels, but the step between them is an occlusion, not a surface. Geometry sees a
    0.5 m drop at the far edge of the "ground": that brink is BLOCKED, the shadow past it is never free."""
    k = pinhole_k(160, 120, 100.0)
    depth, labels = render_scene(160, 120, k, box_height=0.5, box_label=GROUND)
    config = scene_config(resolution=0.1)
    _, hidden = visible_ground(config, k, (120, 160), box_height=0.5)
    assert hidden.sum() > 20
    plain = build_costmap(depth, labels, k, CostmapConfig(**{**_fields(config), "ground_geometry": False}), classes)
    assert (plain.category[hidden] == UNKNOWN).all(), "the shadow behind the box stays unknown"
    result = build_costmap(depth, labels, k, config, classes)
    assert not (result.category[hidden] == Category.FREE).any()
    xs = config.origin_x + (np.arange(config.cols) + 0.5) * config.resolution
    marked = hidden & (result.category == Category.BLOCKED)
    assert marked.any() and (np.broadcast_to(xs, hidden.shape)[marked] < BOX_X + 0.5).all(), "only at the brink"


def test_mixed_pixels_behind_an_obstacle_are_pulled_onto_it(classes: ClassMap) -> None:
    """Depth networks blur the top edge of an object towards the background: those pixels (still labelled
    obstacle) lie behind the object, in the space it hides. They must not mark lethal cells there."""
    k = pinhole_k(160, 120, 100.0)
    depth, labels = render_scene(160, 120, k, box_height=0.8)
    box = labels == BOX
    top = np.argmax(box, axis=0)  # first box row per column (0 where none)
    ramp = depth.copy()
    for col in np.nonzero(box.any(axis=0))[0]:
        for i, row in enumerate(range(top[col], top[col] + 3)):  # three rows blend to 8, 10, 12 m
            ramp[row, col] = 12.0 - 2.0 * i
    config = scene_config(resolution=0.1)  # the default limit (1.5 m)
    naive = build_costmap(ramp, labels, k, CostmapConfig(**{**_fields(config), "max_obstacle_depth_m": 1000.0}),
                          classes)
    sharp = build_costmap(ramp, labels, k, config, classes)
    xs = config.origin_x + (np.arange(config.cols) + 0.5) * config.resolution
    behind = (xs > BOX_X + 0.5 + config.resolution)[None, :]
    assert (naive.present[Category.BLOCKED] & behind).any(), "precondition: the ramp marks cells behind the box"
    assert not (sharp.present[Category.BLOCKED] & behind).any()
    assert sharp.present[Category.BLOCKED][cell_of(config, BOX_X, 0.0)]
    assert sharp.clamped_pixels > 0


def test_an_object_that_reaches_back_keeps_its_depth(classes: ClassMap) -> None:
    """The box's upper part reads 1 m behind its face (its top, seen receding, or a deep object): within the
    default limit those pixels are the object, and its lethal cells reach back that far; a 0.5 m limit pulls
    them onto its front."""
    k = pinhole_k(160, 120, 100.0)
    depth, labels = render_scene(160, 120, k, box_height=0.8)
    box = labels == BOX
    bottom = box.shape[0] - 1 - np.argmax(box[::-1], axis=0)  # last box row per column
    upper = box & (np.arange(box.shape[0])[:, None] < bottom[None, :] - 1)
    receding = np.where(upper, depth * np.float32((BOX_X + 1.0) / BOX_X), depth)
    config = scene_config(resolution=0.1)
    xs = config.origin_x + (np.arange(config.cols) + 0.5) * config.resolution
    back = (xs > BOX_X + 0.7) & (xs < BOX_X + 1.2)
    deep = build_costmap(receding, labels, k, config, classes)
    assert deep.present[Category.BLOCKED][:, back].any() and deep.clamped_pixels == 0
    shallow = build_costmap(receding, labels, k, CostmapConfig(**{**_fields(config), "max_obstacle_depth_m": 0.5}),
                            classes)
    assert not shallow.present[Category.BLOCKED][:, back].any() and shallow.clamped_pixels > 0


def test_an_obstacle_whose_depth_is_wrong_is_marked_where_it_stands(classes: ClassMap) -> None:
    """A low box the network reads 3 m too far (as far ground). From depth alone that is an obstacle standing
    behind a hidden gap: its pixels stay at their depth (nothing is pulled), and ground geometry marks the
    drop at the box's ground contact, where the box really stands."""
    k = pinhole_k(160, 120, 100.0)
    depth, labels = render_scene(160, 120, k, box_height=0.6)
    box = labels == BOX
    depth[box] += 3.0  # the network sees the low box as far ground
    config = scene_config(resolution=0.1, max_obstacle_depth_m=0.3)
    result = build_costmap(depth, labels, k, config, classes)
    assert result.clamped_pixels == 0
    blocked = result.present[Category.BLOCKED].any(axis=0)
    xs = config.origin_x + (np.arange(config.cols) + 0.5) * 0.1
    assert blocked[(xs > BOX_X - 0.3) & (xs < BOX_X + 0.3)].any(), "the drop edge at the box's contact"
    assert result.drop_edge_cells > 0
    labels_only = build_costmap(depth, labels, k, CostmapConfig(**{**_fields(config), "ground_geometry": False}),
                                classes)
    only = labels_only.present[Category.BLOCKED].any(axis=0)
    assert not only[(xs > BOX_X - 0.3) & (xs < BOX_X + 0.3)].any() and only[xs > BOX_X + 2.0].any()


def test_water_is_a_flat_surface_filled_like_ground(classes: ClassMap) -> None:
    k = pinhole_k(64, 48, 40.0)
    depth, labels = render_scene(64, 48, k, with_box=False)
    xs_of_rows = None
    labels = labels.copy()
    rays = camera_rays(64, 48, k)
    ground_x = CAM_HEIGHT / -rays[..., 2] * rays[..., 0]
    labels[(labels == GROUND) & (ground_x > 6.0) & (ground_x < 11.0)] = WATER  # a pond from 6 to 11 m
    del xs_of_rows
    config = scene_config(resolution=0.1)
    result = build_costmap(depth, labels, k, config, classes)
    row = cell_of(config, 0.0, 0.05)[0]
    xs = config.origin_x + (np.arange(config.cols) + 0.5) * config.resolution
    pond = (xs > 6.4) & (xs < 10.6)
    assert (result.category[row, pond] == Category.HAZARD).all(), "the whole pond is HAZARD, not stripes"
    assert result.clamped_pixels == 0, "water is not pulled onto its shore"
    assert (result.category[row, (xs > 2.0) & (xs < 5.6)] == Category.FREE).all()


def test_small_far_obstacles_survive_and_near_single_pixels_do_not(classes: ClassMap) -> None:
    """Evidence is surface area: a pixel at 12 m covers 36x the area of one at 2 m."""
    k = pinhole_k(160, 120, 100.0)
    depth, labels = render_scene(160, 120, k, with_box=False)
    rays = camera_rays(160, 120, k)
    ground_x = np.where(rays[..., 2] < 0, CAM_HEIGHT / -rays[..., 2] * rays[..., 0], np.inf)
    far_row = int(np.argmin(np.abs(ground_x[:, 80] - 12.0)))
    near_row = int(np.argmin(np.abs(ground_x[:, 80] - 2.0)))
    labels[far_row - 1 : far_row + 1, 80:82] = BOX  # a 2x2-pixel post standing at 12 m
    depth[far_row - 1 : far_row + 1, 80:82] = depth[far_row, 80]
    labels[near_row, 40] = BOX  # one mislabelled pixel at 2 m
    config = scene_config(resolution=0.1, min_obstacle_area_m2=0.004)
    result = build_costmap(depth, labels, k, config, classes)
    lethal_x = config.origin_x + (np.nonzero(result.present[Category.BLOCKED].any(axis=0))[0] + 0.5) * 0.1
    assert lethal_x.size and np.abs(lethal_x - 12.0).min() < 0.3, "the far post is lethal"
    assert (np.abs(lethal_x - 2.0) > 0.5).all(), "the near single pixel is noise"
    counted = grid_from_points(np.array([[12.05, 0.05, 0.2]] * 4), np.full(4, int(Category.BLOCKED)),
                               scene_config(resolution=0.1, min_points_per_cell=3))
    assert counted.present[Category.BLOCKED][cell_of(scene_config(resolution=0.1), 12.05, 0.05)]


def test_label_ids_outside_the_ontology_are_blocked_and_counted(table: np.ndarray) -> None:
    k = pinhole_k(64, 48, 40.0)
    depth, labels = render_scene(64, 48, k, with_box=False)
    labels = labels.copy()
    labels[30:34, 30:34] = 200  # an obstacle of a class the ontology does not know
    config = scene_config(resolution=0.1)
    blocked = build_costmap(depth, labels, k, config, class_map_from_ontology(ONTOLOGY))
    assert blocked.unknown_label_pixels == 16
    assert blocked.present[Category.BLOCKED].any(), "unknown is not free"
    as_caution = build_costmap(depth, labels, k, config, class_map_from_ontology(ONTOLOGY, unknown_category="CAUTION"))
    assert not as_caution.present[Category.BLOCKED].any() and as_caution.present[Category.CAUTION].any()
    assert table[200] == Category.BLOCKED and table[255] == NOT_PROJECTED


def test_ground_offset_tells_a_wrong_depth_scale_from_a_right_one(classes: ClassMap) -> None:
    """Observed ground lies on the ground plane; depth 30 % too far puts it below (a depth model trained on
    another camera, or a wrong mount)."""
    k = pinhole_k(160, 120, 100.0)
    depth, labels = render_scene(160, 120, k)
    config = scene_config(resolution=0.1)
    assert build_costmap(depth, labels, k, config, classes).ground_offset_m == pytest.approx(0.0, abs=0.01)
    too_far = build_costmap(depth * np.float32(1.3), labels, k, config, classes).ground_offset_m
    assert too_far == pytest.approx(-0.3 * CAM_HEIGHT, abs=0.05)


def test_labels_at_another_resolution_are_resampled_and_k_scaled(classes: ClassMap) -> None:
    """Upsampled labels call the box's top row ground; ground geometry would (rightly) see a drop behind that
    "ground" and mark the brink, so it is off here: this is about where labels land."""
    k_big = pinhole_k(160, 120, 100.0)
    depth_big, labels_big = render_scene(160, 120, k_big)
    k_small = pinhole_k(80, 60, 50.0)  # the same camera at half resolution
    depth_small, labels_small = render_scene(80, 60, k_small)
    config = scene_config(ground_geometry=False)

    reference = build_costmap(depth_small, labels_small, k_small, config, classes)
    mixed = build_costmap(depth_small, labels_big, k_big, config, classes, k_hw=(120, 160))
    assert np.array_equal(mixed.category == Category.BLOCKED, reference.category == Category.BLOCKED)
    assert (mixed.category == reference.category).mean() > 0.999
    upsampled = build_costmap(depth_big, labels_small, k_big, config, classes)
    box_col = cell_of(config, BOX_X, 0.0)[1]
    assert set(np.nonzero(upsampled.category == Category.BLOCKED)[1].tolist()) == {box_col}
    assert not upsampled.used_flat_ground


def test_labels_of_another_aspect_ratio_are_resampled_not_rejected(table: np.ndarray) -> None:
    """Depth and labels are whole-frame resizes of one camera frame (384x640 vs 544x640 in the demo).

    The constant depth is a wall, not ground: geometry would block it all, so it is off here."""
    config = CostmapConfig(min_obstacle_area_m2=0.0, ground_geometry=False)
    k = pinhole_k(16, 12, 10.0)
    depth = np.full((12, 16), 4.0, np.float32)
    labels_wide = np.zeros((6, 32), np.uint8)
    labels_wide[:, 16:] = 4  # right half: a BLOCKED class
    same = build_costmap(depth, cv2.resize(labels_wide, (16, 12), interpolation=cv2.INTER_NEAREST), k, config, table)
    other = build_costmap(depth, labels_wide, k, config, table)
    np.testing.assert_array_equal(other.grid, same.grid)
    assert (other.grid == 100).any() and (other.grid == 0).any()


def test_flat_ground_fallback_is_flagged_and_places_ground_like_depth(classes: ClassMap) -> None:
    k = pinhole_k(160, 120, 100.0)
    depth, labels = render_scene(160, 120, k, with_box=False)
    config = scene_config(dense_ground=False)
    with_depth = build_costmap(depth, labels, k, config, classes)
    fallback = build_costmap(None, labels, k, config, classes)
    assert fallback.used_flat_ground and not with_depth.used_flat_ground
    observed_depth = with_depth.grid != UNKNOWN
    observed_flat = fallback.grid != UNKNOWN
    assert observed_flat.sum() > 500
    assert (observed_depth == observed_flat).mean() > 0.998
    assert (fallback.category[observed_flat] == Category.FREE).all()


def test_flat_ground_fallback_smears_obstacles_behind_them(classes: ClassMap) -> None:
    """Why depth is preferred: a box's upper pixels hit the ground plane far beyond the box."""
    k = pinhole_k(160, 120, 100.0)
    _, labels = render_scene(160, 120, k)
    config = scene_config()
    fallback = build_costmap(None, labels, k, config, classes)
    blocked_cols = np.nonzero((fallback.category == Category.BLOCKED).any(axis=0))[0]
    blocked_x = config.origin_x + blocked_cols * 0.2
    assert 6.0 - 1e-9 <= blocked_x.min() <= 6.4, "the box's foot still lands at the box"
    assert blocked_x.max() > 10.0, "its upper pixels are smeared far behind it"


def test_most_severe_category_wins_and_min_points_rejects_noise() -> None:
    config = CostmapConfig(resolution=1.0, width_m=4.0, height_m=4.0, origin_x=0.0, origin_y=-2.0,
                           min_points_per_cell=3)

    def points_at(x: float, y: float, n: int) -> np.ndarray:
        return np.tile([x, y, 0.0], (n, 1))

    points = np.concatenate([
        points_at(0.5, -1.5, 5), points_at(0.5, -1.5, 2),  # FREE x5 + 2 BLOCKED (noise) -> FREE
        points_at(1.5, -1.5, 5), points_at(1.5, -1.5, 3),  # FREE x5 + 3 BLOCKED -> BLOCKED
        points_at(2.5, -1.5, 3), points_at(2.5, -1.5, 4),  # HAZARD x3 + BLOCKED x4 -> HAZARD
        points_at(3.5, -1.5, 3),  # CAUTION
    ])
    cats = np.array([0] * 5 + [2] * 2 + [0] * 5 + [2] * 3 + [3] * 3 + [2] * 4 + [1] * 3)
    result = grid_from_points(points, cats, config)
    assert result.category[0].tolist() == [Category.FREE, Category.BLOCKED, Category.HAZARD, Category.CAUTION]
    assert result.grid[0].tolist() == [0, 100, 100, 50]
    assert (result.grid[1:] == UNKNOWN).all()
    assert result.layers["blocked"][0].tolist() == [0, 100, 100, 0]
    assert result.layers["hazard"][0].tolist() == [0, 0, 100, 0]
    assert result.layers["caution"][1].tolist() == [UNKNOWN] * 4
    assert result.points_projected == len(points)


def test_points_above_max_height_and_out_of_range_are_dropped(table: np.ndarray) -> None:
    k = pinhole_k(40, 30, 20.0)
    labels = np.full((30, 40), BOX, dtype=np.uint8)
    config = CostmapConfig(mount_z=1.0, max_point_height=1.2, max_range=8.0, min_obstacle_area_m2=0.0)
    depth = np.full((30, 40), 5.0, dtype=np.float32)  # a level camera facing a wall 5 m ahead, 6 m tall
    result = build_costmap(depth, labels, k, config, table)
    assert result.points_projected == int(((np.arange(30) - 14.5) / 20.0 * 5.0 >= -0.2).sum()) * 40
    for far_depth in (9.0, 8.0):  # beyond max_range, and at it: a depth model reports max_depth for "farther"
        far = build_costmap(np.full((30, 40), far_depth, dtype=np.float32), labels, k, config, table)
        assert far.points_projected == 0 and (far.grid == UNKNOWN).all()


def test_depth_range_limits_are_exact_at_float32(table: np.ndarray) -> None:
    """min_range < z < max_range, decided exactly for float32 depths."""
    k = pinhole_k(40, 30, 20.0)
    labels = np.full((30, 40), BOX, dtype=np.uint8)
    config = CostmapConfig(mount_z=1.0, max_range=8.0, min_range=0.3, min_obstacle_area_m2=0.0)
    below_max = build_costmap(np.full((30, 40), np.nextafter(np.float32(8.0), np.float32(0.0))), labels, k, config,
                              table)
    at_max = build_costmap(np.full((30, 40), 8.0, np.float32), labels, k, config, table)
    at_min = build_costmap(np.full((30, 40), np.float32(0.3)), labels, k, config, table)  # float32(0.3) > 0.3
    assert below_max.points_projected > 0 and at_max.points_projected == 0
    points, *_ = project_points(np.full((30, 40), np.float32(0.3)), table[labels], k,
                                camera_to_grid_transform(config), config)
    assert at_min.points_projected == len(points) > 0


@pytest.mark.parametrize("dense_ground", [True, False])
def test_rep117_infinities_are_no_points_and_raise_no_warning(classes: ClassMap, dense_ground: bool) -> None:
    """REP 117 depth: +Inf at or beyond the model's range (sky, far terrain: free up to max range, no point),
    -Inf nearer than its minimum (too near to measure). Each gives exactly what a finite depth beyond
    max_range / below min_range gives (no point, no surface), and neither raises numpy's "invalid value"
    warning, also where a ray is parallel to a grid axis (an odd-width image puts the principal point on a
    pixel centre, whose column has a zero row gain: inf * 0)."""
    k = pinhole_k(161, 121, 100.0)
    assert k[0, 2] == 80.0, "precondition: the principal point is a pixel centre"
    depth, labels = render_scene(161, 121, k)
    config = scene_config(resolution=0.1, max_range=12.0, dense_ground=dense_ground)
    near_limit = 4.0  # the model's min_depth: nearer pixels are -Inf
    rep117 = depth.copy()
    rep117[np.isnan(depth) | (depth >= config.max_range)] = np.inf
    rep117[depth < near_limit] = -np.inf
    assert np.isposinf(rep117).sum() > 1000 and np.isneginf(rep117).sum() > 1000
    # The same statements in finite numbers: far beyond max_range, and below min_range (inverse depth ~ +-0,
    # as 1 / +-Inf is).
    finite = np.where(np.isposinf(rep117), np.float32(1e30), np.where(np.isneginf(rep117), np.float32(-1e30), rep117))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = build_costmap(rep117, labels, k, config, classes)
    expected = build_costmap(finite, labels, k, config, classes)
    assert result.points_projected == expected.points_projected > 0
    assert result.surface_samples == expected.surface_samples
    assert np.array_equal(result.category, expected.category)
    ahead = config.origin_x + (np.arange(config.cols) + 0.5) * config.resolution
    assert (result.category[:, ahead < near_limit - 0.5] == UNKNOWN).all(), "-Inf is no ground seen near the camera"
    if not dense_ground:  # the float64 reference drops every non-finite depth explicitly
        points, *_ = project_points(rep117, classes.category[labels], k, camera_to_grid_transform(config), config)
        assert len(points) == result.points_projected and np.isfinite(points).all()


def test_costs_come_from_config() -> None:
    config = CostmapConfig(resolution=1.0, width_m=2.0, height_m=1.0, origin_x=0.0, origin_y=0.0,
                           cost_caution=30, cost_hazard=90)
    result = grid_from_points(np.array([[0.5, 0.5, 0.0], [1.5, 0.5, 0.0]]), np.array([1, 3]), config)
    assert result.grid.tolist() == [[30, 90]]


@pytest.mark.parametrize("mount", [{}, {"mount_yaw": 0.15, "mount_y": 0.4, "mount_roll": 0.03}])
def test_depth_fast_path_matches_the_float64_reference(table: np.ndarray, mount: dict[str, float]) -> None:
    """Without dense ground (and on ground and obstacle that need no pulling) the float32 cached-ray path
    bins exactly the points of the plain float64 projection."""
    k = pinhole_k(320, 192, 250.0)
    depth, labels = render_scene(320, 192, k)
    rng = np.random.default_rng(0)
    depth = depth * rng.uniform(0.97, 1.03, depth.shape).astype(np.float32)  # off the analytic cell edges
    config = scene_config(resolution=0.1, min_points_per_cell=2, dense_ground=False, max_obstacle_depth_m=1000.0,
                          **mount)
    transform = camera_to_grid_transform(config)
    for focal in (250.0, 240.0):  # a second K must not reuse the first one's cached rays
        k = pinhole_k(320, 192, focal)
        fast = build_costmap(depth, labels, k, config, table)
        points, cats, _, areas, _index = project_points(depth, table[labels], k, transform, config)
        reference = grid_from_points(points, cats, config, areas=areas, standing=cats >= Category.BLOCKED)
        assert fast.points_projected == reference.points_projected
        assert np.abs(fast.counts - reference.counts).sum() <= 4  # float32 vs float64 at a cell edge, if any
        assert (fast.category == reference.category).mean() > 0.9995


def test_a_fixed_frame_window_places_cells_where_the_base_pose_puts_them(classes: ClassMap) -> None:
    k = pinhole_k(160, 120, 100.0)
    depth, labels = render_scene(160, 120, k)
    config = scene_config(resolution=0.1)
    pose = pose_matrix(20.0, -7.0, 0.0, 0.0, 0.0, math.pi / 2)  # base at (20, -7) facing +y of the fixed frame
    window = GridWindow(0.1, 20.0 - 15.0, -7.0 - 15.0, config.rows, config.cols, pose)
    result = build_costmap(depth, labels, k, config, classes, window=window)
    rows, cols = np.nonzero(result.present[Category.BLOCKED])
    x = window.origin_x + (cols + 0.5) * 0.1
    y = window.origin_y + (rows + 0.5) * 0.1
    assert x.min() > 20.0 - BOX_HALF_WIDTH - 0.1 and x.max() < 20.0 + BOX_HALF_WIDTH + 0.1
    assert y == pytest.approx(np.full(y.shape, -7.0 + BOX_X), abs=0.15), "the box face is 6.1 m ahead along +y"


def test_class_tables_from_ontology_forms(tmp_path) -> None:
    table = class_categories_from_ontology(ONTOLOGY)
    assert table[0] == Category.FREE and table[4] == Category.BLOCKED and table[3] == Category.HAZARD
    assert table[6] == NOT_PROJECTED and table[255] == NOT_PROJECTED and table[2] == NOT_PROJECTED
    overridden = class_categories_from_ontology(ONTOLOGY, overrides={6: "hazard", 0: None})
    assert overridden[6] == Category.HAZARD and overridden[0] == NOT_PROJECTED and overridden[4] == Category.BLOCKED
    with pytest.raises(ConfigError, match=r"category override for class 2: category 'SLIPPERY' is not one of FREE"):
        class_categories_from_ontology(ONTOLOGY, overrides={2: "SLIPPERY"})
    with pytest.raises(ConfigError, match=r"flat_obstacle_classes: ontology version test has no class 'lava'"):
        class_map_from_ontology(ONTOLOGY, flat_obstacle_classes=["lava"])
    path = tmp_path / "ontology.yaml"
    path.write_text("version: t\nignore_index: 255\nclasses:\n  - {id: 0, name: a, category: FREE, color: [0, 0, 0]}\n"
                    "  - {id: 1, name: b, category: HAZARD, color: [1, 1, 1]}\n")
    assert class_categories_from_ontology(path)[1] == Category.HAZARD


@pytest.mark.parametrize("values, message", [
    ({"resolution": 0.0}, "resolution must be > 0"),
    ({"resolution": float("nan")}, "resolution must be finite"),
    ({"width_m": 100000.0}, "Nav2 rejects grids with more than 32767 cells on a side"),
    ({"width_m": 3000.0, "height_m": 3000.0, "resolution": 1.0}, f"exceeds {MAX_GRID_CELLS} cells"),
    ({"cost_blocked": 254}, r"cost_blocked must be an OccupancyGrid cost 0\.\.100"),
    ({"min_range": 5.0, "max_range": 2.0}, "min_range < max_range"),
    ({"mount_z": -0.2}, r"mount_z \(-0.2 m\) puts the camera at or below the ground"),
    ({"mount_z": 0.2, "ground_z": 0.5}, "at or below the ground"),
    ({"max_obstacle_depth_m": -1.0}, "max_obstacle_depth_m must be >= 0"),
    ({"mount_pitch": float("inf")}, "mount_pitch must be finite"),
    ({"min_points_per_cell": 0}, "min_points_per_cell must be an integer >= 1"),
    ({"column_step": -1}, r"column_step must be an integer >= 0 \(0: automatic\)"),
    ({"column_step": 1.5}, "column_step must be an integer >= 0"),
    ({"near_row_spacing": -0.1}, r"near_row_spacing must be in \[0, 1\] cells"),
    ({"near_row_spacing": 1.5}, "near_row_spacing must be in"),
    ({"origin_x": "far"}, "origin_x must be a number"),
])
def test_config_rejects_bad_values_naming_the_parameter(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CostmapConfig(**values)


def test_config_from_mapping_ignores_other_keys() -> None:
    assert CostmapConfig.from_mapping({"resolution": 0.5, "base_frame": "map"}).cols == 60


def test_bad_images_and_k_raise_data_error(table: np.ndarray) -> None:
    config = CostmapConfig()
    k = pinhole_k(4, 4, 2.0)
    with pytest.raises(DataError, match="labels must be a 2D integer"):
        build_costmap(None, np.zeros((4, 4), np.float32), k, config, table)
    with pytest.raises(DataError, match="depth must be a 2D float"):
        build_costmap(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8), k, config, table)
    with pytest.raises(DataError, match="fx, fy > 0"):
        build_costmap(None, np.zeros((4, 4), np.uint8), np.zeros((3, 3)), config, table)
    below = np.eye(4)
    below[2, 3] = -0.5
    with pytest.raises(DataError, match=r"camera is at height -0\.500 m, not above the ground plane"):
        build_costmap(np.ones((4, 4), np.float32), np.zeros((4, 4), np.uint8), k, config, table, camera_to_base=below)


@pytest.mark.parametrize("hw", [(1, 1), (1, 7), (5, 1), (2, 2)])
def test_tiny_images_build_an_empty_or_small_grid_without_error(table: np.ndarray, hw: tuple[int, int]) -> None:
    config = CostmapConfig(mount_pitch=0.3)
    k = pinhole_k(hw[1], hw[0], 1.0)
    result = build_costmap(np.full(hw, 3.0, np.float32), np.zeros(hw, np.uint8), k, config, table)
    assert result.grid.shape == (config.rows, config.cols)
    assert build_costmap(None, np.zeros(hw, np.uint8), k, config, table).grid.shape == (config.rows, config.cols)


@pytest.mark.parametrize(("terrain_z", "canopy_bottom", "kept"), [
    (0.8, 3.2, True),  # 2.4 m above the terrain it hangs over: an obstacle, though 3.2 m above the plane
    (0.8, 3.9, False),  # 3.1 m above that terrain: canopy
    (0.0, 3.2, False),  # level terrain: 3.2 m above it
])
def test_obstacle_seen_against_the_sky_is_judged_above_the_ground_around_it(
        table: np.ndarray, terrain_z: float, canopy_bottom: float, kept: bool) -> None:
    """A face of a standing class with sky below it in the image (a canopy's edge) has no ground contact. Its
    height is judged against the ground seen around its cell, not the vehicle's plane, as the bird's-eye truth
    judges it against the terrain under it: on terrain that rises ahead it is lethal up to max_point_height
    above that terrain."""
    width, height, face_x = 160, 120, 8.05
    k = pinhole_k(width, height, 80.0)
    rays = camera_rays(width, height, k, pitch=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(rays[..., 2] < 0, (terrain_z - CAM_HEIGHT) / rays[..., 2], np.inf)
        t_face = face_x / rays[..., 0]
    hit = np.array([0.0, 0.0, CAM_HEIGHT]) + rays * t_face[..., None]
    on_face = (np.abs(hit[..., 1]) <= 1.0) & (hit[..., 2] >= canopy_bottom) & (hit[..., 2] <= 4.5)
    depth = np.where(on_face, t_face, t_ground)
    labels = np.where(on_face, BOX, np.where(np.isfinite(depth), GROUND, SKY)).astype(np.uint8)
    depth = np.where(np.isfinite(depth), depth, np.nan).astype(np.float32)
    below_face = np.zeros_like(on_face)
    below_face[1:] = on_face[:-1] & ~on_face[1:]
    assert on_face.any() and (labels[below_face] == SKY).all(), "precondition: sky right below the face"
    config = scene_config(resolution=0.1, mount_pitch=0.0, max_range=15.0)
    result = build_costmap(depth, labels, k, config, table)
    lethal = np.isin(result.category, [int(c) for c in (Category.BLOCKED, Category.HAZARD)])
    _, cols = np.nonzero(lethal)
    if kept:
        xs = config.origin_x + (cols + 0.5) * config.resolution
        assert lethal.sum() >= 10 and np.all(np.abs(xs - face_x) < 0.2)
    else:
        assert not lethal.any()
