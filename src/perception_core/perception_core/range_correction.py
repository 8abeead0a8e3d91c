"""A depth model's range bias, measured over a grid of cameras, and its correction (numpy + yaml).

A monocular network's error grows with range, and so can its bias: the shipped
model reads the vehicle camera's depth at 9-12 m 4-7 % too near, and a low
wide-angle camera's by 9-15 % from 3 m on (by predicted depth;
``docs/depth.md``, "Range correction"), which puts obstacles and drop edges
short by more than a costmap cell. The bias depends on the model and on the
camera (and on the scene), so it is measured like a calibration
(``model_tools.depth_range_fit``): for one model, on drives with a known truth,
at each camera of a grid over the two numbers the model knows a camera by (its
focal and height ratios, ``pipelines.camera_ratios``). Per camera the
correction is the median of truth / prediction per bin of predicted depth,
less a dead band toward 1 (a bias as small as the scene-to-scene spread is left
alone; ``fit_camera_curve``), interpolated in between, so ``d * factor(d)``; between the grid's cameras the factors are interpolated
bilinearly in the logs of the ratios. It is applied only to the model it was
measured for and to cameras inside the grid (or ``max_camera_difference``
beyond its edge, in log), and is otherwise refused with a reason the node
reports. The model is known by its graph's content hash, or by the weights it
was exported from (``weights_sha256`` in the export's metadata) at the same
input shape: an FP32 model is exported at set-up from the committed fp16
weights, and two machines' exports of the same weights differ in the last bits
of the weights that the export folds (their graph hashes then differ), which
the range correction, a smooth curve of the depth, does not notice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perception_core.errors import ConfigError
from perception_core.model_metadata import ModelMetadata

FORMAT = "perception_core.range_correction/2"
DEFAULT_MAX_CAMERA_DIFFERENCE = 0.1  # |ln ratio| beyond the grid's edge: 10 % of focal length or height
# A bin whose median truth / prediction lies outside this is not a bias but a few gross errors (a thin object read
# at the camera, the bottom rows): it is left out rather than stretched over its neighbours.
PLAUSIBLE_FACTORS = (0.8, 1.25)


@dataclass(frozen=True)
class CameraCurve:
    """Factors (truth / prediction) at predicted depths, for one camera."""

    depths_m: tuple[float, ...]  # increasing: the median predicted depth of each bin
    factors: tuple[float, ...]

    def __post_init__(self) -> None:
        depths, factors = np.asarray(self.depths_m, float), np.asarray(self.factors, float)
        if depths.ndim != 1 or depths.size < 1 or depths.shape != factors.shape:
            raise ConfigError(f"range correction: depths_m and factors must be equal-length lists, got "
                              f"{depths.size} and {factors.size}")
        if not (np.all(np.isfinite(depths)) and np.all(depths > 0) and np.all(np.diff(depths) > 0)):
            raise ConfigError("range correction: depths_m must be positive and increasing")
        if not (np.all(np.isfinite(factors)) and np.all(factors > 0)):
            raise ConfigError("range correction: factors must be positive")
        if np.any(np.diff(depths * factors) <= 0):  # corrected depth must keep the order of the predictions
            raise ConfigError("range correction: depths_m * factors must increase (a correction may not reorder depths)")

    def at(self, depth: np.ndarray) -> np.ndarray:
        """The factor at each depth (the end factors held beyond the ends)."""
        return np.interp(depth, self.depths_m, self.factors)


def _axis_weights(values: tuple[float, ...], x: float) -> list[tuple[int, float]]:
    """(index, weight) pairs that interpolate linearly at ``x`` along increasing ``values`` (clamped to the ends)."""
    if len(values) == 1 or x <= values[0]:
        return [(0, 1.0)]
    if x >= values[-1]:
        return [(len(values) - 1, 1.0)]
    i = int(np.searchsorted(values, x)) - 1
    t = (x - values[i]) / (values[i + 1] - values[i])
    return [(i, 1.0 - t), (i + 1, t)]


@dataclass(frozen=True)
class RangeCorrection:
    """Per-camera curves on a grid of (focal ratio, height ratio) for one model; see the module docstring."""

    focal_ratios: tuple[float, ...]  # increasing
    height_ratios: tuple[float, ...]  # increasing
    curves: tuple[tuple[CameraCurve, ...], ...]  # [focal index][height index]
    model_sha256: str  # the ONNX graph's content hash (ModelMetadata.content_sha256)
    max_camera_difference: float = DEFAULT_MAX_CAMERA_DIFFERENCE
    source: dict[str, Any] = field(default_factory=dict)  # how it was measured (command, cameras, frames, stats)
    # The weights the measured model was exported from and its input shape (metadata extra ``weights_sha256``,
    # ``input_shape``): another export of them at that shape is the same model; "" / () for the graph alone.
    weights_sha256: str = ""
    input_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("focal_ratios", "height_ratios"):
            axis = np.asarray(getattr(self, name), float)
            if axis.ndim != 1 or axis.size < 1 or not (np.all(np.isfinite(axis)) and np.all(axis > 0)
                                                        and np.all(np.diff(axis) > 0)):
                raise ConfigError(f"range correction: {name} must be positive and increasing, got {list(axis)}")
        shape = (len(self.focal_ratios), len(self.height_ratios))
        if len(self.curves) != shape[0] or any(len(row) != shape[1] for row in self.curves):
            raise ConfigError(f"range correction: curves must be {shape[0]} x {shape[1]} (focal x height)")
        value = self.max_camera_difference
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ConfigError(f"range correction: max_camera_difference must be >= 0, got {value!r}")

    def model_refusal(self, model: ModelMetadata | str) -> str | None:
        """Why this correction does not apply to that model, or None: the same graph (content hash), or an export
        of the same weights at the same input shape. ``model``: its metadata, or its graph's content hash alone."""
        content, weights, shape = _model_identity(model)
        if content and content == self.model_sha256:
            return None
        if self.weights_sha256 and weights == self.weights_sha256 and shape == tuple(self.input_shape):
            return None
        measured = f"measured for model {self.model_sha256[:12] or '?'}"
        if self.weights_sha256:
            measured += f" (weights {self.weights_sha256[:12]} at {list(self.input_shape)})"
        running = content[:12] or "(no hash)"
        if weights:
            running += f" (weights {weights[:12]} at {list(shape)})"
        return f"{measured}, running {running}"

    def camera_refusal(self, focal_ratio: float, height_ratio: float) -> str | None:
        """Why this correction does not apply to that camera (outside the grid by more than the margin), or None."""
        for name, have, axis in (("focal", focal_ratio, self.focal_ratios), ("height", height_ratio, self.height_ratios)):
            low, high = math.log(axis[0]) - self.max_camera_difference, math.log(axis[-1]) + self.max_camera_difference
            if not low <= math.log(have) <= high:
                span = f"{axis[0]:.3f}" if len(axis) == 1 else f"{axis[0]:.3f}-{axis[-1]:.3f}"
                return (f"measured for other cameras ({name} ratio {span}, this camera {have:.3f}, more than "
                        f"{self.max_camera_difference:g} apart in log)")
        return None

    def factors_at(self, depth: np.ndarray, focal_ratio: float, height_ratio: float) -> np.ndarray:
        """The factor at each depth for this camera: the grid's curves, bilinear in the logs of the ratios."""
        out = np.zeros(np.shape(depth), np.float64)
        logs = (tuple(math.log(v) for v in self.focal_ratios), tuple(math.log(v) for v in self.height_ratios))
        for i, wi in _axis_weights(logs[0], math.log(focal_ratio)):
            for j, wj in _axis_weights(logs[1], math.log(height_ratio)):
                out += wi * wj * self.curves[i][j].at(depth)
        return out

    def apply(self, depth: np.ndarray, focal_ratio: float, height_ratio: float) -> np.ndarray:
        """In place: finite positive depths times the factor at their depth for this camera; others untouched.
        (A blend of curves whose corrected depths increase also increases: the order of depths is kept.)"""
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(depth) & (depth > 0)
        depth[valid] *= self.factors_at(depth[valid], focal_ratio, height_ratio).astype(depth.dtype)
        return depth

    def to_dict(self) -> dict[str, Any]:
        # plain floats and lists: safe_dump refuses numpy scalars and tuples
        return {
            "format": FORMAT, "model_sha256": self.model_sha256,
            **({"weights_sha256": self.weights_sha256, "input_shape": [int(v) for v in self.input_shape]}
               if self.weights_sha256 else {}),
            "max_camera_difference": float(self.max_camera_difference),
            "focal_ratios": [float(v) for v in self.focal_ratios],
            "height_ratios": [float(v) for v in self.height_ratios],
            "curves": [[{"depths_m": [float(v) for v in c.depths_m], "factors": [float(v) for v in c.factors]}
                        for c in row] for row in self.curves],
            "source": self.source,
        }


def fit_camera_curve(predicted: np.ndarray, truth: np.ndarray, edges_m: np.ndarray, min_pixels: int,
                     drive: np.ndarray | None = None, dead_band: float = 0.0) -> tuple[CameraCurve, list[dict[str, float]]]:
    """The curve that maps ``predicted`` onto ``truth`` (paired 1-D pixel arrays, metres), per bin of predicted
    depth (``edges_m``), and a record per bin (depth, raw factor, spread of the drives, kept factor).

    A bin's raw factor is the median of truth / prediction; the kept factor is that less ``dead_band`` toward 1
    (0 within it): a bias as small as the scene-to-scene spread is not a property of the camera, and correcting
    it moves another scene's depth as often away from the truth as toward it. ``drive`` (the drive each pixel
    comes from) adds the standard deviation of the drives' own medians to the record, to show that spread.
    Bins with fewer than ``min_pixels`` pairs, or a raw factor outside PLAUSIBLE_FACTORS, are left out.
    """
    predicted, truth = np.asarray(predicted, np.float64), np.asarray(truth, np.float64)
    keep = np.isfinite(predicted) & np.isfinite(truth) & (predicted > 0) & (truth > 0)
    predicted, truth = predicted[keep], truth[keep]
    drive = None if drive is None else np.asarray(drive)[keep]
    which = np.digitize(predicted, edges_m) - 1
    depths, factors, record = [], [], []
    for b in range(len(edges_m) - 1):
        inside = which == b
        if inside.sum() < min_pixels:
            continue
        ratio = truth[inside] / predicted[inside]
        raw = float(np.median(ratio))
        if not PLAUSIBLE_FACTORS[0] <= raw <= PLAUSIBLE_FACTORS[1]:
            continue
        spread = 0.0
        if drive is not None:
            ids = drive[inside]
            medians = [np.median(ratio[ids == d]) for d in np.unique(ids) if (ids == d).sum() >= min_pixels // 10]
            spread = float(np.std(medians, ddof=1)) if len(medians) >= 3 else 0.0
        factor = 1.0 + math.copysign(max(0.0, abs(raw - 1.0) - dead_band), raw - 1.0)
        depth = float(np.median(predicted[inside]))
        record.append({"depth_m": depth, "raw_factor": raw, "spread": spread, "factor": factor,
                       "pixels": int(inside.sum())})
        depths.append(depth)
        factors.append(factor)
    if not depths:
        raise ConfigError(f"range correction: no bin of predicted depth holds {min_pixels} pixels with a truth and "
                          f"a factor within {PLAUSIBLE_FACTORS}")
    # Keep the corrected depth increasing: a bin whose corrected depth falls below its neighbour's is dropped
    # (the medians of neighbouring bins of a noisy far range can cross).
    kept_d, kept_f = [depths[0]], [factors[0]]
    for d, f in zip(depths[1:], factors[1:], strict=True):
        if d * f > kept_d[-1] * kept_f[-1]:
            kept_d.append(d)
            kept_f.append(f)
    return CameraCurve(tuple(kept_d), tuple(kept_f)), record


def save_range_correction(correction: RangeCorrection, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(correction.to_dict(), sort_keys=False))


def load_range_correction(path: str | Path) -> RangeCorrection:
    """Read a correction file; any problem is a ConfigError naming the file and the field."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"range correction {path}: cannot read it ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"range correction {path}: not YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"range correction {path}: field 'format' must be {FORMAT!r}")
    missing = [name for name in ("model_sha256", "focal_ratios", "height_ratios", "curves") if name not in data]
    if missing:
        raise ConfigError(f"range correction {path}: missing field(s) {', '.join(missing)}")
    try:
        curves = tuple(tuple(CameraCurve(tuple(float(v) for v in c["depths_m"]), tuple(float(v) for v in c["factors"]))
                             for c in row) for row in data["curves"])
        return RangeCorrection(
            focal_ratios=tuple(float(v) for v in data["focal_ratios"]),
            height_ratios=tuple(float(v) for v in data["height_ratios"]), curves=curves,
            model_sha256=str(data["model_sha256"]),
            weights_sha256=str(data.get("weights_sha256") or ""),
            input_shape=tuple(int(v) for v in data.get("input_shape") or ()),
            max_camera_difference=float(data.get("max_camera_difference", DEFAULT_MAX_CAMERA_DIFFERENCE)),
            source=dict(data.get("source") or {}))
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"range correction {path}: a field is missing or not a number ({exc!r})") from exc
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def load_range_correction_for(path: str | Path, model: ModelMetadata | str) -> tuple[RangeCorrection | None, str]:
    """The correction at ``path`` for a model (its metadata, or its graph's content hash): a file is read as it is
    (its model is checked per frame, like its camera); a folder holds one file per model (``*.yaml``), and the one
    measured for this model (``RangeCorrection.model_refusal``) is taken. Returns (correction, "") or (None, why
    there is none). Every file read must be valid: a broken one is named."""
    path = Path(path)
    if not path.is_dir():
        return load_range_correction(path), ""
    files = sorted(path.glob("*.yaml"))
    for file in files:
        correction = load_range_correction(file)
        if correction.model_refusal(model) is None:
            return correction, ""
    return None, (f"none of the {len(files)} correction file(s) in {path} was measured for model "
                  f"{_model_identity(model)[0][:12] or '(no hash)'}")


def _model_identity(model: ModelMetadata | str) -> tuple[str, str, tuple[int, ...]]:
    """(graph content hash, weights hash, input shape) of a model's metadata; a bare string is the graph hash."""
    if isinstance(model, str):
        return model, "", ()
    return (model.content_sha256, str(model.extra.get("weights_sha256", "") or ""),
            tuple(int(v) for v in model.input_shape))
