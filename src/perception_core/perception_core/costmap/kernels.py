"""Compiled per-pixel loops of the costmap build (numba): one pass where numpy needs a dozen.

The build's pixel work is many cheap element-wise steps over ~150k pixels, and numpy pays a pass over memory
for each (docs/costmap.md: build time). These loops do the same arithmetic in the same order and the same
float32 / float64 types as the numpy expressions they replace, so the outputs are bit-identical: float32
products and sums are rounded per operation (numba does not fuse them into FMAs without ``fastmath``), and
per-cell float64 sums add their terms in the order ``np.bincount`` did.

``error_model="numpy"``: a division by zero gives inf / NaN as in numpy (a depth of 0 is 1 / 0, not an
exception). Compiled on first use (about 2 s for all of them) and cached on disk beside this file (``cache=True``; set
``NUMBA_CACHE_DIR`` where the install is read-only), so a node pays the compilation once per install, not per
start.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, error_model="numpy")
def heights_and_positions(z: np.ndarray, gz: np.ndarray, row_gain: np.ndarray, col_gain: np.ndarray,
                          row_offset: np.float32, col_offset: np.float32, surface: np.ndarray,
                          height_offset: np.float32,
                          max_height: np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: height above the ground plane (z gz + height_offset), grid row and column (z gain + offset),
    inverse depth, and 255 where the point is low enough (a finite height <= ``max_height``, or a surface pixel).

    NaN / inf depths give NaN or inf products that every later range test rejects.
    """
    h, w = z.shape
    height = np.empty((h, w), np.float32)
    row_f = np.empty((h, w), np.float32)
    col_f = np.empty((h, w), np.float32)
    inverse = np.empty((h, w), np.float32)
    low_enough = np.empty((h, w), np.uint8)
    one = np.float32(1.0)
    lowest = np.float32(-np.finfo(np.float32).max)
    for r in range(h):
        for c in range(w):
            depth = z[r, c]
            up = depth * gz[r, c]
            up = up + height_offset
            height[r, c] = up
            row_f[r, c] = depth * row_gain[r, c] + row_offset
            col_f[r, c] = depth * col_gain[r, c] + col_offset
            inverse[r, c] = one / depth
            low_enough[r, c] = 255 if (up >= lowest and up <= max_height) or surface[r, c] != 0 else 0
    return height, row_f, col_f, inverse, low_enough


@njit(cache=True, nogil=True, error_model="numpy")
def bin_ground_pixels(valid: np.ndarray, standing: np.ndarray, row_f: np.ndarray, col_f: np.ndarray,
                      height: np.ndarray, categories: np.ndarray, rows: int, cols: int, thin_after: int,
                      counts: np.ndarray, lethal_n: np.ndarray, ground_n: np.ndarray, ground_sum: np.ndarray,
                      ground_sq: np.ndarray, with_elevation: bool) -> np.ndarray:
    """Keep the valid pixels that fall in the window (``valid`` cleared elsewhere, in place) and bin those that
    do not stand up: ``counts[category * cells + cell]``, ``lethal_n[cell]`` for BLOCKED / HAZARD ones, and the
    ground heights (count, sum, sum of squares) of such pixels in every row up to ``thin_after`` and every other
    row below it (thin_after + 2, + 4, ...: the near rows hold many pixels per cell). Returns each pixel's flat
    cell (0 where not kept).
    """
    h, w = valid.shape
    cells = rows * cols
    cell = np.zeros((h, w), np.int32)
    zero = np.float32(0.0)
    for r in range(h):
        this_row = r <= thin_after or (r - thin_after) % 2 == 0
        for c in range(w):
            if valid[r, c] == 0:
                continue
            rf = row_f[r, c]
            cf = col_f[r, c]
            if not (rf >= zero and rf < rows and cf >= zero and cf < cols):
                valid[r, c] = 0
                continue
            at = np.int32(rf) * np.int32(cols) + np.int32(cf)
            cell[r, c] = at
            if standing[r, c] != 0:
                continue
            category = categories[r, c]
            counts[category * cells + at] += 1
            if category >= 2:
                lethal_n[at] += 1
            if with_elevation and this_row:
                value = np.float64(height[r, c])
                ground_n[at] += 1
                ground_sum[at] += value
                ground_sq[at] += value * value
    return cell


@njit(cache=True, nogil=True, error_model="numpy", inline="always")  # a call per pair otherwise: 3x the loop's time
def _bin_segment(col_a: np.float32, row_a: np.float32, d_col: np.float32, d_row: np.float32, gap: np.float32,
                 cat_a: np.int8, cat_b: np.int8, h_a: np.float32, d_h: np.float32, step: np.float32,
                 max_samples: int, rows: int, cols: int, counts: np.ndarray, ground_n: np.ndarray,
                 ground_sum: np.ndarray, ground_sq: np.ndarray, with_elevation: bool) -> int:
    """Sample one segment every ``step`` cells (min(ceil(gap / step), max_samples) intervals, the ends excluded;
    the first half takes cat_a, the rest cat_b) and bin the samples inside the window. Returns how many."""
    limit = np.ceil(gap / step)
    if not limit >= 2:  # at most one interval (NaN too): nothing between the ends
        return 0
    cells = rows * cols
    per = max_samples if limit >= max_samples else int(limit)
    total = np.float32(per)
    zero = np.float32(0.0)
    half = np.float32(0.5)
    binned = 0
    for number in range(1, per):
        t = np.float32(number) / total
        cf = col_a + t * d_col
        rf = row_a + t * d_row
        if not (cf >= zero and cf < cols and rf >= zero and rf < rows):
            continue
        at = np.int32(rf) * np.int32(cols) + np.int32(cf)
        category = cat_a if t < half else cat_b
        counts[category * cells + at] += 1
        binned += 1
        if with_elevation:
            value = np.float64(h_a + t * d_h)
            ground_n[at] += 1
            ground_sum[at] += value
            ground_sq[at] += value * value
    return binned


@njit(cache=True, nogil=True, error_model="numpy")
def bin_segment_samples(col_a: np.ndarray, row_a: np.ndarray, d_col: np.ndarray, d_row: np.ndarray,
                        gap: np.ndarray, cat_a: np.ndarray, cat_b: np.ndarray, h_a: np.ndarray, d_h: np.ndarray,
                        use: np.ndarray, step: np.float32, max_samples: int, rows: int, cols: int,
                        counts: np.ndarray, ground_n: np.ndarray, ground_sum: np.ndarray, ground_sq: np.ndarray,
                        with_elevation: bool) -> int:
    """Sample each used segment from (col_a, row_a, h_a) by (d_col, d_row, d_h) every ``step`` cells and bin
    the samples inside the window into ``counts`` and the ground heights (``_bin_segment``). Returns how many
    samples were binned."""
    binned = 0
    for i in range(gap.size):
        if use[i]:
            binned += _bin_segment(col_a[i], row_a[i], d_col[i], d_row[i], gap[i], cat_a[i], cat_b[i], h_a[i],
                                   d_h[i], step, max_samples, rows, cols, counts, ground_n, ground_sum, ground_sq,
                                   with_elevation)
    return binned


@njit(cache=True, nogil=True, error_model="numpy")
def bin_surface_pairs(surface_ok: np.ndarray, inverse: np.ndarray, col_f: np.ndarray, row_f: np.ndarray,
                      height: np.ndarray, categories: np.ndarray, step_limit: np.ndarray, depth_noise: np.float32,
                      rise_per_cell: np.float32, height_noise: np.float32, step: np.float32, max_samples: int,
                      rows: int, cols: int, counts: np.ndarray, ground_n: np.ndarray, ground_sum: np.ndarray,
                      ground_sq: np.ndarray, with_elevation: bool) -> int:
    """The dense ground between vertically neighbouring surface pixels (r, r + 1), in row-major order of r:
    a pair more than ``step`` cells apart whose inverse depths differ by at most step_limit[r] + depth_noise /
    z[r + 1] and whose segment rises at most ``rise_per_cell`` per cell of run (plus ``height_noise``) is one
    surface, sampled from the lower pixel to the upper (``_bin_segment``). Returns how many samples were binned."""
    h, w = surface_ok.shape
    binned = 0
    for r in range(h - 1):
        for c in range(w):
            if surface_ok[r, c] == 0 or surface_ok[r + 1, c] == 0:
                continue
            d_col = col_f[r, c] - col_f[r + 1, c]
            d_row = row_f[r, c] - row_f[r + 1, c]
            gap = max(abs(d_col), abs(d_row))
            if not gap > step:
                continue
            inverse_low = inverse[r + 1, c]
            limit = step_limit[r, c] + depth_noise * inverse_low
            if not abs(inverse_low - inverse[r, c]) <= limit:
                continue
            d_h = height[r, c] - height[r + 1, c]
            # float32 hypot as glibc's hypotf computes it (the square root of the float64 sum, rounded once):
            # numpy's float32 hypot calls it, and numba's would be a libm call per pair, several times slower.
            run = np.float32(np.sqrt(np.float64(d_col) * np.float64(d_col) + np.float64(d_row) * np.float64(d_row)))
            if not abs(d_h) <= rise_per_cell * run + height_noise:
                continue
            binned += _bin_segment(col_f[r + 1, c], row_f[r + 1, c], d_col, d_row, gap, categories[r + 1, c],
                                   categories[r, c], height[r + 1, c], d_h, step, max_samples, rows, cols, counts,
                                   ground_n, ground_sum, ground_sq, with_elevation)
    return binned


@njit(cache=True, nogil=True, error_model="numpy")
def bin_points(col: np.ndarray, row: np.ndarray, categories: np.ndarray, height: np.ndarray, rows: int, cols: int,
               counts: np.ndarray, ground_n: np.ndarray, ground_sum: np.ndarray, ground_sq: np.ndarray,
               with_elevation: bool) -> int:
    """Bin points given by their grid column and row (those inside the window) like ``bin_segment_samples``."""
    cells = rows * cols
    binned = 0
    zero = np.float32(0.0)
    for i in range(col.size):
        cf = col[i]
        rf = row[i]
        if not (cf >= zero and cf < cols and rf >= zero and rf < rows):
            continue
        at = np.int32(rf) * np.int32(cols) + np.int32(cf)
        counts[categories[i] * cells + at] += 1
        binned += 1
        if with_elevation:
            value = np.float64(height[i])
            ground_n[at] += 1
            ground_sum[at] += value
            ground_sq[at] += value * value
    return binned


@njit(cache=True, nogil=True, error_model="numpy")
def ground_statistics(n_all: np.ndarray, sums: np.ndarray, squares: np.ndarray,
                      min_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 (mean, top, bottom) per cell from float64 count, sum and sum of squares of its heights, NaN where
    it has fewer than ``min_points`` (>= 1); top and bottom are mean -+ sqrt(3 variance), rounded once."""
    size = n_all.size
    mean = np.empty(size, np.float32)
    top = np.empty(size, np.float32)
    bottom = np.empty(size, np.float32)
    nan = np.float32(np.nan)
    for i in range(size):
        if not n_all[i] >= min_points:
            mean[i] = nan
            top[i] = nan
            bottom[i] = nan
            continue
        n = np.float64(n_all[i])
        m = sums[i] / n
        spread = squares[i] / n
        spread -= m * m
        spread = max(spread, 0.0) * 3.0
        spread = np.sqrt(spread)
        mean[i] = np.float32(m)
        top[i] = np.float32(m + spread)
        bottom[i] = np.float32(m - spread)
    return mean, top, bottom


@njit(cache=True, nogil=True, error_model="numpy")
def slope_from_window_means(mean_z: np.ndarray, mean_u: np.ndarray, mean_v: np.ndarray, min_spread_sq: np.float32,
                            per_metre: np.float32) -> np.ndarray:
    """tan slope of the cells of rows and columns 1..n-2 (NaN elsewhere) from [rows, cols] window means of the
    height and of the known cells' coordinates (terrain.window_slope: the gradient solved from the centroids of
    the windows either side, or the nominal two-cell difference where they are under sqrt(min_spread_sq) cells
    apart in some direction). NaN means (windows with too few known cells) give NaN."""
    rows, cols = mean_z.shape
    slope = np.full((rows, cols), np.nan, np.float32)
    four = np.float32(4.0)
    half = np.float32(0.5)
    zero = np.float32(0.0)
    for r in range(1, rows - 1):
        for c in range(1, cols - 1):
            dz_u = mean_z[r, c + 1] - mean_z[r, c - 1]
            du_u = mean_u[r, c + 1] - mean_u[r, c - 1]
            dv_u = mean_v[r, c + 1] - mean_v[r, c - 1]
            dz_v = mean_z[r + 1, c] - mean_z[r - 1, c]
            du_v = mean_u[r + 1, c] - mean_u[r - 1, c]
            dv_v = mean_v[r + 1, c] - mean_v[r - 1, c]
            det = du_u * dv_v
            det = det - dv_u * du_v
            spread = du_u * du_u
            spread = spread + dv_u * dv_u
            spread = spread + du_v * du_v
            spread = spread + dv_v * dv_v
            smaller = spread * spread
            smaller = smaller - four * det * det
            smaller = max(smaller, zero) if smaller == smaller else smaller
            smaller = np.sqrt(smaller)
            smaller = (spread - smaller) * half
            if smaller >= min_spread_sq:
                gu = dz_u * dv_v
                gu = (gu - dv_u * dz_v) / det
                gv = du_u * dz_v
                gv = (gv - dz_u * du_v) / det
            else:
                gu = dz_u * half
                gv = dz_v * half
            magnitude = gu * gu
            magnitude = magnitude + gv * gv
            slope[r, c] = np.sqrt(magnitude) * per_metre
    return slope
