"""Level interpolation (``depth_codec.interpolate_level_runs``) on analytic staircases."""

from __future__ import annotations

import numpy as np
import pytest

from perception_core.depth_codec import interpolate_level_runs

STEP = 0.25


def _plane(rows: int = 120, cols: int = 3) -> np.ndarray:
    """Depth of a ground plane seen by a level camera: inverse depth linear in the row, far at the top."""
    inverse = np.linspace(1 / 12.0, 1 / 2.0, rows)
    return np.repeat((1.0 / inverse)[:, None], cols, axis=1).astype(np.float32)


def _staircase(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bin-centre depth, level) of ``depth`` cut to levels of STEP: a fractional head that reads half a step."""
    level = np.floor(depth / STEP).astype(np.int32)
    return ((level + 0.5) * STEP).astype(np.float32), level


def test_a_planes_staircase_is_laid_back_onto_the_plane() -> None:
    truth = _plane()
    stairs, level = _staircase(truth)
    out = interpolate_level_runs(stairs, level, STEP)
    inner = slice(20, -20)  # runs touching the image's top or bottom row keep their bin centres; the top rows jump
    moved = out != stairs
    assert moved[inner].all()
    before = np.abs(stairs - truth)[moved].mean()
    after = np.abs(out - truth)[moved].mean()
    assert after < before / 4  # the edges are known to half a row: short runs keep some error
    # every moved pixel stays inside its own level, and the column falls monotonically to the bottom row
    assert np.all(out[moved] >= level[moved] * STEP - 1e-5) and np.all(out[moved] <= (level[moved] + 1) * STEP + 1e-5)
    assert np.all(np.diff(out[inner], axis=0) <= 1e-6)
    assert out.dtype == np.float32 and out.shape == stairs.shape


def test_level_edges_land_halfway_between_the_rows_that_cross_them() -> None:
    level = np.array([[7], [6], [6], [6], [6], [5]], np.int32)  # one run of 6, four rows, between 7 above and 5 below
    depth = (level + 0.5).astype(np.float32) * STEP
    out = interpolate_level_runs(depth, level, STEP)[1:5, 0]
    # inverse depth goes linearly from 1/(6 STEP) half a row below the run to 1/(7 STEP) half a row above it
    up = (np.array([3, 2, 1, 0]) + 0.5) / 4
    want = 1.0 / ((1 - up) / (6 * STEP) + up / (7 * STEP))
    np.testing.assert_allclose(out, want, rtol=1e-6)


def test_jumps_crests_image_borders_and_level_zero_keep_their_depth() -> None:
    column = [
        9, 9,          # the top row's run: no neighbour above
        20, 20, 20,    # an object's face: a jump of many levels on both sides
        8, 8, 8,       # the ground behind the face: its upper neighbour is the face (a jump)
        7, 7,          # between 8 above and 6 below: interpolated
        6, 6, 6,
        7, 7,          # a crest: 6 on both sides
        6,             # between 7 above and 5 below: interpolated
        5, 5,
        1, 1,          # a jump of four levels below 5
        0, 0, 0,       # level 0: no edge at depth 0 to interpolate to
        1,             # the bottom row's run
    ]
    level = np.array(column, np.int32)[:, None]
    depth = (level + 0.5).astype(np.float32) * STEP
    given = depth.copy()
    out = interpolate_level_runs(depth, level, STEP)
    assert np.array_equal(depth, given)  # a new array; the caller's is left as it was (a one-column image too)
    moved = np.flatnonzero(out[:, 0] != depth[:, 0]).tolist()
    assert moved == [8, 9, 15]  # the run of 7 between 8 and 6, and the lone 6 between 7 and 5


def test_a_run_that_falls_upward_is_interpolated_the_other_way() -> None:
    level = np.array([[4], [5], [5], [6]], np.int32)  # an overhang: nearer up the image
    depth = (level + 0.5).astype(np.float32) * STEP
    out = interpolate_level_runs(depth, level, STEP)[1:3, 0]
    assert out[0] < out[1]  # nearer at the top of the run
    assert 5 * STEP <= out[0] <= out[1] <= 6 * STEP


def test_columns_are_independent_and_shapes_must_match() -> None:
    truth = _plane(rows=60, cols=4)
    stairs, level = _staircase(truth)
    level[:, 2] += 10  # another column at other levels
    stairs[:, 2] += 10 * STEP
    out = interpolate_level_runs(stairs, level, STEP)
    np.testing.assert_allclose(out[:, 0], out[:, 1])
    np.testing.assert_allclose(out[:, 0], interpolate_level_runs(stairs[:, :1], level[:, :1], STEP)[:, 0])
    with pytest.raises(ValueError, match="same H x W"):
        interpolate_level_runs(stairs, level[:-1], STEP)


def _interpolated_by_the_rule(depth: np.ndarray, level: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """The docstring's rule, one column and one run at a time: (depth, which pixels it sets)."""
    out = depth.astype(np.float64)
    moved = np.zeros(level.shape, bool)
    height, width = level.shape
    for col in range(width):
        column = [int(v) for v in level[:, col]]
        start = 0
        while start < height:
            end = start  # the run is rows start..end
            while end + 1 < height and column[end + 1] == column[start]:
                end += 1
            k = column[start]
            if 0 < start and end < height - 1 and k >= 1:
                above, below = column[start - 1], column[end + 1]
                if (above, below) in ((k + 1, k - 1), (k - 1, k + 1)):
                    # depth k * step at the edge with k - 1 and (k + 1) * step at the edge with k + 1, each half a
                    # row beyond the run's end pixels; inverse depth linear in the row in between
                    lower, upper = (k, k + 1) if above == k + 1 else (k + 1, k)  # levels at the bottom, top edge
                    for row in range(start, end + 1):
                        up = (end - row + 0.5) / (end - start + 1)  # of the way from the bottom edge to the top one
                        out[row, col] = 1.0 / ((1 - up) / (lower * step) + up / (upper * step))
                        moved[row, col] = True
            start = end + 1
    return out, moved


@pytest.mark.parametrize("seed", range(6))
def test_random_staircases_follow_the_rule_column_by_column(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(40):
        rows, cols = int(rng.integers(1, 16)), int(rng.choice([1, 2, 3, 4, 300]))  # wide: hundreds of runs
        # columns that wander a level at a time, with runs, crests, jumps and level 0 (and -1, "no level")
        moves = rng.choice([-1, 0, 0, 0, 1, 1, 6], (rows, cols))
        level = np.clip(int(rng.integers(0, 4)) + np.cumsum(moves, axis=0), -1, None)
        if rng.random() < 0.5:
            level = level[::-1]  # falling runs too
        level = level.astype(rng.choice([np.int32, np.int64, np.int16, np.uint8]))  # -1 is 255 in uint8
        step = float(rng.choice([STEP, 0.1, 1.0]))
        depth = ((level + rng.random(level.shape)) * step).astype(np.float32)
        depth[rng.random(level.shape) < 0.1] = np.nan
        out = interpolate_level_runs(depth, level, step)
        want, moved = _interpolated_by_the_rule(depth, level, step)
        assert out.dtype == np.float32 and out.shape == depth.shape
        assert np.array_equal(out[~moved].view(np.uint32), depth[~moved].view(np.uint32))  # the rest kept, bit for bit
        np.testing.assert_allclose(out[moved], want[moved], rtol=2e-6)
