"""Procedural off-road scenes rendered by vectorised ray casting, with exact depth and labels.

Why: the depth and segmentation models need pixel-exact metric depth and
labels in the vehicle's own camera geometry, and geometry tests need a
scene whose depth is known analytically. A calibrated pinhole camera on a
vehicle (known mount height and pitch) casts one ray per pixel; rays meet
analytic primitives (ground plane, ellipsoids, vertical cylinders, yawed
boxes) in closed form, with numpy over all pixels of a primitive's
projected bounding box at once (no per-pixel Python loop).

Conventions:
- World and base_link: x forward, y left, z up (REP 103); base_link's
  origin is on the ground under the vehicle, so the camera height above
  flat ground is the mount z.
- Camera optical frame: x right, y down, z forward (REP 103 ``_optical``).
- depth: z along the optical axis in metres, float32, 0 = invalid (sky,
  beyond MAX_DEPTH_M); label: uint8 ontology ids.

Only numpy, cv2 and yaml are needed here (the GPU box has no ROS or rosbags).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np

from perception_core.geometry import camera_optical_pose, pose_matrix
from perception_core.geometry import quaternion_from_matrix as rotation_to_quaternion
from perception_core.ontology import Ontology, load_ontology

MAX_DEPTH_M = 250.0  # KITTI PNG16 tops out at 65535/256 = 256 m; farther ground is rendered but has invalid depth
NEAR_M = 0.05
_SPLIT_SALT = {"train": 0, "val": 1, "test": 2}
# Ontology class names the generator draws; each must exist in the ontology.
SYNTH_CLASSES = ("smooth_ground", "rough_ground", "low_vegetation", "water", "static_obstacle", "dynamic", "sky")


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
        cls, width: int = 1280, height: int = 1080, hfov_deg: float = 90.0, mount_height: float = 1.4, pitch_deg: float = 10.0
    ) -> CameraRig:
        """The vehicle camera (1280x1080) or a resized copy: square pixels, centred principal point."""
        fx = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(
            width=width, height=height, fx=fx, fy=fx, cx=width / 2.0, cy=height / 2.0,
            mount_height=mount_height, pitch=math.radians(pitch_deg),
        )

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the calibration's conventional name
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

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


@dataclass
class SynthFrame:
    """One rendered frame with its ground truth and calibration."""

    rgb: np.ndarray  # uint8 [H, W, 3] RGB
    depth: np.ndarray  # float32 [H, W] metres along the optical axis, 0 = invalid (sky, > MAX_DEPTH_M)
    label: np.ndarray  # uint8 [H, W] ontology class ids
    K: np.ndarray  # 3x3
    T_base_cam: np.ndarray  # 4x4 optical frame -> base_link
    T_world_base: np.ndarray = field(default_factory=lambda: np.eye(4))  # vehicle pose in the scene


# --------------------------------------------------------------------------- noise


def _hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point (uint32 wrap-around hash)."""
    h = ix.astype(np.uint32) * np.uint32(0x8DA6B343)
    h ^= iy.astype(np.uint32) * np.uint32(0xD8163841)
    h ^= np.uint32((seed * 0x9E3779B1) & 0xFFFFFFFF)
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> np.uint32(12)
    h *= np.uint32(0x297A2D39)
    h ^= h >> np.uint32(15)
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / 16777216.0)


def value_noise(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Smooth 2D value noise in [0, 1), continuous in world coordinates (textures stay put as the camera moves)."""
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    xf = np.floor(x)
    yf = np.floor(y)
    tx = x - xf
    ty = y - yf
    ix = xf.astype(np.int32)
    iy = yf.astype(np.int32)
    tx = tx * tx * (3.0 - 2.0 * tx)
    ty = ty * ty * (3.0 - 2.0 * ty)
    a = _hash01(ix, iy, seed)
    b = _hash01(ix + 1, iy, seed)
    c = _hash01(ix, iy + 1, seed)
    d = _hash01(ix + 1, iy + 1, seed)
    top = a + (b - a) * tx
    bottom = c + (d - c) * tx
    return top + (bottom - top) * ty


def fbm(x: np.ndarray, y: np.ndarray, seed: int, octaves: int = 3, frequency: float = 1.0) -> np.ndarray:
    """Fractal sum of value noise, normalised to [0, 1)."""
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
    """One analytic solid. kind: 'ellipsoid' | 'cylinder' (vertical, capped) | 'box' (yawed)."""

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

    def at(self, time_s: float) -> np.ndarray:
        return self.center + self.velocity * time_s

    def bounding_sphere(self, time_s: float) -> tuple[np.ndarray, float]:
        c = self.at(time_s)
        if self.kind == "cylinder":
            r, h = float(self.size[0]), float(self.size[1])
            return c + np.array([0.0, 0.0, h / 2.0]), math.hypot(r, h / 2.0)
        return c, float(np.linalg.norm(self.size)) if self.kind == "box" else float(np.max(self.size))


@dataclass
class Puddle:
    x: float
    y: float
    a: float  # semi-axes (m)
    b: float
    angle: float


@dataclass
class Scene:
    """A procedural world: ground regions, puddles, primitives and lighting (all from one seed)."""

    seed: int
    road_amplitude: float
    road_wavelength: float
    road_phase: float
    road_width: float
    has_road: bool
    grass_threshold: float
    grass_scale: float
    puddles: list[Puddle]
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

    def road_center(self, x: np.ndarray | float) -> np.ndarray | float:
        return self.road_amplitude * np.sin(2.0 * np.pi * np.asarray(x) / self.road_wavelength + self.road_phase)

    def road_heading(self, x: float) -> float:
        slope = self.road_amplitude * 2.0 * math.pi / self.road_wavelength * math.cos(
            2.0 * math.pi * x / self.road_wavelength + self.road_phase
        )
        return math.atan(slope)

    def ground_class(self, x: np.ndarray, y: np.ndarray, names: dict[str, int]) -> np.ndarray:
        """Class id of ground points: road (smooth), grass or rough terrain by noise, puddles (water)."""
        n = fbm(x, y, self.seed + 7, octaves=2, frequency=1.0 / self.grass_scale)
        out = np.where(n > self.grass_threshold, names["low_vegetation"], names["rough_ground"]).astype(np.uint8)
        if self.has_road:
            # Ragged road edge: the boundary wanders by up to ~0.4 m.
            edge = self.road_width / 2.0 + 0.4 * (value_noise(x * 0.7, y * 0.7, self.seed + 11) - 0.5)
            out[np.abs(y - self.road_center(x)) < edge] = names["smooth_ground"]
        for p in self.puddles:
            reach = 1.2 * max(p.a, p.b)
            near = np.flatnonzero((np.abs(x - p.x) < reach) & (np.abs(y - p.y) < reach))
            if near.size == 0:
                continue
            px, py = x[near], y[near]
            dx, dy = px - p.x, py - p.y
            ca, sa = math.cos(p.angle), math.sin(p.angle)
            u = (dx * ca + dy * sa) / p.a
            v = (-dx * sa + dy * ca) / p.b
            wobble = 1.0 + 0.25 * (value_noise(px * 1.5, py * 1.5, self.seed + 13) - 0.5)
            out[near[u * u + v * v < wobble]] = names["water"]
        return out


def frame_seed(seed: int, index: int, split: str = "train") -> int:
    """Scene seed of frame ``index`` of a split: independent streams per (seed, split, index)."""
    salt = _SPLIT_SALT.get(split, sum(split.encode()) + 3)
    return int(np.random.SeedSequence([int(seed), salt, int(index)]).generate_state(1)[0])


def build_scene(seed: int, length: float = 0.0, flat: bool = False, clear_corridor: bool = False) -> Scene:
    """Random scene along a road starting at x=0 and heading +x.

    ``length`` metres of drive are populated beyond the first ~120 m;
    ``flat`` gives ground and sky only (no primitives, no puddles, level
    lighting noise) for geometry tests; ``clear_corridor`` keeps the road
    free of solids (a drive must not pass through them).
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC0FFEE]))
    has_road = flat or rng.random() < 0.85
    road_width = float(rng.uniform(3.0, 6.0))
    scene = Scene(
        seed=int(seed) % 100003,
        road_amplitude=0.0 if flat else float(rng.uniform(0.0, 5.0)),
        road_wavelength=float(rng.uniform(50.0, 140.0)),
        road_phase=float(rng.uniform(0, 2 * np.pi)),
        road_width=road_width,
        has_road=has_road,
        grass_threshold=float(rng.uniform(0.35, 0.6)),
        grass_scale=float(rng.uniform(4.0, 15.0)),
        puddles=[],
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
    # Featured content in the camera's view from the start pose (x=0 on the road, facing +x):
    # guarantees every class is present in single frames.
    for _ in range(int(rng.integers(1, 4))):
        x = rng.uniform(5.0, 30.0)
        y = scene.road_center(x) + rng.uniform(-0.4, 0.4) * x
        scene.puddles.append(Puddle(x, float(y), rng.uniform(0.6, 2.5), rng.uniform(0.4, 1.5), rng.uniform(0, np.pi)))
    for x in rng.uniform(0.0, x_end, size=int(rng.integers(2, 6) * (1 + length / 150.0))):
        y = scene.road_center(x) + rng.normal(0.0, road_width)
        scene.puddles.append(Puddle(float(x), float(y), rng.uniform(0.5, 3.0), rng.uniform(0.4, 2.0), rng.uniform(0, np.pi)))

    def place(x_lo: float, x_hi: float, lateral: float, min_off_road: float) -> tuple[float, float]:
        for _ in range(20):
            x = float(rng.uniform(x_lo, x_hi))
            y = float(scene.road_center(x) + rng.uniform(-lateral, lateral))
            if abs(y - scene.road_center(x)) >= min_off_road:
                return x, y
        return x, float(scene.road_center(x) + math.copysign(min_off_road, rng.uniform(-1, 1)))

    corridor = road_width / 2.0 + 1.5 if clear_corridor else 0.0
    near_view = (6.0, 35.0)
    # Featured obstacles ahead (on or beside the road).
    _add_person(scene, rng, *place(*near_view, 6.0, corridor), moving=True, along_road=clear_corridor)
    _add_vehicle(scene, rng, *place(12.0, 45.0, 10.0, corridor + 1.0 if corridor else 0.0))
    _add_rock(scene, rng, *place(*near_view, 7.0, corridor))
    tree_clearance = road_width / 2.0 + (4.5 if clear_corridor else 1.0)  # crowns (radius <= 3 m) overhang
    _add_tree(scene, rng, *place(10.0, 45.0, 14.0, tree_clearance))
    _add_bush(scene, rng, *place(*near_view, 8.0, max(corridor, road_width / 2.0 + 0.3)))
    # Clutter over the whole extent.
    density = (x_end + 20.0) / 100.0
    for _ in range(int(rng.integers(8, 20) * density)):
        _add_tree(scene, rng, *place(-10.0, x_end, 40.0, max(tree_clearance, road_width / 2.0 + 1.5)))
    for _ in range(int(rng.integers(4, 12) * density)):
        _add_bush(scene, rng, *place(-10.0, x_end, 30.0, road_width / 2.0 + 0.5))
    for _ in range(int(rng.integers(4, 12) * density)):
        _add_rock(scene, rng, *place(-10.0, x_end, 30.0, corridor))
    for _ in range(int(rng.integers(0, 4) * density)):
        _add_person(scene, rng, *place(0.0, x_end, 20.0, corridor), moving=rng.random() < 0.7,
                    along_road=clear_corridor)
    for _ in range(int(rng.integers(0, 3) * density)):
        _add_vehicle(scene, rng, *place(0.0, x_end, 25.0, corridor + 1.0 if corridor else road_width / 2.0 + 1.5))
    return scene


def _jitter(rng: np.random.Generator, rgb: Sequence[float], amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, size=3), 0.0, 1.0)


def _sun_direction(rng: np.random.Generator) -> np.ndarray:
    elevation = rng.uniform(math.radians(15), math.radians(70))
    azimuth = rng.uniform(0, 2 * np.pi)
    return np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])


def _prim_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 1 << 20))


def _add_tree(scene: Scene, rng: np.random.Generator, x: float, y: float) -> None:
    trunk_r, trunk_h = rng.uniform(0.12, 0.4), rng.uniform(2.0, 5.0)
    crown = np.array([rng.uniform(1.0, 3.0)] * 2 + [rng.uniform(1.2, 3.5)])
    bark = _jitter(rng, [0.3, 0.21, 0.13], 0.05)
    leaves = _jitter(rng, [0.12, 0.3, 0.08], 0.05)
    scene.primitives.append(Primitive("cylinder", np.array([x, y, 0.0]), np.array([trunk_r, trunk_h, 0.0]),
                                      "static_obstacle", bark, texture=0.3, texture_freq=6.0, seed=_prim_seed(rng)))
    scene.primitives.append(Primitive("ellipsoid", np.array([x, y, trunk_h + 0.6 * crown[2]]), crown,
                                      "static_obstacle", leaves, texture=0.5, texture_freq=3.0, seed=_prim_seed(rng)))


def _add_bush(scene: Scene, rng: np.random.Generator, x: float, y: float) -> None:
    r = rng.uniform(0.4, 1.3)
    radii = np.array([r * rng.uniform(0.8, 1.3), r * rng.uniform(0.8, 1.3), r * rng.uniform(0.5, 0.9)])
    scene.primitives.append(Primitive("ellipsoid", np.array([x, y, radii[2] * 0.6]), radii, "static_obstacle",
                                      _jitter(rng, [0.2, 0.36, 0.1], 0.06), texture=0.5, texture_freq=4.0, seed=_prim_seed(rng)))


def _add_rock(scene: Scene, rng: np.random.Generator, x: float, y: float) -> None:
    r = rng.uniform(0.25, 1.0)
    radii = np.array([r * rng.uniform(0.8, 1.5), r * rng.uniform(0.8, 1.5), r * rng.uniform(0.5, 0.9)])
    scene.primitives.append(Primitive("ellipsoid", np.array([x, y, radii[2] * rng.uniform(0.2, 0.6)]), radii,
                                      "static_obstacle", _jitter(rng, [0.46, 0.44, 0.41], 0.08), texture=0.35,
                                      texture_freq=5.0, seed=_prim_seed(rng)))


def _add_person(scene: Scene, rng: np.random.Generator, x: float, y: float, moving: bool, along_road: bool = False) -> None:
    """A person (body cylinder + head); ``along_road`` walks parallel to the road (never into a drive's path)."""
    body_h = rng.uniform(1.2, 1.55)
    heading = scene.road_heading(x) + (np.pi if rng.random() < 0.5 else 0.0) if along_road else rng.uniform(0, 2 * np.pi)
    velocity = np.array([math.cos(heading), math.sin(heading), 0.0]) * rng.uniform(0.5, 1.5) if moving else np.zeros(3)
    clothes = rng.uniform(0.05, 0.9, size=3)
    scene.primitives.append(Primitive("cylinder", np.array([x, y, 0.0]), np.array([rng.uniform(0.18, 0.28), body_h, 0.0]),
                                      "dynamic", clothes, velocity=velocity, texture=0.15, seed=_prim_seed(rng)))
    head_r = rng.uniform(0.1, 0.13)
    scene.primitives.append(Primitive("ellipsoid", np.array([x, y, body_h + head_r * 0.9]), np.array([head_r] * 3),
                                      "dynamic", _jitter(rng, [0.7, 0.52, 0.4], 0.15), velocity=velocity,
                                      texture=0.05, seed=_prim_seed(rng)))


def _add_vehicle(scene: Scene, rng: np.random.Generator, x: float, y: float) -> None:
    yaw = scene.road_heading(x) + (0.0 if rng.random() < 0.7 else rng.uniform(-np.pi, np.pi))
    length, width, height = rng.uniform(3.5, 5.5), rng.uniform(1.6, 2.2), rng.uniform(0.9, 1.3)
    speed = rng.uniform(0.0, 4.0) if rng.random() < 0.5 else 0.0
    velocity = np.array([math.cos(yaw), math.sin(yaw), 0.0]) * speed
    paint = rng.uniform(0.05, 0.9, size=3)
    base_z = 0.3 + height / 2.0
    scene.primitives.append(Primitive("box", np.array([x, y, base_z]), np.array([length / 2, width / 2, height / 2]),
                                      "dynamic", paint, yaw=yaw, velocity=velocity, texture=0.08, seed=_prim_seed(rng)))
    cab_h = rng.uniform(0.5, 0.9)
    back = -rng.uniform(0.0, 0.25) * length
    cab_center = np.array([x + back * math.cos(yaw), y + back * math.sin(yaw), 0.3 + height + cab_h / 2])
    scene.primitives.append(Primitive("box", cab_center, np.array([length * 0.3, width / 2 * 0.95, cab_h / 2]),
                                      "dynamic", paint * 0.8, yaw=yaw, velocity=velocity, texture=0.08, seed=_prim_seed(rng)))


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


def random_pose(scene: Scene, rng: np.random.Generator, jitter: bool = True) -> np.ndarray:
    """A vehicle pose near the road start, heading roughly along it (with small pitch/roll on rough ground)."""
    x = float(rng.uniform(-2.0, 2.0))
    y = float(scene.road_center(x) + rng.uniform(-1.0, 1.0) * (scene.road_width / 2.0 if scene.has_road else 3.0))
    yaw = scene.road_heading(x) + float(rng.normal(0.0, 0.15))
    roll = float(rng.normal(0.0, 0.02)) if jitter else 0.0
    pitch = float(rng.normal(0.0, 0.025)) if jitter else 0.0
    return pose_matrix(x, y, 0.0, roll, pitch, yaw)


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
    ``scene_seed`` (``flat`` = ground and sky only, level vehicle).
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

    # Ground plane z = 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(dz < -1e-6, -origin[2] / dz, np.inf).astype(np.float32)
    tbuf = t_ground.copy()
    pid = np.full(shape, -1, dtype=np.int16)  # -1 ground (or sky where tbuf is inf), k >= 0 primitive k

    world_to_cam = world_cam[:3, :3].T
    rects: dict[int, tuple[int, int, int, int]] = {}
    for k, prim in enumerate(scene.primitives):
        rect = _screen_rect(prim, time_s, origin, world_to_cam, rig)
        if rect is None:
            continue
        v0, v1, u0, u1 = rect
        sl = (slice(v0, v1), slice(u0, u1))
        t = _intersect(prim, time_s, origin, dx[sl], dy[sl], dz[sl])
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

    ground = hit & (pid < 0)
    if ground.any():
        t = tbuf[ground]
        gx = np.float32(origin[0]) + t * dx[ground]
        gy = np.float32(origin[1]) + t * dy[ground]
        cls = scene.ground_class(gx, gy, names)
        label[ground] = cls
        rgb[ground] = _shade_ground(scene, cls, gx, gy, t, dx[ground], dy[ground], dz[ground], names)

    for k, (v0, v1, u0, u1) in rects.items():
        sl = (slice(v0, v1), slice(u0, u1))
        mask = pid[sl] == k
        if not mask.any():
            continue
        prim = scene.primitives[k]
        t = tbuf[sl][mask]
        ray = (dx[sl][mask], dy[sl][mask], dz[sl][mask])
        label[sl][mask] = names[prim.class_name]
        rgb[sl][mask] = _shade_primitive(scene, prim, time_s, origin, t, ray)

    depth = np.where(hit & (tbuf <= MAX_DEPTH_M), tbuf, 0.0).astype(np.float32)
    image = _sensor(scene, rgb, rng)
    return SynthFrame(rgb=image, depth=depth, label=label, K=rig.K, T_base_cam=rig.T_base_cam, T_world_base=pose)


@lru_cache(maxsize=1)
def _default_ontology() -> Ontology:
    return load_ontology()


def _screen_rect(
    prim: Primitive, time_s: float, origin: np.ndarray, world_to_cam: np.ndarray, rig: CameraRig
) -> tuple[int, int, int, int] | None:
    """Conservative pixel rectangle (v0, v1, u0, u1) holding the primitive's bounding sphere, or None if unseen."""
    center, radius = prim.bounding_sphere(time_s)
    cam_x, cam_y, cam_z = world_to_cam @ (center - origin)
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


def _intersect(prim: Primitive, time_s: float, origin: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """Ray parameter of the first hit per ray (inf where missed), closed form per primitive kind."""
    c = prim.at(time_s)
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


def _normals(prim: Primitive, time_s: float, p: np.ndarray) -> np.ndarray:
    """Unit outward normals (N, 3) at hit points p (N, 3)."""
    c = prim.at(time_s)
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


def _haze(scene: Scene, color: np.ndarray, t: np.ndarray) -> np.ndarray:
    keep = np.exp(-scene.haze * t)[:, None]
    return color * keep + scene.sky_horizon[None, :] * (1.0 - keep)


def _shade_primitive(
    scene: Scene, prim: Primitive, time_s: float, origin: np.ndarray, t: np.ndarray, ray: tuple[np.ndarray, ...]
) -> np.ndarray:
    d = np.stack(ray, axis=1)
    p = origin[None, :] + t[:, None] * d
    n = _normals(prim, time_s, p)
    local = p - prim.at(time_s)
    tex = fbm(
        (local[:, 0] + 0.7 * local[:, 2]) * prim.texture_freq, (local[:, 1] - 0.6 * local[:, 2]) * prim.texture_freq,
        prim.seed, octaves=2,
    )
    albedo = prim.albedo[None, :] * (1.0 + prim.texture * (2.0 * tex[:, None] - 1.0))
    lambert = np.clip(n @ scene.sun_dir, 0.0, None)[:, None]
    sky_light = (0.5 + 0.5 * n[:, 2:3])  # surfaces facing up see more sky
    light = scene.ambient * sky_light + (1.0 - scene.ambient) * lambert * scene.sun_color[None, :]
    return _haze(scene, albedo * light * 1.1, t)


def _shade_ground(
    scene: Scene, cls: np.ndarray, gx: np.ndarray, gy: np.ndarray, t: np.ndarray,
    dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, names: dict[str, int],
) -> np.ndarray:
    out = np.empty((len(cls), 3), dtype=np.float32)
    sun_up = float(scene.sun_dir[2])
    light = scene.ambient + (1.0 - scene.ambient) * sun_up
    for name in ("smooth_ground", "rough_ground", "low_vegetation", "water"):
        m = cls == names[name]
        if not m.any():
            continue
        x, y = gx[m], gy[m]
        base = scene.ground_albedo[name][None, :]
        if name == "smooth_ground":
            tex = 0.7 * fbm(x, y, scene.seed + 21, octaves=2, frequency=0.3) + 0.3 * value_noise(x * 9.0, y * 9.0, scene.seed + 22)
            color = base * (0.85 + 0.3 * tex[:, None])
        elif name == "rough_ground":
            tex = fbm(x, y, scene.seed + 31, octaves=3, frequency=2.5)
            pebbles = value_noise(x * 14.0, y * 14.0, scene.seed + 32)
            color = base * (0.6 + 0.6 * tex[:, None]) * (0.85 + 0.3 * pebbles[:, None])
        elif name == "low_vegetation":
            blades = value_noise(x * 25.0, y * 6.0, scene.seed + 41)
            patches = fbm(x, y, scene.seed + 42, octaves=2, frequency=0.5)
            color = base * (0.55 + 0.5 * blades[:, None]) * (0.8 + 0.4 * patches[:, None])
            color[:, 0] += 0.08 * (patches - 0.5)
        else:  # water: dark body mixed with the reflected sky (Schlick-like Fresnel on the grazing angle)
            norm = np.sqrt(dx[m] ** 2 + dy[m] ** 2 + dz[m] ** 2)
            cos_i = np.clip(-dz[m] / norm, 0.0, 1.0)
            fresnel = 0.04 + 0.96 * (1.0 - cos_i) ** 5
            ripple = value_noise(x * 6.0, y * 6.0, scene.seed + 51)
            elev = np.clip(cos_i + 0.1 * (ripple - 0.5), 0.0, 1.0)[:, None]
            reflected = scene.sky_horizon[None, :] * (1.0 - elev) + scene.sky_zenith[None, :] * elev
            color = base * (1.0 - fresnel[:, None]) + reflected * (0.35 + 0.65 * fresnel[:, None])
            out[m] = _haze(scene, color, t[m])
            continue
        out[m] = _haze(scene, color * light * 1.1, t[m])
    return out


def _shade_sky(scene: Scene, rgb: np.ndarray, sky: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> None:
    if not sky.any():
        return
    x, y, z = dx[sky], dy[sky], dz[sky]
    norm = np.sqrt(x * x + y * y + z * z)
    elev = np.clip(z / norm, 0.0, 1.0)
    w = np.sqrt(elev)[:, None]
    color = scene.sky_horizon[None, :] * (1.0 - w) + scene.sky_zenith[None, :] * w
    if scene.cloud_cover > 0.05:
        zc = np.maximum(z / norm, 0.03)
        cloud = fbm(x / norm / zc * 0.8, y / norm / zc * 0.8, scene.seed + 61, octaves=2)
        amount = np.clip((cloud - (1.0 - scene.cloud_cover)) * 3.0, 0.0, 1.0)[:, None]
        color = color * (1.0 - amount) + np.array([0.92, 0.92, 0.94])[None, :] * amount
    sun = np.clip((x * scene.sun_dir[0] + y * scene.sun_dir[1] + z * scene.sun_dir[2]) / norm, 0.0, 1.0)
    color = color + (sun**300)[:, None] * 0.8 + (sun**8)[:, None] * 0.15
    rgb[sky] = color


def _sensor(scene: Scene, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, white balance, vignetting, gamma-free tone clip, Gaussian read noise -> uint8."""
    h, w = rgb.shape[:2]
    gain = (scene.exposure * scene.white_balance * 255.0).astype(np.float32)
    out = rgb * gain[None, None, :]
    if scene.vignette > 0:
        yy = (np.arange(h, dtype=np.float32) - h / 2.0) / (h / 2.0)
        xx = (np.arange(w, dtype=np.float32) - w / 2.0) / (w / 2.0)
        fall = 1.0 - scene.vignette * 0.5 * (yy[:, None] ** 2 + xx[None, :] ** 2)
        out *= fall[:, :, None]
    if scene.noise_sigma > 0:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(scene.noise_sigma)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- drive


def drive_pose(scene: Scene, time_s: float, speed: float = 4.0, start_x: float = 0.0) -> np.ndarray:
    """Vehicle pose at time_s on a drive along the road centre (with a gentle deterministic bounce)."""
    x = start_x + speed * time_s
    y = float(scene.road_center(x))
    yaw = scene.road_heading(x)
    pitch = 0.012 * math.sin(1.7 * x + scene.seed) + 0.006 * math.sin(4.1 * x)
    roll = 0.01 * math.sin(1.3 * x + 2.0 * scene.seed)
    return pose_matrix(x, y, 0.0, roll, pitch, yaw)


# --------------------------------------------------------------------------- folder writer
#
# Layout (read by datasets.SyntheticFolderDataset):
#   <root>/<split>/rgb/NNNNNN.png     8-bit RGB (stored BGR by cv2, as every PNG reader expects)
#   <root>/<split>/depth/NNNNNN.png   uint16, metres * 256, 0 = invalid (KITTI convention)
#   <root>/<split>/label/NNNNNN.png   uint8 ontology ids
#   <root>/<split>/camera.yaml        intrinsics, mount, T_base_cam, ontology version, generator settings

SPLITS = ("train", "val", "test")
FOLDER_KINDS = ("rgb", "depth", "label")
BAG_START_NS = 1_700_000_000 * 10**9  # fixed first stamp: bags are byte-for-byte reproducible


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


def write_frame_files(split_dir: Any, index: int, frame: SynthFrame) -> None:
    """Write one frame's rgb/depth/label PNGs (each atomically) under a split folder."""
    from pathlib import Path

    split_dir = Path(split_dir)
    name = f"{index:06d}.png"
    _write_png(split_dir / "rgb" / name, np.ascontiguousarray(frame.rgb[:, :, ::-1]))
    _write_png(split_dir / "depth" / name, depth_to_png16(frame.depth))
    _write_png(split_dir / "label" / name, frame.label)


@dataclass(frozen=True)
class _FolderJob:
    split_dir: str
    rig: CameraRig
    seed: int
    split: str
    flat: bool
    ontology_path: str | None


def _render_and_write(job: _FolderJob, index: int) -> int:
    onto = load_ontology(job.ontology_path) if job.ontology_path else None
    frame = render_frame(job.rig, frame_seed(job.seed, index, job.split), flat=job.flat, ontology=onto)
    write_frame_files(job.split_dir, index, frame)
    return index


def _folder_worker(args: tuple[_FolderJob, int]) -> int:
    return _render_and_write(*args)


def _pool(workers: int) -> Any:
    """A process pool that works the same on every platform (spawn: no inherited threads or locks)."""
    import multiprocessing

    return multiprocessing.get_context("spawn").Pool(processes=workers, initializer=_init_worker)


def _init_worker() -> None:
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # cv2 is only needed for PNG encoding; rendering works without it
        pass


def write_synthetic_folder(
    out: Any,
    rig: CameraRig,
    n_frames: int,
    seed: int,
    split: str = "train",
    *,
    workers: int = 1,
    flat: bool = False,
    overwrite: bool = False,
    ontology_path: Any = None,
    progress: bool = True,
) -> Any:
    """Render ``n_frames`` independent frames into ``<out>/<split>/`` (layout above); returns the split folder.

    Frame i of a split is rendered from frame_seed(seed, i, split) alone, so the
    bytes do not depend on ``workers``, and a split written in one run equals
    the same split written in another. Refuses to mix with existing frames
    unless ``overwrite`` (which first removes that split's old frame PNGs).
    """
    from pathlib import Path

    from model_tools.io_utils import atomic_write
    from perception_core.errors import OutputExistsError

    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    split_dir = Path(out) / split
    existing = [p for kind in FOLDER_KINDS for p in (split_dir / kind).glob("[0-9]*.png")]
    if existing and not overwrite:
        raise OutputExistsError(f"{split_dir} already holds {len(existing)} frame files; pass --overwrite to replace them")
    for path in existing:
        path.unlink()
    for kind in FOLDER_KINDS:
        (split_dir / kind).mkdir(parents=True, exist_ok=True)
    onto = load_ontology(ontology_path) if ontology_path else _default_ontology()
    info = {
        **rig.to_dict(),
        "split": split,
        "frames": int(n_frames),
        "seed": int(seed),
        "flat": bool(flat),
        "depth_encoding": "uint16 PNG, metres * 256, 0 = invalid",
        "max_depth_m": MAX_DEPTH_M,
        "ontology_version": onto.version,
        "class_names": onto.names,
    }
    import yaml

    with atomic_write(split_dir / "camera.yaml", overwrite=True) as tmp:
        tmp.write_text(yaml.safe_dump(info, sort_keys=False))
    job = _FolderJob(str(split_dir), rig, int(seed), split, bool(flat), str(ontology_path) if ontology_path else None)
    tasks = [(job, i) for i in range(n_frames)]
    bar = _progress(n_frames, f"synth {split}", progress)
    try:
        if workers <= 1 or n_frames <= 1:
            for task in tasks:
                _folder_worker(task)
                bar.update(1)
        else:
            with _pool(workers) as pool:
                for _ in pool.imap_unordered(_folder_worker, tasks, chunksize=max(1, min(16, n_frames // (4 * workers)))):
                    bar.update(1)
    finally:
        bar.close()
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


# --------------------------------------------------------------------------- rosbag2 writer

BAG_TOPICS = {
    "image": ("/camera/image_raw", "sensor_msgs/msg/Image"),
    "camera_info": ("/camera/camera_info", "sensor_msgs/msg/CameraInfo"),
    "depth": ("/ground_truth/depth", "sensor_msgs/msg/Image"),
    "labels": ("/ground_truth/labels", "sensor_msgs/msg/Image"),
    "tf_static": ("/tf_static", "tf2_msgs/msg/TFMessage"),
}


@dataclass(frozen=True)
class _DriveJob:
    rig: CameraRig
    seed: int
    n_frames: int
    fps: float
    speed: float
    flat: bool
    ontology_path: str | None


@lru_cache(maxsize=2)
def _drive_scene(seed: int, length: float, flat: bool) -> Scene:
    return build_scene(seed, length=length, flat=flat, clear_corridor=True)


def _render_drive_frame(args: tuple[_DriveJob, int]) -> SynthFrame:
    job, index = args
    onto = load_ontology(job.ontology_path) if job.ontology_path else None
    scene = _drive_scene(job.seed, job.speed * job.n_frames / job.fps, job.flat)
    time_s = index / job.fps
    return render_frame(job.rig, job.seed, drive_pose(scene, time_s, job.speed), time_s=time_s, scene=scene, ontology=onto)


def write_drive_bag(
    out_bag: Any,
    rig: CameraRig,
    n_frames: int,
    fps: float,
    seed: int,
    *,
    speed: float = 4.0,
    workers: int = 1,
    flat: bool = False,
    overwrite: bool = False,
    ontology_path: Any = None,
    progress: bool = True,
) -> Any:
    """Write a rosbag2 (mcap) of a coherent drive through one scene, with ground truth.

    Topics: /camera/image_raw (rgb8), /camera/camera_info, /ground_truth/depth
    (32FC1 metres, NaN invalid per REP 118), /ground_truth/labels (mono8),
    /tf_static (base_link -> camera optical frame, transient-local). Frame i
    is stamped BAG_START_NS + i/fps. The camera mount is also stored in the
    bag's metadata.yaml custom_data (key ``camera_mount``, YAML) for tools
    without tf2. Chunks carry CRCs (bagio.write_mcap_chunk_crcs). Written into a
    hidden folder beside the target and renamed into place on success. rosbags
    is imported here only.
    """
    import shutil
    from pathlib import Path

    import yaml

    from model_tools.bags.bagio import write_mcap_chunk_crcs
    from perception_core.errors import BagError, OutputExistsError

    try:
        from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore
    except ImportError as err:
        raise BagError(f"writing {out_bag} needs the 'rosbags' package ({err}); folders need only numpy/cv2") from err

    if n_frames < 1 or fps <= 0:
        raise ValueError(f"need n_frames >= 1 and fps > 0, got {n_frames}, {fps}")
    target = Path(out_bag)
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} exists; refusing to overwrite it (pass --overwrite to replace it)")
    staging = target.parent / f".{target.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    work = staging / target.name

    onto = load_ontology(ontology_path) if ontology_path else _default_ontology()
    store = get_typestore(Stores.ROS2_JAZZY)
    types = store.types
    # Message classes keep their ROS names.
    Time, Header = types["builtin_interfaces/msg/Time"], types["std_msgs/msg/Header"]  # noqa: N806
    Image, CameraInfo = types["sensor_msgs/msg/Image"], types["sensor_msgs/msg/CameraInfo"]  # noqa: N806
    RegionOfInterest = types["sensor_msgs/msg/RegionOfInterest"]  # noqa: N806
    TFMessage, TransformStamped = types["tf2_msgs/msg/TFMessage"], types["geometry_msgs/msg/TransformStamped"]  # noqa: N806
    Transform, Vector3 = types["geometry_msgs/msg/Transform"], types["geometry_msgs/msg/Vector3"]  # noqa: N806
    Quaternion = types["geometry_msgs/msg/Quaternion"]  # noqa: N806

    def header(stamp_ns: int, frame_id: str) -> Any:
        return Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id)

    def image(stamp_ns: int, array: np.ndarray, encoding: str) -> Any:
        array = np.ascontiguousarray(array)
        h, w = array.shape[:2]
        return Image(header=header(stamp_ns, rig.camera_frame), height=h, width=w, encoding=encoding, is_bigendian=0,
                     step=array.strides[0], data=array.reshape(-1).view(np.uint8))

    projection = np.zeros((3, 4))
    projection[:3, :3] = rig.K
    zero_time = QosTime(sec=0, nsec=0)
    latched = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                  zero_time, zero_time, QosLiveliness.AUTOMATIC, zero_time, False)
    job = _DriveJob(rig, int(seed), int(n_frames), float(fps), float(speed), bool(flat),
                    str(ontology_path) if ontology_path else None)
    bar = _progress(n_frames, "synth bag", progress)
    pool = _pool(workers) if workers > 1 and n_frames > 1 else None
    try:
        with Writer(work, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            conns = {}
            for key, (topic, msgtype) in BAG_TOPICS.items():
                qos = (latched,) if key == "tf_static" else ()
                conns[key] = writer.add_connection(topic, msgtype, typestore=store, offered_qos_profiles=qos)
            mount = dict(zip(("x", "y", "z", "roll", "pitch", "yaw"), (float(v) for v in rig.mount), strict=True))
            writer.set_custom_data("camera_mount", yaml.safe_dump(mount, sort_keys=False))
            writer.set_custom_data("base_frame", rig.base_frame)
            writer.set_custom_data("camera_frame", rig.camera_frame)
            writer.set_custom_data("ontology_version", onto.version)
            writer.set_custom_data("class_names", ",".join(onto.names))
            writer.set_custom_data("synth", yaml.safe_dump({"seed": int(seed), "fps": float(fps), "speed_mps": float(speed),
                                                            "frames": int(n_frames), "flat": bool(flat)}, sort_keys=False))

            base_cam = rig.T_base_cam
            qx, qy, qz, qw = rotation_to_quaternion(base_cam[:3, :3])
            tf = TFMessage(transforms=[TransformStamped(
                header=header(BAG_START_NS, rig.base_frame), child_frame_id=rig.camera_frame,
                transform=Transform(translation=Vector3(x=float(base_cam[0, 3]), y=float(base_cam[1, 3]), z=float(base_cam[2, 3])),
                                    rotation=Quaternion(x=qx, y=qy, z=qz, w=qw)),
            )])
            writer.write(conns["tf_static"], BAG_START_NS, store.serialize_cdr(tf, BAG_TOPICS["tf_static"][1]))

            tasks = [(job, i) for i in range(n_frames)]
            frames = pool.imap(_render_drive_frame, tasks, chunksize=1) if pool else map(_render_drive_frame, tasks)
            for i, frame in enumerate(frames):
                stamp = BAG_START_NS + round(i * 1e9 / fps)
                info = CameraInfo(
                    header=header(stamp, rig.camera_frame), height=rig.height, width=rig.width,
                    distortion_model="plumb_bob", d=np.zeros(5), k=rig.K.reshape(-1).astype(np.float64),
                    r=np.eye(3).reshape(-1), p=projection.reshape(-1), binning_x=0, binning_y=0,
                    roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
                )
                depth = np.where(frame.depth > 0, frame.depth, np.float32(np.nan)).astype("<f4")
                for key, msg in (
                    ("image", image(stamp, frame.rgb, "rgb8")),
                    ("camera_info", info),
                    ("depth", image(stamp, depth, "32FC1")),
                    ("labels", image(stamp, frame.label, "mono8")),
                ):
                    writer.write(conns[key], stamp, store.serialize_cdr(msg, BAG_TOPICS[key][1]))
                bar.update(1)
        write_mcap_chunk_crcs(work)
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    finally:
        bar.close()
        if pool is not None:  # every result was consumed on success; on failure stop the rest now
            pool.terminate()
            pool.join()
        shutil.rmtree(staging, ignore_errors=True)
    return target
