"""Height-field terrain for the synthetic world: hills, mounds, ruts, ditches, drop-offs, water in basins.

Why: off road, "ground" is not a plane. Slopes, mounds, ruts, ditches and
drop-offs are what stop a vehicle, and a flat world teaches the depth model
a ground-plane prior. The terrain is one function ``z = height(x, y)`` in the
world frame (x forward along the road, y left, z up), built from parts whose
cost per point is a few numpy passes:

- ``incline`` and ``waves``: a tilted plane plus a few long cosine waves
  (hills); ``Terrain.max_slope`` bounds their rise with the mounds'.
- a raster of compact bumps, sampled bilinearly: mounds (positive) and
  basins (negative). A basin holds water up to a flat ``water_level``,
  kept below its rim, so water lies in depressions.
- ``trenches`` and ``drops``: profiles across a coordinate, either the
  lateral offset from the road centre (ruts, roadside ditches and
  drop-offs follow the road) or the signed distance to a straight line
  (a ditch or a drop-off across the way). Their walls are steep: these
  are the negative obstacles.

The same function gives the rendered depth (``cast_image``, ``cast_rays``),
the labels (``water_mask``, ``earth_mask``) and the ground-truth elevation
grid of a drive bag (``heights_along_z``), so they agree to the root
finder's tolerance.
Only numpy is needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from perception_core.errors import ConfigError

T_MAX_M = 500.0  # rays that meet no terrain within this range see sky
RASTER_RES_M = 0.1  # bump raster cell: mound/basin surfaces are bilinear on this grid
STEP_FLOOR_FRACTION = 0.02  # the marcher advances at least this fraction of t per step
STEP_FLOOR_M = 0.05
ROOT_TOLERANCE_M = 2e-4  # |z_ray - height| at an accepted hit
HEIGHT_STEP_M = 0.2  # downward search step of heights_along_z: thinner than any ridge the generator draws
# Points per pass of the per-point kernels: their temporaries stay in cache and are reused rather than
# freshly mapped pages (at 1280x1080 whole-image temporaries cost more in page faults than in arithmetic).
CHUNK = 1 << 15


def chunks(n: int, size: int | None = None) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` (default CHUNK, read at the call) covering range(n)."""
    size = CHUNK if size is None else size
    return (slice(s, min(s + size, n)) for s in range(0, n, size))


@dataclass(frozen=True)
class Road:
    """Centre line y = amplitude * sin(2 pi x / wavelength + phase) along +x, and the road width."""

    present: bool = True
    amplitude: float = 0.0
    wavelength: float = 100.0
    phase: float = 0.0
    width: float = 4.0

    def center(self, x: np.ndarray | float) -> np.ndarray | float:
        return self.amplitude * np.sin(np.float32(2.0 * np.pi / self.wavelength) * np.asarray(x) + np.float32(self.phase))

    def heading(self, x: float) -> float:
        slope = self.amplitude * 2.0 * math.pi / self.wavelength * math.cos(2.0 * math.pi * x / self.wavelength + self.phase)
        return math.atan(slope)

    def lateral(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Offset left of the centre line, measured along y (the coordinate the road features follow)."""
        return y - self.center(x)


@dataclass(frozen=True)
class Wave:
    """One hill component: ``amplitude * cos(kx * x + ky * y + phase)``."""

    amplitude: float
    kx: float
    ky: float
    phase: float

    @property
    def max_slope(self) -> float:
        return abs(self.amplitude) * math.hypot(self.kx, self.ky)


@dataclass(frozen=True)
class Bump:
    """A compact bump on an ellipse: ``height * (1 - r^2)^2`` for r < 1 (r = 1 on the ellipse).

    ``height`` > 0 is a mound, < 0 a basin; a basin with a finite
    ``water_level`` (world z) is filled with water up to that level.
    """

    x: float
    y: float
    a: float
    b: float
    angle: float
    height: float
    water_level: float = float("nan")

    @property
    def wet(self) -> bool:
        return math.isfinite(self.water_level)

    @property
    def max_slope(self) -> float:
        # max |d/ds (1 - s^2)^2| = 8 / (3 sqrt 3) at s = 1/sqrt 3, along the short axis
        return abs(self.height) * 1.5396 / min(self.a, self.b)


@dataclass(frozen=True)
class Trench:
    """A trench across a coordinate s (lateral offset from the road, or distance to a line).

    Depth profile of ``q = |s - offset| / half_width``: ``shape`` 'round' is
    ``depth * (1 - q^2)^2`` (wheel ruts), 'box' is ``depth * clip((1 - q) /
    wall, 0, 1)``, a flat bottom with straight walls over the outer ``wall``
    fraction (a ditch).
    """

    coord: str  # "lateral" | "line"
    offset: float
    half_width: float
    depth: float
    shape: str = "box"
    wall: float = 0.3
    normal: tuple[float, float] = (1.0, 0.0)  # line coordinate s = normal . (x, y) (coord == "line")
    mirrored: bool = False  # a pair at +-offset (wheel ruts): the profile of |s| - offset


@dataclass(frozen=True)
class Drop:
    """A drop-off: where ``side * s`` passes ``offset`` the ground falls ``drop`` metres, and stays down.

    The face is a smoothstep over ``width`` metres, so it is steep but
    continuous; ``side`` -1 puts the low ground on the negative side of s.
    """

    coord: str  # "lateral" | "line"
    offset: float
    width: float
    drop: float
    side: float = 1.0
    normal: tuple[float, float] = (1.0, 0.0)


def blend_corners(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, tx: np.ndarray,
                  ty: np.ndarray) -> np.ndarray:
    """Bilinear blend of a cell's corner values (a at (0, 0), b at (1, 0), c at (0, 1), d at (1, 1)) at (tx, ty).

    Works in place in a, b, c and d (no temporaries on these per-pixel paths); returns a.
    """
    b -= a
    b *= tx
    a += b  # the y = 0 edge
    d -= c
    d *= tx
    c += d  # the y = 1 edge
    c -= a
    c *= ty
    a += c
    return a


@dataclass
class BumpRaster:
    """Mounds and basins rasterised on a regular grid (world x, y), plus each cell's water level.

    Heights are sampled bilinearly (continuous surface); the water level is
    the cell's (flat water). Cells outside every bump are 0 / -inf, and the
    border ring is kept empty so that clamping to the grid is exact outside.
    ``occupied`` marks blocks of 2^BLOCK_SHIFT cells square that any bump or water
    touches (with a one-cell margin): points elsewhere skip the lookups.
    """

    x0: float
    y0: float
    res: float
    heights: np.ndarray  # float32 [ny, nx]
    water: np.ndarray  # float32 [ny, nx], -inf where dry
    occupied: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))  # [ceil(ny/B), ceil(nx/B)]

    BLOCK_SHIFT = 4  # blocks of 16 x 16 cells

    def __post_init__(self) -> None:
        ny, nx = self.heights.shape
        b = 1 << self.BLOCK_SHIFT
        used = (self.heights != 0) | np.isfinite(self.water)
        # A point in cell (i, j) reads corners (i..i+1, j..j+1): mark cells whose support touches a used cell.
        used[:-1, :] |= used[1:, :].copy()
        used[:, :-1] |= used[:, 1:].copy()
        pad = np.zeros((-(-ny // b) * b, -(-nx // b) * b), bool)
        pad[:ny, :nx] = used
        self.occupied = pad.reshape(pad.shape[0] // b, b, pad.shape[1] // b, b).any(axis=(1, 3))

    @classmethod
    def build(cls, bumps: list[Bump], res: float = RASTER_RES_M) -> BumpRaster | None:
        if not bumps:
            return None
        reach = [max(b.a, b.b) for b in bumps]
        x_lo = min(b.x - r for b, r in zip(bumps, reach, strict=True)) - 2 * res
        x_hi = max(b.x + r for b, r in zip(bumps, reach, strict=True)) + 2 * res
        y_lo = min(b.y - r for b, r in zip(bumps, reach, strict=True)) - 2 * res
        y_hi = max(b.y + r for b, r in zip(bumps, reach, strict=True)) + 2 * res
        nx = math.ceil((x_hi - x_lo) / res) + 1
        ny = math.ceil((y_hi - y_lo) / res) + 1
        heights = np.zeros((ny, nx), np.float32)
        water = np.full((ny, nx), -np.inf, np.float32)
        for bump, r in zip(bumps, reach, strict=True):
            i0, i1 = int((bump.x - r - x_lo) / res), math.ceil((bump.x + r - x_lo) / res) + 1
            j0, j1 = int((bump.y - r - y_lo) / res), math.ceil((bump.y + r - y_lo) / res) + 1
            gx = (x_lo + res * np.arange(i0, i1, dtype=np.float64))[None, :] - bump.x
            gy = (y_lo + res * np.arange(j0, j1, dtype=np.float64))[:, None] - bump.y
            ca, sa = math.cos(bump.angle), math.sin(bump.angle)
            u = (gx * ca + gy * sa) / bump.a
            v = (-gx * sa + gy * ca) / bump.b
            inside = np.clip(1.0 - (u * u + v * v), 0.0, None)
            heights[j0:j1, i0:i1] += (bump.height * inside * inside).astype(np.float32)
            if bump.wet:
                # Cover the footprint and one cell beyond, so that every cell a wet hit can use is set.
                footprint = (u * u + v * v) < (1.0 + 3.5 * res / min(bump.a, bump.b)) ** 2
                block = water[j0:j1, i0:i1]
                block[footprint] = np.maximum(block[footprint], np.float32(bump.water_level))
        return cls(float(x_lo), float(y_lo), float(res), heights, water)

    def sample(self, x: np.ndarray, y: np.ndarray, with_water: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(bilinear height, water level of the cell) at world points; water is None without ``with_water``."""
        shape = np.shape(x)
        heights = np.zeros(np.size(x), np.float32)
        water = np.full(np.size(x), -np.inf, np.float32) if with_water else None
        sel, bump, wet = self.sample_touched(x, y, with_water)
        heights[sel] = bump
        if water is not None:
            water[sel] = wet
        return heights.reshape(shape), (water.reshape(shape) if water is not None else None)

    def sample_touched(self, x: np.ndarray, y: np.ndarray, with_water: bool = True
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(flat indices of the points in occupied blocks, their bilinear height, their cell's water level).

        Points elsewhere have height 0 and no water. The water level is read at
        the cell's lower corner, so the wet footprint is rasterised a few cells
        wider than the basin.
        """
        x = np.asarray(x, np.float32).reshape(-1)
        y = np.asarray(y, np.float32).reshape(-1)
        ny, nx = self.heights.shape
        fx = x - np.float32(self.x0)
        fx *= 1.0 / self.res
        np.maximum(fx, 0.0, out=fx)
        np.minimum(fx, nx - 1.001, out=fx)
        fy = y - np.float32(self.y0)
        fy *= 1.0 / self.res
        np.maximum(fy, 0.0, out=fy)
        np.minimum(fy, ny - 1.001, out=fy)
        ix = fx.astype(np.int32)
        iy = fy.astype(np.int32)
        block = (iy >> self.BLOCK_SHIFT) * np.int32(self.occupied.shape[1])
        block += ix >> self.BLOCK_SHIFT
        sel = np.flatnonzero(self.occupied.ravel().take(block))
        if sel.size == 0:
            return sel, np.zeros(0, np.float32), (np.zeros(0, np.float32) if with_water else None)
        ix, iy = ix[sel], iy[sel]
        tx = fx[sel] - ix.astype(np.float32)
        ty = fy[sel] - iy.astype(np.float32)
        idx = iy * np.int32(nx) + ix
        flat = self.heights.ravel()
        a = flat.take(idx)
        b = flat.take(idx + 1)
        c = flat.take(idx + np.int32(nx))
        d = flat.take(idx + np.int32(nx + 1))
        return sel, blend_corners(a, b, c, d, tx, ty), (self.water.ravel().take(idx) if with_water else None)


@dataclass
class Terrain:
    """The height field and what the renderer and ground truth need from it. ``flat`` is z = 0."""

    flat: bool = True
    incline: tuple[float, float] = (0.0, 0.0)
    waves: tuple[Wave, ...] = ()
    road: Road = field(default_factory=Road)
    bumps: tuple[Bump, ...] = ()
    trenches: tuple[Trench, ...] = ()
    drops: tuple[Drop, ...] = ()
    raster: BumpRaster | None = None

    def __post_init__(self) -> None:
        if self.raster is None and self.bumps:
            self.raster = BumpRaster.build(list(self.bumps))

    # ---- bounds ---------------------------------------------------------------------------------

    @property
    def max_slope(self) -> float:
        """Bound on the rise per horizontal metre of everything but the steep negative features.

        Ditch and basin walls and drop-off faces are steeper; the ray marcher
        does not rely on the bound for them (past such a wall it is below the
        surface, which it detects).
        """
        # Mounds do not overlap (the scene builder keeps them apart), so one mound's slope adds at most.
        mound = max((b.max_slope for b in self.bumps if b.height > 0), default=0.0)
        return math.hypot(*self.incline) + sum(w.max_slope for w in self.waves) + mound

    def relief_bounds(self) -> tuple[float, float]:
        """(lo, hi) of ``height - incline plane`` over the whole world."""
        amp = sum(abs(w.amplitude) for w in self.waves)
        hi = amp + max([b.height for b in self.bumps if b.height > 0], default=0.0)
        lo = -amp + min([b.height for b in self.bumps if b.height < 0], default=0.0)
        lo -= sum(t.depth for t in self.trenches) + sum(d.drop for d in self.drops)
        return lo, hi

    # ---- the height function --------------------------------------------------------------------

    def _coordinate(self, kind: str, normal: tuple[float, float], x: np.ndarray, y: np.ndarray,
                    lateral: np.ndarray | None) -> np.ndarray:
        if kind == "lateral":
            return lateral if lateral is not None else self.road.lateral(x, y)
        return np.float32(normal[0]) * x + np.float32(normal[1]) * y

    def height(self, x: np.ndarray, y: np.ndarray, with_water: bool = True) -> np.ndarray:
        """Terrain (or water surface) height z at world points; float32 arrays of one shape."""
        shape = np.shape(x)
        x = np.asarray(x, np.float32).reshape(-1)
        y = np.asarray(y, np.float32).reshape(-1)
        if self.flat:
            return np.zeros(shape, np.float32)
        if x.size <= CHUNK:
            return self._height(x, y, with_water).reshape(shape)
        out = np.empty(x.size, np.float32)
        for part in chunks(x.size):
            out[part] = self._height(x[part], y[part], with_water)
        return out.reshape(shape)

    def _height(self, x: np.ndarray, y: np.ndarray, with_water: bool) -> np.ndarray:
        """``height`` of flat float32 arrays, all points in one pass."""
        h = np.float32(self.incline[0]) * x
        if self.incline[1]:
            h += np.float32(self.incline[1]) * y
        for wave in self.waves:
            arg = np.float32(wave.kx) * x
            arg += np.float32(wave.ky) * y
            arg += np.float32(wave.phase)
            np.cos(arg, out=arg)
            arg *= np.float32(wave.amplitude)
            h += arg
        lateral = self.road.lateral(x, y) if any(f.coord == "lateral" for f in (*self.trenches, *self.drops)) else None
        for trench in self.trenches:
            s = self._coordinate(trench.coord, trench.normal, x, y, lateral)
            q = np.abs(s) if trench.mirrored else s.copy()
            q -= np.float32(trench.offset)
            np.abs(q, out=q)
            q *= np.float32(1.0 / trench.half_width)
            if trench.shape == "round":
                q *= q
                np.subtract(np.float32(1.0), q, out=q)
                np.maximum(q, np.float32(0.0), out=q)
                q *= q
                q *= np.float32(trench.depth)
            else:
                q *= np.float32(-trench.depth / trench.wall)
                q += np.float32(trench.depth / trench.wall)
                np.minimum(q, np.float32(trench.depth), out=q)
                np.maximum(q, np.float32(0.0), out=q)
            h -= q
        for drop in self.drops:
            s = self._coordinate(drop.coord, drop.normal, x, y, lateral)
            q = s * np.float32(drop.side / drop.width)
            q -= np.float32(drop.offset / drop.width)
            np.maximum(q, np.float32(0.0), out=q)
            np.minimum(q, np.float32(1.0), out=q)
            r = np.float32(3.0 * drop.drop) - np.float32(2.0 * drop.drop) * q
            q *= q
            q *= r  # drop * smoothstep
            h -= q
        if self.raster is not None:
            sel, bumps, water = self.raster.sample_touched(x, y, with_water and self.wet)
            if sel.size:
                hs = h[sel]
                hs += bumps
                if water is not None:
                    np.maximum(hs, water, out=hs)
                h[sel] = hs
        return h

    @property
    def wet(self) -> bool:
        return any(b.wet for b in self.bumps)

    def water_mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True where the surface at (x, y) is water (a basin's water level above the dry ground)."""
        if self.flat or self.raster is None or not self.wet:
            return np.zeros(np.shape(x), bool)
        shape = np.shape(x)
        x, y = np.asarray(x, np.float32).reshape(-1), np.asarray(y, np.float32).reshape(-1)
        out = np.zeros(x.shape, bool)
        sel, _, water = self.raster.sample_touched(x, y)
        assert water is not None
        sel, water = sel[np.isfinite(water)], water[np.isfinite(water)]
        if sel.size:
            out[sel] = self.height(x[sel], y[sel], with_water=False) < water
        return out.reshape(shape)

    def earth_mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True on ditch floors and walls and on drop-off faces: bare earth (rough ground) whatever the cover."""
        out = np.zeros(np.shape(x), bool)
        if self.flat:
            return out
        x = np.asarray(x, np.float32)
        y = np.asarray(y, np.float32)
        lateral = self.road.lateral(x, y) if any(f.coord == "lateral" for f in (*self.trenches, *self.drops)) else None
        for trench in self.trenches:
            if trench.shape == "box":
                s = self._coordinate(trench.coord, trench.normal, x, y, lateral)
                s = np.abs(s) if trench.mirrored else s
                out |= np.abs(s - np.float32(trench.offset)) < np.float32(trench.half_width)
        for drop in self.drops:
            s = self._coordinate(drop.coord, drop.normal, x, y, lateral) * np.float32(drop.side)
            out |= (s > np.float32(drop.offset)) & (s < np.float32(drop.offset + drop.width))
        return out

    def normals(self, x: np.ndarray, y: np.ndarray, h: np.ndarray | None = None, eps: float = 0.02) -> np.ndarray:
        """Unit upward normals (N, 3) from forward differences of the height field."""
        x = np.asarray(x, np.float32)
        y = np.asarray(y, np.float32)
        if self.flat:
            n = np.zeros((x.size, 3), np.float32)
            n[:, 2] = 1.0
            return n
        h0 = self.height(x, y) if h is None else np.asarray(h, np.float32)
        gx = (self.height(x + np.float32(eps), y) - h0) / np.float32(eps)
        gy = (self.height(x, y + np.float32(eps)) - h0) / np.float32(eps)
        norm = np.sqrt(gx * gx + gy * gy + 1.0)
        return np.stack([-gx / norm, -gy / norm, 1.0 / norm], axis=1)

    # ---- ray casting ----------------------------------------------------------------------------

    def cast_rays(self, origin: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> np.ndarray:
        """Ray parameter t of the first terrain hit per ray (inf: none within T_MAX_M).

        Rays are ``origin + t * (dx, dy, dz)`` (any shape). A flat terrain is
        the plane z = 0 in closed form; otherwise :func:`march_rays`.
        """
        shape = np.shape(dx)
        if self.flat:
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.where(dz < -1e-6, np.float32(-origin[2]) / dz, np.float32(np.inf)).astype(np.float32)
            t[t > T_MAX_M] = np.inf
            return t
        t0, t1 = self.slab(origin, dx.ravel(), dy.ravel(), dz.ravel())
        return march_rays(self, origin, dx.ravel(), dy.ravel(), dz.ravel(), t0, t1).reshape(shape)

    def slab(self, origin: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per ray, the t interval in which it lies within the terrain's height range (empty: t0 >= t1)."""
        gx, gy = (np.float32(v) for v in self.incline)
        lo, hi = self.relief_bounds()
        z0 = np.float32(origin[2] - gx * origin[0] - gy * origin[1])
        dzr = dz - gx * dx - gy * dy  # the ray's rise relative to the incline plane
        with np.errstate(divide="ignore", invalid="ignore"):
            t_hi = (np.float32(hi) - z0) / dzr  # where the ray crosses the top of the relief
            t_lo = (np.float32(lo) - z0) / dzr
        down = dzr < 0
        t0 = np.where(down, t_hi, 0.0)
        t1 = np.where(down, t_lo, np.where(dzr > 0, t_hi, np.inf))
        if z0 > hi:  # camera above all terrain: rays going up or level never meet it
            t1 = np.where(down, t1, 0.0)
        t0 = np.maximum(t0, np.float32(0.05)).astype(np.float32)
        t1 = np.minimum(np.nan_to_num(t1, nan=0.0, posinf=np.inf), np.float32(T_MAX_M)).astype(np.float32)
        return t0, t1

    # ---- ground truth --------------------------------------------------------------------------

    def heights_along_z(self, world_base: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height z in a (tilted) frame of the topmost points (x, y, z) of that frame that lie on the surface.

        ``world_base`` is T_world_frame. Along the frame's z axis, ``f(z) = Z_w - height(X_w, Y_w)`` is
        stepped down in ``HEIGHT_STEP_M`` steps from above the terrain's highest possible point until it
        first goes below the ground, and that bracket is bisected 30 times. The topmost crossing is the
        ground seen from above: near a cliff face a tilted line crosses the terrain again below the brink.
        """
        x = np.asarray(x, np.float64).ravel()
        y = np.asarray(y, np.float64).ravel()
        rot, trans = world_base[:3, :3], world_base[:3, 3]

        def f(z: np.ndarray, pick: np.ndarray | slice = slice(None)) -> np.ndarray:
            px, py, pz = (rot[i, 0] * x[pick] + rot[i, 1] * y[pick] + rot[i, 2] * z + trans[i] for i in range(3))
            return pz - self.height(px.astype(np.float32), py.astype(np.float32)).astype(np.float64)

        lo_b, hi_b = self.relief_bounds()
        # Start above the highest the terrain can be near the line's point at z = 0 (the incline plane there plus
        # the relief's top), with room for the line's tilt; fall back to a far start where that is not above.
        wx, wy = (rot[i, 0] * x + rot[i, 1] * y + trans[i] for i in range(2))
        plane = self.incline[0] * wx + self.incline[1] * wy
        tilt = math.hypot(rot[0, 2], rot[1, 2]) / max(abs(rot[2, 2]), 1e-6)
        reach = hi_b - lo_b + 2.0
        top = (plane + hi_b + 1.0 + tilt * reach * math.hypot(*self.incline)
               - (rot[2, 0] * x + rot[2, 1] * y + trans[2])) / rot[2, 2]
        far = abs(lo_b) + abs(hi_b) + 60.0
        top = np.where(f(top) > 0, top, far)
        above = top.copy()
        active = np.arange(x.size)
        limit = top - 2.0 * far
        while active.size:
            step = above[active] - HEIGHT_STEP_M
            still_above = (f(step, active) > 0) & (step > limit[active])
            above[active[still_above]] = step[still_above]
            active = active[still_above]
        lo, hi = above - HEIGHT_STEP_M, above  # f(lo) <= 0 < f(hi)
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            below = f(mid) <= 0
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def to_dict(self) -> dict[str, Any]:
        """Plain parameters (YAML/JSON): enough to rebuild the exact height function."""
        from dataclasses import asdict

        return {
            "flat": self.flat,
            "incline": list(self.incline),
            "waves": [asdict(w) for w in self.waves],
            "road": asdict(self.road),
            "bumps": [{**asdict(b), "water_level": b.water_level if b.wet else None} for b in self.bumps],
            "trenches": [{**asdict(t), "normal": list(t.normal)} for t in self.trenches],
            "drops": [{**asdict(d), "normal": list(d.normal)} for d in self.drops],
            "raster_resolution_m": RASTER_RES_M,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Terrain:
        try:
            bumps = tuple(Bump(**{**b, "water_level": float("nan") if b.get("water_level") is None else b["water_level"]})
                          for b in data.get("bumps", []))
            return cls(
                flat=bool(data["flat"]), incline=tuple(data.get("incline", (0.0, 0.0))),
                waves=tuple(Wave(**w) for w in data.get("waves", [])), road=Road(**data.get("road", {})), bumps=bumps,
                trenches=tuple(Trench(**{**t, "normal": tuple(t["normal"])}) for t in data.get("trenches", [])),
                drops=tuple(Drop(**{**d, "normal": tuple(d["normal"])}) for d in data.get("drops", [])),
            )
        except (KeyError, TypeError) as err:
            raise ConfigError(f"terrain parameters are incomplete or unknown: {err}") from err


# --------------------------------------------------------------------------- ray marching


class _Rays:
    """Rays ``origin + t * (dx, dy, dz)`` and the gap ``z(t) - height(x(t), y(t))`` along them (> 0 above ground)."""

    def __init__(self, terrain: Terrain, origin: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> None:
        self.terrain = terrain
        self.ox, self.oy, self.oz = (np.float32(v) for v in origin)
        self.dx, self.dy, self.dz = dx, dy, dz

    def gap(self, rays: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The gap at ``t`` along the rays of index ``rays``."""
        if rays.size <= CHUNK:
            return self.gap_along(self.dx[rays], self.dy[rays], self.dz[rays], t)
        parts = chunks(rays.size)
        first = next(parts)
        head = self.gap(rays[first], t[first])
        out = np.empty(rays.size, head.dtype)
        out[first] = head
        for part in parts:
            out[part] = self.gap(rays[part], t[part])
        return out

    def gap_along(self, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The gap at ``t`` along rays of directions (dx, dy, dz) already gathered (loops that carry them)."""
        x = dx * t
        x += self.ox
        y = dy * t
        y += self.oy
        z = dz * t
        z += self.oz
        z -= self.terrain.height(x, y)
        return z


def march_rays(
    terrain: Terrain, origin: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray,
    t_start: np.ndarray, t_stop: np.ndarray, safe_steps: int = 16, chunk: int = 24,
) -> np.ndarray:
    """First crossing of the height field along each ray in [t_start, t_stop] (inf where none).

    First up to ``safe_steps`` steps as long as the slope bound allows
    without meeting the hills and mounds (``gap / (max_slope * horizontal
    speed - dz)``), each at least ``STEP_FLOOR_FRACTION * t``; rays still
    open then (grazing the ground) are sampled ``chunk`` points at a time at
    that floor spacing. A sample below the surface brackets the crossing,
    which Illinois regula falsi refines to ROOT_TOLERANCE_M. A surface
    thinner along the ray than the floor spacing (a crest grazed at a
    silhouette) can be stepped over.
    """
    if dx.size > CHUNK:  # rays are independent: a cache-sized batch at a time
        out = np.empty(dx.size, np.float32)
        for part in chunks(dx.size):
            out[part] = march_rays(terrain, origin, dx[part], dy[part], dz[part], t_start[part], t_stop[part],
                                   safe_steps, chunk)
        return out
    rays_ = _Rays(terrain, origin, dx, dy, dz)
    result = np.full(dx.size, np.inf, np.float32)
    slope = np.float32(terrain.max_slope)
    idx = np.flatnonzero(t_start < t_stop)
    if idx.size == 0:
        return result
    t = t_start[idx].astype(np.float32)
    f = rays_.gap(idx, t)
    inside = f <= 0  # starts at or below the surface: the hit is the start itself
    result[idx[inside]] = t[inside]
    idx, t, f = idx[~inside], t[~inside], f[~inside]
    stop = t_stop[idx]
    rx, ry, rz = dx[idx], dy[idx], dz[idx]  # the open rays' directions, carried along with them
    close = slope * np.sqrt(rx * rx + ry * ry) - rz  # fastest the gap can shrink per unit t
    brackets: list[tuple[np.ndarray, ...]] = []
    for _ in range(safe_steps):
        if idx.size == 0:
            break
        step = np.full(idx.shape, np.float32(T_MAX_M))
        np.divide(f, close, out=step, where=close > 0)
        np.maximum(step, t * np.float32(STEP_FLOOR_FRACTION) + np.float32(STEP_FLOOR_M), out=step)
        t_new = t + step
        np.minimum(t_new, stop, out=t_new)
        f_new = rays_.gap_along(rx, ry, rz, t_new)
        crossed = f_new <= 0
        if crossed.any():
            brackets.append((idx[crossed], t[crossed], t_new[crossed], f[crossed], f_new[crossed]))
        going = ~crossed
        going &= t_new < stop
        idx, t, f, stop, close = idx[going], t_new[going], f_new[going], stop[going], close[going]
        rx, ry, rz = rx[going], ry[going], rz[going]
    # Grazing rays: sample ``chunk`` points per ray at once at the floor spacing (geometric in t).
    ratio = np.float32(1.0 + STEP_FLOOR_FRACTION)
    ramp = ratio ** np.arange(1, chunk + 1, dtype=np.float32)
    while idx.size:
        ts = (t + np.float32(STEP_FLOOR_M / STEP_FLOOR_FRACTION))[:, None] * ramp[None, :]
        ts -= np.float32(STEP_FLOOR_M / STEP_FLOOR_FRACTION)
        np.minimum(ts, stop[:, None], out=ts)
        fs = rays_.gap(np.repeat(idx, chunk), ts.ravel()).reshape(ts.shape)
        below = fs <= 0
        crossed = below.any(axis=1)
        if crossed.any():
            k = np.argmax(below[crossed], axis=1)
            rows = np.flatnonzero(crossed)
            prev_t = np.where(k > 0, ts[rows, k - 1], t[rows])
            prev_f = np.where(k > 0, fs[rows, k - 1], f[rows])
            brackets.append((idx[rows], prev_t, ts[rows, k], prev_f, fs[rows, k]))
        going = ~crossed & (ts[:, -1] < stop)
        idx, t, f, stop = idx[going], ts[going, -1], fs[going, -1], stop[going]
    if brackets:
        rays = np.concatenate([b[0] for b in brackets])
        lo, hi, f_lo, f_hi = (np.concatenate([b[k] for b in brackets]) for k in range(1, 5))
        result[rays] = refine_crossings(rays_, rays, lo, hi, f_lo, f_hi)
    return result


def refine_crossings(rays_: _Rays, rays: np.ndarray, lo: np.ndarray, hi: np.ndarray, f_lo: np.ndarray,
                     f_hi: np.ndarray, iterations: int = 16) -> np.ndarray:
    """Illinois regula falsi on brackets with gap(lo) > 0 >= gap(hi); t with |gap| <= ROOT_TOLERANCE_M.

    Rays still open after ``iterations`` get their bracket's lower end.
    """
    if rays.size > CHUNK:  # rays are independent: a cache-sized batch at a time
        out = np.empty(rays.size, lo.dtype)
        for part in chunks(rays.size):
            out[part] = refine_crossings(rays_, rays[part], lo[part], hi[part], f_lo[part], f_hi[part], iterations)
        return out
    out = lo.copy()
    open_ = np.arange(rays.size)  # the open brackets' positions in out; the arrays below hold only them
    rx, ry, rz = rays_.dx[rays], rays_.dy[rays], rays_.dz[rays]
    kept = np.zeros(rays.size, np.int8)  # +1: lo was replaced last time (hi kept), -1: hi replaced (lo kept)
    half = np.float32(0.5)
    for _ in range(iterations):
        if open_.size == 0:
            break
        t = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        np.minimum(np.maximum(t, lo), hi, out=t)
        ft = rays_.gap_along(rx, ry, rz, t)
        done = np.abs(ft) <= np.float32(ROOT_TOLERANCE_M)
        out[open_[done]] = t[done]
        above = ft > 0
        lo, f_lo = np.where(above, t, lo), np.where(above, ft, f_lo)
        hi, f_hi = np.where(above, hi, t), np.where(above, f_hi, ft)
        # Illinois: an end kept twice in a row has its gap halved, so the secant moves towards it.
        f_hi[above & (kept == 1)] *= half
        f_lo[~above & (kept == -1)] *= half
        kept = np.where(above, np.int8(1), np.int8(-1))
        going = ~done
        open_, rx, ry, rz, lo, hi, f_lo, f_hi, kept = (a[going] for a in (open_, rx, ry, rz, lo, hi, f_lo, f_hi, kept))
    return out


# --------------------------------------------------------------------------- coarse-to-fine image casting


@dataclass
class TerrainImage:
    """Terrain hits of an image's rays and what shading needs from the coarse pass."""

    t: np.ndarray  # [H, W] ray parameter (= depth) of the first terrain hit, inf = none
    stride: int  # coarse rays are every stride-th row and column, plus the last (coarse_grid)
    smooth: np.ndarray  # [H, W] bool: the four coarse rays around the pixel hit one continuous surface

    @property
    def coarse(self) -> tuple[np.ndarray, np.ndarray]:
        """np.ix_ index of the coarse rays in the image."""
        h, w = self.t.shape
        return np.ix_(coarse_grid(h, self.stride), coarse_grid(w, self.stride))


def coarse_grid(n: int, stride: int) -> np.ndarray:
    """Coarse ray positions along an image axis of ``n`` pixels: every ``stride``-th, and the last."""
    return np.unique(np.r_[np.arange(0, n, stride), n - 1])


def cast_image(terrain: Terrain, origin: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray,
               stride: int = 4) -> TerrainImage:
    """Terrain hits for an image's rays [H, W]: every ``stride``-th ray marched, the rest bracketed by them.

    Where the coarse rays around a pixel (its 2x2 coarse cell and their
    neighbours) all hit within 25% of each other, the surface there is one
    continuous sheet: the pixel's crossing is bracketed by 0.92x their
    nearest and 1.08x their farthest hit and refined directly. Where they
    all miss, the pixel is sky. Elsewhere (silhouettes, the skyline) and
    where the bracket fails, the pixel is marched from 0.9x the nearest
    coarse hit, or from its own slab entry. A terrain feature narrower than
    ~``2 * stride`` pixels that no coarse neighbour sees can be missed.
    """
    import cv2

    h, w = dx.shape
    rows, cols = coarse_grid(h, stride), coarse_grid(w, stride)
    if terrain.flat:
        t = terrain.cast_rays(origin, dx, dy, dz)
        return TerrainImage(t, stride, np.isfinite(t))
    sub = np.ix_(rows, cols)
    coarse = terrain.cast_rays(origin, np.ascontiguousarray(dx[sub]), np.ascontiguousarray(dy[sub]),
                               np.ascontiguousarray(dz[sub]))
    kernel = np.ones((3, 3), np.uint8)
    finite = np.isfinite(coarse)
    missing = np.float32(1e9)
    near_c = cv2.erode(np.where(finite, coarse, missing).astype(np.float32), kernel)
    far_c = cv2.dilate(np.where(finite, coarse, missing).astype(np.float32), kernel)
    any_hit_c = cv2.dilate(finite.astype(np.uint8), kernel) > 0
    cell_r = np.minimum(np.searchsorted(rows, np.arange(h), side="right") - 1, rows.size - 2)
    cell_c = np.minimum(np.searchsorted(cols, np.arange(w), side="right") - 1, cols.size - 2)
    # Each coarse cell's value over its pixels (cell indices are sorted: repeat each by its pixel count).
    per_r, per_c = np.bincount(cell_r, minlength=rows.size - 1), np.bincount(cell_c, minlength=cols.size - 1)

    def spread(cells: np.ndarray) -> np.ndarray:
        return cells[: rows.size - 1, : cols.size - 1].repeat(per_r, axis=0).repeat(per_c, axis=1)

    near, far, any_hit = spread(near_c).ravel(), spread(far_c).ravel(), spread(any_hit_c).ravel()
    # The four coarse rays at the corners of the pixel's cell: one continuous surface when all hit within 25%.
    corners = np.stack([coarse[:-1, :-1], coarse[1:, :-1], coarse[:-1, 1:], coarse[1:, 1:]])
    with np.errstate(invalid="ignore"):
        cell_smooth = np.isfinite(corners).all(axis=0) & (corners.max(axis=0) < 1.25 * corners.min(axis=0))
    fx, fy, fz = dx.ravel(), dy.ravel(), dz.ravel()
    rays_ = _Rays(terrain, origin, fx, fy, fz)
    t = np.full(fx.size, np.inf, np.float32)
    fine = np.ones((h, w), bool)  # the coarse rays' pixels take the coarse hits: not cast again
    fine[sub] = False
    fine = fine.ravel()
    bracketed = np.flatnonzero((far < missing) & (far < near * np.float32(1.25)) & fine)
    # First a tight bracket around the coarse hits interpolated to the pixel, then the cell's whole span.
    map_x, map_y = _coarse_maps(h, w, stride)
    guess = cv2.remap(np.where(finite, coarse, 0.0).astype(np.float32), map_x, map_y, cv2.INTER_LINEAR).ravel()[bracketed]
    span = (np.minimum(guess * np.float32(0.985), near[bracketed] * np.float32(0.92)),
            np.maximum(guess * np.float32(1.015), far[bracketed] * np.float32(1.08)))
    done = np.zeros(bracketed.size, bool)
    for part in chunks(bracketed.size):  # rays are independent: a cache-sized batch at a time
        part_rays, part_guess, part_done = bracketed[part], guess[part], done[part]
        for lo, hi in ((part_guess * np.float32(0.985), part_guess * np.float32(1.015)), (span[0][part], span[1][part])):
            todo = np.flatnonzero(~part_done)
            rays = part_rays[todo]
            lo, hi = lo[todo], hi[todo]
            f_lo, f_hi = rays_.gap(rays, lo), rays_.gap(rays, hi)
            ok = (f_lo > 0) & (f_hi <= 0)
            t[rays[ok]] = refine_crossings(rays_, rays[ok], lo[ok], hi[ok], f_lo[ok], f_hi[ok])
            part_done[todo[ok]] = True
    rest = any_hit & fine
    rest[bracketed[done]] = False
    rest = np.flatnonzero(rest)
    t0, t1 = terrain.slab(origin, fx[rest], fy[rest], fz[rest])
    seeded = near[rest] < missing
    start = np.where(seeded, np.maximum(t0, near[rest] * np.float32(0.9)), t0).astype(np.float32)
    t_rest = march_rays(terrain, origin, fx[rest], fy[rest], fz[rest], start, t1)
    # A seeded ray that starts at or below the surface meets something nearer than its neighbours:
    # march it again from its own slab entry.
    again = seeded & (t_rest == start) & (start < t1) & (start > t0)
    if again.any():
        sel = rest[again]
        t_rest[again] = march_rays(terrain, origin, fx[sel], fy[sel], fz[sel], t0[again], t1[again])
    t[rest] = t_rest
    t = t.reshape(h, w)
    t[sub] = coarse
    return TerrainImage(t, stride, spread(cell_smooth))


@lru_cache(maxsize=4)
def _coarse_maps(h: int, w: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps from full-image pixels to fractional coarse-grid coordinates (see cast_image's grid)."""
    def axis(n: int) -> np.ndarray:
        grid = coarse_grid(n, stride)
        cell = np.minimum(np.searchsorted(grid, np.arange(n), side="right") - 1, grid.size - 2)
        return (cell + (np.arange(n) - grid[cell]) / (grid[cell + 1] - grid[cell])).astype(np.float32)

    map_y, map_x = np.meshgrid(axis(h), axis(w), indexing="ij")
    return np.ascontiguousarray(map_x), np.ascontiguousarray(map_y)


def image_normals(terrain: Terrain, image: TerrainImage, origin: np.ndarray, dx: np.ndarray, dy: np.ndarray,
                  dz: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Unit terrain normals (N, 3) at the terrain hits of ``pixels`` (flat indices into the image).

    Where the pixel's coarse cell is smooth, the normal is interpolated from
    finite-difference normals at the cell's four coarse hits; elsewhere it is
    a finite-difference normal at the pixel's own hit.
    """
    import cv2

    out = np.empty((pixels.size, 3), np.float32)
    if terrain.flat:
        out[:] = (0.0, 0.0, 1.0)
        return out
    h, w = image.t.shape
    sub = image.coarse
    coarse_t = image.t[sub]
    hit = np.isfinite(coarse_t)
    coarse_n = np.zeros((*coarse_t.shape, 3), np.float32)
    ct = coarse_t[hit]
    coarse_n[hit] = terrain.normals(np.float32(origin[0]) + ct * dx[sub][hit], np.float32(origin[1]) + ct * dy[sub][hit],
                                    np.float32(origin[2]) + ct * dz[sub][hit])
    map_x, map_y = _coarse_maps(h, w, image.stride)
    dense = cv2.remap(coarse_n, map_x, map_y, cv2.INTER_LINEAR).reshape(-1, 3)
    smooth = image.smooth.ravel()[pixels]
    # Every pixel gets the interpolated normal, a cache-sized batch at a time (no masked gathers and stores);
    # the rough ones are overwritten below, so their values here (0/0 where the coarse rays missed) do not matter.
    with np.errstate(invalid="ignore", divide="ignore"):
        for part in chunks(pixels.size):
            n = dense.take(pixels[part], axis=0)
            norm = n[:, 0] * n[:, 0]  # |n| summed in np.linalg.norm's order, without its reduction over 3-long rows
            norm += n[:, 1] * n[:, 1]
            norm += n[:, 2] * n[:, 2]
            np.sqrt(norm, out=norm)
            n /= norm[:, None]
            out[part] = n
    rough = pixels[~smooth]
    tr = image.t.ravel()[rough]
    out[~smooth] = terrain.normals(np.float32(origin[0]) + tr * dx.ravel()[rough],
                                   np.float32(origin[1]) + tr * dy.ravel()[rough],
                                   np.float32(origin[2]) + tr * dz.ravel()[rough])
    return out
