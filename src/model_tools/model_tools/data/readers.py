"""Readers for the data-set image files, numpy + cv2 only (no torch).

Shared by the torch data sets (``model_tools.data.datasets``) and the INT8
calibration/comparison tools (``model_tools.quant``), which must not import
torch. Every failure is a DataError naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perception_core.errors import DataError


def _imread(path: Path, what: str, color: bool) -> np.ndarray:
    """cv2.imread with the file named in the error when it is missing or not an image."""
    import cv2

    if not path.is_file():
        raise DataError(f"{what} file {path} is missing")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR if color else cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"{what} file {path} is not a readable image")
    return image


def read_rgb(path: Path) -> np.ndarray:
    """uint8 [H,W,3] RGB, or DataError naming the file."""
    import cv2

    return cv2.cvtColor(_imread(path, "image", color=True), cv2.COLOR_BGR2RGB)


def read_label_ids(path: Path) -> np.ndarray:
    """Single-channel integer label PNG as uint8 [H,W]."""
    label = _imread(path, "label", color=False)
    if label.ndim != 2:
        raise DataError(f"label file {path} has {label.shape[2]} channels; expected a single-channel id image")
    if label.dtype != np.uint8:
        if label.max() > 255:
            raise DataError(f"label file {path} holds ids above 255 (max {int(label.max())})")
        label = label.astype(np.uint8)
    return label


def read_depth_png16(path: Path) -> np.ndarray:
    """KITTI PNG16 depth -> float32 metres (value / 256), 0 invalid."""
    raw = _imread(path, "depth", color=False)
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise DataError(f"depth file {path} is {raw.dtype} with shape {raw.shape}; expected single-channel uint16 PNG")
    return raw.astype(np.float32) / 256.0
