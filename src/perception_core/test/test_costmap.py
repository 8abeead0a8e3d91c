"""Costmap geometry, category resolution, corridor distances and pairing (pure numpy)."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest

from perception_core.costmap import (
    NOT_PROJECTED,
    UNKNOWN,
    Category,
    CostmapConfig,
    CostmapResult,
    ExactStampPairer,
    build_costmap,
    camera_to_grid_transform,
    class_categories_from_ontology,
    corridor_distances,
    grid_from_points,
)
from perception_core.errors import ConfigError, DataError
from perception_core.ontology import parse_ontology

GROUND, BOX, SKY = 0, 4, 6  # smooth_ground (FREE), static_obstacle (BLOCKED), sky (not projected)
ONTOLOGY = parse_ontology({"version": "test", "ignore_index": 255, "classes": [
    {"id": i, "name": name, "category": category, "color": [i, i, i]} for i, (name, category) in enumerate([
        ("smooth_ground", "FREE"), ("rough_ground", "CAUTION"), ("low_vegetation", None), ("water", "HAZARD"),
        ("static_obstacle", "BLOCKED"), ("dynamic", "HAZARD"), ("sky", None)])
]})
CAM_HEIGHT, CAM_PITCH = 1.5, 0.2
BOX_X, BOX_HALF_WIDTH, BOX_HEIGHT = 6.1, 1.0, 1.5


def pinhole_k(width: int, height: int, focal: float) -> np.ndarray:
    return np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)


def render_scene(width: int, height: int, k: np.ndarray, with_box: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Analytic depth (optical z, NaN = sky) and labels of flat ground plus a box face at x = BOX_X.

    The camera sits at (0, 0, CAM_HEIGHT) looking along +x, pitched down by
    CAM_PITCH. Written independently of the module under test: each pixel's
    ray is forward + a*right + b*down with unit optical-z component.
    """
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    a = (u - k[0, 2]) / k[0, 0]
    b = (v - k[1, 2]) / k[1, 1]
    forward = np.array([math.cos(CAM_PITCH), 0.0, -math.sin(CAM_PITCH)])
    right = np.array([0.0, -1.0, 0.0])
    down = np.array([-math.sin(CAM_PITCH), 0.0, -math.cos(CAM_PITCH)])
    rays = forward + a[..., None] * right + b[..., None] * down
    origin = np.array([0.0, 0.0, CAM_HEIGHT])
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(rays[..., 2] < 0, -origin[2] / rays[..., 2], np.inf)
        t_box = np.where(rays[..., 0] > 0, BOX_X / rays[..., 0], np.inf)
    hit_box = origin + rays * t_box[..., None]
    on_box = with_box & (np.abs(hit_box[..., 1]) <= BOX_HALF_WIDTH) & (hit_box[..., 2] >= 0) & (
        hit_box[..., 2] <= BOX_HEIGHT)
    t_box = np.where(on_box, t_box, np.inf)
    depth = np.minimum(t_ground, t_box)
    labels = np.where(t_box < t_ground, BOX, np.where(np.isfinite(t_ground), GROUND, SKY)).astype(np.uint8)
    depth[~np.isfinite(depth)] = np.nan
    return depth.astype(np.float32), labels


def scene_config(**overrides: float) -> CostmapConfig:
    values = {"resolution": 0.2, "mount_z": CAM_HEIGHT, "mount_pitch": CAM_PITCH, "min_points_per_cell": 1}
    values.update(overrides)
    return CostmapConfig(**values)


def cell_of(config: CostmapConfig, x: float, y: float) -> tuple[int, int]:
    return int((y - config.origin_y) // config.resolution), int((x - config.origin_x) // config.resolution)


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    return class_categories_from_ontology(ONTOLOGY)


def test_mount_transform_puts_optical_axis_forward_and_down() -> None:
    transform = camera_to_grid_transform(CostmapConfig(mount_x=0.5, mount_z=1.2, mount_pitch=0.3))
    forward = transform[:3, :3] @ np.array([0.0, 0.0, 1.0])
    right = transform[:3, :3] @ np.array([1.0, 0.0, 0.0])
    assert forward == pytest.approx([math.cos(0.3), 0.0, -math.sin(0.3)])
    assert right == pytest.approx([0.0, -1.0, 0.0])
    assert transform[:3, 3] == pytest.approx([0.5, 0.0, 1.2])


def test_box_on_flat_ground_lands_in_its_cells_and_hides_what_is_behind(table: np.ndarray) -> None:
    k = pinhole_k(160, 120, 100.0)
    depth, labels = render_scene(160, 120, k)
    config = scene_config()
    result = build_costmap(depth, labels, k, config, table)

    assert not result.used_flat_ground
    box_col = cell_of(config, BOX_X, 0.0)[1]
    blocked_rows, blocked_cols = np.nonzero(result.category == Category.BLOCKED)
    assert set(blocked_cols.tolist()) == {box_col}, "the box face must be marked only where it is"
    blocked_y = config.origin_y + (blocked_rows + 0.5) * config.resolution
    assert blocked_y.min() == pytest.approx(-BOX_HALF_WIDTH + 0.1) and blocked_y.max() == pytest.approx(
        BOX_HALF_WIDTH - 0.1)
    assert (result.grid[result.category == Category.BLOCKED] == 100).all()
    for x in np.arange(2.1, 5.9, 0.2):  # visible ground in front of the box
        row, col = cell_of(config, x, 0.0)
        assert result.category[row, col] == Category.FREE, f"ground at x={x:.1f} should be FREE"
        assert result.grid[row, col] == 0
    for x in np.arange(6.5, 14.9, 0.2):  # hidden behind the box: unknown, not smeared BLOCKED
        for y in (-0.5, 0.0, 0.5):
            row, col = cell_of(config, x, y)
            assert result.grid[row, col] == UNKNOWN, f"cell behind the box at ({x:.1f}, {y}) should be unknown"
    row, col = cell_of(config, -1.0, 0.0)
    assert result.grid[row, col] == UNKNOWN, "nothing is seen behind the camera"
    assert result.layers["blocked"][cell_of(config, BOX_X, 0.0)] == 100
    assert result.layers["blocked"][cell_of(config, 4.0, 0.0)] == 0
    assert result.layers["free"][cell_of(config, 4.0, 0.0)] == 100


def test_labels_at_another_resolution_are_resampled_and_k_scaled(table: np.ndarray) -> None:
    k_big = pinhole_k(160, 120, 100.0)
    depth_big, labels_big = render_scene(160, 120, k_big)
    k_small = pinhole_k(80, 60, 50.0)  # the same camera at half resolution
    depth_small, labels_small = render_scene(80, 60, k_small)
    config = scene_config()

    reference = build_costmap(depth_small, labels_small, k_small, config, table)
    # Labels at twice the depth resolution, K given for the labels' size.
    mixed = build_costmap(depth_small, labels_big, k_big, config, table, k_hw=(120, 160))
    assert np.array_equal(mixed.category == Category.BLOCKED, reference.category == Category.BLOCKED)
    assert (mixed.category == reference.category).mean() > 0.999
    # Depth at the larger size, labels at half: each label covers 2x2 depth pixels.
    upsampled = build_costmap(depth_big, labels_small, k_big, config, table)
    box_col = cell_of(config, BOX_X, 0.0)[1]
    assert set(np.nonzero(upsampled.category == Category.BLOCKED)[1].tolist()) == {box_col}
    assert not upsampled.used_flat_ground


def test_flat_ground_fallback_is_flagged_and_places_ground_like_depth(table: np.ndarray) -> None:
    k = pinhole_k(160, 120, 100.0)
    depth, labels = render_scene(160, 120, k, with_box=False)
    config = scene_config()
    with_depth = build_costmap(depth, labels, k, config, table)
    fallback = build_costmap(None, labels, k, config, table)

    assert fallback.used_flat_ground and not with_depth.used_flat_ground
    observed_depth = with_depth.grid != UNKNOWN
    observed_flat = fallback.grid != UNKNOWN
    assert observed_flat.sum() > 500
    assert (observed_depth == observed_flat).mean() > 0.998
    assert (fallback.category[observed_flat] == Category.FREE).all()
    for x in (2.1, 3.0, 4.5):  # ground rows are denser than the cells up to ~5 m
        assert fallback.category[cell_of(config, x, 0.0)] == Category.FREE


def test_flat_ground_fallback_smears_obstacles_behind_them(table: np.ndarray) -> None:
    """Why depth is preferred: a box's upper pixels hit the ground plane far beyond the box."""
    k = pinhole_k(160, 120, 100.0)
    _, labels = render_scene(160, 120, k)
    fallback = build_costmap(None, labels, k, scene_config(), table)
    blocked_cols = np.nonzero((fallback.category == Category.BLOCKED).any(axis=0))[0]
    blocked_x = scene_config().origin_x + blocked_cols * 0.2
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


def test_points_above_max_height_and_beyond_range_are_dropped(table: np.ndarray) -> None:
    k = pinhole_k(40, 30, 20.0)
    labels = np.full((30, 40), BOX, dtype=np.uint8)
    config = CostmapConfig(mount_z=1.0, max_point_height=1.2, max_range=8.0, min_points_per_cell=1)
    # Camera looking level: a wall 5 m ahead, 6 m tall; only its part below 1.2 m is kept.
    depth = np.full((30, 40), 5.0, dtype=np.float32)
    result = build_costmap(depth, labels, k, config, table)
    assert result.points_projected == int(((np.arange(30) - 14.5) / 20.0 * 5.0 >= -0.2).sum()) * 40
    far = build_costmap(np.full((30, 40), 9.0, dtype=np.float32), labels, k, config, table)
    assert far.points_projected == 0 and (far.grid == UNKNOWN).all()


def test_costs_come_from_config(table: np.ndarray) -> None:
    config = CostmapConfig(resolution=1.0, width_m=2.0, height_m=1.0, origin_x=0.0, origin_y=0.0,
                           cost_caution=30, cost_hazard=90, min_points_per_cell=1)
    result = grid_from_points(np.array([[0.5, 0.5, 0.0], [1.5, 0.5, 0.0]]), np.array([1, 3]), config)
    assert result.grid.tolist() == [[30, 90]]


def test_class_table_from_ontology_forms() -> None:
    table = class_categories_from_ontology(ONTOLOGY)
    assert table[0] == Category.FREE and table[4] == Category.BLOCKED and table[3] == Category.HAZARD
    assert table[6] == NOT_PROJECTED and table[255] == NOT_PROJECTED and table[2] == NOT_PROJECTED
    overridden = class_categories_from_ontology(ONTOLOGY, overrides={6: "hazard", 0: None})
    assert overridden[6] == Category.HAZARD and overridden[0] == NOT_PROJECTED and overridden[4] == Category.BLOCKED


def test_class_table_rejects_unknown_category() -> None:
    with pytest.raises(ConfigError, match=r"category override for class 2: category 'SLIPPERY' is not one of FREE"):
        class_categories_from_ontology(ONTOLOGY, overrides={2: "SLIPPERY"})


def test_ontology_file_path_is_read(tmp_path) -> None:
    path = tmp_path / "ontology.yaml"
    path.write_text("version: t\nignore_index: 255\nclasses:\n  - {id: 0, name: a, category: FREE, color: [0, 0, 0]}\n"
                    "  - {id: 1, name: b, category: HAZARD, color: [1, 1, 1]}\n")
    table = class_categories_from_ontology(path)
    assert table[0] == Category.FREE and table[1] == Category.HAZARD


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="resolution must be > 0"):
        CostmapConfig(resolution=0.0)
    with pytest.raises(ConfigError, match=r"cost_blocked must be an OccupancyGrid cost in \[0, 100\]"):
        CostmapConfig(cost_blocked=254)
    with pytest.raises(ConfigError, match="min_range < max_range"):
        CostmapConfig(min_range=5.0, max_range=2.0)
    assert CostmapConfig.from_mapping({"resolution": 0.5, "grid_frame": "map"}).cols == 40


def test_bad_images_and_k_raise_data_error(table: np.ndarray) -> None:
    config = CostmapConfig()
    k = pinhole_k(4, 4, 2.0)
    with pytest.raises(DataError, match="labels must be a 2D integer"):
        build_costmap(None, np.zeros((4, 4), np.float32), k, config, table)
    with pytest.raises(DataError, match="depth must be a 2D float"):
        build_costmap(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8), k, config, table)
    with pytest.raises(DataError, match="fx, fy > 0"):
        build_costmap(None, np.zeros((4, 4), np.uint8), np.zeros((3, 3)), config, table)


def test_labels_of_another_aspect_ratio_are_resampled_not_rejected(table: np.ndarray) -> None:
    """Depth and labels are whole-frame resizes of one camera frame (384x640 vs 544x640 in the demo)."""
    config = CostmapConfig(min_points_per_cell=1)
    k = pinhole_k(16, 12, 10.0)
    depth = np.full((12, 16), 4.0, np.float32)
    labels_wide = np.zeros((6, 32), np.uint8)
    labels_wide[:, 16:] = 4  # right half: a BLOCKED class
    same = build_costmap(depth, cv2.resize(labels_wide, (16, 12), interpolation=cv2.INTER_NEAREST), k, config, table)
    other = build_costmap(depth, labels_wide, k, config, table)
    np.testing.assert_array_equal(other.grid, same.grid)
    assert (other.grid == 100).any() and (other.grid == 0).any()


def hand_grid(cells: dict[tuple[float, float], int], **config_values: float) -> tuple[CostmapResult, CostmapConfig]:
    config = CostmapConfig(min_points_per_cell=1, **config_values)
    points = np.array([[x, y, 0.0] for x, y in cells], dtype=np.float64).reshape(-1, 3)
    return grid_from_points(points, np.array(list(cells.values()), dtype=np.int64), config), config


def test_corridor_reports_nearest_blocked_and_hazard() -> None:
    result, config = hand_grid({
        (4.05, 0.05): Category.BLOCKED,
        (9.05, -0.35): Category.BLOCKED,
        (7.05, 0.35): Category.HAZARD,
        (1.05, 2.05): Category.BLOCKED,  # outside the 1 m wide corridor
        (-1.05, 0.05): Category.HAZARD,  # behind the vehicle
        (2.05, 0.05): Category.FREE,
    })
    found = corridor_distances(result, config, length=10.0, width=1.0, stop_distance=5.0)
    assert found["nearest_blocked_m"] == pytest.approx(4.0)
    assert found["nearest_hazard_m"] == pytest.approx(7.0)
    assert found["stop_required"] is True
    assert corridor_distances(result, config, 10.0, 1.0, stop_distance=3.9)["stop_required"] is False
    # 100 x 10 corridor cells, 4 observed ones inside.
    assert found["unknown_fraction"] == pytest.approx(1 - 4 / 1000)
    short = corridor_distances(result, config, length=5.0, width=1.0)
    assert short["nearest_hazard_m"] == math.inf
    wide = corridor_distances(result, config, length=3.0, width=5.0)
    assert wide["nearest_blocked_m"] == pytest.approx(1.0)


def test_corridor_of_empty_grid_is_unknown_and_clear() -> None:
    result, config = hand_grid({})
    found = corridor_distances(result, config, length=8.0, width=2.0, stop_distance=3.0)
    assert found == {"nearest_blocked_m": math.inf, "nearest_hazard_m": math.inf, "unknown_fraction": 1.0,
                     "stop_required": False}
    with pytest.raises(ConfigError, match="corridor length and width must be > 0"):
        corridor_distances(result, config, length=0.0, width=2.0)


def test_pairer_pairs_identical_stamps_only() -> None:
    pairer: ExactStampPairer[str] = ExactStampPairer(capacity=2)
    assert pairer.add("depth", 100, "d100") is None
    assert pairer.add("labels", 101, "l101") is None
    assert pairer.add("labels", 100, "l100") == {"labels": "l100", "depth": "d100"}
    assert pairer.pending("labels") == [101]  # newer than the pair: still waiting
    assert pairer.add("depth", 101, "d101") == {"depth": "d101", "labels": "l101"}
    assert pairer.pending("depth") == [] and pairer.pending("labels") == []


def test_pairer_keeps_latest_few_and_drops_older_than_a_pair() -> None:
    pairer: ExactStampPairer[int] = ExactStampPairer(capacity=2)
    for stamp in (1, 2, 3):
        pairer.add("depth", stamp, stamp)
    assert pairer.pending("depth") == [2, 3] and pairer.dropped == 1
    assert pairer.add("labels", 1, 1) is None, "stamp 1 was evicted; no pair"
    assert pairer.add("labels", 3, 3) == {"labels": 3, "depth": 3}
    assert pairer.pending("depth") == [] and pairer.pending("labels") == []
    assert pairer.dropped == 3  # depth 1 (evicted), depth 2 and labels 1 (older than the pair)
    with pytest.raises(ValueError, match="unknown stream 'rgb'"):
        pairer.add("rgb", 1, 1)


def test_pairer_keeps_arrival_times_and_take_acts_like_a_completed_pair() -> None:
    pairer: ExactStampPairer[str] = ExactStampPairer(capacity=3)
    pairer.add("labels", 10, "l10", arrival=1.0)
    pairer.add("depth", 5, "d5", arrival=1.5)
    pairer.add("labels", 20, "l20", arrival=2.0)
    pairer.add("labels", 30, "l30", arrival=3.0)
    assert pairer.waiting("labels") == [(10, 1.0), (20, 2.0), (30, 3.0)]
    assert pairer.waiting("depth") == [(5, 1.5)]
    assert pairer.take("labels", 20) == "l20"
    assert pairer.pending("labels") == [30] and pairer.pending("depth") == []
    assert pairer.dropped == 2  # labels 10 and depth 5: older than the taken message
    with pytest.raises(KeyError, match="no message with stamp 20 is waiting on stream 'labels'"):
        pairer.take("labels", 20)
    with pytest.raises(ValueError, match="unknown stream 'rgb'"):
        pairer.waiting("rgb")
    pairer.add("labels", 30, "l30 again", arrival=4.0)  # a duplicate stamp replaces the message and its arrival
    assert pairer.waiting("labels") == [(30, 4.0)] and pairer.dropped == 3
    assert pairer.add("depth", 30, "d30", arrival=4.5) == {"depth": "d30", "labels": "l30 again"}
    assert pairer.waiting("labels") == [] and pairer.dropped == 3


def test_pairer_arrival_defaults_to_the_monotonic_clock() -> None:
    pairer: ExactStampPairer[str] = ExactStampPairer()
    before = time.monotonic()
    pairer.add("depth", 1, "d1")
    after = time.monotonic()
    [(stamp, arrival)] = pairer.waiting("depth")
    assert stamp == 1 and before <= arrival <= after


def _reference_build(depth: np.ndarray, labels: np.ndarray, k: np.ndarray, config: CostmapConfig,
                     table: np.ndarray, transform: np.ndarray) -> CostmapResult:
    """The float64 path (N x 3 points, np.floor binning) that the cached-ray depth path must agree with."""
    from perception_core.costmap import project_points

    points, cats, _ = project_points(depth, table[labels.astype(np.int64)], k, transform, config)
    return grid_from_points(points, cats, config)


@pytest.mark.parametrize("mount", [{}, {"mount_yaw": 0.15, "mount_y": 0.4, "mount_roll": 0.03}])
def test_depth_fast_path_matches_the_float64_reference(table: np.ndarray, mount: dict[str, float]) -> None:
    k = pinhole_k(320, 192, 250.0)
    depth, labels = render_scene(320, 192, k)
    rng = np.random.default_rng(0)
    depth = depth * rng.uniform(0.97, 1.03, depth.shape).astype(np.float32)  # off the analytic cell edges
    config = scene_config(resolution=0.1, min_points_per_cell=2, **mount)
    transform = camera_to_grid_transform(config)
    for focal in (250.0, 240.0):  # a second K must not reuse the first one's cached rays
        k = pinhole_k(320, 192, focal)
        fast = build_costmap(depth, labels, k, config, table)
        reference = _reference_build(depth, labels, k, config, table, transform)
        assert fast.points_projected == reference.points_projected
        assert np.abs(fast.counts - reference.counts).sum() <= 4  # float32 vs float64 at a cell edge, if any
        assert (fast.category == reference.category).mean() > 0.9995
        for name, layer in reference.layers.items():
            assert (fast.layers[name] == layer).mean() > 0.9995


def test_depth_range_limits_are_exact_at_float32(table: np.ndarray) -> None:
    """min_range < z <= max_range, decided exactly for float32 depths (z == max_range is kept)."""
    k = pinhole_k(40, 30, 20.0)
    labels = np.full((30, 40), BOX, dtype=np.uint8)
    config = CostmapConfig(mount_z=1.0, max_range=8.0, min_range=0.3, min_points_per_cell=1)
    at_max = build_costmap(np.full((30, 40), 8.0, np.float32), labels, k, config, table)
    just_over = build_costmap(np.full((30, 40), np.nextafter(np.float32(8.0), np.float32(9.0))), labels, k,
                              config, table)
    at_min = build_costmap(np.full((30, 40), np.float32(0.3)), labels, k, config, table)  # float32(0.3) > 0.3
    assert at_max.points_projected > 0 and just_over.points_projected == 0
    reference = _reference_build(np.full((30, 40), np.float32(0.3)), labels, k, config, table,
                                 camera_to_grid_transform(config))
    assert at_min.points_projected == reference.points_projected > 0


def test_pairer_with_skew_prefers_exact_then_pairs_the_nearest_skipped_frame() -> None:
    ms = 1_000_000
    pairer: ExactStampPairer[str] = ExactStampPairer(capacity=3, max_skew_ns=120 * ms)
    # Both nodes keep up: the exact partner wins although a near one waits too.
    assert pairer.add("labels", 100 * ms, "L100") is None
    assert pairer.add("labels", 200 * ms, "L200") is None
    assert pairer.add("depth", 200 * ms, "D200") == {"depth": "D200", "labels": "L200"}
    assert pairer.approximate_pairs == 0 and pairer.pending("labels") == []  # L100 was older than the pair
    # Overload: the depth node skipped 300 (it delivers 400 next); labels 300 pairs with depth 400.
    assert pairer.add("labels", 300 * ms, "L300") is None
    assert pairer.add("depth", 400 * ms, "D400") == {"depth": "D400", "labels": "L300"}
    assert pairer.approximate_pairs == 1
    # Beyond the skew bound nothing pairs.
    assert pairer.add("labels", 700 * ms, "L700") is None
    assert pairer.add("depth", 900 * ms, "D900") is None
    assert pairer.approximate_pairs == 1


def test_pairer_without_skew_pairs_identical_stamps_only() -> None:
    pairer: ExactStampPairer[str] = ExactStampPairer(capacity=3)
    assert pairer.add("labels", 100, "L") is None
    assert pairer.add("depth", 101, "D") is None
    assert pairer.approximate_pairs == 0
    with pytest.raises(ConfigError, match="max skew must be >= 0"):
        ExactStampPairer(max_skew_ns=-1)

