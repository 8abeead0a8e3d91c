"""Segmentation metrics from a confusion matrix, numpy only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class ConfusionMatrix:
    """Accumulates a ``num_classes x num_classes`` matrix: rows = ground truth, cols = prediction.

    Ground-truth pixels equal to ``ignore_index`` are skipped. Predictions
    outside ``[0, num_classes)`` are counted as wrong (they land in no column,
    but still count in the row total).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.out_of_range = np.zeros(num_classes, dtype=np.int64)  # per GT class

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred = np.asarray(pred).reshape(-1).astype(np.int64)
        gt = np.asarray(gt).reshape(-1).astype(np.int64)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction has {pred.size} pixels but ground truth has {gt.size}")
        keep = (gt != self.ignore_index) & (gt >= 0) & (gt < self.num_classes)
        pred, gt = pred[keep], gt[keep]
        in_range = (pred >= 0) & (pred < self.num_classes)
        n = self.num_classes
        self.matrix += np.bincount(gt[in_range] * n + pred[in_range], minlength=n * n).reshape(n, n)
        self.out_of_range += np.bincount(gt[~in_range], minlength=n)

    def merge(self, other: ConfusionMatrix) -> None:
        self.matrix += other.matrix
        self.out_of_range += other.out_of_range

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both GT and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        gt_total = self.matrix.sum(axis=1) + self.out_of_range
        pred_total = self.matrix.sum(axis=0)
        union = gt_total + pred_total - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum() + self.out_of_range.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def to_dict(self, class_names: list[str] | None = None) -> dict[str, Any]:
        names = class_names or [str(i) for i in range(self.num_classes)]
        iou = self.iou()
        return {
            "miou": self.miou(),
            "pixel_accuracy": self.pixel_accuracy(),
            "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(names, iou, strict=True)},
            "confusion_matrix": self.matrix.tolist(),
            "class_names": names,
        }

    def plot(self, path: str | Path, class_names: list[str] | None = None, title: str = "Confusion matrix") -> Path:
        """Row-normalised confusion matrix image (PNG)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = class_names or [str(i) for i in range(self.num_classes)]
        rows = self.matrix.sum(axis=1, keepdims=True)
        norm = np.divide(self.matrix, np.maximum(rows, 1), dtype=np.float64)
        fig, ax = plt.subplots(figsize=(1.0 + 0.8 * self.num_classes, 0.8 + 0.7 * self.num_classes))
        im = ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="Blues")
        ax.set_xticks(range(self.num_classes), names, rotation=45, ha="right")
        ax.set_yticks(range(self.num_classes), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("ground truth")
        ax.set_title(f"{title} (mIoU {self.miou():.3f})")
        for i in range(self.num_classes):
            for j in range(self.num_classes):
                if norm[i, j] >= 0.005:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center",
                            color="white" if norm[i, j] > 0.5 else "black", fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path
