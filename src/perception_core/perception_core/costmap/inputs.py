"""Sanity rules for the costmap's inputs: a meaningless input is a named error, never a plausible wrong grid.

- camera_info: fx, fy finite and > 0 (an all-zero K is an uncalibrated
  camera), every K entry finite, and the principal point inside the central
  half of the image that width x height describe. A K meant for another
  resolution puts the principal point outside it (the vehicle camera's
  (cx, cy) = (640, 540) against 640 x 384). Width and height swapped are
  caught only for images far from square (not for 1280 x 1080).
- 16UC1 depth (millimetres, REP 118): 0 is "no return" and 65535, the top of
  the range, is how drivers mark saturation or "beyond range"; both become
  NaN. Every other value is metres = value / 1000.
- A depth image that yields no usable pixel is diagnosed by ``depth_problem``
  (all NaN/inf, all <= 0, all beyond max_range: metres written as millimetres
  look like this), so the node can say why its grid is empty.
"""

from __future__ import annotations

import numpy as np

from perception_core.costmap.config import CostmapConfig
from perception_core.errors import DataError

DEPTH_16UC1_SATURATED = 65535  # the top of 16UC1: no measurement ("beyond range")


def check_camera_info(width: int, height: int, k: list[float] | np.ndarray, where: str = "camera_info") -> np.ndarray:
    """The 3x3 K of a camera_info, or DataError naming the field that makes it meaningless."""
    values = np.asarray(k, dtype=np.float64).reshape(-1)
    if not (int(width) > 0 and int(height) > 0):
        raise DataError(f"{where}: width/height is {width}x{height}; expected the calibrated image size")
    if values.size != 9:
        raise DataError(f"{where}: K has {values.size} values, expected 9")
    if not np.any(values):
        raise DataError(f"{where}: K is all zero (an uncalibrated camera)")
    if not np.isfinite(values).all():
        raise DataError(f"{where}: K has non-finite values {values.tolist()}")
    matrix = values.reshape(3, 3)
    fx, fy, cx, cy = matrix[0, 0], matrix[1, 1], matrix[0, 2], matrix[1, 2]
    if not (fx > 0 and fy > 0):
        raise DataError(f"{where}: K has fx = {fx}, fy = {fy}; both must be > 0")
    if abs(cx - (width - 1) / 2) > width / 4 or abs(cy - (height - 1) / 2) > height / 4:
        raise DataError(f"{where}: principal point ({cx:g}, {cy:g}) is not near the centre of the {width}x{height} "
                        "image that width/height describe (K for another resolution?)")
    return matrix


def depth_from_16uc1(raw: np.ndarray) -> np.ndarray:
    """float32 metres from 16UC1 millimetres; 0 (no return) and 65535 (saturated) become NaN."""
    raw = np.asarray(raw)
    metres = raw.astype(np.float32) / np.float32(1000.0)
    metres[(raw == 0) | (raw == DEPTH_16UC1_SATURATED)] = np.nan
    return metres


def depth_problem(depth: np.ndarray, config: CostmapConfig) -> str | None:
    """Why ``depth`` gives no pixel within (min_range, max_range), or None when some pixel is usable."""
    z = np.asarray(depth, dtype=np.float32)
    finite = z[np.isfinite(z)]
    if finite.size == 0:
        return "every depth value is NaN or inf"
    positive = finite[finite > 0]
    if positive.size == 0:
        return "every depth value is <= 0"
    usable = positive[(positive > config.min_range) & (positive < config.max_range)]
    if usable.size:
        return None
    median = float(np.median(positive))
    if median >= config.max_range:
        hint = " (millimetres written as metres?)" if median >= 100 * config.max_range else ""
        return f"every depth value is beyond max_range {config.max_range} m (median {median:g}){hint}"
    return f"every depth value is at or below min_range {config.min_range} m (median {median:g})"
