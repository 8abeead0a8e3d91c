"""Input sanity rules (camera_info, 16UC1 depth, empty depth) and the bird's-eye ground truth and measures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perception_core.costmap import (
    UNKNOWN,
    Category,
    CostmapConfig,
    build_costmap,
    camera_to_grid_transform,
    check_camera_info,
    class_categories_from_ontology,
    depth_from_16uc1,
    depth_problem,
)
from perception_core.errors import DataError
from perception_core.metrics.costmap import (
    BevGrid,
    CostmapMeasures,
    ground_truth_bev,
    meets_goal,
    terrain_under_pixels,
)

VEHICLE_K = [640.0, 0.0, 640.0, 0.0, 640.0, 540.0, 0.0, 0.0, 1.0]


def test_camera_info_of_the_vehicle_camera_is_accepted() -> None:
    assert check_camera_info(1280, 1080, VEHICLE_K)[0, 2] == 640.0


@pytest.mark.parametrize("width, height, k, message", [
    (1280, 1080, [0.0] * 9, "K is all zero"),
    (1280, 1080, [float("nan"), *VEHICLE_K[1:]], "K has non-finite values"),
    (1280, 1080, [-640.0, *VEHICLE_K[1:]], "fx = -640.0, fy = 640.0; both must be > 0"),
    (1280, 1080, [*VEHICLE_K[:4], 0.0, *VEHICLE_K[5:]], "fx = 640.0, fy = 0.0"),
    (640, 384, VEHICLE_K, r"principal point \(640, 540\) is not near the centre of the 640x384 image"),
    (640, 540, VEHICLE_K, r"principal point \(640, 540\) is not near the centre of the 640x540"),  # half size
    (3840, 2160, VEHICLE_K, "principal point"),  # K of the 1280x1080 mode on a 4K image
    (0, 1080, VEHICLE_K, "width/height is 0x1080"),
    (1280, 1080, VEHICLE_K[:8], "K has 8 values"),
])
def test_meaningless_camera_info_is_a_named_error(width: int, height: int, k: list[float], message: str) -> None:
    with pytest.raises(DataError, match=message):
        check_camera_info(width, height, k, where="/camera/camera_info")


def test_16uc1_zero_and_the_saturated_top_value_are_no_measurement() -> None:
    raw = np.array([[0, 1, 1500, 65534, 65535]], dtype=np.uint16)
    metres = depth_from_16uc1(raw)
    assert np.isnan(metres[0, 0]) and np.isnan(metres[0, 4])
    assert metres[0, 1:4] == pytest.approx([0.001, 1.5, 65.534])


@pytest.mark.parametrize("depth, message", [
    (np.full((4, 4), np.nan, np.float32), "every depth value is NaN or inf"),
    (np.full((4, 4), np.inf, np.float32), "every depth value is NaN or inf"),
    (np.full((4, 4), -1.0, np.float32), "every depth value is <= 0"),
    (np.full((4, 4), 4000.0, np.float32), r"beyond max_range 15.0 m \(median 4000\) \(millimetres written as metres\?\)"),
    (np.full((4, 4), 20.0, np.float32), r"beyond max_range 15.0 m \(median 20\)$"),
    (np.full((4, 4), 0.1, np.float32), "at or below min_range 0.3 m"),
])
def test_depth_that_yields_no_usable_pixel_is_diagnosed(depth: np.ndarray, message: str) -> None:
    assert depth_problem(depth, CostmapConfig()) is not None
    assert __import__("re").search(message, depth_problem(depth, CostmapConfig()))
    result = build_costmap(depth, np.zeros((4, 4), np.uint8), np.array([[2.0, 0, 1.5], [0, 2.0, 1.5], [0, 0, 1]]),
                           CostmapConfig(), class_categories_from_ontology())
    assert result.observed_cells == 0


def test_depth_with_one_usable_pixel_has_no_problem() -> None:
    depth = np.full((4, 4), np.nan, np.float32)
    depth[2, 2] = 5.0
    assert depth_problem(depth, CostmapConfig()) is None


# --------------------------------------------------------------------------- ground truth and measures

CAM_HEIGHT, PITCH = 1.4, 0.2


def flat_scene(width: int, height: int, focal: float, wall_x: float | None = None) -> tuple[np.ndarray, ...]:
    """Depth and labels (0 ground, 4 wall) of flat ground with a full-width wall at ``wall_x`` (analytic)."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    a, b = (u - (width - 1) / 2) / focal, (v - (height - 1) / 2) / focal
    rays = (np.array([math.cos(PITCH), 0.0, -math.sin(PITCH)]) + a[..., None] * np.array([0.0, -1.0, 0.0])
            + b[..., None] * np.array([-math.sin(PITCH), 0.0, -math.cos(PITCH)]))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(rays[..., 2] < 0, CAM_HEIGHT / -rays[..., 2], np.nan)
        if wall_x is not None:
            t_wall = np.where(rays[..., 0] > 0, wall_x / rays[..., 0], np.nan)
            on_wall = (t_wall < np.nan_to_num(t, nan=np.inf)) & (CAM_HEIGHT + t_wall * rays[..., 2] <= 2.0)
            t = np.where(on_wall, t_wall, t)
        else:
            on_wall = np.zeros(t.shape, bool)
    labels = np.where(on_wall, 4, np.where(np.isfinite(t), 0, 6)).astype(np.uint8)
    k = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])
    return t.astype(np.float32), labels, k


def test_ground_truth_sees_flat_ground_in_view_and_the_wall_where_it_stands() -> None:
    config = CostmapConfig(mount_z=CAM_HEIGHT, mount_pitch=PITCH, resolution=0.1)
    grid = BevGrid(0.1, config.origin_x, config.origin_y, config.rows, config.cols)
    depth, labels, k = flat_scene(320, 240, 200.0, wall_x=8.05)
    truth = ground_truth_bev(depth, labels, k, camera_to_grid_transform(config), grid, class_categories_from_ontology())
    xs, ys = grid.centres()
    centre = np.argmin(np.abs(ys - 0.05))
    x_of = {round(x, 2): i for i, x in enumerate(xs)}
    assert truth[centre, x_of[5.05]] == Category.FREE
    assert truth[centre, x_of[8.05]] == Category.BLOCKED
    assert truth[centre, x_of[10.05]] == UNKNOWN, "behind the wall is not seen"
    assert truth[centre, x_of[-1.05]] == UNKNOWN, "behind the camera is not seen"
    near_ground = truth[centre, (xs > 4.0) & (xs < 7.9)]
    assert (near_ground == Category.FREE).all(), "every cell of flat ground in view is visible (no stripes)"


def test_terrain_under_pixels_reads_the_height_of_the_cell_each_point_lands_in() -> None:
    config = CostmapConfig(mount_z=CAM_HEIGHT, mount_pitch=PITCH, resolution=0.1)
    grid = BevGrid(0.1, config.origin_x, config.origin_y, config.rows, config.cols)
    depth, _, k = flat_scene(320, 240, 200.0, wall_x=8.05)
    xs, _ = grid.centres()
    heights = np.broadcast_to(np.where(xs >= 6.0, 0.5, 0.0), (grid.rows, grid.cols))  # a 0.5 m shelf from x = 6 m
    terrain = terrain_under_pixels(depth, k, camera_to_grid_transform(config), grid, heights)
    # Where each pixel's point lands (x forward, from the same rays): nearer than 6 m reads 0, the wall 0.5.
    v = np.mgrid[0:240, 0:320][0]
    ground_x = config.mount_x + depth * (math.cos(PITCH) - (v - 119.5) / 200.0 * math.sin(PITCH))
    assert np.all(terrain[ground_x < 5.95] == 0.0)
    assert np.all(terrain[(ground_x > 6.05) & np.isfinite(depth)] == 0.5)
    assert np.isnan(terrain[~np.isfinite(depth)]).all(), "sky: no point, no terrain"


def test_measures_count_cells_groups_and_holes_as_defined() -> None:
    grid = BevGrid(0.1, -1.0, -1.0, 20, 160)  # x in [-1, 15), y in [-1, 1)
    truth = np.full((20, 160), UNKNOWN, np.int8)
    truth[:, 10:110] = Category.FREE  # x in [0, 10): visible ground
    truth[5:8, 60:63] = Category.BLOCKED  # a 3x3 rock at x ~ 5
    truth[15, 100] = Category.HAZARD  # a 1-cell object (not a group of >= 3)
    predicted = truth.copy()
    predicted[5:8, 60:63] = Category.FREE
    predicted[5:8, 63] = Category.BLOCKED  # the rock marked one cell behind: within 0.3 m
    predicted[15, 100] = UNKNOWN  # the small object missed
    predicted[0, 20:30] = UNKNOWN  # 10 holes
    predicted[18, 30] = Category.BLOCKED  # one false lethal cell far from any obstacle
    measures = CostmapMeasures()
    frame = measures.add(predicted, truth, grid)
    assert frame["obstacle_recall"] == pytest.approx(9 / 10)
    assert frame["obstacle_precision"] == pytest.approx(3 / 4)
    assert frame["object_recall"] == 1.0
    gt_traversable = int(((truth == Category.FREE) & (np.arange(160) <= 110)[None, :]).sum())
    assert frame["holes"] == pytest.approx(10 / gt_traversable)
    assert measures.counts["clear_cells_lethal"] == 1
    # The cell behind that count, and the cells it is counted over: none within 0.3 m of the rock or past 12 m.
    wrong = measures.false_lethal_cells(predicted, truth, grid)
    assert list(zip(*np.nonzero(wrong), strict=True)) == [(18, 30)]
    clear = measures.clear_cells(truth, grid)
    assert int(clear.sum()) == measures.counts["clear_cells"]
    assert not clear[5:8, 57:66].any() and clear[6, 56] and clear[6, 66] and not clear[15, 100]
    summary = measures.summary()
    assert summary["frames"] == 1 and summary["goals"]["holes"] == "<= 0.02"
    assert meets_goal("obstacle_recall", 0.96) and not meets_goal("holes", 0.03) and not meets_goal("holes", math.nan)
