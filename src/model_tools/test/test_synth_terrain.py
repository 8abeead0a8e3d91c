"""Terrain of the synthetic world: the height function's parts against closed forms, and ray casting against it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model_tools.data.synth import build_scene, frame_seed
from model_tools.data.synth_terrain import (
    ROOT_TOLERANCE_M,
    Bump,
    BumpRaster,
    Drop,
    Road,
    Terrain,
    Trench,
    Wave,
    cast_image,
    march_rays,
)
from perception_core.geometry import pose_matrix

STRAIGHT = Road(present=True, amplitude=0.0, width=4.0)


def _terrain(**parts: object) -> Terrain:
    return Terrain(flat=False, road=STRAIGHT, **parts)  # type: ignore[arg-type]


def _xy(*points: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    arr = np.array(points, np.float32)
    return arr[:, 0], arr[:, 1]


def test_hills_and_incline_follow_their_formula_and_slope_bound() -> None:
    terrain = _terrain(incline=(0.1, -0.05), waves=(Wave(2.0, 0.1, 0.05, 0.3), Wave(0.5, -0.2, 0.3, 1.0)))
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-100, 100, 5000).astype(np.float32), rng.uniform(-100, 100, 5000).astype(np.float32)
    want = 0.1 * x - 0.05 * y + 2.0 * np.cos(0.1 * x + 0.05 * y + 0.3) + 0.5 * np.cos(-0.2 * x + 0.3 * y + 1.0)
    np.testing.assert_allclose(terrain.height(x, y), want, atol=2e-5)
    # The bound the ray marcher relies on holds everywhere: |grad h| <= max_slope.
    n = terrain.normals(x, y, eps=1e-3)
    slope = np.sqrt(1.0 / n[:, 2] ** 2 - 1.0)
    assert slope.max() <= terrain.max_slope * 1.001
    assert terrain.max_slope == pytest.approx(math.hypot(0.1, -0.05) + 2.0 * math.hypot(0.1, 0.05)
                                              + 0.5 * math.hypot(-0.2, 0.3))


def test_trench_and_drop_profiles() -> None:
    ditch = Trench("lateral", offset=5.0, half_width=1.0, depth=1.2, shape="box", wall=0.25)
    ruts = Trench("lateral", offset=0.8, half_width=0.2, depth=0.1, shape="round", mirrored=True)
    cliff = Drop("line", offset=30.0, width=0.5, drop=6.0, normal=(1.0, 0.0))
    terrain = _terrain(trenches=(ditch, ruts), drops=(cliff,))
    x, y = _xy((10, 5.0), (10, 5.5), (10, 5.9), (10, 6.1), (10, 0.8), (10, -0.8), (10, 0.9), (10, 2.0),
               (29.9, 2.0), (30.25, 2.0), (31.0, 2.0))
    h = terrain.height(x, y)
    # ditch: flat floor over the inner 75 %, a straight wall over the outer 25 %, nothing beyond
    np.testing.assert_allclose(h[:4], [-1.2, -1.2, -1.2 * 0.4, 0.0], atol=1e-5)
    # ruts at +-0.8 m: full depth at the centre, (1 - q^2)^2 at q = 0.5
    np.testing.assert_allclose(h[4:7], [-0.1, -0.1, -0.1 * 0.75**2], atol=1e-5)
    assert h[7] == 0.0
    # drop-off: smoothstep over 0.5 m from x = 30, the full 6 m beyond
    np.testing.assert_allclose(h[8:], [0.0, -3.0, -6.0], atol=1e-5)
    earth = terrain.earth_mask(x, y)
    assert earth.tolist() == [True, True, True, False, False, False, False, False, False, True, False]


def test_bumps_raster_exactly_and_the_occupancy_gate_skips_only_empty_blocks() -> None:
    mound = Bump(10.0, 3.0, a=3.0, b=2.0, angle=0.4, height=0.8)
    raster = BumpRaster.build([mound])
    assert raster is not None
    # At a grid node the bilinear surface is the bump formula itself.
    i, j = round((10.6 - raster.x0) / raster.res), round((3.3 - raster.y0) / raster.res)
    gx, gy = raster.x0 + i * raster.res, raster.y0 + j * raster.res
    ca, sa = math.cos(0.4), math.sin(0.4)
    u = ((gx - 10) * ca + (gy - 3) * sa) / 3.0
    v = (-(gx - 10) * sa + (gy - 3) * ca) / 2.0
    want = 0.8 * max(1.0 - u * u - v * v, 0.0) ** 2
    got, _ = raster.sample(np.array([gx], np.float32), np.array([gy], np.float32))
    assert got[0] == pytest.approx(want, abs=1e-5) and want > 0.1
    # The gate: sampling with every block marked occupied gives the same heights everywhere.
    rng = np.random.default_rng(1)
    x = rng.uniform(raster.x0 - 2, raster.x0 + 2 + raster.res * raster.heights.shape[1], 50000).astype(np.float32)
    y = rng.uniform(raster.y0 - 2, raster.y0 + 2 + raster.res * raster.heights.shape[0], 50000).astype(np.float32)
    full = BumpRaster(raster.x0, raster.y0, raster.res, raster.heights, raster.water)
    full.occupied[:] = True
    np.testing.assert_array_equal(raster.sample(x, y)[0], full.sample(x, y)[0])


def test_water_fills_a_basin_flat_up_to_its_level_and_stays_inside_it() -> None:
    basin = Bump(20.0, -6.0, a=2.0, b=1.5, angle=0.0, height=-0.4, water_level=-0.15)
    terrain = _terrain(bumps=(basin,))
    x, y = _xy((20.0, -6.0), (20.8, -6.0), (21.6, -6.0), (23.0, -6.0))
    h, dry = terrain.height(x, y), terrain.height(x, y, with_water=False)
    np.testing.assert_allclose(dry[:2], [-0.4, -0.4 * (1 - 0.16) ** 2], atol=2e-3)
    np.testing.assert_allclose(h[:2], [-0.15, -0.15], atol=1e-6)  # flat water over the deep part
    assert h[2] == pytest.approx(dry[2], abs=1e-6) and dry[2] > -0.15  # shallow rim: dry ground
    assert terrain.water_mask(x, y).tolist() == [True, True, False, False]


def test_scene_basins_never_spill_and_mounds_never_overlap() -> None:
    for i in range(6):
        terrain = build_scene(frame_seed(2, i)).terrain
        for k, bump in enumerate(terrain.bumps):
            if bump.wet:  # the level lies below the whole rim of its basin
                angles = np.linspace(0, 2 * np.pi, 360, endpoint=False)
                ca, sa = math.cos(bump.angle), math.sin(bump.angle)
                u, v = bump.a * np.cos(angles), bump.b * np.sin(angles)
                rim = terrain.height((bump.x + u * ca - v * sa).astype(np.float32),
                                     (bump.y + u * sa + v * ca).astype(np.float32), with_water=False)
                assert rim.min() > bump.water_level - 0.02, (i, k)
            for other in terrain.bumps[k + 1:]:
                assert math.hypot(bump.x - other.x, bump.y - other.y) >= max(bump.a, bump.b) + max(other.a, other.b)


def test_ray_casting_finds_the_first_crossing_of_the_surface() -> None:
    """Oracle: dense sampling along each ray (1 cm) finds where it first goes below the terrain."""
    terrain = build_scene(frame_seed(5, 3)).terrain
    rng = np.random.default_rng(3)
    n = 300
    origin = np.array([0.0, 0.0, float(terrain.height(np.zeros(1, np.float32), np.zeros(1, np.float32))[0]) + 1.6])
    yaw = rng.uniform(-0.6, 0.6, n)
    down = rng.uniform(0.02, 0.5, n)  # from grazing to steep
    d = np.stack([np.cos(yaw), np.sin(yaw), -down]).astype(np.float32)
    t0, t1 = terrain.slab(origin, d[0], d[1], d[2])
    t = march_rays(terrain, origin, d[0], d[1], d[2], t0, t1)
    hit = np.isfinite(t)
    assert hit.mean() > 0.6
    for k in np.flatnonzero(hit):
        ts = np.arange(0.05, t[k] + 0.5, 0.01, dtype=np.float32)
        gap = origin[2] + ts * d[2, k] - terrain.height(origin[0] + ts * d[0, k], origin[1] + ts * d[1, k])
        first = ts[np.argmax(gap <= 0)]
        assert abs(first - t[k]) <= 0.011, (k, first, t[k])
    # Each hit lies on the surface to the root tolerance.
    p = origin[:, None] + t[hit] * d[:, hit]
    np.testing.assert_allclose(p[2], terrain.height(p[0].astype(np.float32), p[1].astype(np.float32)),
                               atol=ROOT_TOLERANCE_M * 1.01)


def test_coarse_to_fine_image_casting_equals_marching_every_ray() -> None:
    terrain = build_scene(frame_seed(1, 4)).terrain
    h, w = 60, 80
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    rot = pose_matrix(0, 0, 0, 0, math.radians(8), 0.2)[:3, :3] @ np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0.0]])
    rays = np.stack([(u - w / 2) / 50.0, (v - h / 2) / 50.0, np.ones_like(u)], axis=-1) @ rot.T.astype(np.float32)
    dx, dy, dz = (np.ascontiguousarray(rays[..., i]) for i in range(3))
    origin = np.array([0.0, 0.0, float(terrain.height(np.zeros(1, np.float32), np.zeros(1, np.float32))[0]) + 1.4])
    image = cast_image(terrain, origin, dx, dy, dz).t
    t0, t1 = terrain.slab(origin, dx.ravel(), dy.ravel(), dz.ravel())
    every = march_rays(terrain, origin, dx.ravel(), dy.ravel(), dz.ravel(), t0, t1).reshape(h, w)
    # Both may step over a crossing shorter along the ray than the step floor (2 % of t: a crest grazed at a
    # silhouette), so they agree on all but a few such pixels ...
    with np.errstate(invalid="ignore"):  # inf - inf where both see sky
        same = (np.isfinite(image) == np.isfinite(every)) & ~(np.abs(image - every) > 2e-3 * every)
    assert same.mean() > 0.995
    # ... and every hit either one reports is a point of the surface.
    for t in (image, every):
        hit = np.isfinite(t)
        p = origin[:, None, None] + t * np.stack([dx, dy, dz])
        np.testing.assert_allclose(p[2][hit], terrain.height(p[0][hit].astype(np.float32), p[1][hit].astype(np.float32)),
                                   atol=ROOT_TOLERANCE_M * 1.01)


def test_heights_along_a_tilted_frames_z_axis_lie_on_the_surface() -> None:
    terrain = build_scene(frame_seed(0, 2)).terrain
    world_base = pose_matrix(3.0, 1.0, 0.5, 0.1, -0.15, 0.4)
    gx, gy = np.meshgrid(np.linspace(-5, 15, 21), np.linspace(-10, 10, 21))
    z = terrain.heights_along_z(world_base, gx, gy)
    p = world_base[:3, :3] @ np.stack([gx.ravel(), gy.ravel(), z]) + world_base[:3, 3:4]
    np.testing.assert_allclose(p[2], terrain.height(p[0].astype(np.float32), p[1].astype(np.float32)), atol=1e-4)
    flat = Terrain(flat=True)
    np.testing.assert_allclose(flat.heights_along_z(pose_matrix(0, 0, 0.7, 0, 0, 0), gx, gy), -0.7, atol=1e-9)


def test_heights_along_z_take_the_top_of_a_cliff_where_a_tilted_line_crosses_it_twice() -> None:
    """A 10 m drop-off at x = 4 (a steep smoothstep face), along a z axis pitched by -0.1 rad (leaning towards
    the cliff as it goes down): lines that meet the upper ground before the face also cross the face and the
    low ground below it. The ground seen from above is the upper one (a plain bisection over the whole
    height range returned the low crossing for 123 of these 903 lines)."""
    cliff = Terrain(flat=False, drops=(Drop("line", 4.0, 0.2, 10.0, normal=(1.0, 0.0)),))
    world_base = pose_matrix(0.0, 0.0, 1.0, 0.0, -0.1, 0.0)
    gx, gy = np.meshgrid(np.linspace(2.0, 5.0, 301), np.linspace(-1.0, 1.0, 3))
    z = cliff.heights_along_z(world_base, gx, gy)
    rot, trans = world_base[:3, :3], world_base[:3, 3]
    p = rot @ np.stack([gx.ravel(), gy.ravel(), z]) + trans[:, None]
    np.testing.assert_allclose(p[2], cliff.height(p[0].astype(np.float32), p[1].astype(np.float32)), atol=1e-4)
    # Where the line reaches the upper ground's level (world z = 0) before the face, that is its answer.
    z_top = -(rot[2, 0] * gx.ravel() + rot[2, 1] * gy.ravel() + trans[2]) / rot[2, 2]
    x_top = rot[0, 0] * gx.ravel() + rot[0, 1] * gy.ravel() + rot[0, 2] * z_top + trans[0]
    meets_top = x_top < 3.8
    assert meets_top.sum() > 100 and (~meets_top).sum() > 100
    assert (p[2][meets_top] > -0.01).all()


def test_terrain_parameters_round_trip_to_the_same_heights() -> None:
    terrain = build_scene(frame_seed(4, 1)).terrain
    again = Terrain.from_dict(terrain.to_dict())
    rng = np.random.default_rng(2)
    x, y = rng.uniform(-10, 120, 20000).astype(np.float32), rng.uniform(-40, 40, 20000).astype(np.float32)
    np.testing.assert_array_equal(again.height(x, y), terrain.height(x, y))
