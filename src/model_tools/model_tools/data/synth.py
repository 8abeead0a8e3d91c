"""Procedural off-road scenes rendered by vectorised ray casting, with exact depth and labels.

Why: the depth and segmentation models need pixel-exact metric depth and
labels in the vehicle's own camera geometry, for many cameras, on ground
that is not flat; geometry tests need a scene whose depth is known
analytically. A calibrated pinhole camera on a vehicle casts one ray per
pixel; rays meet a height-field terrain (``synth_terrain``: hills, mounds,
ruts, ditches, drop-offs, water in basins) and analytic primitives
(ellipsoids, vertical cylinders, yawed boxes) in closed form or by a
bracketed root search, with numpy over whole images or a primitive's
projected bounding box (no per-pixel Python loop).

Conventions:
- World and base_link: x forward, y left, z up (REP 103); base_link's
  origin is on the ground under the vehicle (the mean height of its track
  contact points), so the camera height above flat ground is the mount z.
- Camera optical frame: x right, y down, z forward (REP 103 ``_optical``).
- depth: z along the optical axis in metres, float32, 0 = invalid (sky,
  beyond MAX_DEPTH_M); label: uint8 ontology ids.

Only numpy, cv2 and yaml are needed here (the GPU box has no ROS or rosbags).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np

from model_tools.data.synth_terrain import (
    CHUNK,
    Bump,
    Drop,
    Road,
    Terrain,
    Trench,
    Wave,
    blend_corners,
    cast_image,
    chunks,
    image_normals,
)
from perception_core.errors import ConfigError
from perception_core.geometry import camera_optical_pose, pose_matrix
from perception_core.ontology import Ontology, load_ontology

MAX_DEPTH_M = 250.0  # KITTI PNG16 tops out at 65535/256 = 256 m; farther ground is rendered but has invalid depth
NEAR_M = 0.05
_SPLIT_SALT = {"train": 0, "val": 1, "test": 2}
_CAMERA_SALT = 0xCA3E7A
# Ontology class names the generator draws; each must exist in the ontology.
SYNTH_CLASSES = ("smooth_ground", "rough_ground", "low_vegetation", "water", "static_obstacle", "dynamic", "sky")
# Tracked vehicle footprint: the pose follows the terrain under these contact points (base_link x, y).
TRACK_CONTACTS = ((1.2, 0.8), (1.2, -0.8), (-1.2, 0.8), (-1.2, -0.8))


# --------------------------------------------------------------------------- camera


@dataclass(frozen=True)
class CameraRig:
    """Pinhole intrinsics plus the camera mount on the vehicle (base_link).

    The mount (x, y, z, roll, pitch, yaw) is the pose of a body-convention
    camera frame (x forward) in base_link; positive pitch looks down. The
    optical frame (z forward) is that frame rotated by geometry.OPTICAL_TO_BODY.
    """

    width: int = 1280
    height: int = 1080
    fx: float = 640.0
    fy: float = 640.0
    cx: float = 640.0
    cy: float = 540.0
    mount_x: float = 0.5
    mount_y: float = 0.0
    mount_height: float = 1.4
    roll: float = 0.0
    pitch: float = math.radians(10.0)
    yaw: float = 0.0
    base_frame: str = "base_link"
    camera_frame: str = "camera_optical_frame"

    @classmethod
    def default(
        cls, width: int = 1280, height: int = 1080, hfov_deg: float = 90.0, mount_height: float = 1.4,
        pitch_deg: float = 10.0, roll_deg: float = 0.0,
    ) -> CameraRig:
        """The vehicle camera (1280x1080) or a resized copy: square pixels, centred principal point."""
        fx = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(
            width=width, height=height, fx=fx, fy=fx, cx=width / 2.0, cy=height / 2.0,
            mount_height=mount_height, pitch=math.radians(pitch_deg), roll=math.radians(roll_deg),
        )

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the calibration's conventional name
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def hfov_deg(self) -> float:
        return math.degrees(2.0 * math.atan(self.width / 2.0 / self.fx))

    @property
    def mount(self) -> tuple[float, float, float, float, float, float]:
        """(x, y, z, roll, pitch, yaw) of the camera body frame in base_link."""
        return (self.mount_x, self.mount_y, self.mount_height, self.roll, self.pitch, self.yaw)

    @property
    def T_base_cam(self) -> np.ndarray:  # noqa: N802 - T_<to>_<from> transform naming
        """4x4 transform taking optical-frame points into base_link."""
        return camera_optical_pose(*self.mount)

    def resized(self, width: int, height: int) -> CameraRig:
        """Same camera at another resolution (intrinsics scaled, mount unchanged)."""
        sx, sy = width / self.width, height / self.height
        return replace(self, width=width, height=height, fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy)

    def to_dict(self) -> dict[str, Any]:
        """camera.yaml content: intrinsics, mount and the derived matrices."""
        return {
            "width": self.width, "height": self.height,
            "fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy,
            "K": self.K.tolist(),
            "distortion_model": "plumb_bob", "D": [0.0] * 5,
            "mount": dict(zip(("x", "y", "z", "roll", "pitch", "yaw"), self.mount, strict=True)),
            "T_base_cam": self.T_base_cam.tolist(),
            "base_frame": self.base_frame, "camera_frame": self.camera_frame,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CameraRig:
        mount = data.get("mount", {})
        return cls(
            width=int(data["width"]), height=int(data["height"]),
            fx=float(data["fx"]), fy=float(data["fy"]), cx=float(data["cx"]), cy=float(data["cy"]),
            mount_x=float(mount.get("x", 0.5)), mount_y=float(mount.get("y", 0.0)),
            mount_height=float(mount.get("z", 1.4)), roll=float(mount.get("roll", 0.0)),
            pitch=float(mount.get("pitch", 0.0)), yaw=float(mount.get("yaw", 0.0)),
            base_frame=str(data.get("base_frame", "base_link")), camera_frame=str(data.get("camera_frame", "camera_optical_frame")),
        )


@dataclass(frozen=True)
class CameraRanges:
    """Cameras drawn per frame (folders) or per drive (bags): uniform in each range, one image size.

    A range whose ends are equal is a fixed value. Square pixels and a
    centred principal point; the focal length follows the horizontal FOV.
    """

    width: int = 1280
    height: int = 1080
    hfov_deg: tuple[float, float] = (60.0, 110.0)
    mount_height: tuple[float, float] = (0.8, 2.2)
    pitch_deg: tuple[float, float] = (0.0, 20.0)
    roll_deg: tuple[float, float] = (-5.0, 5.0)

    def __post_init__(self) -> None:
        checks = (("hfov_deg", self.hfov_deg, 1.0, 170.0), ("mount_height", self.mount_height, 0.05, 50.0),
                  ("pitch_deg", self.pitch_deg, -89.0, 89.0), ("roll_deg", self.roll_deg, -89.0, 89.0))
        for name, (lo, hi), low, high in checks:
            if not low <= lo <= hi <= high:
                raise ConfigError(f"camera range {name} = [{lo}, {hi}] must be ordered and inside [{low}, {high}]")

    def draw(self, rng: np.random.Generator) -> CameraRig:
        return CameraRig.default(self.width, self.height, hfov_deg=float(rng.uniform(*self.hfov_deg)),
                                 mount_height=float(rng.uniform(*self.mount_height)),
                                 pitch_deg=float(rng.uniform(*self.pitch_deg)), roll_deg=float(rng.uniform(*self.roll_deg)))

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "hfov_deg": list(self.hfov_deg),
                "mount_height": list(self.mount_height), "pitch_deg": list(self.pitch_deg), "roll_deg": list(self.roll_deg)}


CameraSource = CameraRig | CameraRanges


def camera_for(camera: CameraSource, seed: int) -> CameraRig:
    """The rig of one frame (folders) or one drive (bags): ``camera`` itself, or a draw from its ranges."""
    if isinstance(camera, CameraRig):
        return camera
    return camera.draw(np.random.default_rng(np.random.SeedSequence([int(seed), _CAMERA_SALT])))


def camera_size(camera: CameraSource) -> tuple[int, int]:
    """(width, height) of the images a camera source renders."""
    return camera.width, camera.height


@dataclass
class SynthFrame:
    """One rendered frame with its ground truth and calibration."""

    rgb: np.ndarray  # uint8 [H, W, 3] RGB
    depth: np.ndarray  # float32 [H, W] metres along the optical axis, 0 = invalid (sky, > MAX_DEPTH_M)
    label: np.ndarray  # uint8 [H, W] ontology class ids
    K: np.ndarray  # 3x3
    T_base_cam: np.ndarray  # 4x4 optical frame -> base_link
    T_world_base: np.ndarray = field(default_factory=lambda: np.eye(4))  # vehicle pose in the scene
    rig: CameraRig | None = None  # the camera that rendered it


# --------------------------------------------------------------------------- noise


_HASH_X, _HASH_Y = np.uint32(0x8DA6B343), np.uint32(0xD8163841)


def _mix01(h: np.ndarray) -> np.ndarray:
    """Finish a lattice hash in place (xor-shift-multiply rounds) and map its top 24 bits to [0, 1)."""
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> np.uint32(12)
    h *= np.uint32(0x297A2D39)
    h ^= h >> np.uint32(15)
    h >>= np.uint32(8)
    out = h.astype(np.float32)
    out *= np.float32(1.0 / 16777216.0)
    return out


def _in_chunks(fn: Callable[..., np.ndarray], x: np.ndarray, y: np.ndarray, *args: Any) -> np.ndarray:
    """``fn(x, y, *args)`` of a per-point function, CHUNK points at a time (same values, cache-sized temporaries)."""
    shape = np.shape(x)
    x, y = x.reshape(-1), y.reshape(-1)
    parts = chunks(x.size)
    first = next(parts)
    head = fn(x[first], y[first], *args)
    out = np.empty(x.size, head.dtype)
    out[first] = head
    for part in parts:
        out[part] = fn(x[part], y[part], *args)
    return out.reshape(shape)


def _hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point (uint32 wrap-around hash)."""
    h = ix.astype(np.uint32) * _HASH_X
    h ^= iy.astype(np.uint32) * _HASH_Y
    h ^= np.uint32((seed * 0x9E3779B1) & 0xFFFFFFFF)
    return _mix01(h)


def value_noise(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Smooth 2D value noise in [0, 1), continuous in world coordinates (textures stay put as the camera moves).

    The four corners' hashes share their per-axis products: (i + 1) * C = i * C + C in uint32 arithmetic,
    so this equals ``_hash01`` at each corner.
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    if x.size > CHUNK:
        return _in_chunks(value_noise, x, y, seed)
    xf = np.floor(x)
    yf = np.floor(y)
    tx = x - xf
    ty = y - yf
    ix = xf.astype(np.int32)
    iy = yf.astype(np.int32)
    salt = np.uint32((seed * 0x9E3779B1) & 0xFFFFFFFF)
    table = _lattice_table(ix, iy, salt)
    if table is not None:
        # Few lattice cells for many points (low-frequency noise): hash each corner once, then gather.
        values, x_lo, y_lo = table
        nx = np.int32(values.shape[1])
        idx = iy - np.int32(y_lo)
        idx *= nx
        idx += ix
        idx -= np.int32(x_lo)
        flat = values.ravel()
        a = flat.take(idx)
        b = flat.take(idx + np.int32(1))
        idx += nx
        c = flat.take(idx)
        d = flat.take(idx + np.int32(1))
    else:
        hx0 = ix.astype(np.uint32)
        hx0 *= _HASH_X
        hx1 = hx0 + _HASH_X
        hy0 = iy.astype(np.uint32)
        hy0 *= _HASH_Y
        hy1 = hy0 + _HASH_Y
        hy0 ^= salt
        hy1 ^= salt
        a = _mix01(hx0 ^ hy0)
        b = _mix01(hx1 ^ hy0)
        c = _mix01(hx0 ^ hy1)
        d = _mix01(hx1 ^ hy1)
    return blend_corners(a, b, c, d, tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty))


def _lattice_table(ix: np.ndarray, iy: np.ndarray, salt: np.uint32) -> tuple[np.ndarray, int, int] | None:
    """``_hash01`` at every lattice corner the cells (ix, iy) touch, as ([ny, nx] values, x_lo, y_lo).

    None when the cells' bounding box has more corners than a quarter of the points (hashing per point is
    then cheaper). The hashes are the ones value_noise computes per point, so the noise is unchanged.
    """
    if ix.size < 64:
        return None
    x_lo, x_hi = int(ix.min()), int(ix.max())
    y_lo, y_hi = int(iy.min()), int(iy.max())
    nx, ny = x_hi - x_lo + 2, y_hi - y_lo + 2
    if nx * ny * 4 > ix.size:
        return None
    hx = np.arange(x_lo, x_lo + nx, dtype=np.int64).astype(np.int32).astype(np.uint32)
    hx *= _HASH_X
    hy = np.arange(y_lo, y_lo + ny, dtype=np.int64).astype(np.int32).astype(np.uint32)
    hy *= _HASH_Y
    hy ^= salt
    return _mix01(hy[:, None] ^ hx[None, :]), x_lo, y_lo


def fbm(x: np.ndarray, y: np.ndarray, seed: int, octaves: int = 3, frequency: float = 1.0) -> np.ndarray:
    """Fractal sum of value noise, normalised to [0, 1)."""
    if np.size(x) > CHUNK:
        return _in_chunks(fbm, np.asarray(x), np.asarray(y), seed, octaves, frequency)
    total = np.zeros(np.shape(x), dtype=np.float32)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        total += amplitude * value_noise(x * frequency, y * frequency, seed + 131 * octave)
        norm += amplitude
        amplitude *= 0.5
        frequency *= 2.03
    return total / norm


# --------------------------------------------------------------------------- scene


@dataclass
class Primitive:
    """One analytic solid. kind: 'ellipsoid' | 'cylinder' (vertical, capped) | 'box' (yawed).

    A moving primitive with ``follows_ground`` keeps its height above the
    terrain: its centre rises and falls with the ground under ``anchor``, the
    (x, y) its object stands on at time 0 (``Scene.primitive_centers``);
    ``ground_z`` is the terrain height there.
    """

    kind: str
    center: np.ndarray  # (3,) ellipsoid/box centre; cylinder: (x, y, z_bottom)
    size: np.ndarray  # ellipsoid radii (3,); box half sizes (3,); cylinder (radius, height, 0)
    class_name: str
    albedo: np.ndarray  # (3,) RGB 0..1
    yaw: float = 0.0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    texture: float = 0.25  # relative albedo variation
    texture_freq: float = 2.0
    seed: int = 0
    follows_ground: bool = False
    ground_z: float = 0.0
    anchor: tuple[float, float] = (0.0, 0.0)

    def at(self, time_s: float) -> np.ndarray:
        """Centre after ``time_s`` of straight motion (before following the ground)."""
        return self.center + self.velocity * time_s

    def bounding_sphere(self, center: np.ndarray) -> tuple[np.ndarray, float]:
        if self.kind == "cylinder":
            r, h = float(self.size[0]), float(self.size[1])
            return center + np.array([0.0, 0.0, h / 2.0]), math.hypot(r, h / 2.0)
        return center, float(np.linalg.norm(self.size)) if self.kind == "box" else float(np.max(self.size))


@dataclass
class Scene:
    """A procedural world: terrain (with its road), primitives and lighting (all from one seed)."""

    seed: int
    terrain: Terrain
    grass_threshold: float
    grass_scale: float
    primitives: list[Primitive]
    ground_albedo: dict[str, np.ndarray]
    sky_zenith: np.ndarray
    sky_horizon: np.ndarray
    cloud_cover: float
    sun_dir: np.ndarray
    sun_color: np.ndarray
    ambient: float
    haze: float
    exposure: float
    white_balance: np.ndarray
    noise_sigma: float
    vignette: float

    @property
    def road(self) -> Road:
        return self.terrain.road

    def road_center(self, x: np.ndarray | float) -> np.ndarray | float:
        return self.road.center(x)

    def road_heading(self, x: float) -> float:
        return self.road.heading(x)

    def primitive_centers(self, time_s: float) -> list[np.ndarray]:
        """Every primitive's centre at ``time_s``; moving ones that follow the ground ride on the terrain."""
        centers = [p.at(time_s) for p in self.primitives]
        riders = [k for k, p in enumerate(self.primitives) if p.follows_ground and np.any(p.velocity) and time_s]
        if riders and not self.terrain.flat:
            xy = np.array([np.asarray(self.primitives[k].anchor) + self.primitives[k].velocity[:2] * time_s
                           for k in riders], np.float32)
            ground = self.terrain.height(xy[:, 0], xy[:, 1])
            for k, z in zip(riders, ground, strict=True):
                centers[k] = centers[k] + np.array([0.0, 0.0, float(z) - self.primitives[k].ground_z])
        return centers

    def ground_class(self, x: np.ndarray, y: np.ndarray, names: dict[str, int]) -> np.ndarray:
        """Class id of ground points: road (smooth), grass or rough by noise, bare earth in ditches and on drop
        faces (rough), water where a basin's water surface is the ground."""
        n = fbm(x, y, self.seed + 7, octaves=2, frequency=1.0 / self.grass_scale)
        out = np.where(n > self.grass_threshold, names["low_vegetation"], names["rough_ground"]).astype(np.uint8)
        road = self.road
        if road.present:
            # Ragged road edge: the boundary wanders by up to ~0.4 m.
            edge = road.width / 2.0 + 0.4 * (value_noise(x * 0.7, y * 0.7, self.seed + 11) - 0.5)
            out[np.abs(road.lateral(x, y)) < edge] = names["smooth_ground"]
        out[self.terrain.earth_mask(x, y)] = names["rough_ground"]
        out[self.terrain.water_mask(x, y)] = names["water"]
        return out


def frame_seed(seed: int, index: int, split: str = "train") -> int:
    """Scene seed of frame ``index`` of a split: independent streams per (seed, split, index)."""
    salt = _SPLIT_SALT.get(split, sum(split.encode()) + 3)
    return int(np.random.SeedSequence([int(seed), salt, int(index)]).generate_state(1)[0])


def build_scene(seed: int, length: float = 0.0, flat: bool = False, clear_corridor: bool = False) -> Scene:
    """Random scene along a road starting at x=0 and heading +x.

    ``length`` metres of drive are populated beyond the first ~120 m;
    ``flat`` gives flat ground and sky only (no relief, primitives or water)
    for geometry tests; ``clear_corridor`` keeps the road free of solids and
    of ditches and drop-offs across it (a drive must not pass through them),
    and puts at least one negative obstacle (a ditch or drop-off) beside it.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC0FFEE]))
    road = Road(
        present=flat or rng.random() < 0.85,
        amplitude=0.0 if flat else float(rng.uniform(0.0, 5.0)),
        wavelength=float(rng.uniform(50.0, 140.0)),
        phase=float(rng.uniform(0, 2 * np.pi)),
        width=float(rng.uniform(3.0, 6.0)),
    )
    scene = Scene(
        seed=int(seed) % 100003,
        terrain=Terrain(flat=True, road=road),
        grass_threshold=float(rng.uniform(0.35, 0.6)),
        grass_scale=float(rng.uniform(4.0, 15.0)),
        primitives=[],
        ground_albedo={
            "smooth_ground": _jitter(rng, [0.36, 0.36, 0.38] if rng.random() < 0.6 else [0.62, 0.6, 0.56], 0.06),
            "rough_ground": _jitter(rng, [0.46, 0.36, 0.25] if rng.random() < 0.7 else [0.5, 0.47, 0.42], 0.07),
            "low_vegetation": _jitter(rng, [0.22, 0.42, 0.1] if rng.random() < 0.75 else [0.52, 0.5, 0.25], 0.06),
            "water": _jitter(rng, [0.1, 0.14, 0.15], 0.03),
        },
        sky_zenith=_jitter(rng, [0.25, 0.45, 0.85] if rng.random() < 0.7 else [0.6, 0.62, 0.66], 0.05),
        sky_horizon=_jitter(rng, [0.75, 0.82, 0.92], 0.05),
        cloud_cover=float(rng.uniform(0.0, 0.7)),
        sun_dir=_sun_direction(rng),
        sun_color=_jitter(rng, [1.0, 0.96, 0.9], 0.04),
        ambient=float(rng.uniform(0.25, 0.55)),
        haze=float(rng.uniform(0.002, 0.012)),
        exposure=float(rng.uniform(0.75, 1.3)),
        white_balance=rng.uniform(0.9, 1.1, size=3),
        noise_sigma=float(rng.uniform(0.5, 4.0)),
        vignette=float(rng.uniform(0.0, 0.35)),
    )
    if flat:
        return scene
    x_end = 120.0 + max(0.0, length)
    scene.terrain = build_terrain(rng, road, x_end, length, clear_corridor)
    terrain = scene.terrain
    half = road.width / 2.0

    def place(count: int, x_lo: float, x_hi: float, lateral: float, min_off_road: float,
              radius: float = 0.5) -> list[tuple[float, float, float, float]]:
        """``count`` spots (x, y, ground height, slope) off the road by at least ``min_off_road``, on solid ground.

        Solid: no ditch, drop face or water within ``radius``. Up to 12
        candidates per spot are tested at once; a spot with none keeps its
        first candidate, moved out to ``min_off_road``.
        """
        if count <= 0:
            return []
        x = rng.uniform(x_lo, x_hi, size=(count, 12))
        off = rng.uniform(-lateral, lateral, size=(count, 12))
        ok = (np.abs(off) >= min_off_road) & _solid_ground(terrain, x, road.center(x) + off, radius)
        pick = np.argmax(ok, axis=1)
        rows = np.arange(count)
        px, poff = x[rows, pick], off[rows, pick]
        none = ~ok.any(axis=1)
        poff[none] = np.copysign(min_off_road, off[none, 0])
        py = road.center(px) + poff
        ground, slope = _ground(terrain, px, py)
        return [(float(a), float(b), float(g), float(sl)) for a, b, g, sl in zip(px, py, ground, slope, strict=True)]

    corridor = half + 1.5 if clear_corridor else 0.0
    near_view = (6.0, 35.0)
    # Featured obstacles ahead (on or beside the road).
    for spot in place(1, *near_view, 6.0, corridor):
        _add_person(scene, rng, spot, moving=True, along_road=clear_corridor)
    for spot in place(1, 12.0, 45.0, 10.0, corridor + 1.0 if corridor else 0.0, 2.5):
        _add_vehicle(scene, rng, spot)
    for spot in place(1, *near_view, 7.0, corridor, 1.0):
        _add_rock(scene, rng, spot)
    tree_clearance = half + (4.5 if clear_corridor else 1.0)  # crowns (radius <= 3 m) overhang
    for spot in place(1, 10.0, 45.0, 14.0, tree_clearance):
        _add_tree(scene, rng, spot)
    for spot in place(1, *near_view, 8.0, max(corridor, half + 0.3), 1.0):
        _add_bush(scene, rng, spot)
    # Clutter over the whole extent.
    density = (x_end + 20.0) / 100.0
    for spot in place(int(rng.integers(8, 20) * density), -10.0, x_end, 40.0, max(tree_clearance, half + 1.5)):
        _add_tree(scene, rng, spot)
    for spot in place(int(rng.integers(4, 12) * density), -10.0, x_end, 30.0, half + 0.5, 1.0):
        _add_bush(scene, rng, spot)
    for spot in place(int(rng.integers(4, 12) * density), -10.0, x_end, 30.0, corridor, 1.0):
        _add_rock(scene, rng, spot)
    for spot in place(int(rng.integers(0, 4) * density), 0.0, x_end, 20.0, corridor):
        _add_person(scene, rng, spot, moving=rng.random() < 0.7, along_road=clear_corridor)
    for spot in place(int(rng.integers(0, 3) * density), 0.0, x_end, 25.0,
                      corridor + 1.0 if corridor else half + 1.5, 2.5):
        _add_vehicle(scene, rng, spot)
    return scene


def _solid_ground(terrain: Terrain, x: np.ndarray | float, y: np.ndarray | float, radius: float) -> np.ndarray:
    """Per point (any shape): no ditch, drop face or water within ``radius`` (the point and 8 around it)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    angles = np.linspace(0.0, 2.0 * np.pi, 8, endpoint=False)
    px = np.concatenate([x[..., None], x[..., None] + radius * np.cos(angles)], axis=-1).astype(np.float32)
    py = np.concatenate([y[..., None], y[..., None] + radius * np.sin(angles)], axis=-1).astype(np.float32)
    bad = terrain.earth_mask(px.ravel(), py.ravel()) | terrain.water_mask(px.ravel(), py.ravel())
    return ~bad.reshape(px.shape).any(axis=-1)


def build_terrain(rng: np.random.Generator, road: Road, x_end: float, length: float, clear_corridor: bool) -> Terrain:
    """Hills, ruts, ditches, drop-offs, mounds and water basins for a scene along ``road`` up to ``x_end``.

    Hill slopes (incline plus waves) add up to 1-25 degrees. A drive
    (``clear_corridor``) keeps its corridor free of features that cross it
    and always has a ditch or drop-off beside the road.
    """
    half = road.width / 2.0
    total_slope = math.tan(math.radians(rng.uniform(1.0, 25.0)))
    shares = rng.dirichlet([1.5, 1.0, 1.0, 1.0]) * total_slope
    incline_dir = rng.uniform(0.0, 2.0 * np.pi)
    incline = (float(shares[0] * math.cos(incline_dir)), float(shares[0] * math.sin(incline_dir)))
    waves = []
    for slope in shares[1:]:
        wavelength = rng.uniform(30.0, 150.0)
        k = 2.0 * math.pi / wavelength
        direction = rng.uniform(0.0, 2.0 * np.pi)
        waves.append(Wave(float(slope / k), float(k * math.cos(direction)), float(k * math.sin(direction)),
                          float(rng.uniform(0.0, 2.0 * np.pi))))
    trenches: list[Trench] = []
    drops: list[Drop] = []
    if road.present and rng.random() < 0.7:  # wheel ruts
        gap, width, depth = rng.uniform(0.7, 0.95), rng.uniform(0.15, 0.3), rng.uniform(0.04, 0.15)
        trenches.append(Trench("lateral", float(gap), float(width), float(depth), "round", mirrored=True))
    want_ditch, want_drop = rng.random() < 0.5, rng.random() < 0.35
    if clear_corridor and not (want_ditch or want_drop):
        want_ditch, want_drop = (True, False) if rng.random() < 0.6 else (False, True)
    ditch_side = float(rng.choice([-1.0, 1.0]))
    if want_ditch:  # along the road, beyond the shoulder
        width = rng.uniform(0.6, 1.5)
        trenches.append(Trench("lateral", float(ditch_side * (half + rng.uniform(0.8, 3.0) + width)), float(width),
                               float(rng.uniform(0.4, 1.5)), "box", wall=float(rng.uniform(0.25, 0.5))))
    if not clear_corridor and rng.random() < 0.25:  # a ditch across the way ahead
        x0 = rng.uniform(8.0, 35.0)
        normal = _line_normal(road, x0, rng.uniform(-0.5, 0.5))
        trenches.append(Trench("line", float(normal[0] * x0 + normal[1] * road.center(x0)), float(rng.uniform(0.5, 1.2)),
                               float(rng.uniform(0.4, 1.2)), "box", wall=float(rng.uniform(0.25, 0.5)), normal=normal))
    if want_drop:
        if clear_corridor or rng.random() < 0.6:  # a drop-off beside the road, on the other side from the ditch
            side = -ditch_side if want_ditch else float(rng.choice([-1.0, 1.0]))
            drops.append(Drop("lateral", float(half + rng.uniform(2.5, 10.0)), float(rng.uniform(0.2, 0.8)),
                              float(rng.uniform(2.0, 10.0)), side=side))
        else:  # a drop-off across the way ahead
            x0 = rng.uniform(12.0, 45.0)
            normal = _line_normal(road, x0, rng.uniform(-0.4, 0.4))
            drops.append(Drop("line", float(normal[0] * x0 + normal[1] * road.center(x0)), float(rng.uniform(0.2, 0.8)),
                              float(rng.uniform(2.0, 10.0)), normal=normal))
    base = Terrain(flat=False, incline=incline, waves=tuple(waves), road=road, trenches=tuple(trenches), drops=tuple(drops))
    extent = 1.0 + max(0.0, length) / 150.0
    mounds: list[Bump] = []
    for k in range(int(rng.integers(2, 9) * extent)):
        a, b = rng.uniform(1.5, 5.0), rng.uniform(1.5, 5.0)
        reach = max(a, b)
        x = rng.uniform(6.0, 40.0) if k < 2 else rng.uniform(-5.0, x_end)
        lateral = rng.uniform(half + 1.0 + (1.5 + reach if clear_corridor else 0.5 * reach), 30.0)
        y = float(road.center(x) + rng.choice([-1.0, 1.0]) * lateral)
        height = min(rng.uniform(0.3, 1.5), 0.45 * min(a, b) / 1.5396)
        bump = Bump(float(x), y, float(a), float(b), float(rng.uniform(0.0, np.pi)), float(height))
        if _solid_ground(base, bump.x, bump.y, reach).all() and not _overlaps(bump, mounds):
            mounds.append(bump)
    with_mounds = Terrain(flat=False, incline=incline, waves=tuple(waves), road=road, trenches=tuple(trenches),
                          drops=tuple(drops), bumps=tuple(mounds))
    basins: list[Bump] = []
    featured = int(rng.integers(1, 4))
    for k in range(featured + int(rng.integers(2, 6) * extent)):
        a, b = rng.uniform(0.9, 3.5), rng.uniform(0.6, 2.2)
        if k < featured:  # in the camera's view from the start pose
            x = rng.uniform(5.0, 30.0)
            y = road.center(x) + rng.uniform(-0.4, 0.4) * x
        else:
            x = rng.uniform(0.0, x_end)
            y = road.center(x) + rng.normal(0.0, road.width)
        basin = _water_basin(with_mounds, float(x), float(y), float(a), float(b), float(rng.uniform(0.0, np.pi)),
                             float(rng.uniform(0.12, 0.4)), float(rng.uniform(0.25, 0.5)))
        if basin is not None and not _overlaps(basin, mounds + basins):
            basins.append(basin)
    return Terrain(flat=False, incline=incline, waves=tuple(waves), road=road, trenches=tuple(trenches),
                   drops=tuple(drops), bumps=tuple(mounds + basins))


def _line_normal(road: Road, x0: float, turn: float) -> tuple[float, float]:
    heading = road.heading(x0) + turn
    return float(math.cos(heading)), float(math.sin(heading))


def _overlaps(bump: Bump, others: Sequence[Bump]) -> bool:
    return any(math.hypot(bump.x - o.x, bump.y - o.y) < max(bump.a, bump.b) + max(o.a, o.b) for o in others)


def _water_basin(ground: Terrain, x: float, y: float, a: float, b: float, angle: float, depth: float,
                 fill: float) -> Bump | None:
    """A basin whose water stays inside it: the level is ``fill * depth`` below the lowest rim point.

    The bottom lies ``depth`` below the rim's lowest point, so on a slope the
    basin is deeper and the water a pool on its downhill side. None where
    the footprint touches a ditch or drop face.
    """
    if not _solid_ground(ground, x, y, max(a, b)).all():
        return None
    angles = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
    ca, sa = math.cos(angle), math.sin(angle)
    u, v = a * np.cos(angles), b * np.sin(angles)
    rim = ground.height((x + u * ca - v * sa).astype(np.float32), (y + u * sa + v * ca).astype(np.float32))
    centre = float(ground.height(np.array([x], np.float32), np.array([y], np.float32))[0])
    rim_low = float(rim.min())
    return Bump(x, y, a, b, angle, -(centre - rim_low + depth), rim_low - fill * depth)


def _jitter(rng: np.random.Generator, rgb: Sequence[float], amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, size=3), 0.0, 1.0)


def _sun_direction(rng: np.random.Generator) -> np.ndarray:
    elevation = rng.uniform(math.radians(15), math.radians(70))
    azimuth = rng.uniform(0, 2 * np.pi)
    return np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])


def _prim_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 1 << 20))


def _ground(terrain: Terrain, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(height, slope as rise per metre) of the terrain at points (x, y)."""
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    if terrain.flat:
        return np.zeros(x.shape, np.float32), np.zeros(x.shape, np.float32)
    height = terrain.height(x, y)
    normal = terrain.normals(x, y, height)
    return height, np.sqrt(np.maximum(1.0 / normal[:, 2] ** 2 - 1.0, 0.0))


Spot = tuple[float, float, float, float]  # x, y, ground height, ground slope


def _add_tree(scene: Scene, rng: np.random.Generator, spot: Spot) -> None:
    x, y, ground, slope = spot
    trunk_r, trunk_h = rng.uniform(0.12, 0.4), rng.uniform(2.0, 5.0)
    crown = np.array([rng.uniform(1.0, 3.0)] * 2 + [rng.uniform(1.2, 3.5)])
    bark = _jitter(rng, [0.3, 0.21, 0.13], 0.05)
    leaves = _jitter(rng, [0.12, 0.3, 0.08], 0.05)
    sink = trunk_r * slope + 0.05  # the trunk reaches into the ground on its uphill side too
    scene.primitives.append(Primitive("cylinder", np.array([x, y, ground - sink]), np.array([trunk_r, trunk_h + sink, 0.0]),
                                      "static_obstacle", bark, texture=0.3, texture_freq=6.0, seed=_prim_seed(rng)))
    scene.primitives.append(Primitive("ellipsoid", np.array([x, y, ground + trunk_h + 0.6 * crown[2]]), crown,
                                      "static_obstacle", leaves, texture=0.5, texture_freq=3.0, seed=_prim_seed(rng)))


def _add_bush(scene: Scene, rng: np.random.Generator, spot: Spot) -> None:
    x, y, ground, slope = spot
    r = rng.uniform(0.4, 1.3)
    radii = np.array([r * rng.uniform(0.8, 1.3), r * rng.uniform(0.8, 1.3), r * rng.uniform(0.5, 0.9)])
    sink = 0.5 * float(radii[:2].max()) * slope
    scene.primitives.append(Primitive("ellipsoid", np.array([x, y, ground - sink + radii[2] * 0.6]), radii,
                                      "static_obstacle", _jitter(rng, [0.2, 0.36, 0.1], 0.06), texture=0.5,
                                      texture_freq=4.0, seed=_prim_seed(rng)))


def _add_rock(scene: Scene, rng: np.random.Generator, spot: Spot) -> None:
    x, y, ground, slope = spot
    r = rng.uniform(0.25, 1.0)
    radii = np.array([r * rng.uniform(0.8, 1.5), r * rng.uniform(0.8, 1.5), r * rng.uniform(0.5, 0.9)])
    sink = 0.5 * float(radii[:2].max()) * slope
    scene.primitives.append(Primitive("ellipsoid", np.array([x, y, ground - sink + radii[2] * rng.uniform(0.2, 0.6)]),
                                      radii, "static_obstacle", _jitter(rng, [0.46, 0.44, 0.41], 0.08), texture=0.35,
                                      texture_freq=5.0, seed=_prim_seed(rng)))


def _add_person(scene: Scene, rng: np.random.Generator, spot: Spot, moving: bool, along_road: bool = False) -> None:
    """A person (body cylinder + head); ``along_road`` walks parallel to the road (never into a drive's path)."""
    x, y, ground, slope = spot
    body_h = rng.uniform(1.2, 1.55)
    heading = scene.road_heading(x) + (np.pi if rng.random() < 0.5 else 0.0) if along_road else rng.uniform(0, 2 * np.pi)
    velocity = np.array([math.cos(heading), math.sin(heading), 0.0]) * rng.uniform(0.5, 1.5) if moving else np.zeros(3)
    clothes = rng.uniform(0.05, 0.9, size=3)
    radius = rng.uniform(0.18, 0.28)
    sink = radius * slope + 0.05
    rides = {"follows_ground": True, "ground_z": ground, "anchor": (x, y)}
    scene.primitives.append(Primitive("cylinder", np.array([x, y, ground - sink]), np.array([radius, body_h + sink, 0.0]),
                                      "dynamic", clothes, velocity=velocity, texture=0.15, seed=_prim_seed(rng), **rides))
    head_r = rng.uniform(0.1, 0.13)
    scene.primitives.append(Primitive("ellipsoid", np.array([x, y, ground + body_h + head_r * 0.9]), np.array([head_r] * 3),
                                      "dynamic", _jitter(rng, [0.7, 0.52, 0.4], 0.15), velocity=velocity,
                                      texture=0.05, seed=_prim_seed(rng), **rides))


def _add_vehicle(scene: Scene, rng: np.random.Generator, spot: Spot) -> None:
    x, y, ground, _ = spot
    yaw = scene.road_heading(x) + (0.0 if rng.random() < 0.7 else rng.uniform(-np.pi, np.pi))
    length, width, height = rng.uniform(3.5, 5.5), rng.uniform(1.6, 2.2), rng.uniform(0.9, 1.3)
    speed = rng.uniform(0.0, 4.0) if rng.random() < 0.5 else 0.0
    velocity = np.array([math.cos(yaw), math.sin(yaw), 0.0]) * speed
    paint = rng.uniform(0.05, 0.9, size=3)
    base_z = ground + 0.3 + height / 2.0
    rides = {"follows_ground": True, "ground_z": ground, "anchor": (x, y)}
    scene.primitives.append(Primitive("box", np.array([x, y, base_z]), np.array([length / 2, width / 2, height / 2]),
                                      "dynamic", paint, yaw=yaw, velocity=velocity, texture=0.08, seed=_prim_seed(rng),
                                      **rides))
    cab_h = rng.uniform(0.5, 0.9)
    back = -rng.uniform(0.0, 0.25) * length
    cab_center = np.array([x + back * math.cos(yaw), y + back * math.sin(yaw), ground + 0.3 + height + cab_h / 2])
    scene.primitives.append(Primitive("box", cab_center, np.array([length * 0.3, width / 2 * 0.95, cab_h / 2]),
                                      "dynamic", paint * 0.8, yaw=yaw, velocity=velocity, texture=0.08, seed=_prim_seed(rng),
                                      **rides))


# --------------------------------------------------------------------------- rendering


@lru_cache(maxsize=8)
def _camera_rays(width: int, height: int, fx: float, fy: float, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel optical-frame ray (x/z, y/z) for z = 1: the ray parameter t is then the depth itself."""
    u = (np.arange(width, dtype=np.float32) - np.float32(cx)) / np.float32(fx)
    v = (np.arange(height, dtype=np.float32) - np.float32(cy)) / np.float32(fy)
    uu, vv = np.meshgrid(u, v)
    uu.setflags(write=False)
    vv.setflags(write=False)
    return uu, vv


def terrain_pose(terrain: Terrain, x: float, y: float, yaw: float, roll: float = 0.0, pitch: float = 0.0) -> np.ndarray:
    """T_world_base of a vehicle at (x, y) heading ``yaw``, resting on the terrain under its tracks.

    base_link's origin is at the mean height of the track contact points;
    pitch and roll follow their front/back and left/right differences
    (positive pitch: nose down), plus the given extra ``roll``/``pitch``.
    """
    if terrain.flat:
        return pose_matrix(x, y, 0.0, roll, pitch, yaw)
    cy, sy = math.cos(yaw), math.sin(yaw)
    cx_ = np.array([x + cy * px - sy * py for px, py in TRACK_CONTACTS], np.float32)
    cy_ = np.array([y + sy * px + cy * py for px, py in TRACK_CONTACTS], np.float32)
    h = terrain.height(cx_, cy_).astype(np.float64)
    (fx, _), (_, fy) = TRACK_CONTACTS[0], TRACK_CONTACTS[0]
    terrain_pitch = math.atan2((h[2] + h[3]) / 2.0 - (h[0] + h[1]) / 2.0, 2.0 * fx)
    terrain_roll = math.atan2((h[0] + h[2]) / 2.0 - (h[1] + h[3]) / 2.0, 2.0 * fy)
    return pose_matrix(x, y, float(h.mean()), terrain_roll + roll, terrain_pitch + pitch, yaw)


def random_pose(scene: Scene, rng: np.random.Generator, jitter: bool = True) -> np.ndarray:
    """A vehicle pose near the road start, heading roughly along it, resting on the terrain (+ small pitch/roll)."""
    road = scene.road
    x = float(rng.uniform(-2.0, 2.0))
    y = float(road.center(x) + rng.uniform(-1.0, 1.0) * (road.width / 2.0 if road.present else 3.0))
    yaw = road.heading(x) + float(rng.normal(0.0, 0.15))
    roll = float(rng.normal(0.0, 0.02)) if jitter else 0.0
    pitch = float(rng.normal(0.0, 0.025)) if jitter else 0.0
    return terrain_pose(scene.terrain, x, y, yaw, roll, pitch)


def drive_frames(rig: CameraRig, seed: int, frames: int, fps: float, speed: float) -> Iterator[tuple[Scene, np.ndarray, SynthFrame]]:
    """(scene, T_world_base, frame) of a drive of ``frames`` frames at ``fps`` and ``speed`` along scene ``seed``'s
    road: a scene kept clear for the drive (``clear_corridor``), as the drive bags and the benches render it."""
    scene = build_scene(seed, length=speed * frames / fps, clear_corridor=True)
    for index in range(frames):
        time_s = index / fps
        pose = drive_pose(scene, time_s, speed)
        yield scene, pose, render_frame(rig, seed, pose, time_s=time_s, scene=scene)


def render_frame(
    rig: CameraRig,
    scene_seed: int,
    pose: np.ndarray | None = None,
    *,
    time_s: float = 0.0,
    flat: bool = False,
    scene: Scene | None = None,
    ontology: Ontology | None = None,
) -> SynthFrame:
    """Render RGB, depth and labels of one frame.

    ``pose`` is T_world_base (4x4); None draws one from ``scene_seed``.
    ``scene`` reuses a built scene (a drive); otherwise one is built from
    ``scene_seed`` (``flat`` = flat ground and sky only, level vehicle).
    """
    onto = ontology if ontology is not None else _default_ontology()
    names = {name: onto.id_of(name) for name in SYNTH_CLASSES}
    if scene is None:
        scene = build_scene(scene_seed, flat=flat)
    rng = np.random.default_rng(np.random.SeedSequence([int(scene_seed), 0xF00D, int(time_s * 1000)]))
    if pose is None:
        pose = random_pose(scene, rng, jitter=not flat)
    world_cam = pose @ rig.T_base_cam
    rot = world_cam[:3, :3].astype(np.float32)
    origin = world_cam[:3, 3]
    uu, vv = _camera_rays(rig.width, rig.height, float(rig.fx), float(rig.fy), float(rig.cx), float(rig.cy))
    # World ray directions (not normalised: optical z component is 1, so t = depth).
    dx = rot[0, 0] * uu + rot[0, 1] * vv + rot[0, 2]
    dy = rot[1, 0] * uu + rot[1, 1] * vv + rot[1, 2]
    dz = rot[2, 0] * uu + rot[2, 1] * vv + rot[2, 2]
    shape = (rig.height, rig.width)

    terrain_hits = cast_image(scene.terrain, origin, dx, dy, dz)
    tbuf = terrain_hits.t.copy()
    pid = np.full(shape, -1, dtype=np.int16)  # -1 ground (or sky where tbuf is inf), k >= 0 primitive k

    world_to_cam = world_cam[:3, :3].T
    centers = scene.primitive_centers(time_s)
    rects: dict[int, tuple[int, int, int, int]] = {}
    for k, prim in enumerate(scene.primitives):
        rect = _screen_rect(prim, centers[k], origin, world_to_cam, rig)
        if rect is None:
            continue
        v0, v1, u0, u1 = rect
        sl = (slice(v0, v1), slice(u0, u1))
        t = _intersect(prim, centers[k], origin, dx[sl], dy[sl], dz[sl])
        closer = t < tbuf[sl]
        if closer.any():
            np.copyto(tbuf[sl], t, where=closer)
            np.copyto(pid[sl], np.int16(k), where=closer)
            rects[k] = rect

    label = np.full(shape, names["sky"], dtype=np.uint8)
    rgb = np.zeros((*shape, 3), dtype=np.float32)
    hit = np.isfinite(tbuf)
    sky = ~hit
    _shade_sky(scene, rgb, sky, dx, dy, dz)

    ground = np.flatnonzero(hit & (pid < 0))
    if ground.size:
        normals = image_normals(scene.terrain, terrain_hits, origin, dx, dy, dz, ground)
        flat_t, flat_dx, flat_dy, flat_dz = tbuf.ravel(), dx.ravel(), dy.ravel(), dz.ravel()
        flat_label, flat_rgb = label.reshape(-1), rgb.reshape(-1, 3)
        for part in chunks(ground.size):  # per-pixel shading, a cache-sized batch of pixels at a time
            pixels = ground[part]
            t = flat_t[pixels]
            ray = (flat_dx[pixels], flat_dy[pixels], flat_dz[pixels])
            gx = np.float32(origin[0]) + t * ray[0]
            gy = np.float32(origin[1]) + t * ray[1]
            cls = scene.ground_class(gx, gy, names)
            flat_label[pixels] = cls
            flat_rgb[pixels] = _shade_ground(scene, cls, gx, gy, t, *ray, normals[part], names).T

    for k, (v0, v1, u0, u1) in rects.items():
        sl = (slice(v0, v1), slice(u0, u1))
        mask = pid[sl] == k
        if not mask.any():
            continue
        prim = scene.primitives[k]
        t = tbuf[sl][mask]
        ray = (dx[sl][mask], dy[sl][mask], dz[sl][mask])
        label[sl][mask] = names[prim.class_name]
        rgb[sl][mask] = _shade_primitive(scene, prim, centers[k], origin, t, ray)

    depth = np.where(hit & (tbuf <= MAX_DEPTH_M), tbuf, 0.0).astype(np.float32)
    image = _sensor(scene, rgb, rng)
    return SynthFrame(rgb=image, depth=depth, label=label, K=rig.K, T_base_cam=rig.T_base_cam, T_world_base=pose, rig=rig)


@lru_cache(maxsize=1)
def _default_ontology() -> Ontology:
    return load_ontology()


def _screen_rect(
    prim: Primitive, center: np.ndarray, origin: np.ndarray, world_to_cam: np.ndarray, rig: CameraRig
) -> tuple[int, int, int, int] | None:
    """Conservative pixel rectangle (v0, v1, u0, u1) holding the primitive's bounding sphere, or None if unseen."""
    sphere, radius = prim.bounding_sphere(center)
    cam_x, cam_y, cam_z = world_to_cam @ (sphere - origin)
    if cam_z + radius <= NEAR_M or cam_z - radius > MAX_DEPTH_M * 2:
        return None
    if cam_z - radius <= 0.05:
        return 0, rig.height, 0, rig.width
    zn, zf = cam_z - radius, cam_z + radius

    def span(c: float) -> tuple[float, float]:
        lo = (c - radius) / (zn if c - radius <= 0 else zf)
        hi = (c + radius) / (zn if c + radius >= 0 else zf)
        return lo, hi

    xl, xh = span(cam_x)
    yl, yh = span(cam_y)
    u0 = max(0, math.floor(rig.cx + rig.fx * xl) - 1)
    u1 = min(rig.width, math.ceil(rig.cx + rig.fx * xh) + 2)
    v0 = max(0, math.floor(rig.cy + rig.fy * yl) - 1)
    v1 = min(rig.height, math.ceil(rig.cy + rig.fy * yh) + 2)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


def _intersect(prim: Primitive, c: np.ndarray, origin: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """Ray parameter of the first hit per ray (inf where missed), closed form per primitive kind."""
    ox, oy, oz = (float(v) for v in (origin - c))
    inf = np.float32(np.inf)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if prim.kind == "ellipsoid":
            rx, ry, rz = (float(v) for v in prim.size)
            px, py, pz = ox / rx, oy / ry, oz / rz
            qx, qy, qz = dx / rx, dy / ry, dz / rz
            a = qx * qx + qy * qy + qz * qz
            b = px * qx + py * qy + pz * qz  # half b
            cc = px * px + py * py + pz * pz - 1.0
            disc = b * b - a * cc
            t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
            return np.where((disc >= 0) & (t > NEAR_M), t, inf).astype(np.float32)
        if prim.kind == "cylinder":
            r, h = float(prim.size[0]), float(prim.size[1])
            a = dx * dx + dy * dy
            b = ox * dx + oy * dy
            cc = ox * ox + oy * oy - r * r
            disc = b * b - a * cc
            t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
            z_side = oz + t_side * dz
            side_ok = (disc >= 0) & (t_side > NEAR_M) & (z_side >= 0.0) & (z_side <= h)
            t_cap = (h - oz) / dz
            cx_, cy_ = ox + t_cap * dx, oy + t_cap * dy
            cap_ok = (t_cap > NEAR_M) & (cx_ * cx_ + cy_ * cy_ <= r * r)
            t = np.where(side_ok, t_side, inf)
            return np.where(cap_ok & (t_cap < t), t_cap, t).astype(np.float32)
        if prim.kind == "box":
            cyaw, syaw = math.cos(prim.yaw), math.sin(prim.yaw)
            lo_x, lo_y = cyaw * ox + syaw * oy, -syaw * ox + cyaw * oy
            ld_x, ld_y = cyaw * dx + syaw * dy, -syaw * dx + cyaw * dy
            tmin = np.full(dx.shape, -np.inf, dtype=np.float32)
            tmax = np.full(dx.shape, np.inf, dtype=np.float32)
            for o, d, half in ((lo_x, ld_x, prim.size[0]), (lo_y, ld_y, prim.size[1]), (oz, dz, prim.size[2])):
                t1 = (-half - o) / d
                t2 = (half - o) / d
                near = np.minimum(t1, t2)
                far = np.maximum(t1, t2)
                # d == 0: inside the slab -> (-inf, inf), outside -> (inf, -inf) or nan; nan means "outside".
                near = np.where(np.isnan(near), np.inf, near)
                far = np.where(np.isnan(far), -np.inf, far)
                tmin = np.maximum(tmin, near)
                tmax = np.minimum(tmax, far)
            ok = (tmax >= tmin) & (tmin > NEAR_M)
            return np.where(ok, tmin, inf).astype(np.float32)
    raise ValueError(f"unknown primitive kind {prim.kind!r}")


def _normals(prim: Primitive, c: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Unit outward normals (N, 3) at hit points p (N, 3) of a primitive centred at c."""
    q = p - c
    if prim.kind == "ellipsoid":
        n = q / (prim.size**2)
    elif prim.kind == "cylinder":
        h = float(prim.size[1])
        on_cap = q[:, 2] >= h - 1e-3
        n = np.stack([q[:, 0], q[:, 1], np.zeros(len(q))], axis=1)
        n[on_cap] = (0.0, 0.0, 1.0)
    else:
        cyaw, syaw = math.cos(prim.yaw), math.sin(prim.yaw)
        local = np.stack([cyaw * q[:, 0] + syaw * q[:, 1], -syaw * q[:, 0] + cyaw * q[:, 1], q[:, 2]], axis=1)
        rel = np.abs(local) / prim.size
        axis = np.argmax(rel, axis=1)
        n_local = np.zeros_like(local)
        n_local[np.arange(len(q)), axis] = np.sign(local[np.arange(len(q)), axis])
        n = np.stack([cyaw * n_local[:, 0] - syaw * n_local[:, 1], syaw * n_local[:, 0] + cyaw * n_local[:, 1], n_local[:, 2]], axis=1)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return n / np.maximum(norm, 1e-9)


def _dot3(vectors: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """(N, 3) . (3,) in three elementwise passes: a BLAS matrix-vector product would start a thread per
    core in each of the renderer's worker processes."""
    d = np.asarray(direction, np.float32)
    out = vectors[:, 0] * d[0]
    out += vectors[:, 1] * d[1]
    out += vectors[:, 2] * d[2]
    return out


def _haze(scene: Scene, color: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Blend towards the horizon colour with distance: ``horizon + (color - horizon) * exp(-haze * t)``.

    ``color`` is channel-major (3, N), as is the result (elementwise over long rows, not 3-long ones).
    """
    horizon = scene.sky_horizon.astype(np.float32)[:, None]
    keep = np.exp(np.asarray(t, np.float32) * -scene.haze)[None, :]
    out = np.asarray(color, np.float32) - horizon
    out *= keep
    out += horizon
    return out


def _shade_primitive(
    scene: Scene, prim: Primitive, center: np.ndarray, origin: np.ndarray, t: np.ndarray, ray: tuple[np.ndarray, ...]
) -> np.ndarray:
    d = np.stack(ray, axis=1)
    p = origin[None, :] + t[:, None] * d
    n = _normals(prim, center, p)
    local = p - center
    tex = fbm(
        (local[:, 0] + 0.7 * local[:, 2]) * prim.texture_freq, (local[:, 1] - 0.6 * local[:, 2]) * prim.texture_freq,
        prim.seed, octaves=2,
    )
    albedo = prim.albedo[None, :] * (1.0 + prim.texture * (2.0 * tex[:, None] - 1.0))
    lambert = np.clip(_dot3(n, scene.sun_dir), 0.0, None)[:, None]
    sky_light = (0.5 + 0.5 * n[:, 2:3])  # surfaces facing up see more sky
    light = scene.ambient * sky_light + (1.0 - scene.ambient) * lambert * scene.sun_color[None, :]
    return _haze(scene, (albedo * light * 1.1).T, t).T


def _shade_ground(
    scene: Scene, cls: np.ndarray, gx: np.ndarray, gy: np.ndarray, t: np.ndarray,
    dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, normals: np.ndarray, names: dict[str, int],
) -> np.ndarray:
    """Ground colour: per-class albedo x texture, lit by the sun on the terrain's slope (Lambert) plus sky
    light; water mirrors the sky instead (Schlick-like Fresnel on the grazing angle). Then haze.

    Channel-major (3, N): the per-pixel passes run over long rows rather than 3-long ones.
    """
    n = len(cls)
    albedo = np.zeros((3, 256), np.float32)
    for name in ("smooth_ground", "rough_ground", "low_vegetation", "water"):
        albedo[:, names[name]] = scene.ground_albedo[name]
    texture = np.ones(n, np.float32)
    veg, veg_red = None, None  # vegetation pixels get a red tint from the patch noise
    for name in ("smooth_ground", "rough_ground", "low_vegetation"):
        m = np.flatnonzero(cls == names[name])
        if m.size == 0:
            continue
        x, y = gx[m], gy[m]
        if name == "smooth_ground":
            tex = 0.7 * fbm(x, y, scene.seed + 21, octaves=2, frequency=0.3) + 0.3 * value_noise(x * 9.0, y * 9.0, scene.seed + 22)
            texture[m] = 0.85 + 0.3 * tex
        elif name == "rough_ground":
            tex = fbm(x, y, scene.seed + 31, octaves=3, frequency=2.5)
            pebbles = value_noise(x * 14.0, y * 14.0, scene.seed + 32)
            texture[m] = (0.6 + 0.6 * tex) * (0.85 + 0.3 * pebbles)
        else:
            blades = value_noise(x * 25.0, y * 6.0, scene.seed + 41)
            patches = fbm(x, y, scene.seed + 42, octaves=2, frequency=0.5)
            texture[m] = (0.55 + 0.5 * blades) * (0.8 + 0.4 * patches)
            veg = m
            veg_red = 0.08 * (patches - 0.5)
    sun = _dot3(normals, scene.sun_dir)
    np.maximum(sun, 0.0, out=sun)
    sun *= 1.0 - scene.ambient
    sky_light = normals[:, 2] * (0.5 * scene.ambient)
    sky_light += 0.5 * scene.ambient
    texture *= 1.1
    color = albedo.take(cls, axis=1)
    color *= texture
    if veg is not None:
        color[0, veg] += veg_red * 1.1
    color *= sky_light + scene.sun_color.astype(np.float32)[:, None] * sun
    water = np.flatnonzero(cls == names["water"])
    if water.size:
        wx, wy, wz = dx[water], dy[water], dz[water]
        cos_i = np.clip(-wz / np.sqrt(wx * wx + wy * wy + wz * wz), 0.0, 1.0)
        fresnel = (0.04 + 0.96 * (1.0 - cos_i) ** 5)[:, None]
        ripple = value_noise(gx[water] * 6.0, gy[water] * 6.0, scene.seed + 51)
        elev = np.clip(cos_i + 0.1 * (ripple - 0.5), 0.0, 1.0)[:, None]
        reflected = scene.sky_horizon[None, :] * (1.0 - elev) + scene.sky_zenith[None, :] * elev
        color[:, water] = (albedo[:, names["water"]][None, :] * (1.0 - fresnel) + reflected * (0.35 + 0.65 * fresnel)).T
    return _haze(scene, color, t)


def _shade_sky(scene: Scene, rgb: np.ndarray, sky: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> None:
    """Sky colour into ``rgb`` where ``sky``: horizon-to-zenith gradient, clouds, the sun's disc and glow."""
    pixels = np.flatnonzero(sky)
    flat_rgb, flat_dx, flat_dy, flat_dz = rgb.reshape(-1, 3), dx.ravel(), dy.ravel(), dz.ravel()
    for part in chunks(pixels.size):
        sel = pixels[part]
        flat_rgb[sel] = _sky_color(scene, flat_dx[sel], flat_dy[sel], flat_dz[sel])


def _sky_color(scene: Scene, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Sky colour (N, 3) of view rays (x, y, z); computed channel-major (3, N), returned as its transpose."""
    norm = np.sqrt(x * x + y * y + z * z)
    elev = np.clip(z / norm, 0.0, 1.0)
    w = np.sqrt(elev)
    color = scene.sky_horizon[:, None] * (1.0 - w) + scene.sky_zenith[:, None] * w
    if scene.cloud_cover > 0.05:
        zc = np.maximum(z / norm, 0.03)
        cloud = fbm(x / norm / zc * 0.8, y / norm / zc * 0.8, scene.seed + 61, octaves=2)
        amount = np.clip((cloud - (1.0 - scene.cloud_cover)) * 3.0, 0.0, 1.0)
        color = color * (1.0 - amount) + np.array([0.92, 0.92, 0.94])[:, None] * amount
    sun = np.clip((x * scene.sun_dir[0] + y * scene.sun_dir[1] + z * scene.sun_dir[2]) / norm, 0.0, 1.0)
    # The powers only where they can change the colour: sun**8 is 0 at sun = 0, and below sun = 0.6 sun**300 is
    # < 3e-67, far under half an ulp of any sky colour (each channel > 0.1), so adding it leaves the sum unchanged.
    disc, glow = np.zeros_like(sun), np.zeros_like(sun)
    bright, lit = sun > np.float32(0.6), sun > 0
    disc[bright] = sun[bright] ** 300
    glow[lit] = sun[lit] ** 8
    color = color + disc * 0.8 + glow * 0.15
    return color.T


def _sensor(scene: Scene, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, white balance, vignetting, gamma-free tone clip, Gaussian read noise -> uint8."""
    h, w = rgb.shape[:2]
    gain = (scene.exposure * scene.white_balance * 255.0).astype(np.float32)
    image = np.empty(rgb.shape, np.uint8)
    yy = (np.arange(h, dtype=np.float32) - h / 2.0) / (h / 2.0)
    xx = (np.arange(w, dtype=np.float32) - w / 2.0) / (w / 2.0)
    sigma = np.float32(scene.noise_sigma)
    # A band of rows at a time; the noise is drawn in row order, so the stream is the one a whole-image draw gives.
    # Rows as flat (w * 3) vectors, the per-channel and per-column factors tiled to match: no 3-long inner loops.
    flat_rgb, flat_image = rgb.reshape(h, w * 3), image.reshape(h, w * 3)
    gain_row = np.tile(gain, w)
    for rows in chunks(h, max(1, CHUNK // w)):
        out = flat_rgb[rows] * gain_row[None, :]
        if scene.vignette > 0:
            fall = 1.0 - scene.vignette * 0.5 * (yy[rows, None] ** 2 + xx[None, :] ** 2)
            out *= fall.repeat(3, axis=1)
        if scene.noise_sigma > 0:
            noise = rng.standard_normal((out.shape[0], w, 3), dtype=np.float32).reshape(out.shape)
            noise *= sigma
            out += noise
        out += 0.5
        np.clip(out, 0, 255, out=out)
        flat_image[rows] = out
    return image


# --------------------------------------------------------------------------- drive


def drive_pose(scene: Scene, time_s: float, speed: float = 4.0, start_x: float = 0.0) -> np.ndarray:
    """Vehicle pose at time_s on a drive along the road centre, on the terrain, with a gentle deterministic bounce."""
    x = start_x + speed * time_s
    y = float(scene.road_center(x))
    yaw = scene.road_heading(x)
    pitch = 0.012 * math.sin(1.7 * x + scene.seed) + 0.006 * math.sin(4.1 * x)
    roll = 0.01 * math.sin(1.3 * x + 2.0 * scene.seed)
    return terrain_pose(scene.terrain, x, y, yaw, roll, pitch)


# --------------------------------------------------------------------------- folder writer
#
# Layout (read by datasets.SyntheticFolderDataset):
#   <root>/<split>/rgb/NNNNNN.png     8-bit RGB (stored BGR by cv2, as every PNG reader expects)
#   <root>/<split>/depth/NNNNNN.png   uint16, metres * 256, 0 = invalid (KITTI convention)
#   <root>/<split>/label/NNNNNN.png   uint8 ontology ids
#   <root>/<split>/camera/NNNNNN.json this frame's camera (K, size, mount, T_base_cam), vehicle pose, scene seed
#   <root>/<split>/camera.yaml        the split's camera (fixed) or camera ranges, ontology version, settings

SPLITS = ("train", "val", "test")
FOLDER_KINDS = ("rgb", "depth", "label")
FRAME_CAMERA_DIR = "camera"
PER_FRAME = "per_frame"  # camera.yaml's K when every frame has its own camera (see camera/NNNNNN.json)


def depth_to_png16(depth: np.ndarray) -> np.ndarray:
    """KITTI PNG16 encoding: round(metres * 256), 0 stays invalid, clipped to uint16."""
    scaled = np.rint(np.nan_to_num(depth, nan=0.0) * 256.0)
    return np.clip(scaled, 0, 65535).astype(np.uint16)


def _write_png(path: Any, image: np.ndarray) -> None:
    import cv2

    from model_tools.io_utils import atomic_write

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"cv2 could not encode {path}")
    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_bytes(buf.tobytes())


def frame_record(frame: SynthFrame, scene_seed: int, flat: bool) -> dict[str, Any]:
    """What camera/NNNNNN.json holds: the frame's camera, vehicle pose and scene seed (build_scene rebuilds it)."""
    assert frame.rig is not None
    return {"scene_seed": int(scene_seed), "flat": bool(flat), "camera": frame.rig.to_dict(),
            "hfov_deg": frame.rig.hfov_deg, "T_world_base": np.asarray(frame.T_world_base).tolist()}


def write_frame_files(split_dir: Any, index: int, frame: SynthFrame, record: dict[str, Any] | None = None) -> None:
    """Write one frame's rgb/depth/label PNGs and its camera record (each atomically) under a split folder."""
    import json
    from pathlib import Path

    from model_tools.io_utils import atomic_write

    split_dir = Path(split_dir)
    name = f"{index:06d}.png"
    _write_png(split_dir / "rgb" / name, np.ascontiguousarray(frame.rgb[:, :, ::-1]))
    _write_png(split_dir / "depth" / name, depth_to_png16(frame.depth))
    _write_png(split_dir / "label" / name, frame.label)
    if record is not None:
        with atomic_write(split_dir / FRAME_CAMERA_DIR / f"{index:06d}.json", overwrite=True) as tmp:
            tmp.write_text(json.dumps(record))


def read_frame_rig(split_dir: Any, stem: str) -> CameraRig:
    """The camera of frame ``stem`` of a synthetic split: camera/<stem>.json, else the split's fixed camera.yaml.

    Raises:
        DataError: neither holds this frame's intrinsics.
    """
    import json
    from pathlib import Path

    import yaml

    from perception_core.errors import DataError

    split_dir = Path(split_dir)
    record = split_dir / FRAME_CAMERA_DIR / f"{stem}.json"
    if record.is_file():
        try:
            return CameraRig.from_dict(json.loads(record.read_text())["camera"])
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{record}: not a frame camera record ({err})") from err
    split_file = split_dir / "camera.yaml"
    try:
        data = yaml.safe_load(split_file.read_text()) if split_file.is_file() else None
    except yaml.YAMLError as err:
        raise DataError(f"{split_file} is not valid YAML: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("K"), list):
        raise DataError(f"no camera for frame {stem} of {split_dir}: {record} is missing and {split_file} has no fixed K")
    return CameraRig.from_dict(data)


DRIVE_SPAN_M = 30.0  # a drive frame's vehicle is somewhere on the first DRIVE_SPAN_M metres of a drive
DRIVE_SPEED_MPS = 4.0


def is_drive_frame(scene_seed: int, drive_share: float) -> bool:
    """Whether the frame of ``scene_seed`` is a drive frame, for a split with ``drive_share`` of them."""
    if drive_share <= 0.0:
        return False
    draw = np.random.default_rng(np.random.SeedSequence([int(scene_seed), 0xD21E])).random()
    return bool(draw < drive_share)


def render_drive_frame(rig: CameraRig, scene_seed: int, ontology: Ontology | None = None) -> tuple[SynthFrame, dict[str, Any]]:
    """A frame as a drive bag has them: a clear-corridor scene (a ditch or drop-off beside the road, no solids
    on it) and the vehicle at a time drawn from ``scene_seed`` on its first ``DRIVE_SPAN_M`` metres.

    Returns the frame and what rebuilds it (``build_scene(seed, length, clear_corridor=True)``, ``drive_pose``).
    """
    scene = build_scene(scene_seed, length=DRIVE_SPAN_M, clear_corridor=True)
    time_s = float(np.random.default_rng(np.random.SeedSequence([int(scene_seed), 0xD21F])).uniform(
        0.0, DRIVE_SPAN_M / DRIVE_SPEED_MPS))
    pose = drive_pose(scene, time_s, DRIVE_SPEED_MPS)
    frame = render_frame(rig, scene_seed, pose, time_s=time_s, scene=scene, ontology=ontology)
    return frame, {"clear_corridor": True, "length_m": DRIVE_SPAN_M, "time_s": time_s, "speed_mps": DRIVE_SPEED_MPS}


@dataclass(frozen=True)
class _FolderJob:
    split_dir: str
    camera: CameraSource
    seed: int
    split: str
    flat: bool
    ontology_path: str | None
    drive_share: float = 0.0


def _render_and_write(job: _FolderJob, index: int) -> int:
    onto = load_ontology(job.ontology_path) if job.ontology_path else None
    scene_seed = frame_seed(job.seed, index, job.split)
    rig = camera_for(job.camera, scene_seed)
    if not job.flat and is_drive_frame(scene_seed, job.drive_share):
        frame, drive = render_drive_frame(rig, scene_seed, onto)
        record = frame_record(frame, scene_seed, job.flat) | {"drive": drive}
    else:
        frame = render_frame(rig, scene_seed, flat=job.flat, ontology=onto)
        record = frame_record(frame, scene_seed, job.flat)
    write_frame_files(job.split_dir, index, frame, record)
    return index


def _folder_worker(args: tuple[_FolderJob, int]) -> int:
    return _render_and_write(*args)


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _pool(workers: int) -> Any:
    """A process pool that works the same on every platform (spawn: no inherited threads or locks).

    The workers start with one BLAS/OpenMP thread each: ``workers`` processes
    each running a thread per core would oversubscribe the machine.
    """
    import multiprocessing
    import os

    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(_THREAD_VARIABLES, "1"))
    try:
        return multiprocessing.get_context("spawn").Pool(processes=workers, initializer=_init_worker)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _init_worker() -> None:
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # cv2 is only needed for PNG encoding; rendering works without it
        pass


def split_info(camera: CameraSource, n_frames: int, seed: int, split: str, flat: bool, onto: Ontology,
               drive_share: float = 0.0) -> dict[str, Any]:
    """camera.yaml: the fixed camera (K, mount, ...) or the ranges (K = 'per_frame'), plus generator settings."""
    if isinstance(camera, CameraRig):
        info: dict[str, Any] = {**camera.to_dict(), "camera": "fixed"}
    else:
        info = {"width": camera.width, "height": camera.height, "K": PER_FRAME, "camera": PER_FRAME,
                "camera_ranges": camera.to_dict()}
    return {
        **info,
        "frame_cameras": f"{FRAME_CAMERA_DIR}/NNNNNN.json",
        "split": split,
        "frames": int(n_frames),
        "seed": int(seed),
        "flat": bool(flat),
        "drive_share": float(drive_share),
        "depth_encoding": "uint16 PNG, metres * 256, 0 = invalid",
        "max_depth_m": MAX_DEPTH_M,
        "ontology_version": onto.version,
        "class_names": onto.names,
    }


def write_synthetic_folder(
    out: Any,
    camera: CameraSource,
    n_frames: int,
    seed: int,
    split: str = "train",
    *,
    workers: int = 1,
    flat: bool = False,
    overwrite: bool = False,
    ontology_path: Any = None,
    progress: bool = True,
    max_seconds: float | None = None,
    drive_share: float = 0.0,
) -> Any:
    """Render ``n_frames`` independent frames into ``<out>/<split>/`` (layout above); returns the split folder.

    ``drive_share`` of the frames (drawn per frame from its seed) are drive frames (``render_drive_frame``:
    the scenes and poses of a drive bag, which the costmap bench scores); the rest are one pose near the start
    of a scene.

    Frame i of a split is rendered from frame_seed(seed, i, split) alone (its
    camera too, when ``camera`` is a CameraRanges), so the bytes do not
    depend on ``workers``, and a split written in one run equals the same
    split written in another. ``max_seconds`` stops early: the split then
    holds the first frames that were done in time (camera.yaml says how
    many). Refuses to mix with existing frames unless ``overwrite`` (which
    first removes that split's old frame files).
    """
    import time
    from pathlib import Path

    from model_tools.io_utils import atomic_write
    from perception_core.errors import OutputExistsError

    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    if not 0.0 <= drive_share <= 1.0:
        raise ValueError(f"drive_share must be in [0, 1], got {drive_share}")
    split_dir = Path(out) / split
    existing = [p for kind in FOLDER_KINDS for p in (split_dir / kind).glob("[0-9]*.png")]
    if existing and not overwrite:
        raise OutputExistsError(f"{split_dir} already holds {len(existing)} frame files; pass --overwrite to replace them")
    for path in existing + list((split_dir / FRAME_CAMERA_DIR).glob("[0-9]*.json")):
        path.unlink()
    for kind in (*FOLDER_KINDS, FRAME_CAMERA_DIR):
        (split_dir / kind).mkdir(parents=True, exist_ok=True)
    onto = load_ontology(ontology_path) if ontology_path else _default_ontology()
    import yaml

    def write_info(count: int) -> None:
        with atomic_write(split_dir / "camera.yaml", overwrite=True) as tmp:
            tmp.write_text(yaml.safe_dump(split_info(camera, count, seed, split, flat, onto, drive_share),
                                          sort_keys=False))

    write_info(n_frames)
    job = _FolderJob(str(split_dir), camera, int(seed), split, bool(flat), str(ontology_path) if ontology_path else None,
                     float(drive_share))
    tasks = [(job, i) for i in range(n_frames)]
    bar = _progress(n_frames, f"synth {split}", progress)
    deadline = time.monotonic() + max_seconds if max_seconds else math.inf
    done = 0
    try:
        if workers <= 1 or n_frames <= 1:
            for task in tasks:
                if time.monotonic() > deadline:
                    break
                _folder_worker(task)
                done += 1
                bar.update(1)
        else:
            with _pool(workers) as pool:
                for _ in pool.imap(_folder_worker, tasks, chunksize=max(1, min(8, n_frames // (8 * workers)))):
                    done += 1
                    bar.update(1)
                    if time.monotonic() > deadline:
                        pool.terminate()
                        break
    finally:
        bar.close()
    if done < n_frames:  # stopped at the deadline: keep the contiguous first frames only
        for kind, suffix in ((k, ".png") for k in FOLDER_KINDS):
            for path in (split_dir / kind).glob("[0-9]*" + suffix):
                if int(path.stem) >= done:
                    path.unlink()
        for path in (split_dir / FRAME_CAMERA_DIR).glob("[0-9]*.json"):
            if int(path.stem) >= done:
                path.unlink()
        for path in split_dir.glob("*/.*.tmp*"):  # writes cut short by the stop
            path.unlink()
        write_info(done)
    return split_dir


def _progress(total: int, desc: str, enabled: bool) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional on minimal installs
        enabled = False
    if not enabled:
        class _Silent:
            def update(self, n: int = 1) -> None:
                pass

            def close(self) -> None:
                pass

        return _Silent()
    return tqdm(total=total, desc=desc, unit="frame")
