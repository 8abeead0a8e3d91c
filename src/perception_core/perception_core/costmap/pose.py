"""A time-indexed buffer of one frame's pose in another, interpolated at a query stamp (no ROS).

The costmap places each frame's cells in a fixed frame (``odom``) with the
robot's pose at the *image* stamp, not the newest pose: at 3 m/s a 300 ms
old image placed at the current pose is 0.9 m off. tf2's buffer does this on
the vehicle; this one serves where tf2 is absent, fed from
``nav_msgs/Odometry`` (or anything stamped), and holds the same rules:

- poses are kept for ``history_s`` behind the newest one;
- a query between two poses interpolates: translation linearly, rotation
  by spherical linear interpolation of unit quaternions;
- a query newer than the newest pose by at most ``tolerance_s`` gets the
  newest pose (the odometry message for that instant is still in flight);
  anything else (older than the history, or too new) raises LookupError with
  the stamps involved, like tf2's extrapolation errors.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from perception_core.errors import ConfigError
from perception_core.geometry import quaternion_from_matrix, quaternion_matrix


def _slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    """Unit quaternion a fraction ``t`` of the way from q0 to q1 along the shorter arc."""
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: linear interpolation is exact to float precision
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(min(1.0, dot))
    s = math.sin(theta)
    return (math.sin((1 - t) * theta) * q0 + math.sin(t * theta) * q1) / s


class PoseBuffer:
    """Stamped 4x4 poses (e.g. T_odom_base), looked up at any stamp within the history by interpolation."""

    def __init__(self, history_s: float = 10.0, tolerance_s: float = 0.1) -> None:
        if not (math.isfinite(history_s) and history_s > 0):
            raise ConfigError(f"pose history must be > 0 s, got {history_s}")
        if not (math.isfinite(tolerance_s) and tolerance_s >= 0):
            raise ConfigError(f"pose tolerance must be >= 0 s, got {tolerance_s}")
        self.history_ns = round(history_s * 1e9)
        self.tolerance_ns = round(tolerance_s * 1e9)
        self._stamps: list[int] = []
        self._translations: list[np.ndarray] = []
        self._rotations: list[np.ndarray] = []  # unit quaternions (x, y, z, w)

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def newest_ns(self) -> int | None:
        return self._stamps[-1] if self._stamps else None

    def add(self, stamp_ns: int, pose: np.ndarray) -> None:
        """Insert a pose (4x4); an older stamp is placed in order, the same stamp replaces the pose."""
        pose = np.asarray(pose, dtype=np.float64)
        if pose.shape != (4, 4) or not np.isfinite(pose).all():
            raise ValueError(f"pose at stamp {stamp_ns} must be a finite 4x4 matrix")
        q = np.array(quaternion_from_matrix(pose[:3, :3]))
        index = bisect.bisect_left(self._stamps, stamp_ns)
        if index < len(self._stamps) and self._stamps[index] == stamp_ns:
            self._translations[index], self._rotations[index] = pose[:3, 3].copy(), q
        else:
            self._stamps.insert(index, int(stamp_ns))
            self._translations.insert(index, pose[:3, 3].copy())
            self._rotations.insert(index, q)
        cutoff = self._stamps[-1] - self.history_ns
        drop = bisect.bisect_left(self._stamps, cutoff)
        if drop:
            del self._stamps[:drop], self._translations[:drop], self._rotations[:drop]

    def clear(self) -> None:
        self._stamps.clear()
        self._translations.clear()
        self._rotations.clear()

    def lookup(self, stamp_ns: int) -> np.ndarray:
        """The pose at ``stamp_ns`` (4x4). Raises LookupError when the buffer cannot answer for that stamp."""
        if not self._stamps:
            raise LookupError("no pose received yet")
        newest, oldest = self._stamps[-1], self._stamps[0]
        if stamp_ns > newest:
            if stamp_ns - newest > self.tolerance_ns:
                raise LookupError(f"stamp {stamp_ns} is {(stamp_ns - newest) / 1e9:.3f} s newer than the newest pose "
                                  f"({newest}); tolerance {self.tolerance_ns / 1e9:.3f} s")
            return self._matrix(self._translations[-1], self._rotations[-1])
        if stamp_ns < oldest:
            raise LookupError(f"stamp {stamp_ns} is {(oldest - stamp_ns) / 1e9:.3f} s older than the oldest pose kept "
                              f"({oldest})")
        index = bisect.bisect_left(self._stamps, stamp_ns)
        if self._stamps[index] == stamp_ns:
            return self._matrix(self._translations[index], self._rotations[index])
        before, after = index - 1, index
        t = (stamp_ns - self._stamps[before]) / (self._stamps[after] - self._stamps[before])
        translation = self._translations[before] + t * (self._translations[after] - self._translations[before])
        return self._matrix(translation, _slerp(self._rotations[before], self._rotations[after], t))

    @staticmethod
    def _matrix(translation: np.ndarray, q: np.ndarray) -> np.ndarray:
        pose = np.eye(4)
        pose[:3, :3] = quaternion_matrix(*(float(v) for v in q))
        pose[:3, 3] = translation
        return pose
