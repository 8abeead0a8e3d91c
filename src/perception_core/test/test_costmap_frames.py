"""The fixed frame: pose buffer interpolation, the rolling window, temporal fusion, and the corridor in it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perception_core.costmap import (
    UNKNOWN,
    Category,
    CorridorConfig,
    CorridorVerdict,
    CostmapConfig,
    GridWindow,
    PoseBuffer,
    RollingGrid,
    check_corridor_fits,
    corridor_distances,
    corridor_report,
    grid_from_points,
)
from perception_core.errors import ConfigError
from perception_core.geometry import pose_matrix, rpy_from_rotation

S = 1_000_000_000  # ns per second


def test_pose_buffer_interpolates_translation_and_rotation_at_the_stamp() -> None:
    poses = PoseBuffer(history_s=10.0, tolerance_s=0.1)
    poses.add(10 * S, pose_matrix(0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    poses.add(11 * S, pose_matrix(3.0, 1.0, 0.0, 0.0, 0.0, math.pi / 2))  # 3 m/s with a quarter turn
    mid = poses.lookup(10 * S + S // 2)
    assert mid[:3, 3] == pytest.approx([1.5, 0.5, 0.0])
    assert rpy_from_rotation(mid[:3, :3])[2] == pytest.approx(math.pi / 4)
    quarter = poses.lookup(10 * S + S // 4)
    assert rpy_from_rotation(quarter[:3, :3])[2] == pytest.approx(math.pi / 8)
    assert poses.lookup(11 * S)[:3, 3] == pytest.approx([3.0, 1.0, 0.0])


def test_pose_buffer_refuses_stamps_it_cannot_answer_and_holds_within_tolerance() -> None:
    poses = PoseBuffer(history_s=2.0, tolerance_s=0.1)
    with pytest.raises(LookupError, match="no pose received yet"):
        poses.lookup(0)
    poses.add(10 * S, pose_matrix(1.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    poses.add(11 * S, pose_matrix(2.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    assert poses.lookup(11 * S + 50_000_000)[0, 3] == pytest.approx(2.0), "newer by 50 ms: the newest pose"
    with pytest.raises(LookupError, match=r"0\.200 s newer than the newest pose"):
        poses.lookup(11 * S + 200_000_000)
    with pytest.raises(LookupError, match=r"0\.500 s older than the oldest pose"):
        poses.lookup(9 * S + S // 2)
    poses.add(13 * S, pose_matrix(4.0, 0.0, 0.0, 0.0, 0.0, 0.0))  # history 2 s: the pose at 10 s goes
    assert len(poses) == 2 and poses.newest_ns == 13 * S
    poses.add(12 * S, pose_matrix(3.5, 0.0, 0.0, 0.0, 0.0, 0.0))  # out of order: inserted in place
    assert poses.lookup(12 * S + S // 2)[0, 3] == pytest.approx(3.75)
    with pytest.raises(ValueError, match="finite 4x4"):
        poses.add(14 * S, np.full((4, 4), np.nan))
    with pytest.raises(ConfigError, match="pose tolerance must be >= 0"):
        PoseBuffer(tolerance_s=-1.0)


def test_rolling_window_follows_the_robot_on_whole_cells() -> None:
    config = CostmapConfig(resolution=0.1, width_m=30.0, height_m=30.0, origin_x=-15.0, origin_y=-15.0)
    rolling = RollingGrid(config)
    window = rolling.window_for(pose_matrix(12.34, -5.67, 0.0, 0.0, 0.0, 1.0))
    assert (window.origin_x, window.origin_y) == (pytest.approx(-2.7), pytest.approx(-20.7))
    assert window.rows == window.cols == 300
    assert window.base_to_grid[0, 3] == pytest.approx(12.34)
    moved = rolling.window_for(pose_matrix(12.44, -5.67, 0.0, 0.0, 0.0, 1.0))
    assert (moved.origin_x - window.origin_x) / 0.1 == pytest.approx(1.0), "one cell on, same lattice"


def observation(config: CostmapConfig, window: GridWindow, cells: dict[tuple[float, float], int]):
    """A built frame with the given categories at grid-frame points (through the base pose of ``window``)."""
    to_base = np.linalg.inv(window.base_to_grid)
    points = np.array([to_base[:3, :3] @ [x, y, 0.0] + to_base[:3, 3] for x, y in cells]).reshape(-1, 3)
    return grid_from_points(points, np.array(list(cells.values()), dtype=np.int64), config, window=window)


def test_fusion_remembers_for_decay_s_and_newer_observations_win() -> None:
    config = CostmapConfig(resolution=0.5, width_m=10.0, height_m=10.0, origin_x=-5.0, origin_y=-5.0)
    rolling = RollingGrid(config, decay_s=2.0)
    window = rolling.window_for(pose_matrix(0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    rock, ground = (2.25, 0.25), (3.25, 0.25)
    first = rolling.fuse(observation(config, window, {rock: Category.BLOCKED, ground: Category.FREE}), 10.0)
    row, col = window.cell_of(*rock)
    assert first.category[row, col] == Category.BLOCKED
    # The robot drives 1 m on; the rock has left the camera's lower field of view: nothing observed there.
    window2 = rolling.window_for(pose_matrix(1.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    later = rolling.fuse(observation(config, window2, {(5.25, 0.25): Category.FREE}), 11.5)
    row, col = window2.cell_of(*rock)
    assert later.category[row, col] == Category.BLOCKED, "remembered in the fixed frame after the window moved"
    assert later.remembered_cells == 2
    assert later.grid[row, col] == 100 and later.obstacle_height[row, col] == pytest.approx(0.0)
    # A newer observation of the cell replaces what was remembered, whatever it says.
    cleared = rolling.fuse(observation(config, window2, {rock: Category.FREE}), 11.6)
    assert cleared.category[row, col] == Category.FREE
    expired = rolling.fuse(observation(config, window2, {}), 13.5)
    assert expired.category[window2.cell_of(*ground)] == UNKNOWN, "seen 3.5 s ago: more than decay_s"
    assert expired.category[row, col] == Category.FREE, "seen 1.9 s ago: still within decay_s"
    assert rolling.fuse(observation(config, window2, {}), 13.7).observed_cells == 0
    rolling.reset()
    assert rolling.fuse(observation(config, window2, {}), 14.0).observed_cells == 0
    assert RollingGrid(config).fuse(first, 1.0) is first, "no memory: the frame itself"
    with pytest.raises(ConfigError, match="fusion_decay_s must be >= 0"):
        RollingGrid(config, decay_s=-1.0)


def test_corridor_reports_nearest_blocked_and_hazard() -> None:
    config = CostmapConfig(min_points_per_cell=1)
    cells = {(4.05, 0.05): Category.BLOCKED, (9.05, -0.35): Category.BLOCKED, (7.05, 0.35): Category.HAZARD,
             (1.05, 2.05): Category.BLOCKED, (-1.05, 0.05): Category.HAZARD, (2.05, 0.05): Category.FREE}
    result = grid_from_points(np.array([[x, y, 0.0] for x, y in cells]), np.array(list(cells.values())), config)
    found = corridor_distances(result, config, length=10.0, width=1.0, stop_distance=5.0)
    assert found["nearest_blocked_m"] == pytest.approx(4.0)
    assert found["nearest_hazard_m"] == pytest.approx(7.0)
    assert found["stop_required"] is True
    assert corridor_distances(result, config, 10.0, 1.0, stop_distance=3.9)["stop_required"] is False
    assert found["unknown_fraction"] == pytest.approx(1 - 4 / 1000)  # 100 x 10 corridor cells, 4 observed
    assert corridor_distances(result, config, length=5.0, width=1.0)["nearest_hazard_m"] == math.inf
    assert corridor_distances(result, config, length=3.0, width=5.0)["nearest_blocked_m"] == pytest.approx(1.0)


def test_corridor_verdict_is_unknown_unless_the_corridor_was_seen() -> None:
    config = CostmapConfig(resolution=0.5)
    corridor = CorridorConfig(length=4.0, width=1.0, stop_distance=1.0)
    window = GridWindow.base_frame(config)
    empty = grid_from_points(np.empty((0, 3)), np.empty(0, np.int64), config)
    assert corridor_report(empty.present, empty.category, window, corridor).status == CorridorVerdict.UNKNOWN
    seen = {(x + 0.25, y): Category.FREE for x in np.arange(0.0, 4.0, 0.5) for y in (-0.25, 0.25)}
    clear = grid_from_points(np.array([[x, y, 0.0] for x, y in seen]), np.array(list(seen.values())), config)
    assert corridor_report(clear.present, clear.category, window, corridor).status == CorridorVerdict.CLEAR
    half = {k: v for k, v in seen.items() if k[0] < 1.5}
    partial = grid_from_points(np.array([[x, y, 0.0] for x, y in half]), np.array(list(half.values())), config)
    report = corridor_report(partial.present, partial.category, window, corridor, max_unknown_fraction=0.5)
    assert report.unknown_fraction == pytest.approx(10 / 16) and report.status == CorridorVerdict.UNKNOWN
    near = {**seen, (0.75, 0.25): Category.BLOCKED}
    stop = grid_from_points(np.array([[x, y, 0.0] for x, y in near]), np.array(list(near.values())), config)
    assert corridor_report(stop.present, stop.category, window, corridor).status == CorridorVerdict.STOP


def test_corridor_in_a_rotated_fixed_frame_grid_follows_the_robot_heading() -> None:
    config = CostmapConfig(resolution=0.1)
    pose = pose_matrix(5.0, 5.0, 0.0, 0.0, 0.0, math.pi / 2)  # robot at (5, 5) facing fixed +y
    window = RollingGrid(config).window_for(pose)
    obstacle = observation(config, window, {(5.05, 9.05): Category.BLOCKED, (9.05, 5.05): Category.BLOCKED})
    report = corridor_report(obstacle.present, obstacle.category, window, CorridorConfig(10.0, 1.0, 2.0))
    assert report.nearest_blocked_m == pytest.approx(4.0, abs=0.06), "the cell 4 m ahead along +y, not the one on +x"


def test_corridor_must_fit_in_the_grid() -> None:
    config = CostmapConfig()
    check_corridor_fits(CorridorConfig(10.0, 2.0, 3.0), config, rolling=True)
    with pytest.raises(ConfigError, match=r"corridor_length \(20.0 m\) with corridor_width \(2.0 m\) reaches"):
        check_corridor_fits(CorridorConfig(20.0, 2.0, 3.0), config, rolling=True)
    forward = CostmapConfig(width_m=20.0, origin_x=-5.0)
    check_corridor_fits(CorridorConfig(14.0, 2.0, 3.0), forward, rolling=False)
    with pytest.raises(ConfigError, match="reach outside the grid"):
        check_corridor_fits(CorridorConfig(16.0, 2.0, 3.0), forward, rolling=False)
    for bad, message in (((0.0, 2.0, 3.0), "corridor_length and corridor_width must be > 0"),
                         ((5.0, 2.0, -1.0), "stop_distance must be >= 0"),
                         ((float("nan"), 2.0, 1.0), "corridor_length must be finite")):
        with pytest.raises(ConfigError, match=message):
            CorridorConfig(*bad)
