"""Eigen depth metrics (monodepth2 / packnet-sfm definitions), numpy only.

Only ground truth with ``min_depth < gt < max_depth`` counts; predictions are
clipped to that range, as the reference code does. REP 117's infinities clip
like any out-of-range value (+Inf "beyond range" to ``max_depth``, -Inf "too
near" to ``min_depth``); NaN predictions count as invalid pixels of the
prediction (set to ``min_depth`` so they are penalised, not silently dropped).

Besides Eigen's seven, ``scale`` is the geometric mean of prediction / truth:
below 1 the prediction is too near on the whole, above 1 too far. A bias
that abs_rel alone does not show (a costmap places obstacles by it).
"""

from __future__ import annotations

import numpy as np

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "scale")


def _valid_pairs(pred: np.ndarray, gt: np.ndarray, min_depth: float, max_depth: float) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    valid = np.isfinite(gt) & (gt > min_depth) & (gt < max_depth)
    p = pred[valid]
    p = np.where(np.isnan(p), min_depth, p)
    return np.clip(p, min_depth, max_depth), gt[valid]


def _sums(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Per-pixel sums that add up across frames: abs_rel, sq_rel, se, se_log, a1..a3, log(p / g)."""
    ratio = np.maximum(g / p, p / g)
    log_ratio = np.log(p) - np.log(g)
    return np.array(
        [
            np.sum(np.abs(g - p) / g),
            np.sum((g - p) ** 2 / g),
            np.sum((g - p) ** 2),
            np.sum(log_ratio**2),
            np.sum(ratio < 1.25),
            np.sum(ratio < 1.25**2),
            np.sum(ratio < 1.25**3),
            np.sum(log_ratio),
        ]
    )


def _from_sums(sums: np.ndarray, n: int) -> dict[str, float]:
    if n == 0:
        return {name: float("nan") for name in METRIC_NAMES} | {"n_valid": 0}
    m = sums / n
    return {
        "abs_rel": float(m[0]),
        "sq_rel": float(m[1]),
        "rmse": float(np.sqrt(m[2])),
        "rmse_log": float(np.sqrt(m[3])),
        "a1": float(m[4]),
        "a2": float(m[5]),
        "a3": float(m[6]),
        "scale": float(np.exp(m[7])),
        "n_valid": int(n),
    }


def eigen_metrics(pred: np.ndarray, gt: np.ndarray, min_depth: float = 1e-3, max_depth: float = 80.0) -> dict[str, float]:
    """Eigen metrics of one prediction (or a stack) against ground truth.

    RMSE here is over all valid pixels pooled (not a mean of per-frame RMSEs).
    """
    p, g = _valid_pairs(pred, gt, min_depth, max_depth)
    return _from_sums(_sums(p, g), g.size)


class DepthMetricAccumulator:
    """Pixel-pooled Eigen metrics over many frames, without keeping the frames."""

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 80.0) -> None:
        self.min_depth = min_depth
        self.max_depth = max_depth
        self._sums = np.zeros(len(METRIC_NAMES))
        self._n = 0
        self.frames = 0

    def update(self, pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
        """Add one frame; return that frame's own metrics."""
        p, g = _valid_pairs(pred, gt, self.min_depth, self.max_depth)
        sums = _sums(p, g)
        self._sums += sums
        self._n += g.size
        self.frames += 1
        return _from_sums(sums, g.size)

    def compute(self) -> dict[str, float]:
        return _from_sums(self._sums, self._n) | {"frames": self.frames}
