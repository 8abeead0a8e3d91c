"""Model-in-the-loop pipelines and their pure helpers, shared by the nodes and offline evaluation.

No ROS and no torch here: the depth and segmentation nodes, bag evaluation and
benchmarks all call these, so the numbers they report come from one code path.

- :class:`DepthPipeline`: image -> metric depth (metres, REP 117 special
  values: +Inf at or beyond the model's range, -Inf nearer than its minimum,
  NaN invalid) at model resolution; composes ``integer*max_depth + fractional``
  on the host for ``separate`` models (``perception_core.depth_codec.compose_depth``).
- :class:`SegPipeline`: image -> uint8 class ids at model resolution, plus
  per-class pixel counts and fractions.
- ``colorize_labels``, ``overlay``, ``colorize_depth``: RViz-friendly rgb8 views.
- ``scale_intrinsics``: K or P for a resized image (pixel-centre convention of cv2.resize);
  ``input_focal_px``: a camera's focal length at a model's input size (what a
  camera-aware depth model's output is rescaled by); ``camera_ratios`` and
  ``camera_features``: those factors, and their logs as a model's camera input;
  ``model_feeds``: every graph input of one frame, for the offline tools (``probe_feeds``:
  of a shape check).
- ``depth_to_points`` and ``pack_points``: a point cloud in the camera optical
  frame, laid out as sensor_msgs/PointCloud2 bytes without importing ROS.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from perception_core.depth_codec import compose_depth, integer_step, interpolate_level_runs
from perception_core.errors import ConfigError, DataError, ModelFileError
from perception_core.model_metadata import CAMERA_INPUT_SHAPE, ModelMetadata
from perception_core.preprocess import Preprocessor
from perception_core.range_correction import RangeCorrection

LOG = logging.getLogger(__name__)
IGNORE_ID = 255
# sensor_msgs/PointField datatype constants (FLOAT32 = 7); no ROS import needed for a number.
POINTFIELD_FLOAT32 = 7


class RunnableModel(Protocol):
    """What the pipelines need from a model: ``runtime.loader.LoadedModel`` satisfies it."""

    metadata: ModelMetadata

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass
class DepthOutput:
    depth: np.ndarray  # [h, w] float32 metres, NaN where invalid
    integer: np.ndarray  # [h, w] float32 in [0, 1] (recovered from depth for composed models)
    fractional: np.ndarray | None  # [h, w] float32 metres (the model's own, before depth_scale); None if composed
    timings: dict[str, float] = field(default_factory=dict)
    depth_scale: float = 1.0  # metres per model-output metre for this camera (1 for a fixed-camera model)
    range_correction: str = "off"  # "applied", "off" (none given), "off: <why>" (another model's) or why not this camera


@dataclass
class SegOutput:
    labels: np.ndarray  # [h, w] uint8 class ids (255 = ignore)
    pixel_counts: np.ndarray  # [num_classes] int64
    class_fractions: np.ndarray  # [num_classes] float32, counts / labelled pixels
    ignored_pixels: int
    timings: dict[str, float] = field(default_factory=dict)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


class _ModelPipeline:
    """Preprocess -> run -> postprocess with per-stage timings; subclasses define ``postprocess``."""

    model: RunnableModel
    metadata: ModelMetadata
    preprocessor: Preprocessor

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.metadata.input_hw

    def infer(self, image: np.ndarray, channel_order: str = "RGB", **postprocess_args: Any) -> Any:
        t0 = time.perf_counter()
        feeds = self.preprocessor.feeds(self.metadata.input_name, image, channel_order)
        feeds.update(self.extra_feeds(**postprocess_args))
        t1 = time.perf_counter()
        outputs = self.model.run(feeds)
        t2 = time.perf_counter()
        result = self.postprocess(outputs, **postprocess_args)
        result.timings = {"preprocess_ms": (t1 - t0) * 1e3, "inference_ms": (t2 - t1) * 1e3,
                          "postprocess_ms": _ms(t2)}
        return result

    def extra_feeds(self, **postprocess_args: Any) -> dict[str, np.ndarray]:
        """Graph inputs besides the image (a depth model's camera input); none by default."""
        return {}

    def postprocess(self, outputs: dict[str, np.ndarray]) -> Any:
        raise NotImplementedError


class DepthPipeline(_ModelPipeline):
    """Run a depth model on an image and return REP 118 metric depth with REP 117 special values.

    ``max_depth`` overrides the metadata's (a warning is logged): for
    ``separate`` models it is the composition scale and the valid range's top;
    for ``composed`` models the graph already composed, so it only sets the
    valid range. ``min_depth`` likewise defaults to the metadata's.

    REP 117: a pixel at or beyond ``max_depth`` is +Inf ("nothing within
    range": the top integer level and its residual band mean "at least
    max_depth", so sky is not a wall at max_depth); a positive pixel below
    ``min_depth`` is -Inf (too close to measure); a non-finite or non-positive
    model output is NaN (invalid).

    A camera-aware model (metadata ``depth_camera`` ``canonical_focal`` or
    ``canonical_focal_height``) answers for a canonical camera: :meth:`infer`
    then needs the camera's K (``camera_k``, for an image of ``camera_hw``,
    default the image's size), and for ``canonical_focal_height`` also the
    camera's height above the ground plane of the vehicle's base frame
    (``camera_height``, metres). The composed depth is multiplied by
    ``input_focal_px(K) / canonical_focal_px`` (and by ``camera_height /
    canonical_height_m``) before the range is applied (in metres).

    ``interpolate_levels`` (a ``levels`` head only) replaces the staircase that a fractional head which does not
    resolve its step leaves on smooth surfaces by the surface through the level edges, column by column
    (:func:`perception_core.depth_codec.interpolate_level_runs`), before the camera scale; off, the depth is
    the two heads' composition as exported. The depth node turns it on by default (docs/depth.md).
    """

    def __init__(self, model: RunnableModel, max_depth: float | None = None, min_depth: float | None = None,
                 range_correction: RangeCorrection | None = None, interpolate_levels: bool = False) -> None:
        meta = model.metadata
        if meta.task != "depth":
            raise ModelFileError(f"DepthPipeline needs a depth model, got task {meta.task!r}")
        self.model = model
        self.metadata = meta
        self.max_depth = float(meta.max_depth)
        if max_depth:
            if max_depth <= 0:
                raise ConfigError(f"max_depth override must be > 0 (0 = from metadata), got {max_depth}")
            if abs(max_depth - meta.max_depth) > 1e-6:
                LOG.warning("max_depth override %.3f m replaces the model's %.3f m%s", max_depth, meta.max_depth,
                            " (composed model: only the valid range changes)" if meta.depth_outputs == "composed"
                            else "")
            self.max_depth = float(max_depth)
        self.min_depth = float(meta.min_depth if min_depth is None else min_depth)
        # The host composes with this scale: its integer step must stay representable by the fractional head.
        self.level_step = 0.0
        if meta.depth_outputs == "separate":
            step = integer_step(self.max_depth, meta.integer_head_kind, meta.levels or 256)
            if meta.integer_head_kind == "levels":
                self.level_step = step
        # Only a levels head has a staircase to interpolate (depth_codec.interpolate_level_runs).
        self.interpolate_levels = bool(interpolate_levels) and self.level_step > 0
        if not 0 <= self.min_depth < self.max_depth:
            raise ConfigError(f"depth range [{self.min_depth}, {self.max_depth}] m is empty or negative")
        self.preprocessor = Preprocessor(meta)
        # A correction measured for another model never applies: dropped here, once, with the reason that every
        # frame then reports ("off" when none was given). The camera is checked per frame.
        self.range_correction = range_correction
        self.range_correction_off = "off"
        refusal = range_correction.model_refusal(meta) if range_correction is not None else None
        if refusal:
            self.range_correction, self.range_correction_off = None, f"off: {refusal}"

    def infer(self, image: np.ndarray, channel_order: str = "RGB", camera_k: np.ndarray | list[float] | None = None,
              camera_hw: tuple[int, int] | None = None, camera_height: float | None = None) -> DepthOutput:
        """Depth of ``image``; a camera-aware model needs ``camera_k`` (3x3 or flat 9), and ``camera_height``."""
        return super().infer(image, channel_order, camera_k=camera_k,
                             camera_hw=tuple(camera_hw) if camera_hw else image.shape[:2], camera_height=camera_height)

    def extra_feeds(self, camera_k: np.ndarray | list[float] | None = None, camera_hw: tuple[int, int] | None = None,
                    camera_height: float | None = None) -> dict[str, np.ndarray]:
        """The camera input of a model that takes one (metadata ``camera_input``), else nothing."""
        if not self.metadata.camera_input:
            return {}
        return {self.metadata.camera_input: camera_features(self.metadata, camera_k, camera_hw, camera_height)}

    def postprocess(self, outputs: dict[str, np.ndarray], camera_k: np.ndarray | list[float] | None = None,
                    camera_hw: tuple[int, int] | None = None, camera_height: float | None = None) -> DepthOutput:
        """Model outputs (by name) -> metric depth with REP 117's +Inf / -Inf / NaN (camera: see :meth:`infer`);
        the range correction, where one is given and fits this model and camera, before the range is applied."""
        focal_ratio, height_ratio = camera_ratios(self.metadata, camera_k, camera_hw, camera_height)
        scale = np.float32(focal_ratio * height_ratio)
        names = self.metadata.output_names
        if self.metadata.depth_outputs == "separate":
            integer = np.asarray(outputs[names[0]], np.float32)[0, 0]
            fractional = np.asarray(outputs[names[1]], np.float32)[0, 0]
            depth = np.asarray(compose_depth(integer, fractional, np.float32(self.max_depth)), np.float32)
            if self.interpolate_levels:
                level = np.rint(integer * np.float32((self.metadata.levels or 256) - 1)).astype(np.int32)
                depth = interpolate_level_runs(depth, level, self.level_step)
        else:
            depth = np.array(outputs[names[0]][0, 0], np.float32)  # a copy: we write NaNs into it
            integer = np.clip(depth / np.float32(self.metadata.max_depth), 0.0, 1.0)
            fractional = None
        if scale != 1.0:
            depth *= scale
        corrected = self.range_correction_off
        if self.range_correction is not None:
            corrected = self.range_correction.camera_refusal(focal_ratio, height_ratio) or ""
            if not corrected:
                self.range_correction.apply(depth, focal_ratio, height_ratio)
                corrected = "applied"
        mark_depth_range(depth, self.min_depth, self.max_depth)
        return DepthOutput(depth=depth, integer=integer, fractional=fractional, depth_scale=float(scale),
                           range_correction=corrected)


def mark_depth_range(depth: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    """In place, REP 117: ``>= max_depth`` -> +Inf, ``0 < d < min_depth`` -> -Inf, non-finite or ``<= 0`` -> NaN.

    The top integer level plus its residual reaches max_depth + one step: that
    whole band is the model's "at or beyond max range" answer, hence +Inf, which
    depth consumers (point clouds, depthimage_to_laserscan, voxel layers) read as
    "no obstacle within range" rather than as a surface at max_depth.
    """
    with np.errstate(invalid="ignore"):
        invalid = ~(depth > 0)  # NaN compares False, so NaN is invalid too
        np.copyto(depth, np.float32(np.inf), where=depth >= np.float32(max_depth))
        if min_depth > 0:
            np.copyto(depth, np.float32(-np.inf), where=depth < np.float32(min_depth))
    depth[invalid] = np.nan
    return depth


def camera_ratios(meta: ModelMetadata, camera_k: np.ndarray | list[float] | None, camera_hw: tuple[int, int] | None,
                  camera_height: float | None = None) -> tuple[float, float]:
    """(focal, height) factors that turn a camera-aware depth model's metres into this camera's; (1, 1) if fixed.

    ``input_focal_px(K) / canonical_focal_px``, and ``camera_height /
    canonical_height_m`` for ``canonical_focal_height`` (else 1).

    Raises:
        ConfigError: a camera-aware model without what it needs (K and its image size; the camera
            height for ``canonical_focal_height``), or values that are not positive.
    """
    if not meta.needs_camera:
        return 1.0, 1.0
    name = meta.model_name or "(unnamed)"
    if camera_k is None or camera_hw is None:
        raise ConfigError(f"depth model {name} is camera-aware (depth_camera {meta.depth_camera}): "
                          "it needs the camera's K (camera_info) to give metres")
    focal_ratio = input_focal_px(camera_k, camera_hw, meta.input_hw) / float(meta.canonical_focal_px)
    height_ratio = 1.0
    if meta.needs_camera_height:
        if camera_height is None or not camera_height > 0:
            raise ConfigError(f"depth model {name} (depth_camera {meta.depth_camera}) needs the camera's height "
                              f"above the ground in metres (> 0), got {camera_height}")
        height_ratio = float(camera_height) / float(meta.canonical_height_m)
    return focal_ratio, height_ratio


def camera_features(meta: ModelMetadata, camera_k: np.ndarray | list[float] | None, camera_hw: tuple[int, int] | None,
                    camera_height: float | None = None) -> np.ndarray:
    """The camera input (``CAMERA_INPUT_SHAPE``) of a model with ``camera_input``: the logs of :func:`camera_ratios`.

    Raises:
        ConfigError: as :func:`camera_ratios`, or a model without a camera input.
    """
    if not meta.camera_input:
        raise ConfigError(f"depth model {meta.model_name or '(unnamed)'} takes no camera input")
    ratios = camera_ratios(meta, camera_k, camera_hw, camera_height)
    return np.log(np.asarray(ratios, np.float64)).astype(np.float32).reshape(CAMERA_INPUT_SHAPE)


def model_feeds(meta: ModelMetadata, image_tensor: np.ndarray, camera: dict[str, Any] | None = None,
                where: str = "model") -> dict[str, np.ndarray]:
    """Every graph input of a model: the preprocessed image and, for a model with a camera input, the camera's.

    ``camera`` holds :class:`DepthPipeline`'s ``camera_k``, ``camera_hw``, ``camera_height``
    (``quant.images.Frame.camera``); ``where`` names the frame in the error when it is missing.
    """
    feeds = {meta.input_name: image_tensor}
    if meta.camera_input:
        if camera is None:
            raise ConfigError(f"{where}: depth model {meta.model_name or '(unnamed)'} takes its camera as an input "
                              f"({meta.camera_input!r}) and this frame has none (synthetic folders record it)")
        feeds[meta.camera_input] = camera_features(meta, **camera)
    return feeds


def probe_feeds(meta: ModelMetadata, image_tensor: np.ndarray) -> dict[str, np.ndarray]:
    """Every graph input for a probe run that checks shapes and finiteness, not accuracy: the given image
    tensor and, for a model with a camera input, the canonical camera (zeros). Never for a real frame."""
    feeds = {meta.input_name: image_tensor}
    if meta.camera_input:
        feeds[meta.camera_input] = np.zeros(CAMERA_INPUT_SHAPE, np.float32)
    return feeds


class SegPipeline(_ModelPipeline):
    """Run a segmentation model and return uint8 class ids plus class statistics."""

    def __init__(self, model: RunnableModel) -> None:
        meta = model.metadata
        if meta.task != "segmentation":
            raise ModelFileError(f"SegPipeline needs a segmentation model, got task {meta.task!r}")
        if len(meta.class_names) > IGNORE_ID:
            raise ModelFileError(f"{len(meta.class_names)} classes do not fit uint8 labels with 255 = ignore")
        self.model = model
        self.metadata = meta
        self.num_classes = len(meta.class_names)
        self.preprocessor = Preprocessor(meta)
        self.colors = class_color_table(meta.class_colors)

    def postprocess(self, outputs: dict[str, np.ndarray]) -> SegOutput:
        raw = outputs[self.metadata.output_names[0]][0]
        if self.metadata.seg_output == "logits":
            labels = logits_to_labels(raw)
        else:
            labels = class_ids_to_labels(raw[0])
        counts, ignored = class_pixel_counts(labels, self.num_classes)
        labelled = int(counts.sum())
        fractions = (counts / labelled).astype(np.float32) if labelled else np.zeros(self.num_classes, np.float32)
        return SegOutput(labels=labels, pixel_counts=counts, class_fractions=fractions, ignored_pixels=ignored)


def logits_to_labels(logits: np.ndarray) -> np.ndarray:
    """[C, h, w] scores -> [h, w] uint8 argmax (first maximum wins, like np.argmax)."""
    import cv2

    if logits.shape[0] > IGNORE_ID:
        raise ModelFileError(f"{logits.shape[0]} classes do not fit uint8 labels")
    # A running max over planes with OpenCV's masked copy: ~8x faster than np.argmax(axis=0) on [C, h, w].
    planes = np.ascontiguousarray(logits, np.float32)
    best = planes[0].copy()
    labels = np.zeros(best.shape, np.uint8)
    class_plane = np.empty(best.shape, np.uint8)
    for c in range(1, planes.shape[0]):
        better = cv2.compare(planes[c], best, cv2.CMP_GT)
        class_plane.fill(c)
        cv2.copyTo(class_plane, better, labels)
        cv2.max(best, planes[c], dst=best)
    return labels


def class_ids_to_labels(class_ids: np.ndarray) -> np.ndarray:
    """Float class-id map (from an in-graph ArgMax+Cast) -> uint8; rounds away fp16 noise (5.0000005).

    Negative ids become 0 and ids above 255 become 255, as ``clip(rint(x), 0, 255)``
    would; done in two OpenCV passes (max with 0, then a rounding saturating
    convert) instead of numpy's three full-size temporaries.
    """
    import cv2

    ids = np.asarray(class_ids)
    if ids.dtype not in (np.float32, np.float64):
        ids = ids.astype(np.float32)
    return cv2.convertScaleAbs(cv2.max(ids, 0.0))  # rounds half to even like np.rint; saturates at 255


def class_pixel_counts(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, int]:
    """Pixels per class id ``0..num_classes-1`` and the number carrying the ignore id."""
    import cv2

    # calcHist is ~3x faster than np.bincount here; float32 counts are exact below 2**24 pixels.
    counts = cv2.calcHist([np.ascontiguousarray(labels, np.uint8)], [0], None, [256], [0, 256]).reshape(-1)
    counts = counts.astype(np.int64)
    return counts[:num_classes], int(counts[IGNORE_ID])


def class_color_table(colors: list[list[int]]) -> np.ndarray:
    """256x3 uint8 lookup table: class id -> RGB; ids without a colour (and 255) are black."""
    table = np.zeros((256, 3), np.uint8)
    if colors:
        table[: len(colors)] = np.asarray(colors, np.uint8).reshape(-1, 3)
    return table


def _apply_table(indices: np.ndarray, table: np.ndarray) -> np.ndarray:
    """uint8 [h, w] indices -> [h, w, 3] rows of a 256x3 uint8 table.

    One single-channel cv2.LUT per colour plane, then one cv2.merge: ~4x faster than
    merging the indices to 3 channels first and ~5x faster than np.take(axis=0).
    """
    import cv2

    planes = [cv2.LUT(indices, np.ascontiguousarray(table[:, c])) for c in range(3)]
    return cv2.merge(planes)


def colorize_labels(labels: np.ndarray, colors: list[list[int]] | np.ndarray) -> np.ndarray:
    """[h, w] uint8 ids -> [h, w, 3] uint8 RGB using the class colours (metadata ``class_colors``)."""
    table = colors if isinstance(colors, np.ndarray) and colors.shape == (256, 3) else class_color_table(colors)
    return _apply_table(np.ascontiguousarray(labels, np.uint8), np.ascontiguousarray(table, np.uint8))


def overlay(image: np.ndarray, colored: np.ndarray, alpha: float) -> np.ndarray:
    """Blend ``colored`` over ``image`` (same shape, uint8): ``alpha*colored + (1-alpha)*image``."""
    import cv2

    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"overlay alpha must be in [0, 1], got {alpha}")
    return cv2.addWeighted(colored, float(alpha), image, 1.0 - float(alpha), 0.0)


_DEPTH_TABLE: np.ndarray | None = None


def _depth_table() -> np.ndarray:
    """RGB TURBO, index 0 (near) red .. 254 (far) blue; 255 black for invalid pixels."""
    global _DEPTH_TABLE
    if _DEPTH_TABLE is None:
        import cv2

        turbo_bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), cv2.COLORMAP_TURBO)
        table = np.zeros((256, 3), np.uint8)
        table[:255] = turbo_bgr[::-1, 0, ::-1][np.linspace(0, 255, 255).round().astype(int)]
        _DEPTH_TABLE = table
    return _DEPTH_TABLE


def colorize_depth(depth: np.ndarray, max_depth: float, min_depth: float = 0.0) -> np.ndarray:
    """[h, w] metres (NaN invalid) -> [h, w, 3] uint8 RGB, TURBO colormap near=red far=blue; NaN black."""
    if max_depth <= min_depth:
        raise ConfigError(f"colorize_depth needs max_depth > min_depth, got [{min_depth}, {max_depth}]")
    import cv2

    scaled = np.subtract(depth, np.float32(min_depth), dtype=np.float32)
    scaled *= np.float32(254.0 / (max_depth - min_depth))
    np.clip(scaled, 0, 254, out=scaled)
    # invalid -> the black entry (NaN would cast to an arbitrary integer); patchNaNs is one C pass in place,
    # a boolean-mask assignment costs ~3x more.
    cv2.patchNaNs(scaled, 255)
    index = scaled.astype(np.uint8)  # truncation: bin i holds [i, i+1) * range / 254
    return _apply_table(index, _depth_table())


def scale_intrinsics(k: np.ndarray | list[float], from_hw: tuple[int, int], to_hw: tuple[int, int]) -> np.ndarray:
    """Intrinsics (3x3 K or 3x4 P, or their flat 9/12 lists) for an image resized from ``from_hw`` to ``to_hw``.

    Uses cv2.resize's pixel-centre mapping ``u' = (u + 0.5) * s - 0.5``, so
    ``cx' = (cx + 0.5) * sx - 0.5``; fx, skew and P's Tx scale by sx, fy by sy.
    """
    matrix = np.array(k, dtype=np.float64)
    if matrix.size in (9, 12):
        matrix = matrix.reshape(3, -1)
    if matrix.shape not in ((3, 3), (3, 4)):
        raise ConfigError(f"intrinsics must be 3x3 or 3x4, got shape {matrix.shape}")
    (fh, fw), (th, tw) = from_hw, to_hw
    if min(fh, fw, th, tw) <= 0:
        raise ConfigError(f"image sizes must be positive, got {from_hw} -> {to_hw}")
    sx, sy = tw / fw, th / fh
    matrix[0] *= sx
    matrix[1] *= sy
    matrix[0, 2] += 0.5 * sx - 0.5
    matrix[1, 2] += 0.5 * sy - 0.5
    return matrix


def input_focal_px(k: np.ndarray | list[float], camera_hw: tuple[int, int], input_hw: tuple[int, int]) -> float:
    """Focal length, in model-input pixels, of a camera whose image is resized whole to ``input_hw``.

    The resize scales fx by the width ratio and fy by the height ratio, which
    differ when the aspect ratio changes (1280x1080 -> 640x384); one length
    stands for both: the geometric mean ``sqrt(fx' * fy')``, whose square is
    what an object's image area scales with.

    Raises:
        ConfigError: K without positive focal lengths, or a size that is not positive.
    """
    kk = np.asarray(k, np.float64).reshape(-1)
    if kk.size not in (9, 12):
        raise ConfigError(f"camera intrinsics must be 3x3 or 3x4, got {kk.size} values")
    kk = kk.reshape(3, -1)
    (ch, cw), (ih, iw) = camera_hw, input_hw
    if min(ch, cw, ih, iw) <= 0:
        raise ConfigError(f"image sizes must be positive, got camera {camera_hw}, input {input_hw}")
    fx, fy = kk[0, 0] * iw / cw, kk[1, 1] * ih / ch
    if not (fx > 0 and fy > 0):
        raise ConfigError(f"camera intrinsics need fx, fy > 0, got fx={kk[0, 0]}, fy={kk[1, 1]}")
    return float(np.sqrt(fx * fy))


def depth_to_points(depth: np.ndarray, k: np.ndarray | list[float], stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Back-project valid depth pixels to Nx3 float32 xyz in the camera optical frame (x right, y down, z fwd).

    ``k`` is the 3x3 K of ``depth``'s own resolution. Returns the points and
    the (row, col) pixel indices they came from, for colouring.
    """
    if stride < 1:
        raise ConfigError(f"point stride must be >= 1, got {stride}")
    kk = np.asarray(k, np.float64).reshape(3, 3)
    fx, fy, cx, cy = kk[0, 0], kk[1, 1], kk[0, 2], kk[1, 2]
    if fx <= 0 or fy <= 0:
        raise ConfigError(f"camera intrinsics need fx, fy > 0, got fx={fx}, fy={fy}")
    sub = depth[::stride, ::stride]
    rows, cols = np.nonzero(np.isfinite(sub) & (sub > 0))
    z = sub[rows, cols].astype(np.float32)
    rows = rows * stride
    cols = cols * stride
    points = np.empty((z.size, 3), np.float32)
    points[:, 0] = (cols - cx).astype(np.float32) * np.float32(1.0 / fx) * z
    points[:, 1] = (rows - cy).astype(np.float32) * np.float32(1.0 / fy) * z
    points[:, 2] = z
    return points, np.stack([rows, cols], axis=1)


def unpack_xyz(cloud: Any, where: str) -> np.ndarray:
    """float32 [height, width, 3] x, y, z of a sensor_msgs/PointCloud2 (float32 fields; ``where`` names it)."""
    offsets = {str(f.name): (int(f.offset), int(f.datatype)) for f in cloud.fields}
    missing = [n for n in "xyz" if offsets.get(n, (0, 0))[1] != POINTFIELD_FLOAT32]
    if missing:
        raise DataError(f"{where}: PointCloud2 needs float32 fields x, y, z; {', '.join(missing)} missing or not "
                        f"float32 (fields {sorted(offsets)})")
    rows, cols, step = int(cloud.height), int(cloud.width), int(cloud.point_step)
    data = np.frombuffer(bytes(cloud.data) if not isinstance(cloud.data, np.ndarray) else cloud.data.tobytes(),
                         np.uint8)
    if data.size < rows * cols * step or step < 12:
        raise DataError(f"{where}: PointCloud2 of {rows}x{cols} points of {step} bytes needs "
                        f"{rows * cols * step} bytes of data, has {data.size}")
    order = ">" if cloud.is_bigendian else "<"
    records = data[: rows * cols * step].reshape(rows * cols, step)
    out = np.empty((rows * cols, 3), np.float32)
    for i, name in enumerate("xyz"):
        start = offsets[name][0]
        out[:, i] = np.ascontiguousarray(records[:, start : start + 4]).view(f"{order}f4").ravel()
    return out.reshape(rows, cols, 3)


def pack_points(points: np.ndarray, rgb: np.ndarray | None = None) -> dict[str, Any]:
    """PointCloud2 layout for Nx3 xyz (+ optional Nx3 uint8 RGB as the packed float ``rgb`` field).

    Returns the message fields except header: ``height, width, fields`` (list
    of ``(name, offset, datatype, count)``), ``is_bigendian, point_step,
    row_step, is_dense`` and ``data`` (uint8 ndarray, little-endian records).
    """
    n = int(points.shape[0])
    names = ["x", "y", "z"] + (["rgb"] if rgb is not None else [])
    record = np.dtype({"names": names, "formats": ["<f4"] * len(names), "offsets": [0, 4, 8, 12][: len(names)],
                       "itemsize": 16 if rgb is not None else 12})
    cloud = np.empty(n, record)
    cloud["x"], cloud["y"], cloud["z"] = points[:, 0], points[:, 1], points[:, 2]
    if rgb is not None:
        colours = np.asarray(rgb, np.uint32)
        packed = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]  # RViz's 0x00RRGGBB in a float
        cloud["rgb"] = packed.astype("<u4").view("<f4")
    return {
        "height": 1,
        "width": n,
        "fields": [(name, 4 * i, POINTFIELD_FLOAT32, 1) for i, name in enumerate(names)],
        "is_bigendian": False,
        "point_step": record.itemsize,
        "row_step": record.itemsize * n,
        "is_dense": True,
        "data": cloud.view(np.uint8).reshape(-1),
    }
