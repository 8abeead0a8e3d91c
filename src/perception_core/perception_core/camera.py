"""Pinhole camera models from sensor_msgs/CameraInfo fields: validation and rectification (no ROS).

A ``CameraModel`` is built from the plain fields of a CameraInfo message
(``width height k d r p distortion_model``), so rclpy messages, rosbags
messages and hand-made tests all use it. Building one validates it: a camera
whose intrinsics cannot place a pixel (``geometry.camera_info_problem``: an
all-zero or non-finite K, non-positive focal lengths, a principal point away
from the middle of the stated image; and here also non-finite or unsupported
distortion, a bad P) raises ``DataError`` naming the field, so a node drops
that frame by name instead of publishing a plausible wrong depth or cloud.

Rectification follows ROS's image_proc convention: the rectified image has
the intrinsics ``P[:3, :3]`` (``K`` when P is unset) and no distortion.
``Rectifier`` computes the undistortion maps once per camera model and
reuses them for every frame (one ``cv2.remap`` per image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from perception_core.errors import DataError
from perception_core.geometry import camera_info_problem

# CameraInfo.distortion_model values this module can undistort (sensor_msgs/distortion_models.hpp names).
PLUMB_BOB = "plumb_bob"
RATIONAL_POLYNOMIAL = "rational_polynomial"
EQUIDISTANT = "equidistant"
DISTORTION_MODELS = (PLUMB_BOB, RATIONAL_POLYNOMIAL, EQUIDISTANT)
# How an inference node treats distortion (its ``rectification`` parameter).
RECTIFICATION_MODES = ("node", "upstream", "off")


def _floats(values: Sequence[float] | np.ndarray, count: int | None, field: str, source: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if count is not None and array.size != count:
        raise DataError(f"{source}: field '{field}' has {array.size} values, expected {count}")
    if not np.all(np.isfinite(array)):
        raise DataError(f"{source}: field '{field}' has non-finite values {array.tolist()}")
    return array


@dataclass(frozen=True)
class CameraModel:
    """A validated pinhole camera (plus lens distortion) at the resolution ``width x height``."""

    width: int
    height: int
    k: np.ndarray  # 3x3
    d: np.ndarray  # distortion coefficients (may be empty)
    r: np.ndarray  # 3x3 rectification rotation
    p: np.ndarray  # 3x4 projection of the rectified camera (zeros when unset)
    distortion_model: str

    @classmethod
    def from_fields(cls, width: int, height: int, k: Sequence[float], d: Sequence[float], r: Sequence[float],
                    p: Sequence[float], distortion_model: str, source: str = "camera_info") -> CameraModel:
        """Validate CameraInfo fields; DataError names the field at fault and ``source`` (e.g. the topic)."""
        width, height = int(width), int(height)
        problem = camera_info_problem(k, (height, width))  # K and the stated size: the one set of rules
        if problem:
            raise DataError(f"{source}: {problem}")
        kk = _floats(k, 9, "k", source).reshape(3, 3)
        dd = _floats(d, None, "d", source)
        model = str(distortion_model or "")
        if dd.any() and model not in DISTORTION_MODELS:
            raise DataError(f"{source}: field 'distortion_model' is {model!r}; undistortion supports "
                            f"{', '.join(DISTORTION_MODELS)}")
        if model == EQUIDISTANT and dd.size not in (0, 4):
            raise DataError(f"{source}: equidistant distortion needs 4 values in field 'd', got {dd.size}")
        rr = _floats(r, 9, "r", source).reshape(3, 3)
        if not rr.any():
            rr = np.eye(3)  # many drivers leave R unset for a monocular camera
        pp = _floats(p, 12, "p", source).reshape(3, 4) if len(p) else np.zeros((3, 4))
        if pp.any() and not (pp[0, 0] > 0 and pp[1, 1] > 0):
            raise DataError(f"{source}: field 'p' has focal lengths {pp[0, 0]:g}, {pp[1, 1]:g}; both must be > 0")
        return cls(width, height, kk, dd, rr, pp, model)

    @classmethod
    def from_message(cls, msg: Any, source: str = "camera_info") -> CameraModel:
        """From any object with CameraInfo's fields (rclpy or rosbags message)."""
        return cls.from_fields(msg.width, msg.height, msg.k, msg.d, msg.r, msg.p, msg.distortion_model, source)

    @property
    def distorted(self) -> bool:
        """True when undistortion would move pixels: non-zero distortion or a rectifying rotation."""
        return bool(self.d.any()) or not np.allclose(self.r, np.eye(3))

    @property
    def rectified_k(self) -> np.ndarray:
        """Intrinsics of the rectified image (ROS convention: P's left 3x3, K when P is unset)."""
        return self.p[:, :3].copy() if self.p.any() else self.k.copy()

    def key(self) -> tuple[Any, ...]:
        """Hashable identity: equal keys give equal undistortion maps."""
        return (self.width, self.height, self.distortion_model, self.k.tobytes(), self.d.tobytes(),
                self.r.tobytes(), self.p.tobytes())

    def check_image_size(self, image_hw: tuple[int, int], image_source: str, source: str) -> None:
        """The image must be the resolution the intrinsics describe."""
        if (self.height, self.width) != tuple(image_hw):
            raise DataError(f"image on {image_source} is {image_hw[1]}x{image_hw[0]} but {source} says "
                            f"{self.width}x{self.height}")


@dataclass(frozen=True)
class OutputCamera:
    """What a node publishes as camera_info for an image it derived from the input (its ``k d r p``)."""

    k: np.ndarray  # 3x3
    d: np.ndarray
    r: np.ndarray  # 3x3
    p: np.ndarray  # 3x4
    distortion_model: str
    rectified: bool


def output_camera(camera: CameraModel, mode: str) -> OutputCamera:
    """The intrinsics of the image a node works on, for ``rectification`` mode ``mode``.

    - ``node``: undistorted here when distorted (``Rectifier``): intrinsics
      ``rectified_k``; an undistorted camera keeps K.
    - ``upstream``: the input is already rectified (image_proc's ``image_rect``):
      intrinsics ``rectified_k``.
    - ``off``: the image is used as it is: K and D are passed on, so
      consumers know the depth is in the distorted camera.

    A rectified result has D = 0 (same length as the input's, at least 5 for
    plumb_bob), R = identity and P = [K' | 0].
    """
    if mode not in RECTIFICATION_MODES:
        raise DataError(f"rectification mode {mode!r} is not one of {RECTIFICATION_MODES}")
    if mode == "off":
        p = camera.p if camera.p.any() else np.hstack([camera.k, np.zeros((3, 1))])
        return OutputCamera(camera.k, camera.d, camera.r, p, camera.distortion_model, rectified=not camera.distorted)
    k = camera.rectified_k if (mode == "upstream" or camera.distorted) else camera.k
    p = np.hstack([k, camera.p[:, 3:] if camera.p.any() else np.zeros((3, 1))])
    zeros = np.zeros(max(camera.d.size, 5) if camera.distortion_model != EQUIDISTANT else 4)
    return OutputCamera(k, zeros, np.eye(3), p, camera.distortion_model or PLUMB_BOB, rectified=True)


class Rectifier:
    """Undistorts images of a camera; the maps are computed once per camera model and reused.

    ``rectify`` returns the image unchanged (no copy) for an undistorted camera.
    """

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._maps: tuple[np.ndarray, np.ndarray] | None = None
        self.maps_computed = 0  # how often maps were built: once per distinct camera_info

    def rectify(self, image: np.ndarray, camera: CameraModel) -> np.ndarray:
        import cv2

        if not camera.distorted:
            return image
        if image.shape[:2] != (camera.height, camera.width):
            raise DataError(f"image is {image.shape[1]}x{image.shape[0]} but the camera model is "
                            f"{camera.width}x{camera.height}")
        if self._key != camera.key():
            self._maps = undistortion_maps(camera)
            self._key = camera.key()
            self.maps_computed += 1
        assert self._maps is not None
        return cv2.remap(image, self._maps[0], self._maps[1], interpolation=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT)


def undistortion_maps(camera: CameraModel) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point maps (CV_16SC2 + CV_16UC1, OpenCV's fast remap path) from the rectified to the raw image."""
    import cv2

    size = (camera.width, camera.height)
    new_k = camera.rectified_k
    if camera.distortion_model == EQUIDISTANT:
        return cv2.fisheye.initUndistortRectifyMap(camera.k, camera.d[:4], camera.r, new_k, size, cv2.CV_16SC2)
    return cv2.initUndistortRectifyMap(camera.k, camera.d, camera.r, new_k, size, cv2.CV_16SC2)

