"""The compiled costmap loops (costmap.kernels) against the numpy expressions they replace: bit for bit, since a
cell at a threshold must not change class with the implementation, and on the edge cases (NaN and infinite depth,
points on the window's border, empty inputs)."""

from __future__ import annotations

import numpy as np
import pytest

from perception_core.costmap import kernels


def _depth(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Depths 0.5-40 m with NaN, +Inf and -Inf sprinkled in (REP 117), and zeros and negatives (invalid; 1 / 0 must
    give inf as in numpy, not raise)."""
    z = rng.uniform(0.5, 40.0, shape).astype(np.float32)
    flat = z.ravel()
    for value, share in ((np.nan, 0.05), (np.inf, 0.03), (-np.inf, 0.01), (0.0, 0.02), (-1.0, 0.01)):
        flat[rng.random(flat.size) < share] = value
    return z


def test_heights_and_positions_are_the_numpy_float32_expressions() -> None:
    rng = np.random.default_rng(1)
    shape = (37, 53)
    z = _depth(rng, shape)
    gz, row_gain, col_gain = (rng.normal(0, 1, shape).astype(np.float32) for _ in range(3))
    gz[0, :5] = 0.0  # a zero gain times inf depth: NaN
    surface = np.where(rng.random(shape) < 0.4, 255, 0).astype(np.uint8)
    offsets = np.float32(12.3), np.float32(-4.7), np.float32(1.5)
    max_height = np.float32(0.8)
    height, row_f, col_f, inverse, low = kernels.heights_and_positions(
        z, gz, row_gain, col_gain, offsets[0], offsets[1], surface, offsets[2], max_height)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected_height = z * gz + offsets[2]
        expected_low = ((expected_height >= -np.finfo(np.float32).max) & (expected_height <= max_height)) | (surface > 0)
        for got, want in ((height, expected_height), (row_f, z * row_gain + offsets[0]),
                          (col_f, z * col_gain + offsets[1]), (inverse, np.float32(1) / z)):
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(low, np.where(expected_low, 255, 0).astype(np.uint8))
    assert np.isnan(height[0, :5][np.isinf(z[0, :5])]).all()


def _bin_reference(valid, standing, row_f, col_f, height, categories, rows, cols, thin_after):
    """The numpy path: range tests, floor binning, np.bincount in pixel order."""
    cells = rows * cols
    valid = valid.copy()
    with np.errstate(invalid="ignore"):
        valid &= np.where((row_f >= 0) & (row_f < rows) & (col_f >= 0) & (col_f < cols), 255, 0).astype(np.uint8)
        cell = row_f.astype(np.int32) * np.int32(cols) + col_f.astype(np.int32)
    ground = valid > standing
    thinned = ground.copy()
    thinned[thin_after + 1 if thin_after >= 0 else (thin_after + 1) % 2 :: 2] = False
    counts = np.bincount(categories[ground].astype(np.int64) * cells + cell[ground], minlength=4 * cells)
    lethal = np.bincount(cell[ground & (categories >= 2)], minlength=cells)
    index, h = cell[thinned], height[thinned].astype(np.float64)
    elevation = (np.bincount(index, minlength=cells), np.bincount(index, weights=h, minlength=cells),
                 np.bincount(index, weights=h * h, minlength=cells))
    return valid, cell, counts, lethal, elevation


@pytest.mark.parametrize("thin_after", [10, -1, -2, 0, 100])
def test_bin_ground_pixels_matches_bincount_in_pixel_order(thin_after: int) -> None:
    rng = np.random.default_rng(thin_after + 7)
    shape, rows, cols = (41, 29), 17, 23
    valid = np.where(rng.random(shape) < 0.8, 255, 0).astype(np.uint8)
    standing = np.where(rng.random(shape) < 0.2, 255, 0).astype(np.uint8)
    row_f = rng.uniform(-2, rows + 2, shape).astype(np.float32)
    col_f = rng.uniform(-2, cols + 2, shape).astype(np.float32)
    row_f[0, :3] = [0.0, np.float32(rows) - np.float32(1e-5), np.nan]  # on the border, just inside, NaN
    col_f[1, :2] = [np.float32(cols), np.float32(-1e-7)]  # just outside
    height = rng.normal(0, 0.3, shape).astype(np.float32)
    categories = rng.integers(0, 4, shape).astype(np.int8)
    want_valid, want_cell, want_counts, want_lethal, want_elevation = _bin_reference(
        valid, standing, row_f, col_f, height, categories, rows, cols, thin_after)
    counts, lethal = np.zeros(4 * rows * cols, np.int64), np.zeros(rows * cols, np.int64)
    elevation = (np.zeros(rows * cols, np.int64), np.zeros(rows * cols), np.zeros(rows * cols))
    got_valid = valid.copy()
    cell = kernels.bin_ground_pixels(got_valid, standing, row_f, col_f, height, categories, rows, cols, thin_after,
                                     counts, lethal, *elevation, True)
    np.testing.assert_array_equal(got_valid, want_valid)
    kept = want_valid != 0
    np.testing.assert_array_equal(cell[kept], want_cell[kept])
    np.testing.assert_array_equal(counts, want_counts)
    np.testing.assert_array_equal(lethal, want_lethal)
    for got, want in zip(elevation, want_elevation, strict=True):
        np.testing.assert_array_equal(got, want)  # float64 sums added in the same order: equal, not close
    assert counts.sum() == int((want_valid > standing).sum()) > 0


def _sample_reference(col_a, row_a, d_col, d_row, gap, cat_a, cat_b, h_a, d_h, use, step, max_samples):
    """The numpy sampling the kernel replaces: per segment min(ceil(gap / step), max) intervals, the inner points."""
    per = np.minimum(np.ceil(gap / step), max_samples)
    out = []
    for i in np.flatnonzero(use & (per >= 2)):
        n = int(per[i])
        t = np.arange(1, n, dtype=np.float32) / np.float32(n)
        out.append((col_a[i] + t * d_col[i], row_a[i] + t * d_row[i], np.where(t < 0.5, cat_a[i], cat_b[i]),
                    h_a[i] + t * d_h[i]))
    return [np.concatenate(a) for a in zip(*out, strict=True)]


def test_bin_segment_samples_bins_the_inner_points_of_each_used_segment() -> None:
    rng = np.random.default_rng(5)
    n, rows, cols, step = 300, 40, 30, np.float32(1.0)
    col_a, row_a = rng.uniform(-5, cols + 5, n).astype(np.float32), rng.uniform(-5, rows + 5, n).astype(np.float32)
    d_col, d_row = rng.normal(0, 6, n).astype(np.float32), rng.normal(0, 6, n).astype(np.float32)
    gap = np.maximum(np.abs(d_col), np.abs(d_row))
    gap[:4] = [np.nan, 0.5, 1.0, 200.0]  # no depth; one interval; exactly one; capped at max_samples
    cat_a, cat_b = rng.integers(0, 4, n).astype(np.int8), rng.integers(0, 4, n).astype(np.int8)
    h_a, d_h = rng.normal(0, 0.2, n).astype(np.float32), rng.normal(0, 0.1, n).astype(np.float32)
    use = rng.random(n) < 0.8
    use[:4] = True
    args = (col_a, row_a, d_col, d_row, gap, cat_a, cat_b, h_a, d_h, use)
    counts = np.zeros(4 * rows * cols, np.int64)
    elevation = (np.zeros(rows * cols, np.int64), np.zeros(rows * cols), np.zeros(rows * cols))
    binned = kernels.bin_segment_samples(*args, step, 64, rows, cols, counts, *elevation, True)
    c, r, cat, h = _sample_reference(*args, step, 64)
    inside = (c >= 0) & (c < cols) & (r >= 0) & (r < rows)
    cell = r[inside].astype(np.int32) * cols + c[inside].astype(np.int32)
    assert binned == int(inside.sum()) > 500
    np.testing.assert_array_equal(counts, np.bincount(cat[inside].astype(np.int64) * rows * cols + cell,
                                                      minlength=4 * rows * cols))
    heights = h[inside].astype(np.float64)
    np.testing.assert_array_equal(elevation[1], np.bincount(cell, weights=heights, minlength=rows * cols))
    np.testing.assert_array_equal(elevation[2], np.bincount(cell, weights=heights * heights, minlength=rows * cols))
    # bin_points bins explicit points the same way; without elevation it leaves the height sums alone
    more = np.zeros_like(counts)
    untouched = (np.zeros(rows * cols, np.int64), np.zeros(rows * cols), np.zeros(rows * cols))
    assert kernels.bin_points(c, r, cat, h, rows, cols, more, *untouched, False) == binned
    np.testing.assert_array_equal(more, counts)
    assert not any(a.any() for a in untouched)


def test_ground_statistics_is_the_float64_formula_rounded_once() -> None:
    rng = np.random.default_rng(2)
    n_all = rng.integers(0, 6, 500)
    heights = [rng.normal(0.1, 0.05, k) for k in n_all]
    sums = np.array([h.sum() for h in heights])
    squares = np.array([(h * h).sum() for h in heights])
    mean, top, bottom = kernels.ground_statistics(n_all, sums, squares, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.where(n_all >= 2, n_all, np.nan)
        m = sums / n
        spread = np.sqrt(np.maximum(squares / n - m * m, 0.0) * 3.0)
    np.testing.assert_array_equal(mean, m.astype(np.float32))
    np.testing.assert_array_equal(top, (m + spread).astype(np.float32))
    np.testing.assert_array_equal(bottom, (m - spread).astype(np.float32))
    assert np.isnan(mean[n_all < 2]).all() and not np.isnan(mean[n_all >= 2]).any()


def test_the_slope_is_the_same_wherever_its_buffers_start() -> None:
    """Window means in buffers that start at 16 different offsets give bit-identical slopes (a cell at a slope
    limit must not change class between runs; cv2.magnitude, used once, differed between offsets)."""
    rng = np.random.default_rng(0)
    means = [rng.normal(size=(48, 98)).astype(np.float32) for _ in range(3)]
    means[0][5, 5] = np.nan  # a window with too few known cells
    reference = kernels.slope_from_window_means(*means, np.float32(0.5625), np.float32(10.0))
    assert np.isnan(reference[0]).all() and np.isnan(reference[:, -1]).all() and np.isnan(reference[5, 4])
    assert np.isfinite(reference[20:30, 20:30]).all()
    for offset in range(16):
        shifted = []
        for i, m in enumerate(means):
            start = (offset * (i + 1)) % 16
            buffer = np.empty(m.size + 16, np.float32)[start : start + m.size].reshape(m.shape)
            buffer[...] = m
            shifted.append(buffer)
        np.testing.assert_array_equal(kernels.slope_from_window_means(*shifted, np.float32(0.5625),
                                                                      np.float32(10.0)), reference)


def test_bin_surface_pairs_samples_the_pairs_that_pass_the_surface_tests() -> None:
    """The pair tests as numpy wrote them (gap over a step, inverse-depth step within the limit plus noise, a
    gentle rise), then the reference sampling, against the fused kernel: same counts, same float64 height sums."""
    rng = np.random.default_rng(9)
    shape, rows, cols, step = (60, 45), 50, 40, np.float32(1.0)
    v, u = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    z = (40.0 / (v + 4.0) * (1 + 0.02 * rng.normal(size=shape))).astype(np.float32)  # ground receding upwards
    z[20:24, 10:20] *= np.float32(0.5)  # an occluding edge: depth steps the tests must reject
    inverse = np.float32(1) / z
    col_f = (u * 0.9 + 0.1 * rng.normal(size=shape)).astype(np.float32)
    row_f = (z * 6.0).astype(np.float32)  # rows 1-4 cells apart in the lower half
    height = (0.02 * rng.normal(size=shape) + 0.8 * (v < 15)).astype(np.float32)  # a step: too steep
    surface_ok = np.where(rng.random(shape) < 0.9, 255, 0).astype(np.uint8)
    categories = rng.integers(0, 4, shape).astype(np.int8)
    step_limit = np.full((shape[0] - 1, shape[1]), 0.03, np.float32)
    noise, rise, height_noise = np.float32(0.03), np.float32(0.2), np.float32(0.05)

    ok = surface_ok != 0
    with np.errstate(invalid="ignore"):
        d_col, d_row = col_f[:-1] - col_f[1:], row_f[:-1] - row_f[1:]
        gap = np.maximum(np.abs(d_col), np.abs(d_row))
        d_h = height[:-1] - height[1:]
        pair = ok[:-1] & ok[1:] & (gap > step)
        pair &= np.abs(inverse[1:] - inverse[:-1]) <= step_limit + noise * inverse[1:]
        pair &= np.abs(d_h) <= rise * np.hypot(d_col, d_row) + height_noise
    p = np.flatnonzero(pair)
    c, r, cat, h = _sample_reference(col_f[1:].ravel()[p], row_f[1:].ravel()[p], d_col.ravel()[p], d_row.ravel()[p],
                                     gap.ravel()[p], categories[1:].ravel()[p], categories[:-1].ravel()[p],
                                     height[1:].ravel()[p], d_h.ravel()[p], np.ones(p.size, bool), step, 64)
    inside = (c >= 0) & (c < cols) & (r >= 0) & (r < rows)
    cell = r[inside].astype(np.int32) * cols + c[inside].astype(np.int32)

    counts = np.zeros(4 * rows * cols, np.int64)
    elevation = (np.zeros(rows * cols, np.int64), np.zeros(rows * cols), np.zeros(rows * cols))
    binned = kernels.bin_surface_pairs(surface_ok, inverse, col_f, row_f, height, categories, step_limit, noise, rise,
                                       height_noise, step, 64, rows, cols, counts, *elevation, True)
    assert 0 < pair.sum() < (ok[:-1] & ok[1:] & (gap > step)).sum()  # the tests reject some pairs, keep others
    assert binned == int(inside.sum()) > 100
    np.testing.assert_array_equal(counts, np.bincount(cat[inside].astype(np.int64) * rows * cols + cell,
                                                      minlength=4 * rows * cols))
    heights = h[inside].astype(np.float64)
    np.testing.assert_array_equal(elevation[0], np.bincount(cell, minlength=rows * cols))
    np.testing.assert_array_equal(elevation[1], np.bincount(cell, weights=heights, minlength=rows * cols))


def _drop_edges_reference(z, inverse, height, surface_ok, categories, gz, step_limit, base, min_range, max_range,
                          noise, caution_m, blocked_m):
    """The numpy + cv2 drop-edge test the kernel replaced (cv2.scaleAdd fuses its multiply-add)."""
    import cv2

    inverse = cv2.max(inverse, 1.0 / max_range)
    inverse[categories < 0] = np.float32(1.0 / max_range)
    excess = cv2.subtract(inverse[1:], inverse[:-1])
    cv2.subtract(excess, step_limit, dst=excess)
    cv2.scaleAdd(inverse[1:], -noise, excess, dst=excess)
    with np.errstate(invalid="ignore"):
        far_index = np.flatnonzero(excess > 0)
    near_index = far_index + z.shape[1]
    far_z = z.ravel()[far_index]
    sky = (categories.ravel()[far_index] < 0) & (gz.ravel()[far_index] < 0)
    far_z = np.where(sky, np.float32(max_range), far_z)
    with np.errstate(invalid="ignore"):
        usable = (surface_ok.ravel()[near_index] != 0) & ((categories.ravel()[far_index] >= 0) | sky) & (
            (far_z > min_range) & ~np.isnan(far_z))
    near_index, far_index = near_index[usable], far_index[usable]
    far = np.minimum(far_z[usable], np.float32(max_range))
    drop = height.ravel()[near_index] - (far * gz.ravel()[far_index] + np.float32(base))
    blocked = drop > blocked_m
    caution = ~blocked & (drop > caution_m)
    return near_index[caution], far_index[caution], near_index[blocked], far_index[blocked]


def test_drop_edge_pairs_match_the_numpy_and_cv2_test() -> None:
    rng = np.random.default_rng(12)
    shape = (70, 55)
    v = np.mgrid[0 : shape[0], 0 : shape[1]][0].astype(np.float32)
    z = (60.0 / (v + 3.0)).astype(np.float32)  # ground receding upwards
    z[30:34, 5:40] *= np.float32(3.0)  # past a brink: the rows above see much farther
    z[rng.random(shape) < 0.03] = np.nan
    z[:3] = np.inf  # beyond range
    inverse = np.float32(1) / z
    gz = (-0.2 + 0.004 * v - 0.01 * rng.random(shape)).astype(np.float32)  # rays rising towards the top rows
    height = (z * gz + np.float32(1.6) + 0.02 * rng.normal(size=shape)).astype(np.float32)
    categories = rng.integers(0, 3, shape).astype(np.int8)
    categories[:5, 20:] = -1  # sky
    surface_ok = np.where(np.isfinite(z) & (rng.random(shape) < 0.9), 255, 0).astype(np.uint8)
    step_limit = np.full((shape[0] - 1, shape[1]), 0.002, np.float32)
    base, min_range, max_range, noise, caution_m, blocked_m = 1.6, 0.3, 25.0, 0.03, 0.15, 0.4
    want = _drop_edges_reference(z, inverse, height, surface_ok, categories, gz, step_limit, base, min_range,
                                 max_range, noise, caution_m, blocked_m)
    got = kernels.drop_edge_pairs(z, inverse, height, surface_ok, categories, gz, step_limit, np.float32(base),
                                  *(np.float32(x) for x in (min_range, max_range, 1.0 / max_range, noise, caution_m,
                                                            blocked_m)))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    assert got[0].size > 0 and got[2].size > 0  # both sizes of drop occur


def test_working_depth_is_a_copy_with_non_positive_depth_nan_and_the_range_mask() -> None:
    rng = np.random.default_rng(3)
    depth = _depth(rng, (31, 47))
    projected = np.where(rng.random(depth.shape) < 0.8, 255, 0).astype(np.uint8)
    lowest, highest = np.float32(0.5), np.float32(30.0)
    z, valid = kernels.working_depth(depth, projected, lowest, highest)
    np.testing.assert_array_equal(z, np.where(depth > 0, depth, np.nan).astype(np.float32))
    with np.errstate(invalid="ignore"):
        in_range = (depth >= lowest) & (depth <= highest) & (projected != 0)
    np.testing.assert_array_equal(valid, np.where(in_range, 255, 0).astype(np.uint8))
    assert z is not depth and np.isnan(z[depth == 0]).all() and (z[np.isfinite(depth) & (depth > 0)] > 0).all()


def test_drop_edge_cells_match_the_numpy_spans() -> None:
    """The brink's samples as numpy placed them (a span of cells from the near point towards where the far ray
    comes down to its height, at most max_span, columns and rows truncated towards zero)."""
    rng = np.random.default_rng(21)
    shape, rows, cols, max_span = (40, 50), 30, 35, np.float32(8.0)
    z = rng.uniform(2, 20, shape).astype(np.float32)
    height = rng.normal(0, 0.5, shape).astype(np.float32)
    row_f, col_f = (rng.uniform(-3, n + 3, shape).astype(np.float32) for n in (rows, cols))
    gz = rng.uniform(-0.3, 0.1, shape).astype(np.float32)  # some rays rising: the near point's depth stands
    col_gain, row_gain = (rng.normal(0, 3, shape).astype(np.float32) for _ in range(2))
    valid = np.where(rng.random(shape) < 0.85, 255, 0).astype(np.uint8)
    offsets = np.float32(4.0), np.float32(-2.0), np.float32(1.5)
    pairs = tuple(rng.integers(0, z.size, n) for n in (300, 300, 200, 200))
    got = kernels.drop_edge_cells(pairs, z, height, row_f, col_f, valid, gz, col_gain, row_gain, *offsets, rows, cols,
                                  max_span)

    expected = np.zeros((2, rows, cols), np.int32)
    for layer in range(2):
        near, far = pairs[2 * layer], pairs[2 * layer + 1]
        keep = valid.ravel()[near] != 0
        near, far = near[keep], far[keep]
        gz_far = gz.ravel()[far]
        with np.errstate(divide="ignore", invalid="ignore"):
            reach = (height.ravel()[near] - offsets[2]) / gz_far
        reach = np.where((gz_far < 0) & np.isfinite(reach), np.maximum(reach, z.ravel()[near]), z.ravel()[near])
        c0, r0 = col_f.ravel()[near], row_f.ravel()[near]
        d_col = reach * col_gain.ravel()[far] + offsets[0] - c0
        d_row = reach * row_gain.ravel()[far] + offsets[1] - r0
        span = np.minimum(np.maximum(np.abs(d_col), np.abs(d_row)), max_span)
        scale = np.minimum(1.0, span / np.maximum(np.hypot(d_col, d_row), np.float32(1e-6)))
        for i in range(near.size):
            for number in range(int(np.floor(span[i])) + 1):
                t = np.float32(number) * scale[i] / np.maximum(span[i], np.float32(1.0))
                col, row = int(c0[i] + t * d_col[i]), int(r0[i] + t * d_row[i])
                if 0 <= col < cols and 0 <= row < rows:
                    expected[layer, row, col] += 1
    np.testing.assert_array_equal(got, expected)
    assert expected[0].sum() > 100 and expected[1].sum() > 100


def _pull_reference(z, valid, standing, surface_ok, gz, limit, min_range, max_range, noise):
    """The numpy _pull_onto_contact the kernel replaced (commit ae7876d), on bare arrays."""
    import cv2

    h, w = z.shape
    # Standing pixels in column-major order: a run of consecutive indices is one vertical run of a column,
    # and the index after its last pixel is its contact (when still in the same column).
    column_major = np.flatnonzero(cv2.transpose(standing.view(np.uint8)) != 0)
    if column_major.size == 0:
        return 0, (np.empty(0, np.int64), np.empty(0, np.int64)), np.empty(0, np.int64), np.empty(0, np.int64)
    run_start = np.ones(column_major.size, dtype=bool)
    run_start[1:] = np.diff(column_major) != 1
    run_id = np.cumsum(run_start) - 1
    run_last = np.append(np.flatnonzero(run_start[1:]), column_major.size - 1)
    col = column_major // h
    own = (column_major - col * h) * w + col
    # The foot is shared by the pixels of a run in one column (a run that leaves the bottom of a column goes
    # on at the top of the next): worked out once per such segment, a few hundred against thousands of pixels.
    segment_start = run_start.copy()
    segment_start[1:] |= col[1:] != col[:-1]
    segment = np.cumsum(segment_start) - 1
    first = np.flatnonzero(segment_start)
    contact_cm = column_major[run_last[run_id[first]]] + 1
    has_contact = contact_cm % h != 0  # the run does not reach the bottom edge
    contact_row = np.where(has_contact, contact_cm % h, 1)
    contact = contact_row * w + col[first]
    bottom = contact - w
    has_contact &= surface_ok.ravel()[contact] != 0
    flat_z, gz = z.ravel(), gz.ravel()
    near = flat_z[contact]
    with np.errstate(divide="ignore", invalid="ignore"):
        # Depth along the bottom pixel's ray at the contact point's height (gz < 0: the ray descends).
        far = np.where(gz[bottom] < 0, near * gz[contact] / gz[bottom], near)
    far = np.maximum(far, near)
    bound = far + np.float32(limit)
    with np.errstate(invalid="ignore"):
        # A run whose bottom pixel already lies beyond the bound does not stand on that contact: it stands
        # behind something that hides its foot (a brink, a crest), and none of it is pulled.
        movable = has_contact & (flat_z[bottom] <= bound) & (far > min_range) & (far < max_range)
        # Per pixel: those beyond the bound (or without depth) go to the foot.
        pull = movable[segment] & ~(flat_z[own] <= bound[segment])
    pulled = own[pull]
    flat_z[pulled] = far[segment[pull]]
    valid.ravel()[pulled] = 255
    ends = segment[run_last]  # the segment of each run's last pixel
    on_contact = has_contact[ends]  # the runs with a surface contact
    ends = ends[on_contact]
    with np.errstate(invalid="ignore"):
        grounded = flat_z[own[run_last[on_contact]]] >= near[ends] * np.float32(1 - noise)
    return (int(pulled.size), (contact[ends][grounded], bottom[ends][grounded]), own,
            np.where(has_contact, contact, -1)[segment])



def test_pull_onto_contact_matches_the_numpy_runs_and_segments() -> None:
    """Random standing runs, some reaching the image's bottom edge and some going on at the top of the next
    column (cut into one segment per column), against the numpy column-major runs: same pulls, same feet."""
    rng = np.random.default_rng(8)
    h, w = 40, 30
    v = np.mgrid[0:h, 0:w][0].astype(np.float32)
    z = (50.0 / (v + 5.0)).astype(np.float32)
    gz = (-0.05 - 0.01 * v).astype(np.float32)
    standing = np.zeros((h, w), np.uint8)
    for c in range(w):
        top = int(rng.integers(0, h - 3))
        standing[top : top + int(rng.integers(1, 12)), c] = 255
    standing[h - 3 :, 4] = 255  # reaches the bottom edge ...
    standing[:2, 5] = 255  # ... and goes on at the top of the next column
    far = standing != 0
    z[far] *= rng.uniform(0.8, 3.0, far.sum()).astype(np.float32)  # some behind their foot, some in front
    z[far & (rng.random((h, w)) < 0.1)] = np.nan  # obstacle pixels without depth go to the foot
    surface_ok = np.where(~far & (rng.random((h, w)) < 0.9), 255, 0).astype(np.uint8)
    valid = np.where(np.isfinite(z), 255, 0).astype(np.uint8)
    args = (gz, 0.5, 0.3, 25.0, 0.03)
    z_want, valid_want = z.copy(), valid.copy()
    want = _pull_reference(z_want, valid_want, standing, surface_ok, *args)
    z_got, valid_got = z.copy(), valid.copy()
    pulled, contact, bottom, own, contacts = kernels.pull_onto_contact(
        z_got, valid_got, standing, surface_ok, gz, *(np.float32(a) for a in args[1:4]), np.float32(1 - args[4]))
    assert pulled == want[0] > 3
    np.testing.assert_array_equal(z_got, z_want)
    np.testing.assert_array_equal(valid_got, valid_want)
    for got, expected in ((contact, want[1][0]), (bottom, want[1][1]), (own, want[2]), (contacts, want[3])):
        np.testing.assert_array_equal(got, expected)
    assert want[1][0].size > 5 and (want[3] == -1).any()


def test_warm_up_compiles_every_loop_a_real_frame_uses() -> None:
    """After warm_up, a frame of another size (labels resized to the depth's, every other column worked, rows
    thinned) adds no compiled signature: the first real frame of a node is not late by a compilation."""
    import math

    from perception_core.costmap import CostmapConfig, build_costmap, class_map_from_ontology, warm_up

    config = CostmapConfig(mount_z=1.4, mount_pitch=math.radians(12.0), column_step=2)
    classes = class_map_from_ontology()
    assert warm_up(config, classes) >= 0.0
    compiled = {name: list(getattr(kernels, name).signatures) for name in dir(kernels)
                if hasattr(getattr(kernels, name), "signatures")}
    h, w = 240, 320
    k = np.array([[200.0, 0.0, w / 2], [0.0, 200.0, h / 2], [0.0, 0.0, 1.0]])
    v = np.arange(h, dtype=np.float32)[:, None]
    depth = np.broadcast_to(np.where(v > h / 2 - 20, 1.4 * 200.0 / np.maximum(v - h / 2 + 42, 1.0), np.nan),
                            (h, w)).astype(np.float32)
    rng = np.random.default_rng(0)
    labels = rng.choice(np.flatnonzero(classes.category >= 0), size=(180, 200)).astype(np.uint8)  # another size
    result = build_costmap(depth, labels, k, config, classes)
    assert result.points_projected > 1000
    for name, signatures in compiled.items():
        assert list(getattr(kernels, name).signatures) == signatures, name


def test_without_numba_the_import_says_what_to_install(monkeypatch) -> None:
    import importlib.util
    import sys

    monkeypatch.setitem(sys.modules, "numba", None)  # what an environment without numba gives
    spec = importlib.util.spec_from_file_location("kernels_without_numba", kernels.__file__)
    module = importlib.util.module_from_spec(spec)
    with pytest.raises(ImportError, match=r"needs numba .*requirements-runtime\.txt"):
        spec.loader.exec_module(module)


def test_resolve_cells_is_the_most_severe_category_with_enough_evidence() -> None:
    rng = np.random.default_rng(13)
    rows, cols, min_points, min_area = 30, 40, 3, 0.02
    counts = rng.integers(0, 5, (4, rows, cols))
    standing = rng.integers(0, 2, (2, rows, cols))
    area = rng.uniform(0, 0.05, (2, rows, cols))
    raise_caution, raise_blocked = rng.random((rows, cols)) < 0.1, rng.random((rows, cols)) < 0.05
    costs = np.array([-1, 0, 50, 100, 99], np.int8)
    present, rank, grid = kernels.resolve_cells(counts, standing, area, raise_caution, raise_blocked, min_points,
                                                min_area, costs)
    want = counts >= min_points
    want[2:] |= (standing > 0) & (area >= min_area)
    want[1] |= raise_caution
    want[2] |= raise_blocked
    np.testing.assert_array_equal(present, want)
    want_rank = np.max(want * np.arange(1, 5)[:, None, None], axis=0)
    np.testing.assert_array_equal(rank, want_rank)
    np.testing.assert_array_equal(grid, costs[want_rank])
    assert set(np.unique(want_rank)) == {0, 1, 2, 3, 4}


def _flat_ground_planes(h: int, w: int, pitch_deg: float, roll_deg: float = 0.0):
    """float64 base-frame ray gains of an h x w pinhole camera 1.5 m above flat ground (a few rays above it)."""
    import math

    from perception_core.costmap.projection import _base_rays, _pixel_rays
    from perception_core.geometry import camera_optical_pose

    k = np.array([[w * 0.6, 0.0, w / 2], [0.0, w * 0.6, h / 2], [0.0, 0.0, 1.0]])
    pose = camera_optical_pose(0.0, 0.0, 1.5, math.radians(roll_deg), math.radians(pitch_deg), 0.0)
    return tuple(np.ascontiguousarray(np.broadcast_to(g, (h, w))) for g in _base_rays(pose[:3, :3], *_pixel_rays(k, (h, w))))


def test_geometry_tables_match_their_numpy_formulation() -> None:
    """Flat-ground hits, row-pair spacings (every pair, and worked rows reusing the adjacent pairs), thinned rows
    and wide quads against the numpy expressions they replaced, bit for bit."""
    gx, gy, gz = _flat_ground_planes(90, 70, 12.0, roll_deg=4.0)
    drop, t_x, t_y, max_range = 1.5, 0.3, -0.1, 15.0
    depth_hit, hit_x, hit_y = kernels.flat_ground_hits(gx, gy, gz, t_x, t_y, drop)
    with np.errstate(divide="ignore", invalid="ignore"):
        want_depth = np.where(gz < 0, -drop / gz, np.inf)
        want_x, want_y = gx * want_depth + t_x, gy * want_depth + t_y
    for got, want in ((depth_hit, want_depth), (hit_x, want_x), (hit_y, want_y)):
        np.testing.assert_array_equal(got, want)
    assert np.isinf(depth_hit).any() and np.isfinite(depth_hit).any()  # rays above and below the horizon

    def pairs_numpy(rows):
        x, y, d = want_x[rows], want_y[rows], want_depth[rows]
        with np.errstate(invalid="ignore"):
            spacing = np.hypot(x[1:] - x[:-1], y[1:] - y[:-1])
        in_range = (d[1:] < max_range) & (d[:-1] < max_range * 1.5)
        ok = in_range & np.isfinite(spacing)
        return np.where(ok, spacing, np.inf).max(axis=1), np.where(ok, spacing, 0.0).max(axis=1), in_range, x, y

    every = np.arange(90)
    widest, spacing = kernels.row_pair_spacing(hit_x, hit_y, depth_hit, every, max_range, np.empty(0))
    want_widest, want_spacing, _, _, _ = pairs_numpy(every)
    np.testing.assert_array_equal(widest, want_widest)
    np.testing.assert_array_equal(spacing, want_spacing)
    assert np.isinf(widest).any() and np.isfinite(widest).any()

    target, max_step = 0.4, 8
    rows = kernels.thinned_rows(want_widest, target, max_step)
    want_rows, row, last = [], 0, want_widest.size
    while row <= last:  # the Python loop the kernel replaced
        want_rows.append(row)
        step, run = 1, float(want_widest[row]) if row < last else 0.0
        while step < max_step and row + step < last and run + want_widest[row + step] <= target:
            run += float(want_widest[row + step])
            step += 1
        row += step
    np.testing.assert_array_equal(rows, want_rows)
    assert rows.size < 91 and np.diff(rows).max() > 1  # some rows thinned

    reused = kernels.row_pair_spacing(hit_x, hit_y, depth_hit, rows, max_range, spacing)[1]
    _, want_reused, in_range, x, y = pairs_numpy(rows)
    np.testing.assert_array_equal(reused, want_reused)

    quads = kernels.wide_quads(hit_x, hit_y, depth_hit, rows, 0.1, max_range)
    with np.errstate(invalid="ignore"):
        lateral = np.hypot(np.diff(x, axis=1), np.diff(y, axis=1))
        lateral = np.maximum(lateral[:-1], lateral[1:])
        want_quads = (lateral >= 0.1) & np.isfinite(lateral) & in_range[:, 1:] & in_range[:, :-1]
    np.testing.assert_array_equal(quads, want_quads)
    assert want_quads.any() and not want_quads.all()
