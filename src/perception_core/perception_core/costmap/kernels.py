"""Compiled per-pixel loops of the costmap build (numba): one pass where numpy needs a dozen.

The build's pixel work is many cheap element-wise steps over ~150k pixels, and numpy pays a pass over memory
for each (docs/costmap.md: build time). These loops do the same arithmetic in the same order and the same
float32 / float64 types as the numpy expressions they replace, so the outputs are bit-identical: float32
products and sums are rounded per operation (numba does not fuse them into FMAs without ``fastmath``), and
per-cell float64 sums add their terms in the order ``np.bincount`` did.

``error_model="numpy"``: a division by zero gives inf / NaN as in numpy (a depth of 0 is 1 / 0, not an
exception). Compiled on first use (seconds: ``warm_up_s`` in docs/measurements/costmap_build_turns.json) and cached
on disk beside this file (``cache=True``; set ``NUMBA_CACHE_DIR`` where the install is read-only).
``projection.warm_up`` runs them once on a small frame; the costmap node calls it while it configures, so its
first frame is not late.
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError as error:  # the vehicle's runtime requirements bring it (requirements-runtime.txt)
    raise ImportError("perception_core.costmap needs numba for its compiled loops: pip install numba (it is in "
                      "requirements-runtime.txt and perception_core's install_requires)") from error


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _window_cell(row_f: np.float32, col_f: np.float32, rows: int, cols: int) -> int:
    """Flat index of the window cell at float grid position (row_f, col_f), -1 outside (NaN too); truncation is
    the floor on the kept, non-negative positions."""
    zero = np.float32(0.0)
    if not (row_f >= zero and row_f < rows and col_f >= zero and col_f < cols):
        return -1
    return np.int32(row_f) * np.int32(cols) + np.int32(col_f)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _add_height(at: int, value: np.float64, ground_n: np.ndarray, ground_sum: np.ndarray,
                ground_sq: np.ndarray) -> None:
    """One ground height into its cell's count, sum and sum of squares (float64, in call order)."""
    ground_n[at] += 1
    ground_sum[at] += value
    ground_sq[at] += value * value


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _hypot32(x: np.float32, y: np.float32) -> np.float32:
    """float32 hypot as glibc's hypotf (numpy's float32 hypot) computes it: the float64 root, rounded once (numba's
    own would be a libm call per pair, several times slower)."""
    return np.float32(np.sqrt(np.float64(x) * np.float64(x) + np.float64(y) * np.float64(y)))


@njit(cache=True, nogil=True, error_model="numpy")
def working_depth(depth: np.ndarray, projected: np.ndarray, lowest: np.float32,
                  highest: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """A float32 copy of ``depth`` with every value of 0 or below NaN, and the uint8 mask (255) of the projected
    pixels whose depth lies in [lowest, highest] (NaN never does)."""
    h, w = depth.shape
    z = np.empty((h, w), np.float32)
    valid = np.empty((h, w), np.uint8)
    nan = np.float32(np.nan)
    zero = np.float32(0.0)
    for r in range(h):
        for c in range(w):
            d = depth[r, c]
            d = d if d > zero else nan
            z[r, c] = d
            valid[r, c] = 255 if projected[r, c] != 0 and d >= lowest and d <= highest else 0
    return z, valid


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
    for r in range(h):
        this_row = r <= thin_after or (r - thin_after) % 2 == 0
        for c in range(w):
            if valid[r, c] == 0:
                continue
            at = _window_cell(row_f[r, c], col_f[r, c], rows, cols)
            if at < 0:
                valid[r, c] = 0
                continue
            cell[r, c] = at
            if standing[r, c] != 0:
                continue
            category = categories[r, c]
            counts[category * cells + at] += 1
            if category >= 2:
                lethal_n[at] += 1
            if with_elevation and this_row:
                _add_height(at, np.float64(height[r, c]), ground_n, ground_sum, ground_sq)
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
    half = np.float32(0.5)
    binned = 0
    for number in range(1, per):
        t = np.float32(number) / total
        at = _window_cell(row_a + t * d_row, col_a + t * d_col, rows, cols)
        if at < 0:
            continue
        category = cat_a if t < half else cat_b
        counts[category * cells + at] += 1
        binned += 1
        if with_elevation:
            _add_height(at, np.float64(h_a + t * d_h), ground_n, ground_sum, ground_sq)
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
            if not abs(d_h) <= rise_per_cell * _hypot32(d_col, d_row) + height_noise:
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
    for i in range(col.size):
        at = _window_cell(row[i], col[i], rows, cols)
        if at < 0:
            continue
        counts[categories[i] * cells + at] += 1
        binned += 1
        if with_elevation:
            _add_height(at, np.float64(height[i]), ground_n, ground_sum, ground_sq)
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


@njit(cache=True, nogil=True, error_model="numpy")
def drop_edge_pairs(z: np.ndarray, inverse: np.ndarray, height: np.ndarray, surface_ok: np.ndarray,
                    categories: np.ndarray, gz: np.ndarray, step_limit: np.ndarray, height_offset: np.float32,
                    min_range: np.float32, max_range: np.float32, floor: np.float32, noise: np.float32,
                    step_caution: np.float32,
                    step_blocked: np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(near, far) flat pixel indices of the pairs (r + 1, r) at a drop's edge, CAUTION-sized then BLOCKED-sized
    (projection._drop_edges says what a drop edge is), in row-major order of the far pixel.

    The far pixel's inverse depth is at least ``floor`` (1 / max_range; sky counts as beyond range); the pair is a
    discontinuity when the near pixel's inverse depth exceeds the far one's by more than step_limit[r] plus
    ``noise`` times its own (a fused multiply-add, as cv2.scaleAdd computes it: one rounding of the float64
    product and sum). Comparisons against the float32 limits, as numpy does against Python floats.
    """
    h, w = z.shape
    size = max(h - 1, 0) * w
    near_out = np.empty(size, np.int64)
    far_out = np.empty(size, np.int64)
    blocked_out = np.empty(size, np.bool_)
    count = 0
    minus_noise = np.float64(-noise)
    for r in range(h - 1):
        for c in range(w):
            if surface_ok[r + 1, c] == 0:  # the near pixel must be valid ground
                continue
            sky = categories[r, c] < 0
            inv_far = floor if sky else max(inverse[r, c], floor)
            inv_near = floor if categories[r + 1, c] < 0 else max(inverse[r + 1, c], floor)
            excess = inv_near - inv_far
            excess = excess - step_limit[r, c]
            excess = np.float32(np.float64(inv_near) * minus_noise + np.float64(excess))
            if not excess > 0:
                continue
            far_z = z[r, c]
            if sky:
                if not gz[r, c] < 0:  # sky seen along a rising ray bounds nothing
                    continue
                far_z = max_range
            if not far_z > min_range:  # NaN too
                continue
            far = min(far_z, max_range)
            far_height = far * gz[r, c]
            far_height = far_height + height_offset
            drop = height[r + 1, c] - far_height
            if drop > step_blocked:
                blocked_out[count] = True
            elif drop > step_caution:
                blocked_out[count] = False
            else:
                continue
            near_out[count] = (r + 1) * w + c
            far_out[count] = r * w + c
            count += 1
    near_out, far_out, blocked_out = near_out[:count], far_out[:count], blocked_out[:count]
    caution = ~blocked_out
    return near_out[caution], far_out[caution], near_out[blocked_out], far_out[blocked_out]


@njit(cache=True, nogil=True, error_model="numpy")
def drop_edge_cells(pairs: tuple, z: np.ndarray, height: np.ndarray, row_f: np.ndarray, col_f: np.ndarray,
                    valid: np.ndarray, gz: np.ndarray, col_gain: np.ndarray, row_gain: np.ndarray,
                    col_offset: np.float32, row_offset: np.float32, height_offset: np.float32, rows: int, cols: int,
                    max_span: np.float32) -> np.ndarray:
    """int32 [2, rows, cols] drop-edge samples per cell of the (near, far) pixel pairs of each size (``pairs``:
    CAUTION near, far, BLOCKED near, far; flat indices): projection._drop_edge_cells says where the brink lies.
    Samples every cell (at most ``max_span``) from the near point towards where the far ray comes down to the
    near point's height; a sample's column and row truncate towards zero, as numpy's astype does."""
    out = np.zeros((2, rows, cols), np.int32)
    zs, hs, rfs, cfs, vs = z.ravel(), height.ravel(), row_f.ravel(), col_f.ravel(), valid.ravel()
    gzs, cgs, rgs = gz.ravel(), col_gain.ravel(), row_gain.ravel()
    one = np.float32(1.0)
    tiny = np.float32(1e-6)
    for layer in range(2):
        near_all = pairs[2 * layer]
        far_all = pairs[2 * layer + 1]
        for i in range(near_all.size):
            near = near_all[i]
            far = far_all[i]
            if vs[near] == 0:
                continue
            gz_far = gzs[far]
            reach = (hs[near] - height_offset) / gz_far  # depth of the far ray at the near point's height
            z_near = zs[near]
            if gz_far < 0 and np.isfinite(reach):
                reach = max(reach, z_near)
            else:
                reach = z_near
            c0 = cfs[near]
            r0 = rfs[near]
            d_col = reach * cgs[far] + col_offset
            d_col = d_col - c0
            d_row = reach * rgs[far] + row_offset
            d_row = d_row - r0
            span = min(max(abs(d_col), abs(d_row)), max_span)
            length = max(_hypot32(d_col, d_row), tiny)
            scale = min(one, span / length)
            divisor = max(span, one)
            for number in range(int(np.floor(span)) + 1):
                t = np.float32(number) * scale
                t = t / divisor
                col = int(c0 + t * d_col)
                row = int(r0 + t * d_row)
                if col >= 0 and col < cols and row >= 0 and row < rows:
                    out[layer, row, col] += 1
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def pull_onto_contact(z: np.ndarray, valid: np.ndarray, standing: np.ndarray, surface_ok: np.ndarray,
                      gz: np.ndarray, limit: np.float32, min_range: np.float32, max_range: np.float32,
                      keep_ratio: np.float32) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """projection._pull_onto_contact's work (its docstring says what and why), in place on ``z`` and ``valid``.

    Standing pixels are taken in column-major order (a run of consecutive indices is a vertical run; one that
    leaves the bottom of a column goes on at the top of the next, and is cut into one segment per column).
    Every segment's foot is worked out from the depths before any pixel is pulled. Returns (pixels pulled,
    contacts and bottom pixels of the runs grounded on their contact, every standing pixel's flat index, each
    one's contact or -1).
    """
    h, w = z.shape
    n = 0
    for r in range(h):
        for c in range(w):
            if standing[r, c] != 0:
                n += 1
    own = np.empty(n, np.int64)
    major = np.empty(n, np.int64)  # column-major index c * h + r
    k = 0
    for c in range(w):
        for r in range(h):
            if standing[r, c] != 0:
                own[k] = r * w + c
                major[k] = c * h + r
                k += 1
    # Runs and their last pixel; segments (a run's part in one column) and their run.
    run_last = np.empty(n, np.int64)
    segment_of = np.empty(n, np.int64)
    segment_run = np.empty(n, np.int64)
    segment_col = np.empty(n, np.int64)
    runs = -1
    segments = -1
    for k in range(n):
        col = major[k] // h
        new_run = k == 0 or major[k] != major[k - 1] + 1
        if new_run:
            runs += 1
        if new_run or col != major[k - 1] // h:
            segments += 1
            segment_run[segments] = runs
            segment_col[segments] = col
        run_last[runs] = k
        segment_of[k] = segments
    runs += 1
    segments += 1
    flat_z = z.ravel()
    flat_gz = gz.ravel()
    flat_surface = surface_ok.ravel()
    contact = np.empty(segments, np.int64)
    bottom = np.empty(segments, np.int64)
    has_contact = np.empty(segments, np.bool_)
    near = np.empty(segments, np.float32)
    far = np.empty(segments, np.float32)
    movable = np.empty(segments, np.bool_)
    for s in range(segments):
        after = major[run_last[segment_run[s]]] + 1  # the pixel below the run's last one, column-major
        reaches_bottom = after % h == 0
        contact[s] = (1 if reaches_bottom else after % h) * w + segment_col[s]
        bottom[s] = contact[s] - w
        has_contact[s] = not reaches_bottom and flat_surface[contact[s]] != 0
        near[s] = flat_z[contact[s]]
        foot = near[s]
        if flat_gz[bottom[s]] < 0:  # depth along the bottom pixel's ray at the contact's height
            foot = near[s] * flat_gz[contact[s]]
            foot = foot / flat_gz[bottom[s]]
        if foot < near[s]:
            foot = near[s]
        far[s] = foot
        bound = foot + limit
        movable[s] = has_contact[s] and flat_z[bottom[s]] <= bound and foot > min_range and foot < max_range
    flat_valid = valid.ravel()
    pulled = 0
    for k in range(n):
        s = segment_of[k]
        if movable[s] and not flat_z[own[k]] <= far[s] + limit:
            flat_z[own[k]] = far[s]
            flat_valid[own[k]] = 255
            pulled += 1
    grounded_contact = np.empty(runs, np.int64)
    grounded_bottom = np.empty(runs, np.int64)
    grounded = 0
    for run in range(runs):
        s = segment_of[run_last[run]]
        if has_contact[s] and flat_z[own[run_last[run]]] >= near[s] * keep_ratio:
            grounded_contact[grounded] = contact[s]
            grounded_bottom[grounded] = bottom[s]
            grounded += 1
    contacts = np.empty(n, np.int64)
    for k in range(n):
        s = segment_of[k]
        contacts[k] = contact[s] if has_contact[s] else -1
    return pulled, grounded_contact[:grounded], grounded_bottom[:grounded], own, contacts


@njit(cache=True, nogil=True, error_model="numpy")
def first_used_row(labels: np.ndarray, row_index: np.ndarray, col_index: np.ndarray, code_lut: np.ndarray,
                   known: np.ndarray) -> tuple[int, np.ndarray]:
    """The first worked row holding a projected or standing pixel (-1 when none does) of the worked pixels
    ``labels[row_index][:, col_index]``, and the pixels with an id the ontology lacks in the rows before each
    row up to it (``unknown_before[r]``: rows 0..r-1).

    ``code_lut``: 2 * kind + (id unknown), kind >= 1 projected (projection._label_tables); ids outside 0..255 take
    the clipped id's code and count as unknown, as ClassMap.unknown_ids counts them.
    """
    unknown_before = np.zeros(row_index.size + 1, np.int64)
    for r in range(row_index.size):
        line = labels[row_index[r]]
        used = False
        unknown = 0
        for c in range(col_index.size):
            label = np.int64(line[col_index[c]])
            code = code_lut[min(max(label, 0), 255)]
            used |= code >= 2
            unknown += 1 if label < 0 or label > 255 or not known[label] else 0
        if used:
            return r, unknown_before
        unknown_before[r + 1] = unknown_before[r] + unknown
    return -1, unknown_before


@njit(cache=True, nogil=True, error_model="numpy")
def resolve_cells(counts: np.ndarray, standing: np.ndarray, area: np.ndarray, raise_caution: np.ndarray,
                  raise_blocked: np.ndarray, min_points: int, min_area: float,
                  cost_of_rank: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: which of the 4 categories (FREE, CAUTION, BLOCKED, HAZARD) have enough evidence (``present``
    [4, rows, cols]: ``min_points`` points, or for BLOCKED / HAZARD a standing pixel and ``min_area`` m^2 of
    footprint; ``raise_caution`` / ``raise_blocked``: the ground's geometry and drop edges), the winner's
    severity rank + 1 (0 where none) and its cost (``cost_of_rank[rank]``, int8)."""
    _, rows, cols = counts.shape
    present = np.empty((4, rows, cols), np.bool_)
    rank = np.empty((rows, cols), np.uint8)
    grid = np.empty((rows, cols), np.int8)
    for r in range(rows):
        for c in range(cols):
            best = 0
            for category in range(4):
                here = counts[category, r, c] >= min_points
                if category >= 2:
                    lethal = category - 2
                    here = here or (standing[lethal, r, c] > 0 and area[lethal, r, c] >= min_area)
                if category == 1:
                    here = here or raise_caution[r, c]
                elif category == 2:
                    here = here or raise_blocked[r, c]
                present[category, r, c] = here
                if here:
                    best = category + 1
            rank[r, c] = best
            grid[r, c] = cost_of_rank[best]
    return present, rank, grid


# --------------------------------------------------------------------------- ray geometry (a camera's tables)


@njit(cache=True, nogil=True, error_model="numpy")
def flat_ground_hits(gx: np.ndarray, gy: np.ndarray, gz: np.ndarray, t_x: float, t_y: float,
                     drop: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 depth at which each ray meets flat ground ``drop`` below the camera (inf for a ray that does not
    descend), and the base-frame x and y of that point (``g * depth + t``)."""
    h, w = gz.shape
    depth_hit = np.empty((h, w))
    hit_x = np.empty((h, w))
    hit_y = np.empty((h, w))
    for r in range(h):
        for c in range(w):
            g = gz[r, c]
            d = -drop / g if g < 0 else np.inf
            depth_hit[r, c] = d
            hit_x[r, c] = gx[r, c] * d + t_x
            hit_y[r, c] = gy[r, c] * d + t_y
    return depth_hit, hit_x, hit_y


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _pair_in_range(depth_hit: np.ndarray, upper: int, lower: int, c: int, max_range: float) -> bool:
    """Both pixels of column ``c`` of the row pair meet flat ground in range: the lower one within max_range, the
    upper one within 1.5 max_range (its ground is farther)."""
    return depth_hit[lower, c] < max_range and depth_hit[upper, c] < max_range * 1.5


@njit(cache=True, nogil=True, error_model="numpy")
def row_pair_spacing(hit_x: np.ndarray, hit_y: np.ndarray, depth_hit: np.ndarray, rows: np.ndarray,
                     max_range: float, adjacent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each pair of consecutive worked ``rows`` (r, r'): the flat ground's widest spacing between them over the
    columns where both meet it in range (depth_hit[r'] < max_range, depth_hit[r] < 1.5 max_range), with inf where
    some column does not (``widest``), and with such columns left out, 0 where none is in range (``in_range``).

    ``adjacent``: ``in_range`` of every image row pair (r, r + 1) from an earlier call, taken as is for such pairs
    (``widest`` is then not computed for them: nan); empty to compute every pair."""
    pairs = max(rows.size - 1, 0)
    w = hit_x.shape[1]
    widest = np.empty(pairs)
    in_range = np.empty(pairs)
    for i in range(pairs):
        upper, lower = rows[i], rows[i + 1]
        if adjacent.size and lower == upper + 1:
            widest[i] = np.nan
            in_range[i] = adjacent[upper]
            continue
        any_out = False
        best = 0.0
        for c in range(w):
            spacing = np.hypot(hit_x[lower, c] - hit_x[upper, c], hit_y[lower, c] - hit_y[upper, c])
            if _pair_in_range(depth_hit, upper, lower, c, max_range) and np.isfinite(spacing):
                best = max(best, spacing)
            else:
                any_out = True
        widest[i] = np.inf if any_out else best
        in_range[i] = best
    return widest, in_range


@njit(cache=True, nogil=True, error_model="numpy")
def thinned_rows(widest: np.ndarray, target: float, max_step: int) -> np.ndarray:
    """The rows kept from 0 to ``widest.size``: from each kept row, skip on while the rows' spacings add up to
    at most ``target`` (and fewer than ``max_step`` rows); the last row is always kept."""
    last = widest.size
    rows = np.empty(last + 1, np.int64)
    kept = 0
    row = 0
    while row <= last:
        rows[kept] = row
        kept += 1
        step = 1
        run = widest[row] if row < last else 0.0
        while step < max_step and row + step < last and run + widest[row + step] <= target:
            run += widest[row + step]
            step += 1
        row += step
    return rows[:kept]


@njit(cache=True, nogil=True, error_model="numpy")
def wide_quads(hit_x: np.ndarray, hit_y: np.ndarray, depth_hit: np.ndarray, rows: np.ndarray, threshold: float,
               max_range: float) -> np.ndarray:
    """bool [len(rows) - 1, w - 1]: quads of the worked ``rows`` whose wider horizontal edge is at least
    ``threshold`` apart on flat ground (both edges finite), with all four corners in range as row pairs count it."""
    pairs = max(rows.size - 1, 0)
    w = hit_x.shape[1]
    out = np.zeros((pairs, max(w - 1, 0)), np.bool_)
    lateral = np.empty((2, max(w - 1, 0)))  # the horizontal edges of the upper and the lower row, each once
    for i in range(rows.size):
        row = rows[i]
        this = lateral[i % 2]
        for c in range(w - 1):
            this[c] = np.hypot(hit_x[row, c + 1] - hit_x[row, c], hit_y[row, c + 1] - hit_y[row, c])
        if i == 0:
            continue
        upper, lower = rows[i - 1], row
        above = lateral[(i - 1) % 2]
        for c in range(w - 1):
            top = above[c]
            bottom = this[c]
            if not (np.isfinite(top) and np.isfinite(bottom)):
                continue
            if max(top, bottom) >= threshold and _pair_in_range(depth_hit, upper, lower, c, max_range) \
                    and _pair_in_range(depth_hit, upper, lower, c + 1, max_range):
                out[i - 1, c] = True
    return out
