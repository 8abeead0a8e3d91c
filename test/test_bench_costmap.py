"""bench/bench_costmap.py: the helpers its diagnostic rows rest on."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


@pytest.fixture
def bench_costmap(load_repo_script):
    return load_repo_script("bench/bench_costmap.py")


RANGE = SimpleNamespace(min_range=0.3, max_range=15.0)


def test_best_frame_scale_recovers_a_global_factor_and_ignores_pixels_out_of_range(bench_costmap) -> None:
    rng = np.random.default_rng(3)
    truth = rng.uniform(1.0, 12.0, (40, 50)).astype(np.float32)
    predicted = truth / np.float32(1.25)
    predicted[:5] = np.nan  # invalid
    predicted[5:10] = np.inf  # beyond range
    truth[10:12] = np.nan  # no truth (sky)
    predicted[12:14] = 100.0  # beyond max_range: skipped
    assert bench_costmap.best_frame_scale(predicted, truth, RANGE) == pytest.approx(1.25, rel=1e-6)


def test_best_frame_scale_is_the_median_ratio_so_a_minority_of_wrong_pixels_does_not_move_it(bench_costmap) -> None:
    truth = np.full((10, 10), 5.0, np.float32)
    predicted = np.full((10, 10), 4.0, np.float32)
    predicted[:3] = 10.0  # 30 % of the pixels twice too far
    assert bench_costmap.best_frame_scale(predicted, truth, RANGE) == pytest.approx(1.25)


def test_best_frame_scale_is_one_when_no_pixel_is_in_range(bench_costmap) -> None:
    nothing = np.full((4, 4), np.nan, np.float32)
    assert bench_costmap.best_frame_scale(nothing, nothing, RANGE) == 1.0


def test_by_range_table_has_a_row_per_band_and_marks_empty_bands(bench_costmap, capsys) -> None:
    summary = {"bands_m": [[0.0, 3.0], [3.0, 6.0]], "recall_labelled": [1.0, float("nan")],
               "precision_all": [0.5, 0.25], "frames": 1, "counts": {}}
    bench_costmap.print_by_range(summary)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["x", "(m)", "recall_labelled", "precision_all"]
    assert lines[2].split() == ["0-3", "1.000", "0.500"] and lines[3].split() == ["3-6", "n/a", "0.250"]


def test_object_offsets_removed_scales_each_object_by_its_own_median_and_keeps_the_rest(bench_costmap) -> None:
    """Two objects read 10 % too far and 20 % too near, with a within-object wobble; the ground is off too.
    Each object comes back to the truth times its wobble (its median ratio removed); the ground is untouched."""
    truth = np.full((8, 12), 10.0, np.float32)
    truth[1:4, 1:4] = 5.0
    truth[5:8, 7:11] = 8.0
    standing = np.zeros(truth.shape, bool)
    standing[1:4, 1:4] = True
    standing[5:8, 7:11] = True
    wobble = np.ones(truth.shape, np.float32)
    wobble[2, 2] = 1.05  # one pixel of the first object off its object's depth
    depth = truth * 1.3  # the ground: read 30 % far, and kept so
    depth[1:4, 1:4] = truth[1:4, 1:4] * 1.1 * wobble[1:4, 1:4]
    depth[5:8, 7:11] = truth[5:8, 7:11] * 0.8
    depth[0, 0] = np.nan  # no depth: left as it is
    out, stats = bench_costmap.object_offsets_removed(depth, truth, standing)
    assert np.allclose(out[1:4, 1:4], truth[1:4, 1:4] * wobble[1:4, 1:4], rtol=1e-5)
    # Per object: offset (log), spread, pixels, median true depth.
    assert np.allclose(stats, [[np.log(1.1), 0.0, 9, 5.0], [np.log(0.8), 0.0, 12, 8.0]], atol=1e-6)
    summary = bench_costmap.object_offset_summary(stats, [(0.0, 6.0), (6.0, 15.0), (15.0, 20.0)])
    assert summary["objects"] == [1, 1, 0]
    assert np.allclose(summary["offset"][:2], [0.1, 0.25], rtol=1e-5)  # |log 0.8| as a ratio: 1 / 0.8 - 1
    assert np.isnan(summary["offset"][2])
    assert np.allclose(out[5:8, 7:11], truth[5:8, 7:11], rtol=1e-5)
    assert np.array_equal(out[~standing], depth[~standing], equal_nan=True)
    # No standing pixel: the depth comes back unchanged.
    unchanged, none = bench_costmap.object_offsets_removed(depth, truth, np.zeros_like(standing))
    assert np.array_equal(unchanged, depth, equal_nan=True) and none.shape == (0, 4)
