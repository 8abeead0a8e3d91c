"""What the costmap build's shortcuts rely on: sky rows above the image change nothing, the bounding box and the
window slope match their direct formulations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perception_core.costmap import ClassMap, CostmapConfig, build_costmap, class_map_from_ontology
from perception_core.costmap.terrain import SOLVE_MIN_SPREAD, bounding_box, window_slope
from perception_core.ontology import parse_ontology

GROUND, ROUGH, BOX, SKY = 0, 1, 4, 6
ONTOLOGY = parse_ontology({"version": "test", "ignore_index": 255, "classes": [
    {"id": i, "name": name, "category": category, "color": [i, i, i]} for i, (name, category) in enumerate([
        ("smooth_ground", "FREE"), ("rough_ground", "CAUTION"), ("low_vegetation", None), ("water", "HAZARD"),
        ("static_obstacle", "BLOCKED"), ("dynamic", "HAZARD"), ("sky", None)])
]})
CAM_HEIGHT, CAM_PITCH = 1.5, 0.2


def _scene(width: int, height: int, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth (NaN = sky) and labels of a gently rolling ground with a step and a few boxes on it."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    a, b = (u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1]
    rays = (np.array([math.cos(CAM_PITCH), 0.0, -math.sin(CAM_PITCH)]) + a[..., None] * np.array([0.0, -1.0, 0.0])
            + b[..., None] * np.array([-math.sin(CAM_PITCH), 0.0, -math.cos(CAM_PITCH)]))
    depth = np.full((height, width), np.nan)
    labels = np.full((height, width), SKY, np.uint8)
    t = np.linspace(0.3, 20.0, 400)
    for i in range(height):  # march each ray to the first point under the ground z = 0.2 sin(x) (+0.4 past 9 m)
        points = CAM_HEIGHT * np.array([0.0, 0.0, 1.0]) + rays[i][:, None, :] * t[None, :, None]
        ground = 0.2 * np.sin(points[..., 0]) + 0.4 * (points[..., 0] > 9.0)
        below = points[..., 2] <= ground
        hit = below.any(axis=1)
        first = np.argmax(below, axis=1)
        depth[i, hit] = t[first[hit]]
        x, y = points[np.arange(width), first, 0], points[np.arange(width), first, 1]
        labels[i, hit] = np.where((np.abs(y[hit] - 1.0) < 0.4) & (np.abs(x[hit] - 6.0) < 0.3), BOX,
                                  np.where(x[hit] > 12.0, ROUGH, GROUND))
    return depth.astype(np.float32), labels


@pytest.mark.parametrize("geometry", [True, False])
def test_sky_rows_above_the_image_change_nothing(geometry: bool) -> None:
    """The build works from one row above the first projected pixel; rows of sky above it are never read."""
    width, height, extra = 96, 72, 12
    k = np.array([[60.0, 0.0, 47.5], [0.0, 60.0, 35.5], [0.0, 0.0, 1.0]])
    depth, labels = _scene(width, height, k)
    taller_k = k.copy()
    taller_k[1, 2] += extra
    taller_depth = np.vstack([np.full((extra, width), np.nan, np.float32), depth])
    taller_labels = np.vstack([np.full((extra, width), SKY, np.uint8), labels])
    config = CostmapConfig(resolution=0.2, mount_z=CAM_HEIGHT, mount_pitch=CAM_PITCH, min_obstacle_area_m2=0.0,
                           width_m=16.0, height_m=16.0, origin_x=-2.0, origin_y=-8.0, ground_geometry=geometry)
    classes: ClassMap = class_map_from_ontology(ONTOLOGY)
    plain = build_costmap(depth, labels, k, config, classes)
    taller = build_costmap(taller_depth, taller_labels, taller_k, config, classes)
    assert plain.observed_cells > 100 and plain.points_projected > 1000
    np.testing.assert_array_equal(plain.grid, taller.grid)
    np.testing.assert_array_equal(plain.present, taller.present)
    for name in plain.evidence:
        if isinstance(plain.evidence[name], np.ndarray):
            np.testing.assert_array_equal(plain.evidence_map(name), taller.evidence_map(name), err_msg=name)
    assert (plain.points_projected, plain.surface_samples, plain.clamped_pixels) == (
        taller.points_projected, taller.surface_samples, taller.clamped_pixels)
    if geometry:
        np.testing.assert_array_equal(plain.ground.step_m, taller.ground.step_m)
        np.testing.assert_array_equal(plain.ground.slope_tan, taller.ground.slope_tan)


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int32, np.float32])
def test_bounding_box_is_the_box_of_the_non_zero_cells(dtype: type) -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        mask = np.zeros((rng.integers(1, 30), rng.integers(1, 30)), dtype)
        if rng.random() < 0.8:
            r, c = rng.integers(0, mask.shape[0], 3), rng.integers(0, mask.shape[1], 3)
            mask[r, c] = 1
        pad = int(rng.integers(0, 4))
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        expected = None if rows.size == 0 else (slice(max(rows[0] - pad, 0), rows[-1] + 1 + pad),
                                                slice(max(cols[0] - pad, 0), cols[-1] + 1 + pad))
        assert bounding_box(mask, pad) == expected
        assert bounding_box(mask[::-1, ::-1], pad) == bounding_box(np.ascontiguousarray(mask[::-1, ::-1]), pad)


def _window_slope_directly(elevation: np.ndarray, unknown: np.ndarray, side: int, resolution: float) -> np.ndarray:
    """window_slope as first written: 2-D float32 arrays throughout (window sums exact in float64 here)."""
    rows, cols = elevation.shape
    known = (~unknown).astype(np.float32)
    z = np.where(unknown, np.float32(0), elevation).astype(np.float32)
    v, u = (np.float32(c) * known for c in np.mgrid[0:rows, 0:cols])
    pad = side // 2

    def window_sum(values: np.ndarray) -> np.ndarray:
        padded = np.pad(values.astype(np.float64), pad)
        return sum(padded[i : i + rows, j : j + cols] for i in range(side) for j in range(side)).astype(np.float32)

    n = window_sum(known)
    with np.errstate(divide="ignore"):
        inverse = np.float32(1) / n
    inverse[n < side * side / 3.0] = np.nan
    mean_z, mean_u, mean_v = (window_sum(values) * inverse for values in (z, u, v))
    dz_u, du_u, dv_u = (m[1:-1, 2:] - m[1:-1, :-2] for m in (mean_z, mean_u, mean_v))
    dz_v, du_v, dv_v = (m[2:, 1:-1] - m[:-2, 1:-1] for m in (mean_z, mean_u, mean_v))
    det = du_u * dv_v - dv_u * du_v
    spread = du_u * du_u + dv_u * dv_u + du_v * du_v + dv_v * dv_v
    with np.errstate(invalid="ignore"):
        smaller_sq = (spread - np.sqrt(np.maximum(spread * spread - 4.0 * det * det, 0.0))) * 0.5
        solvable = smaller_sq >= SOLVE_MIN_SPREAD * SOLVE_MIN_SPREAD
    det[~solvable] = 1.0
    grad_u = np.where(solvable, (dz_u * dv_v - dv_u * dz_v) / det, dz_u * 0.5)
    grad_v = np.where(solvable, (du_u * dz_v - dz_u * du_v) / det, dz_v * 0.5)
    slope = np.full((rows, cols), np.nan, np.float32)
    slope[1:-1, 1:-1] = np.sqrt(grad_u * grad_u + grad_v * grad_v) * np.float32(1.0 / resolution)
    return slope


@pytest.mark.parametrize("shape", [(40, 31), (3, 3), (7, 50), (2, 9)])
def test_window_slope_matches_its_direct_formulation(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(11)
    rows, cols = shape
    v, u = np.mgrid[0:rows, 0:cols]
    elevation = (0.05 * u - 0.02 * v + 0.3 * (u > cols / 2) + rng.normal(0, 0.01, shape)).astype(np.float32)
    unknown = (rng.random(shape) < 0.3) | (u + v < min(shape) / 2)  # a ragged, partly unseen patch
    elevation[unknown] = np.nan
    slope = window_slope(elevation, unknown, 5, 0.1)
    expected = _window_slope_directly(elevation, unknown, 5, 0.1)
    known = ~unknown
    assert slope.dtype == np.float32 and slope.shape == shape
    # The window sums differ in the last bit (cv2's float32 box filter against float64 sums here).
    np.testing.assert_allclose(slope[known], expected[known], rtol=1e-6)
    assert np.array_equal(np.isnan(slope[known]), np.isnan(expected[known]))


@pytest.mark.parametrize("invalid", [0.0, -2.0, -np.inf])
def test_zero_and_negative_depth_are_invalid_like_nan(invalid: float) -> None:
    """A depth of 0 or below (a driver's "no return") is dropped like NaN, and the compiled loops take 1 / 0 as
    numpy does (inf), not as an exception."""
    width, height = 96, 72
    k = np.array([[60.0, 0.0, 47.5], [0.0, 60.0, 35.5], [0.0, 0.0, 1.0]])
    depth, labels = _scene(width, height, k)
    holes = np.zeros(depth.shape, bool)
    holes[40:60:3, 10:80:2] = True
    with_nan, with_invalid = depth.copy(), depth.copy()
    with_nan[holes], with_invalid[holes] = np.nan, invalid
    config = CostmapConfig(resolution=0.2, mount_z=CAM_HEIGHT, mount_pitch=CAM_PITCH, width_m=16.0, height_m=16.0,
                           origin_x=-2.0, origin_y=-8.0)
    classes = class_map_from_ontology(ONTOLOGY)
    expected = build_costmap(with_nan, labels, k, config, classes)
    got = build_costmap(with_invalid, labels, k, config, classes)
    assert expected.observed_cells > 100
    np.testing.assert_array_equal(got.grid, expected.grid)
    assert got.points_projected == expected.points_projected


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
@pytest.mark.parametrize("unknown_category", [None, "BLOCKED"])
def test_unknown_ids_are_counted_over_every_worked_pixel_sky_rows_included(dtype: type, unknown_category) -> None:
    """The build skips the rows above the first projected one, but the diagnostic count of ids the ontology lacks
    covers all the pixels it samples: an unknown id that is not projected (unknown_category None) in the sky
    counts too."""
    from perception_core.costmap.projection import _worked_index, _worked_labels

    width, height = 96, 72
    k = np.array([[60.0, 0.0, 47.5], [0.0, 60.0, 35.5], [0.0, 0.0, 1.0]])
    depth, labels = _scene(width, height, k)
    labels = labels.astype(dtype)
    rng = np.random.default_rng(5)
    labels[rng.random(labels.shape) < 0.05] = 77
    labels[:4, :10] = 77  # in the sky rows
    if dtype == np.int32:
        labels[1, 20:25], labels[50, :3] = 999, -4  # outside 0..255: unknown as well
    config = CostmapConfig(resolution=0.2, mount_z=CAM_HEIGHT, mount_pitch=CAM_PITCH, width_m=16.0, height_m=16.0,
                           origin_x=-2.0, origin_y=-8.0)
    classes = class_map_from_ontology(ONTOLOGY, unknown_category=unknown_category)
    result = build_costmap(depth, labels, k, config, classes)
    # every pixel of this image (column step 1 here)
    worked = _worked_labels(labels, *_worked_index(labels.shape, depth.shape, None, 1))
    assert result.unknown_label_pixels == classes.unknown_ids(worked) > 40
