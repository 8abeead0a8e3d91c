"""Frame conventions of the stack, written once (numpy only).

- Body frames (REP 103: ``base_link``, a camera's ``camera_link``): x forward,
  y left, z up.
- Optical frames (REP 103 ``*_optical_frame``): z forward, x right, y down.
  K and every image use them; pixel (u, v) has its centre at integer
  coordinates.
- Orientation as roll, pitch, yaw: ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``
  (fixed axes, as tf2 and URDF). Positive pitch tilts a body's x axis down.
- ``T_a_b`` is the 4x4 transform taking points in frame ``b`` to frame ``a``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Columns: the optical axes (x right, y down, z forward) expressed in the body frame (x fwd, y left, z up).
# R_parent_optical = R_parent_body @ OPTICAL_TO_BODY.
OPTICAL_TO_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def rotation_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """3x3 ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    return rz @ ry @ rx


def rpy_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """(roll, pitch, yaw) of a 3x3 rotation, the inverse of :func:`rotation_rpy` for |pitch| < 90 deg."""
    rot = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    pitch = float(np.arcsin(np.clip(-rot[2, 0], -1.0, 1.0)))
    roll = float(np.arctan2(rot[2, 1], rot[2, 2]))
    yaw = float(np.arctan2(rot[1, 0], rot[0, 0]))
    return roll, pitch, yaw


def pose_matrix(x: float, y: float, z: float, roll: float, pitch: float, yaw: float) -> np.ndarray:
    """4x4 transform from a translation and roll, pitch, yaw."""
    transform = np.eye(4)
    transform[:3, :3] = rotation_rpy(roll, pitch, yaw)
    transform[:3, 3] = (x, y, z)
    return transform


def quaternion_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """3x3 rotation of a quaternion, normalised first (tf2 messages are not always exactly unit)."""
    norm = math.sqrt(x * x + y * y + z * z + w * w)
    if not norm > 0 or not math.isfinite(norm):
        raise ValueError(f"quaternion ({x}, {y}, {z}, {w}) has no rotation (norm {norm})")
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def quaternion_from_matrix(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) unit quaternion of a rotation matrix (Shepperd's method, w >= 0)."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = math.sqrt(trace + 1.0) * 2.0
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2.0
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2.0
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2.0
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return float(q[0]), float(q[1]), float(q[2]), float(q[3])


def transform_matrix(transform: Any) -> np.ndarray:
    """4x4 matrix of a geometry_msgs/Transform (rclpy or rosbags object): translation + quaternion."""
    q, t = transform.rotation, transform.translation
    matrix = np.eye(4)
    matrix[:3, :3] = quaternion_matrix(float(q.x), float(q.y), float(q.z), float(q.w))
    matrix[:3, 3] = (float(t.x), float(t.y), float(t.z))
    return matrix


def pose_msg_matrix(pose: Any) -> np.ndarray:
    """4x4 matrix of a geometry_msgs/Pose (rclpy or rosbags object): position + orientation."""
    q, p = pose.orientation, pose.position
    matrix = np.eye(4)
    matrix[:3, :3] = quaternion_matrix(float(q.x), float(q.y), float(q.z), float(q.w))
    matrix[:3, 3] = (float(p.x), float(p.y), float(p.z))
    return matrix


def camera_optical_pose(x: float, y: float, z: float, roll: float, pitch: float, yaw: float) -> np.ndarray:
    """T_parent_optical of a camera whose *body* frame has this pose in the parent frame."""
    transform = pose_matrix(x, y, z, roll, pitch, yaw)
    transform[:3, :3] = transform[:3, :3] @ OPTICAL_TO_BODY
    return transform


def stamp_ns(header: Any) -> int:
    """Nanoseconds of a std_msgs/Header stamp (rclpy or rosbags object)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def camera_info_problem(k: Any, info_hw: tuple[int, int], image_hw: tuple[int, int] | None = None) -> str | None:
    """Why a camera_info cannot describe its image, or None when it can.

    ``k`` is the 3x3 (or flat 9) K, ``info_hw`` the (height, width) the
    camera_info states, ``image_hw`` the size of the image it goes with.
    Checked in order: K finite, not all zero, an upper-triangular camera
    matrix with K[2,2] = 1 and fx, fy > 0; the stated size positive; the
    principal point strictly inside the middle half of the stated image (a K
    meant for twice or half this resolution puts it at an edge or a quarter
    mark);
    and the stated size's aspect ratio within 2 % of the image's.
    """
    kk = np.asarray(k, dtype=np.float64).reshape(-1)
    if kk.size != 9:
        return f"K has {kk.size} values, not 9"
    if not np.all(np.isfinite(kk)):
        return f"K has non-finite values {kk.tolist()}"
    if not np.any(kk):
        return "K is all zero (an uncalibrated camera)"
    fx, cx, fy, cy = kk[0], kk[2], kk[4], kk[5]
    if kk[3] != 0 or kk[6] != 0 or kk[7] != 0 or kk[8] != 1:
        return f"K {kk.tolist()} is not a camera matrix (zeros below the diagonal, K[2,2] = 1)"
    if not (fx > 0 and fy > 0):
        return f"focal lengths fx={fx:g}, fy={fy:g} must be > 0"
    height, width = (int(v) for v in info_hw)
    if height <= 0 or width <= 0:
        return f"stated image size {width}x{height} must be positive"
    if abs(cx - (width - 1) / 2) >= width / 4 or abs(cy - (height - 1) / 2) >= height / 4:
        return (f"principal point ({cx:g}, {cy:g}) is not in the middle half of the {width}x{height} image the "
                "camera_info states (K for another resolution?)")
    if image_hw is not None:
        image_h, image_w = (int(v) for v in image_hw)
        if abs((image_w / image_h) / (width / height) - 1.0) > 0.02:
            return f"the image is {image_w}x{image_h} but its camera_info states {width}x{height} (another aspect ratio)"
    return None
