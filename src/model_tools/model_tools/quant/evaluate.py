"""Task metrics of a model on prepared frames: the one scoring path of sensitivity and compare.

Each frame is preprocessed once (runtime Preprocessor), every model variant
runs on the same tensor, and outputs are decoded by the runtime pipelines'
``postprocess`` (so composition/labels match the nodes exactly). Depth is
scored with the Eigen metrics (perception_core.metrics.depth), segmentation with ConfusionMatrix.
Without ground truth, a reference model's outputs (FP32) stand in for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_tools.quant.images import Frame, ImageSource, check_frame_size
from perception_core.depth_codec import compose_depth
from perception_core.errors import DataError
from perception_core.model_metadata import ModelMetadata

# Primary metric per task and whether larger is better.
PRIMARY_METRIC = {"depth": ("abs_rel", False), "segmentation": ("miou", True)}


@dataclass
class PreparedFrame:
    frame: Frame
    tensor: np.ndarray  # [1, 3, H, W] float32, preprocessed for the model


def prepare_frames(
    source: ImageSource, metadata: ModelMetadata, count: int, resize: bool = True, with_targets: bool = True
) -> list[PreparedFrame]:
    """Read ``count`` evenly spaced frames (0 = all) and preprocess each once.

    Raises:
        DataError: no frames, or a size mismatch when ``resize`` is off.
    """
    from perception_core.preprocess import Preprocessor

    pre = Preprocessor(metadata)
    _, frames = source.frames(count, with_targets=with_targets)
    prepared = []
    for frame in frames:
        check_frame_size(frame, metadata, resize, source.describe())
        prepared.append(PreparedFrame(frame, pre(frame.rgb).copy()))
    if not prepared:
        raise DataError(f"evaluation set is empty: {source.describe()} gave no images")
    return prepared


def decoder(metadata: ModelMetadata) -> Callable[..., Any]:
    """``decode(outputs, frame=None)``: the runtime pipeline's postprocess (DepthOutput / SegOutput).

    A depth model that rescales with the camera takes it from ``frame.camera``.
    """
    from perception_core.pipelines import DepthPipeline, SegPipeline

    class _MetaOnly:
        def __init__(self, meta: ModelMetadata) -> None:
            self.metadata = meta

        def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover - never run
            raise NotImplementedError

    holder = _MetaOnly(metadata)
    if metadata.task != "depth":
        seg = SegPipeline(holder)
        return lambda outputs, frame=None: seg.postprocess(outputs)
    depth = DepthPipeline(holder)

    def decode(outputs: dict[str, np.ndarray], frame: Frame | None = None) -> Any:
        camera = frame.camera if frame is not None and frame.camera is not None else {}
        return depth.postprocess(outputs, **camera)

    return decode


def resize_to(array: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize (keeps labels and NaNs intact) to ``hw``."""
    if array.shape[:2] == tuple(hw):
        return array
    import cv2

    return cv2.resize(array, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)


def depth_range(metadata: ModelMetadata) -> tuple[float, float]:
    return max(float(metadata.min_depth), 1e-3), float(metadata.max_depth)


def scored_depth(decoded: Any, metadata: ModelMetadata) -> np.ndarray:
    """The depth to score: the pipeline's depth, with its non-finite pixels replaced by the raw composition.

    The runtime pipeline marks depth at or beyond max_depth +Inf and below
    min_depth -Inf (REP 117), and invalid outputs NaN. A 'separate' model's
    composition reaches max_depth + one step, so the farthest pixels would
    otherwise be scored as missing and dominate abs_rel.
    Scoring the raw value (which the Eigen metric then clips to the range) is
    the training evaluation's protocol; TaskScorer also counts these pixels.
    """
    if decoded.fractional is not None:
        raw = compose_depth(decoded.integer, decoded.fractional, float(metadata.max_depth))
    else:
        raw = decoded.integer * float(metadata.max_depth)
    raw = np.asarray(raw, np.float32) * np.float32(decoded.depth_scale)
    return np.where(np.isfinite(decoded.depth), decoded.depth, np.asarray(raw, np.float32)).astype(np.float32)


class TaskScorer:
    """Accumulates one model's task metrics over frames (against GT or a reference)."""

    def __init__(self, metadata: ModelMetadata) -> None:
        self.metadata = metadata
        if metadata.task == "depth":
            from perception_core.metrics.depth import DepthMetricAccumulator

            self.depth = DepthMetricAccumulator(*depth_range(metadata))
        else:
            from perception_core.metrics.segmentation import ConfusionMatrix

            self.confusion = ConfusionMatrix(len(metadata.class_names))
        self.frames = 0
        self.pipeline_invalid = 0  # depth: pixels with a valid target the pipeline gave no finite depth (scored clipped)
        self.valid_targets = 0

    def update(self, decoded: Any, target: np.ndarray) -> None:
        """Add one frame; ``target`` is GT depth (metres) or GT labels at any resolution."""
        self.frames += 1
        if self.metadata.task == "depth":
            pred = resize_to(scored_depth(decoded, self.metadata), target.shape[:2])
            lo, hi = self.depth.min_depth, self.depth.max_depth
            valid = np.isfinite(target) & (target > lo) & (target < hi)
            self.valid_targets += int(valid.sum())
            self.pipeline_invalid += int((valid & ~np.isfinite(resize_to(decoded.depth, target.shape[:2]))).sum())
            self.depth.update(pred, target)
        else:
            self.confusion.update(resize_to(decoded.labels, target.shape[:2]), target)

    def compute(self) -> dict[str, Any]:
        if self.metadata.task == "depth":
            metrics = self.depth.compute()
            metrics["pipeline_invalid_fraction"] = self.pipeline_invalid / max(self.valid_targets, 1)
            return metrics
        return self.confusion.to_dict(self.metadata.class_names)


def target_of(frame: Frame, task: str, reference: Any | None) -> np.ndarray | None:
    """Ground truth of the frame for ``task``; else the reference model's decoded output."""
    gt = frame.depth if task == "depth" else frame.label
    if gt is not None:
        return gt
    if reference is None:
        return None
    if task == "depth":
        return np.nan_to_num(reference.depth, nan=0.0)
    return reference.labels


def score_model(
    run: Callable[[PreparedFrame], dict[str, np.ndarray]],
    frames: list[PreparedFrame],
    metadata: ModelMetadata,
    references: list[Any] | None = None,
) -> dict[str, Any]:
    """Task metrics of ``run`` (prepared frame -> outputs) over ``frames``; references stand in for missing GT."""
    decode = decoder(metadata)
    scorer = TaskScorer(metadata)
    for i, item in enumerate(frames):
        decoded = decode(run(item), item.frame)
        target = target_of(item.frame, metadata.task, references[i] if references else None)
        if target is None:
            raise DataError(f"frame {item.frame.name} has no ground truth and no reference output to score against")
        scorer.update(decoded, target)
    return scorer.compute()


def primary(metrics: dict[str, Any], task: str) -> float:
    name, _ = PRIMARY_METRIC[task]
    return float(metrics[name])


def degradation(fp32_value: float, int8_value: float, task: str, metric: str | None = None) -> float:
    """How much worse INT8 is (positive = worse), for a metric where larger/smaller is better."""
    higher_better = {"abs_rel": False, "sq_rel": False, "rmse": False, "rmse_log": False,
                     "a1": True, "a2": True, "a3": True, "miou": True, "pixel_accuracy": True}
    name = metric or PRIMARY_METRIC[task][0]
    return (fp32_value - int8_value) if higher_better.get(name, False) else (int8_value - fp32_value)


def cpu_runner(model_path: str, metadata: ModelMetadata) -> Callable[[PreparedFrame], dict[str, np.ndarray]]:
    """Prepared frame -> outputs on ONNX Runtime's CPU EP (through the runtime loader; a camera input from the frame)."""
    from perception_core.pipelines import model_feeds
    from perception_core.runtime.loader import load_model

    model = load_model(model_path, backend="cpu")
    return lambda item: model.run(model_feeds(metadata, item.tensor, item.frame.camera, item.frame.name))
