"""FP32 vs INT8 on a data set: task metrics, per-head depth errors, HTP agreement, verdict.

Accuracy over the data set runs the QDQ model on ONNX Runtime's CPU EP (HTP
emulation takes seconds per frame on x86). A few frames (``htp_frames``) then
run on the QNN HTP backend (the context binary, or the QDQ model) and are
compared with QDQ-on-CPU, so the CPU numbers are shown to stand for the NPU.

Writes into ``out_dir``: ``comparison.json``, ``comparison.md``, figures, and
per-frame ``outputs/<frame>.npz`` (FP32 and INT8 raw outputs).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_tools.io_utils import atomic_write, write_json
from model_tools.quant.evaluate import (
    PRIMARY_METRIC,
    PreparedFrame,
    TaskScorer,
    decoder,
    degradation,
    depth_range,
    prepare_frames,
    resize_to,
    scored_depth,
    target_of,
)
from model_tools.quant.images import Frame, ImageSource
from perception_core.errors import ConfigError, ModelFileError, OutputExistsError
from perception_core.model_metadata import ModelMetadata
from perception_core.pipelines import model_feeds

LOG = logging.getLogger(__name__)
LEVELS = ("excellent", "good", "warning")
# Largest INT8 degradation (INT8 worse than FP32, absolute) still rated at each level.
DEFAULT_THRESHOLDS: dict[str, dict[str, list[float]]] = {
    "depth": {"abs_rel": [0.002, 0.005, 0.010], "rmse": [0.02, 0.05, 0.10], "a1": [0.005, 0.010, 0.020]},
    "segmentation": {"miou": [0.005, 0.010, 0.020], "pixel_accuracy": [0.005, 0.010, 0.020]},
}
DEPTH_BINS = 10
FIGURE_FRAMES = 3


@dataclass
class Thresholds:
    """excellent / good / warning limits on each metric's INT8 degradation; beyond warning is 'unacceptable'."""

    limits: dict[str, dict[str, list[float]]] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_THRESHOLDS.items()})

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None) -> Thresholds:
        """Defaults, updated from a YAML/JSON file ``{task: {metric: [excellent, good, warning]}}``."""
        result = cls()
        if path is None:
            return result
        import yaml

        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"thresholds file {file} does not exist")
        data = yaml.safe_load(file.read_text()) or {}
        for task, metrics in data.items():
            if task not in result.limits or not isinstance(metrics, dict):
                raise ConfigError(f"thresholds file {file}: unknown task {task!r} (use depth/segmentation)")
            for metric, values in metrics.items():
                if not (isinstance(values, list) and len(values) == 3 and values == sorted(values)):
                    raise ConfigError(f"thresholds file {file}: {task}.{metric} must be 3 ascending numbers "
                                      "[excellent, good, warning]")
                result.limits[task][metric] = [float(v) for v in values]
        return result

    def rate(self, task: str, metric: str, worse_by: float) -> str:
        for level, limit in zip(LEVELS, self.limits[task][metric], strict=True):
            if worse_by <= limit:
                return level
        return "unacceptable"


def rate_metrics(fp32: dict[str, Any], int8: dict[str, Any], task: str, thresholds: Thresholds) -> dict[str, Any]:
    """Per-metric degradation and level, plus the overall (worst) level."""
    order = [*LEVELS, "unacceptable"]
    rated: dict[str, Any] = {}
    for metric in thresholds.limits[task]:
        if metric not in fp32 or fp32[metric] is None or int8[metric] is None:
            continue
        worse = degradation(float(fp32[metric]), float(int8[metric]), task, metric)
        rated[metric] = {"fp32": fp32[metric], "int8": int8[metric], "int8_worse_by": worse,
                         "limits": thresholds.limits[task][metric], "level": thresholds.rate(task, metric, worse)}
    overall = max((r["level"] for r in rated.values()), key=order.index, default="n/a")
    return {"metrics": rated, "overall": overall}


class HeadErrors:
    """Per-head depth error analysis: INT8 vs FP32 and each against GT, binned by depth.

    The runtime pipeline marks depth outside [min_depth, max_depth] invalid
    (NaN). A pixel valid in one model and invalid in the other has no depth
    change to measure, so every INT8-vs-FP32 statistic is taken over the
    pixels valid in both outputs (``pixels_compared``), and the pixels whose
    validity differs are counted on their own (``validity_changed_fraction``).
    Over those pixels |depth change| <= |integer change| * max_depth +
    |fractional change| holds pixel by pixel.
    """

    MEASURES = ("fp32_vs_gt", "int8_vs_gt", "int8_vs_fp32", "integer_contrib", "fractional_contrib")

    def __init__(self, meta: ModelMetadata) -> None:
        self.meta = meta
        self.max_depth = float(meta.max_depth)
        self.edges = np.linspace(0.0, self.max_depth, DEPTH_BINS + 1)
        self.bins = {k: np.zeros(DEPTH_BINS) for k in self.MEASURES}
        self.counts = {k: np.zeros(DEPTH_BINS) for k in ("reference", *self.MEASURES)}
        self.sums = {"pixels": 0, "pixels_compared": 0, "validity_changed": 0, "depth_abs": 0.0,
                     "integer_abs_m": 0.0, "fractional_abs_m": 0.0, "integer_level_changed": 0,
                     "fp32_integer_vs_gt_m": 0.0, "int8_integer_vs_gt_m": 0.0,
                     "fp32_fractional_vs_gt_m": 0.0, "int8_fractional_vs_gt_m": 0.0, "gt_pixels": 0}
        self.has_gt = False

    def _level(self, integer: np.ndarray) -> np.ndarray:
        if self.meta.integer_head_kind == "levels":
            return np.rint(integer * (self.meta.levels - 1))
        return np.floor(integer * self.max_depth + 1e-6)

    def update(self, fp32: Any, int8: Any, gt: np.ndarray | None) -> None:
        from perception_core.depth_codec import decompose_depth

        d32, d8 = fp32.depth, int8.depth
        valid32, valid8 = np.isfinite(d32), np.isfinite(d8)
        both = valid32 & valid8
        # The heads are the model's own outputs; a camera-aware model's are for its canonical camera, and
        # depth_scale (equal for both runs of one frame) turns their metres into this camera's.
        scale = float(fp32.depth_scale)
        int_delta_m = np.abs(int8.integer - fp32.integer) * (self.max_depth * scale)
        frac_delta = (np.abs(int8.fractional - fp32.fractional) * scale if fp32.fractional is not None
                      else np.zeros_like(d32))
        depth_delta = np.abs(np.where(both, d8, 0.0) - np.where(both, d32, 0.0))
        s = self.sums
        s["pixels"] += d32.size
        s["pixels_compared"] += int(both.sum())
        s["validity_changed"] += int((valid32 != valid8).sum())
        s["depth_abs"] += float(depth_delta[both].sum())
        s["integer_abs_m"] += float(int_delta_m[both].sum())
        s["fractional_abs_m"] += float(frac_delta[both].sum())
        s["integer_level_changed"] += int((self._level(int8.integer) != self._level(fp32.integer))[both].sum())
        ref = d32 if gt is None else resize_to(gt, d32.shape)
        valid = (ref > 0) & np.isfinite(ref)
        if gt is not None and fp32.fractional is not None:
            gi, gf = decompose_depth(np.clip(np.where(valid, ref / scale, 0.0), 0, self.max_depth), self.max_depth,
                                     self.meta.integer_head_kind, self.meta.levels or 256)
            s["gt_pixels"] += int(valid.sum())
            s["fp32_integer_vs_gt_m"] += float((np.abs(fp32.integer - gi) * (self.max_depth * scale))[valid].sum())
            s["int8_integer_vs_gt_m"] += float((np.abs(int8.integer - gi) * (self.max_depth * scale))[valid].sum())
            s["fp32_fractional_vs_gt_m"] += float((np.abs(fp32.fractional - gf) * scale)[valid].sum())
            s["int8_fractional_vs_gt_m"] += float((np.abs(int8.fractional - gf) * scale)[valid].sum())
        index = np.clip(np.digitize(np.where(valid, ref, 0.0), self.edges) - 1, 0, DEPTH_BINS - 1)
        measures = {"fp32_vs_gt": (np.abs(np.where(valid32, d32, 0.0) - ref), valid & valid32),
                    "int8_vs_gt": (np.abs(np.where(valid8, d8, 0.0) - ref), valid & valid8),
                    "int8_vs_fp32": (depth_delta, valid & both), "integer_contrib": (int_delta_m, valid & both),
                    "fractional_contrib": (frac_delta, valid & both)}
        self.counts["reference"] += np.bincount(index[valid], minlength=DEPTH_BINS)
        for name, (values, mask) in measures.items():
            self.bins[name] += np.bincount(index[mask], weights=values[mask], minlength=DEPTH_BINS)
            self.counts[name] += np.bincount(index[mask], minlength=DEPTH_BINS)
        self.has_gt = self.has_gt or gt is not None

    def summary(self) -> dict[str, Any]:
        s = self.sums
        n = max(s["pixels_compared"], 1)
        out: dict[str, Any] = {
            "head_kind": self.meta.integer_head_kind,
            "outputs": self.meta.depth_outputs,
            "pixels_compared": s["pixels_compared"],
            "validity_changed_fraction": s["validity_changed"] / max(s["pixels"], 1),
            "mean_abs_depth_change_m": s["depth_abs"] / n,
            "integer_head_mean_abs_change_m": s["integer_abs_m"] / n,
            "fractional_head_mean_abs_change_m": s["fractional_abs_m"] / n,
            "integer_level_changed_fraction": s["integer_level_changed"] / n,
            "note": "changes are over the pixels valid (within [min_depth, max_depth]) in both outputs; "
                    "integer-head change is in metres (|d integer| * max_depth): max_depth amplifies it",
        }
        total = s["integer_abs_m"] + s["fractional_abs_m"]
        if total > 0 and self.meta.depth_outputs == "separate":
            out["integer_share_of_change"] = s["integer_abs_m"] / total
        if s["gt_pixels"]:
            g = s["gt_pixels"]
            out["vs_gt"] = {k: s[k] / g for k in ("fp32_integer_vs_gt_m", "int8_integer_vs_gt_m",
                                                   "fp32_fractional_vs_gt_m", "int8_fractional_vs_gt_m")}
        out["by_depth"] = {
            "reference": "ground truth" if self.has_gt else "FP32 depth",
            "bin_edges_m": self.edges.tolist(),
            "pixels": self.counts["reference"].astype(int).tolist(),
            **{f"mean_{k}_m": (self.bins[k] / np.maximum(self.counts[k], 1)).tolist() for k in self.MEASURES},
        }
        return out

    def plot(self, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        b = self.summary()["by_depth"]
        centres = 0.5 * (self.edges[1:] + self.edges[:-1])
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        ref = b["reference"]
        axes[0].plot(centres, b["mean_fp32_vs_gt_m"], "o-", label=f"FP32 vs {ref}")
        axes[0].plot(centres, b["mean_int8_vs_gt_m"], "s-", label=f"INT8 vs {ref}")
        axes[0].set(xlabel=f"depth bin ({ref}), m", ylabel="mean |error|, m", title="Depth error vs range")
        axes[0].legend()
        axes[1].plot(centres, b["mean_int8_vs_fp32_m"], "o-", label="|INT8 - FP32| depth")
        axes[1].plot(centres, b["mean_integer_contrib_m"], "^-", label="integer head (x max_depth)")
        axes[1].plot(centres, b["mean_fractional_contrib_m"], "v-", label="fractional head")
        axes[1].set(xlabel=f"depth bin ({ref}), m", ylabel="mean |INT8 - FP32|, m", title="Quantization error by head")
        axes[1].legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def _frame_figure(path: Path, item: PreparedFrame, fp32: Any, int8: Any, meta: ModelMetadata) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    axes[0].imshow(item.frame.rgb)
    axes[0].set_title(item.frame.name)
    if meta.task == "depth":
        for ax, out, title in ((axes[1], fp32, "FP32 depth"), (axes[2], int8, "INT8 depth")):
            im = ax.imshow(out.depth, vmin=0, vmax=meta.max_depth, cmap="turbo")
            ax.set_title(title)
        fig.colorbar(im, ax=axes[2], fraction=0.046)
        diff = np.abs(int8.depth - fp32.depth)  # NaN (blank) where either output is invalid
        im = axes[3].imshow(diff, cmap="magma")
        axes[3].set_title("|INT8 - FP32| m (both valid)")
        fig.colorbar(im, ax=axes[3], fraction=0.046)
    else:
        from perception_core.pipelines import colorize_labels

        axes[1].imshow(colorize_labels(fp32.labels, meta.class_colors))
        axes[1].set_title("FP32 labels")
        axes[2].imshow(colorize_labels(int8.labels, meta.class_colors))
        axes[2].set_title("INT8 labels")
        axes[3].imshow(fp32.labels != int8.labels, cmap="gray")
        axes[3].set_title("labels differ")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def output_agreement(meta: ModelMetadata, a: dict[str, np.ndarray], b: dict[str, np.ndarray],
                     frame: Frame | None = None) -> dict[str, Any]:
    """How closely two runs of one model agree on ``frame``: per raw output, and in task terms."""
    decode = decoder(meta)
    da, db = decode(a, frame), decode(b, frame)
    result: dict[str, Any] = {"outputs": {}}
    for name in meta.output_names:
        diff = np.abs(np.asarray(a[name], np.float64) - np.asarray(b[name], np.float64))
        result["outputs"][name] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean())}
    if meta.task == "depth":
        valid_a, valid_b = np.isfinite(da.depth), np.isfinite(db.depth)
        both = valid_a & valid_b
        dd = np.abs(da.depth[both] - db.depth[both])
        result["depth_validity_agreement"] = float((valid_a == valid_b).mean())
        result["depth_mean_abs_m"] = float(dd.mean()) if dd.size else 0.0
        result["depth_max_abs_m"] = float(dd.max()) if dd.size else 0.0
        result["depth_within_1cm_fraction"] = float((dd <= 0.01).mean()) if dd.size else 1.0
        if meta.integer_head_kind == "levels" and meta.levels:
            la = np.rint(da.integer * (meta.levels - 1))
            lb = np.rint(db.integer * (meta.levels - 1))
            result["integer_level_agreement"] = float((la == lb).mean())
    else:
        result["label_agreement"] = float((da.labels == db.labels).mean())
    return result


def _mean_agreement(items: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in items[0] if k != "outputs"]
    merged: dict[str, Any] = {k: (max if "max" in k else np.mean)([it[k] for it in items]) for k in keys}
    merged = {k: float(v) for k, v in merged.items()}
    merged["outputs"] = {
        name: {"max_abs": float(max(it["outputs"][name]["max_abs"] for it in items)),
               "mean_abs": float(np.mean([it["outputs"][name]["mean_abs"] for it in items]))}
        for name in items[0]["outputs"]
    }
    return merged


def load_pair(fp32_path: str | os.PathLike[str], int8_path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """Both models on the CPU EP; ModelFileError unless they share task and input."""
    from perception_core.runtime.loader import load_model

    fp32 = load_model(fp32_path, backend="cpu")
    int8 = load_model(int8_path, backend="cpu")
    meta = fp32.metadata
    if int8.metadata.task != meta.task or int8.metadata.input_shape != meta.input_shape:
        raise ModelFileError(f"{int8_path}: task/input {int8.metadata.task} {int8.metadata.input_shape} differs from "
                             f"FP32 {fp32_path}: {meta.task} {meta.input_shape}")
    return fp32, int8


class ComparisonRun:
    """What the comparison accumulates frame by frame: task scorers, head errors or label agreement,
    and the raw outputs of the first frames for the HTP sample."""

    def __init__(self, meta: ModelMetadata, htp_frames: int) -> None:
        self.meta = meta
        self.decode = decoder(meta)
        self.scorers = {"fp32": TaskScorer(meta), "int8": TaskScorer(meta), "int8_vs_fp32": TaskScorer(meta)}
        self.heads = HeadErrors(meta) if meta.task == "depth" else None
        self.label_agreement: list[float] = []
        self.has_gt = False
        self.htp_frames = htp_frames
        self.qdq_outputs: list[dict[str, np.ndarray]] = []
        self.fp32_outputs: list[dict[str, np.ndarray]] = []

    def add(self, index: int, item: PreparedFrame, raw32: dict[str, np.ndarray], raw8: dict[str, np.ndarray]) -> tuple[Any, Any]:
        """Score one frame's two raw outputs; returns them decoded (FP32, INT8)."""
        meta = self.meta
        d32, d8 = self.decode(raw32, item.frame), self.decode(raw8, item.frame)
        gt = target_of(item.frame, meta.task, None)
        if gt is not None:
            self.has_gt = True
            self.scorers["fp32"].update(d32, gt)
            self.scorers["int8"].update(d8, gt)
        self.scorers["int8_vs_fp32"].update(d8, scored_depth(d32, meta) if meta.task == "depth" else d32.labels)
        if self.heads is not None:
            self.heads.update(d32, d8, item.frame.depth)
        else:
            self.label_agreement.append(float((d32.labels == d8.labels).mean()))
        if index < self.htp_frames:
            self.qdq_outputs.append(raw8)
            self.fp32_outputs.append(raw32)
        return d32, d8

    def task_report(self, thresholds: Thresholds, out: Path) -> tuple[dict[str, Any], list[str]]:
        """Metrics, acceptability and the head / label analysis, with the figures it wrote into ``out``."""
        meta = self.meta
        report: dict[str, Any] = {"has_ground_truth": self.has_gt}
        figures: list[str] = []
        if self.has_gt:
            report["fp32_metrics"] = self.scorers["fp32"].compute()
            report["int8_metrics"] = self.scorers["int8"].compute()
            report["acceptability"] = rate_metrics(report["fp32_metrics"], report["int8_metrics"], meta.task,
                                                   thresholds)
        else:
            report["acceptability"] = {"metrics": {}, "overall": "n/a",
                                       "note": "no ground truth in the data set: only INT8-vs-FP32 agreement is reported"}
        report["int8_vs_fp32_metrics"] = self.scorers["int8_vs_fp32"].compute()
        if self.heads is not None:
            report["head_errors"] = self.heads.summary()
            figures.append(self.heads.plot(out / "error_vs_depth.png").name)
        else:
            report["label_agreement_int8_vs_fp32"] = float(np.mean(self.label_agreement))
            if self.has_gt:
                self.scorers["fp32"].confusion.plot(out / "confusion_fp32.png", meta.class_names, "FP32")
                self.scorers["int8"].confusion.plot(out / "confusion_int8.png", meta.class_names, "INT8 (QDQ, CPU EP)")
                figures += ["confusion_fp32.png", "confusion_int8.png"]
        return report, figures


def save_frame_outputs(path: Path, raw32: dict[str, np.ndarray], raw8: dict[str, np.ndarray], gt: np.ndarray | None,
                       overwrite: bool) -> None:
    """One frame's raw FP32 and INT8 outputs (and ground truth) as a compressed npz (atomic)."""
    arrays = {f"fp32_{k}": v for k, v in raw32.items()} | {f"int8_{k}": v for k, v in raw8.items()}
    if gt is not None:
        arrays["ground_truth"] = gt
    with atomic_write(path, overwrite=overwrite) as tmp:
        np.savez_compressed(tmp, **arrays)


def compare_models(
    fp32_path: str | os.PathLike[str],
    int8_path: str | os.PathLike[str],
    data: ImageSource,
    out_dir: str | os.PathLike[str],
    *,
    count: int = 0,
    htp_frames: int = 2,
    htp_model: str | os.PathLike[str] | None = None,
    thresholds: Thresholds | None = None,
    save_outputs: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Compare FP32 with INT8 (QDQ on the CPU EP) over ``data``; write the report into ``out_dir``.

    ``htp_model`` (default: the QDQ model) runs on QNN HTP for the first
    ``htp_frames`` frames to measure HTP-vs-CPU agreement; 0 skips it.

    Raises:
        OutputExistsError: ``out_dir`` already holds a comparison and not ``overwrite``.
        ModelFileError: the two models disagree on task or input.
        DataError: the data set is empty/unreadable.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    report_json = out / "comparison.json"
    if report_json.exists() and not overwrite:
        raise OutputExistsError(f"{report_json} exists; refusing to overwrite it (pass --overwrite or a new folder)")
    thresholds = thresholds or Thresholds()
    fp32, int8 = load_pair(fp32_path, int8_path)
    meta = fp32.metadata
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    frames = prepare_frames(data, meta, count, resize=True, with_targets=True)
    run = ComparisonRun(meta, htp_frames)
    figures: list[str] = []
    (out / "outputs").mkdir(exist_ok=True)
    for i, item in enumerate(tqdm(frames, desc="compare", unit="frame", disable=not progress)):
        feeds = model_feeds(meta, item.tensor, item.frame.camera, item.frame.name)
        raw32, raw8 = fp32.run(feeds), int8.run(feeds)
        d32, d8 = run.add(i, item, raw32, raw8)
        if save_outputs:
            save_frame_outputs(out / "outputs" / f"{item.frame.name}.npz", raw32, raw8,
                               target_of(item.frame, meta.task, None), overwrite)
        if i < FIGURE_FRAMES:
            figures.append(_frame_figure(out / f"frame_{item.frame.name}.png", item, d32, d8, meta).name)

    task_report, task_figures = run.task_report(thresholds, out)
    report: dict[str, Any] = {
        "task": meta.task,
        "fp32_model": str(fp32_path),
        "int8_model": str(int8_path),
        "int8_quantization": int8.metadata.extra.get("quantization", {}),
        "data": data.describe(),
        "frames": len(frames),
        "int8_accuracy_backend": "QDQ model on ONNX Runtime CPU EP",
        **task_report,
    }
    report["htp_agreement"] = htp_agreement(htp_model or int8_path, meta, frames[:htp_frames], run.qdq_outputs,
                                            run.fp32_outputs)
    report["figures"] = figures + task_figures
    report["seconds"] = time.perf_counter() - started
    write_json(report_json, report, overwrite=overwrite)
    with atomic_write(out / "comparison.md", overwrite=overwrite) as tmp:
        tmp.write_text(comparison_markdown(report))
    return report


def htp_agreement(
    model_path: str | os.PathLike[str], meta: ModelMetadata, frames: list[PreparedFrame],
    qdq_cpu_outputs: list[dict[str, np.ndarray]], fp32_outputs: list[dict[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Run ``model_path`` on QNN HTP (fallback disabled) on ``frames``; agreement with QDQ-on-CPU.

    With ground truth (and ``fp32_outputs``), the task metrics of FP32, QDQ-on-CPU
    and HTP on these same frames are added, so the HTP's own accuracy is visible.
    """
    if not frames:
        return {"frames": 0, "note": "skipped (htp_frames = 0)"}
    from perception_core.runtime.loader import load_model

    started = time.perf_counter()
    htp = load_model(model_path, backend="npu")
    htp_outputs = [htp.run(model_feeds(meta, f.tensor, f.frame.camera, f.frame.name)) for f in frames]
    per_frame = [output_agreement(meta, out, ref, f.frame)
                 for out, ref, f in zip(htp_outputs, qdq_cpu_outputs, frames, strict=True)]
    result = {"model": str(model_path), "backend": "QNN HTP (emulated on x86_64 here), CPU fallback disabled",
              "frames": len(frames), "seconds": time.perf_counter() - started, **_mean_agreement(per_frame)}
    targets = [target_of(f.frame, meta.task, None) for f in frames]
    if fp32_outputs and all(t is not None for t in targets):
        decode = decoder(meta)
        runs = {"fp32": fp32_outputs, "qdq_cpu": qdq_cpu_outputs, "htp": htp_outputs}
        result["metrics_on_these_frames"] = {}
        for name, outputs in runs.items():
            scorer = TaskScorer(meta)
            for out, target, f in zip(outputs, targets, frames, strict=True):
                scorer.update(decode(out, f.frame), target)
            metrics = scorer.compute()
            keys = ("abs_rel", "rmse", "a1") if meta.task == "depth" else ("miou", "pixel_accuracy")
            result["metrics_on_these_frames"][name] = {k: float(metrics[k]) for k in keys}
    return result


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def comparison_markdown(report: dict[str, Any]) -> str:
    """The human-readable report (Markdown with the figures linked)."""
    q = report.get("int8_quantization", {})
    lines = [
        f"# FP32 vs INT8: {report['task']}",
        "",
        f"- FP32 model: `{report['fp32_model']}`",
        f"- INT8 model: `{report['int8_model']}` ({q.get('label', 'unknown settings')})",
        f"- data: {report['data']}, {report['frames']} frames",
        f"- INT8 accuracy measured with: {report['int8_accuracy_backend']}",
        f"- **verdict: {report['acceptability']['overall']}**",
        "",
    ]
    if q.get("raised_to_16bit_tensors"):
        lines += [f"16-bit activation tensors: {', '.join(q['raised_to_16bit_tensors'])}", ""]
    rated = report["acceptability"].get("metrics", {})
    if rated:
        lines += ["## Task metrics", "", "| metric | FP32 | INT8 | INT8 worse by | limits (exc/good/warn) | level |",
                  "|---|---|---|---|---|---|"]
        for name, r in rated.items():
            lines.append(f"| {name} | {_fmt(r['fp32'])} | {_fmt(r['int8'])} | {_fmt(r['int8_worse_by'])} | "
                         f"{' / '.join(_fmt(v) for v in r['limits'])} | {r['level']} |")
        lines.append("")
    if report["task"] == "depth" and "fp32_metrics" in report:
        lines += [f"Pixels with valid ground truth that the runtime pipeline gives no finite depth (REP 117 +Inf "
                  f"at or beyond max_depth, -Inf below min_depth, NaN invalid; scored as the composed depth clipped "
                  f"to [min_depth, max_depth]): FP32 "
                  f"{_fmt(report['fp32_metrics'].get('pipeline_invalid_fraction'))}, INT8 "
                  f"{_fmt(report['int8_metrics'].get('pipeline_invalid_fraction'))}.", ""]
    if report["task"] == "segmentation" and "fp32_metrics" in report:
        names = report["fp32_metrics"]["class_names"]
        lines += ["## Per-class IoU", "", "| class | FP32 | INT8 |", "|---|---|---|"]
        for n in names:
            lines.append(f"| {n} | {_fmt(report['fp32_metrics']['per_class_iou'][n])} | "
                         f"{_fmt(report['int8_metrics']['per_class_iou'][n])} |")
        lines.append("")
    if "head_errors" in report:
        h = report["head_errors"]
        lines += ["## Depth heads (INT8 vs FP32)", ""]
        for key in ("pixels_compared", "validity_changed_fraction", "mean_abs_depth_change_m",
                    "integer_head_mean_abs_change_m", "fractional_head_mean_abs_change_m",
                    "integer_level_changed_fraction", "integer_share_of_change"):
            if key in h:
                lines.append(f"- {key}: {_fmt(h[key])}")
        for key, value in h.get("vs_gt", {}).items():
            lines.append(f"- {key}: {_fmt(value)}")
        lines += [f"- {h['note']}", ""]
    ha = report["htp_agreement"]
    lines += ["## HTP vs QDQ-on-CPU agreement", ""]
    if ha.get("frames"):
        lines.append(f"{ha['frames']} frame(s) on {ha['backend']} (`{ha['model']}`), {ha['seconds']:.1f} s:")
        for key, value in ha.items():
            if key not in ("model", "backend", "frames", "seconds", "outputs", "metrics_on_these_frames"):
                lines.append(f"- {key}: {_fmt(value)}")
        for name, o in ha["outputs"].items():
            lines.append(f"- output `{name}`: max |diff| {_fmt(o['max_abs'])}, mean |diff| {_fmt(o['mean_abs'])}")
        for name, metrics in ha.get("metrics_on_these_frames", {}).items():
            lines.append(f"- {name} on these frames vs ground truth: "
                         + ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items()))
    else:
        lines.append(ha.get("note", "skipped"))
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in report["figures"]]
    return "\n".join(lines) + "\n"


def primary_metric_name(task: str) -> str:
    return PRIMARY_METRIC[task][0]


__all__ = ["Thresholds", "compare_models", "comparison_markdown", "depth_range", "rate_metrics"]
