"""FP32 ONNX -> QDQ ONNX for the QNN HTP, with the model metadata carried over.

Pipeline (ONNX Runtime's own tools, in the order their docs require):

1. ``quant_pre_process``: shape inference + constant folding. Without it a
   TorchScript-exported nearest Resize took its scales from a Constant node,
   which the QNN config then quantized (see ENVIRONMENT.md).
2. Name unnamed nodes, so parts can be selected and reported.
3. ``get_qnn_qdq_config``: the QNN-valid QDQ settings (types, overrides,
   op types), with our 16-bit overrides for raised tensors.
4. ``quantize_static`` with that config's fields, calibrating on frames
   preprocessed by the runtime Preprocessor.
5. Metadata: the FP32 model's ``perception.*`` keys, ``format`` = ``qdq`` and
   the quantization settings under ``extra["quantization"]``.

The output appears only when complete (temp file then rename).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model_tools.io_utils import atomic_write
from model_tools.quant import graph
from perception_core.errors import ConfigError, DataError, ModelFileError, OutputExistsError
from perception_core.model_metadata import ModelMetadata, read_metadata, set_model_metadata

LOG = logging.getLogger(__name__)
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
ACTIVATION_BITS = (8, 16)


@dataclass
class QuantSettings:
    """How to quantize. Defaults: W8A8, min/max calibration, per-tensor weights."""

    calibration: str = "minmax"
    percentile: float = 99.999
    activation_bits: int = 8
    per_channel: bool = False
    # Activation bits of the output head tail (graph.head_tail_nodes): 16 keeps
    # the depth heads' fine resolution (ArgMax/Cast/Div, sigmoid, composition).
    head_bits: int = 8
    # Activation bits of a depth model's camera conditioning (graph.camera_conditioning_nodes; models
    # whose metadata has a camera_input only): 16 keeps INT8 within 1.04x of FP32 on the demo model,
    # where 8 bit gave 1.12x (docs/int8.md).
    camera_bits: int = 16
    # Parts (graph.model_parts names) whose activations are raised to 16 bit.
    raised_parts: list[str] = field(default_factory=list)
    part_granularity: str = "block"
    part_depth: int = 2

    def validate(self) -> None:
        if self.calibration not in CALIBRATION_METHODS:
            raise ConfigError(f"calibration method {self.calibration!r} is not one of {CALIBRATION_METHODS}")
        if not {self.activation_bits, self.head_bits, self.camera_bits} <= set(ACTIVATION_BITS):
            raise ConfigError(f"activation/head/camera bits must be one of {ACTIVATION_BITS}")
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"percentile {self.percentile} must be in (50, 100]")
        if self.part_granularity not in graph.GRANULARITIES:
            raise ConfigError(f"part granularity {self.part_granularity!r} is not one of {graph.GRANULARITIES}")

    def label(self) -> str:
        """Short name like ``w8a8`` / ``w8a16`` / ``w8a8+head16+2parts16`` (the camera's bits: see the settings)."""
        text = f"w8a{self.activation_bits}"
        if self.head_bits > self.activation_bits:
            text += f"+head{self.head_bits}"
        if self.raised_parts and self.activation_bits < 16:
            text += f"+{len(self.raised_parts)}parts16"
        return text


@dataclass
class PreparedModel:
    """The pre-processed, node-named FP32 model quantize_static reads (lives in a temp dir)."""

    path: Path
    source: Path
    metadata: ModelMetadata
    model: Any = field(repr=False)


@dataclass
class QuantizeResult:
    path: Path
    settings: QuantSettings
    raised_tensors: list[str]
    calibration_images: int
    calibration_source: str
    seconds: float


def prepare_model(fp32_path: str | os.PathLike[str], work_dir: str | os.PathLike[str]) -> PreparedModel:
    """Run quant_pre_process and name nodes; the result is written into ``work_dir``.

    Raises:
        ModelFileError: missing/corrupt file, no metadata, or not an FP32 model.
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = Path(fp32_path)
    meta = read_metadata(source)
    if meta.format != "fp32":
        raise ModelFileError(f"{source}: metadata format is {meta.format!r}; quantize needs the FP32 ONNX model")
    pre_path = Path(work_dir) / "prepared.onnx"
    try:
        quant_pre_process(str(source), str(pre_path), skip_symbolic_shape=False)
    except Exception as err:
        raise ModelFileError(f"{source}: ONNX Runtime quantization pre-processing failed: {err}") from err
    model = onnx.load(str(pre_path))
    graph.name_unnamed_nodes(model)
    set_model_metadata(model, meta)  # pre-processing changed the graph, so its hash changes too
    onnx.save(model, str(pre_path))
    return PreparedModel(path=pre_path, source=source, metadata=meta, model=model)


def raised_tensor_overrides(prepared: PreparedModel, settings: QuantSettings) -> tuple[dict[str, list[dict]], list[str]]:
    """TensorQuantOverrides raising the head tail, the camera conditioning and the chosen parts to 16 bit."""
    from onnxruntime.quantization import QuantType

    if settings.activation_bits >= 16:
        return {}, []
    nodes: list[str] = []
    if settings.head_bits > settings.activation_bits:
        nodes += graph.head_tail_nodes(prepared.model)
    if prepared.metadata.camera_input and settings.camera_bits > settings.activation_bits:
        nodes += graph.camera_conditioning_nodes(prepared.model, prepared.metadata.camera_input)
    if settings.raised_parts:
        parts = graph.model_parts(prepared.model, None, settings.part_granularity, settings.part_depth)
        unknown = [p for p in settings.raised_parts if p not in parts]
        if unknown:
            raise ConfigError(
                f"{prepared.source}: parts {unknown} are not in the model (granularity "
                f"{settings.part_granularity}, depth {settings.part_depth}); known parts: {list(parts)[:20]}"
            )
        for part in settings.raised_parts:
            nodes += parts[part]
    tensors = list(dict.fromkeys(graph.node_output_tensors(prepared.model, nodes)))
    return {t: [{"quant_type": QuantType.QUInt16}] for t in tensors}, tensors


def quantize_prepared(
    prepared: PreparedModel,
    out_path: str | os.PathLike[str],
    settings: QuantSettings,
    reader: Any | None,
    *,
    calibration_cache: str | os.PathLike[str] | None = None,
    nodes_to_quantize: list[str] | None = None,
    calibration_source: str = "",
    overwrite: bool = False,
    extra_metadata: dict[str, Any] | None = None,
) -> QuantizeResult:
    """Quantize an already prepared model to ``out_path`` (atomic).

    ``calibration_cache`` (a JSON file of tensor ranges) is filled on the first
    call and reused after, so the sensitivity sweep calibrates once.
    ``nodes_to_quantize`` limits quantization to those nodes (others float).
    """
    import onnx

    settings.validate()
    target = Path(out_path)
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} exists; refusing to overwrite it (pass --overwrite to replace it)")
    started = time.perf_counter()
    config, extra_options, raised = qnn_quant_config(prepared, settings, reader)
    with tempfile.TemporaryDirectory(prefix=".quant.", dir=target.parent if target.parent.exists() else None) as tmp:
        raw_path = Path(tmp) / "qdq.onnx"
        run_quantize_static(prepared, raw_path, config, extra_options, nodes_to_quantize, calibration_cache)
        calib_used = int(getattr(reader, "used", 0) or 0)
        model = onnx.load(str(raw_path))
        meta = quantized_metadata(prepared, settings, raised, calib_used, calibration_source, nodes_to_quantize,
                                  extra_metadata)
        set_model_metadata(model, meta)
        with atomic_write(target, overwrite=overwrite) as tmp_out:
            onnx.save(model, str(tmp_out))
    return QuantizeResult(
        path=target,
        settings=settings,
        raised_tensors=raised,
        calibration_images=calib_used,
        calibration_source=calibration_source,
        seconds=time.perf_counter() - started,
    )


def qnn_quant_config(prepared: PreparedModel, settings: QuantSettings, reader: Any) -> tuple[Any, dict[str, Any], list[str]]:
    """(ONNX Runtime's QNN QDQ config, its extra options, the tensors raised to 16 bit) for ``settings``."""
    from onnxruntime.quantization import CalibrationMethod, QuantType
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    method = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[settings.calibration]
    act_type = QuantType.QUInt16 if settings.activation_bits == 16 else QuantType.QUInt8
    overrides, raised = raised_tensor_overrides(prepared, settings)
    config = get_qnn_qdq_config(
        str(prepared.path),
        reader,
        calibrate_method=method,
        activation_type=act_type,
        weight_type=QuantType.QUInt8,
        per_channel=settings.per_channel,
        init_overrides=overrides or None,
    )
    extra_options = dict(config.extra_options)
    if settings.calibration == "percentile":
        extra_options["CalibPercentile"] = settings.percentile
    return config, extra_options, raised


def run_quantize_static(prepared: PreparedModel, raw_path: Path, config: Any, extra_options: dict[str, Any],
                        nodes_to_quantize: list[str] | None, calibration_cache: str | os.PathLike[str] | None) -> None:
    """``quantize_static`` with the config's fields (CPU EP calibration); its failures become ModelFileError."""
    from onnxruntime.quantization import quantize_static

    try:
        quantize_static(
            str(prepared.path),
            str(raw_path),
            calibration_data_reader=config.calibration_data_reader,
            quant_format=config.quant_format,
            op_types_to_quantize=config.op_types_to_quantize,
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            activation_type=config.activation_type,
            weight_type=config.weight_type,
            nodes_to_quantize=nodes_to_quantize if nodes_to_quantize is not None else config.nodes_to_quantize,
            nodes_to_exclude=config.nodes_to_exclude,
            use_external_data_format=config.use_external_data_format,
            calibrate_method=config.calibrate_method,
            calibration_providers=["CPUExecutionProvider"],
            extra_options=extra_options,
            calibration_cache_path=str(calibration_cache) if calibration_cache else None,
        )
    except (DataError, ConfigError):
        raise
    except Exception as err:
        raise ModelFileError(f"{prepared.source}: quantize_static failed: {err}") from err


def quantized_metadata(prepared: PreparedModel, settings: QuantSettings, raised: list[str], calibration_images: int,
                       calibration_source: str, nodes_to_quantize: list[str] | None,
                       extra_metadata: dict[str, Any] | None) -> ModelMetadata:
    """The FP32 model's metadata with ``format: qdq`` and the quantization record under ``extra``."""
    meta = ModelMetadata(**asdict(prepared.metadata))
    meta.format = "qdq"
    meta.extra = dict(meta.extra)
    meta.extra["quantization"] = {
        "tool": "model_tools.quant (onnxruntime quantize_static + get_qnn_qdq_config)",
        "label": settings.label(),
        "settings": asdict(settings),
        "weights": "uint8" + (" per-channel" if settings.per_channel else " per-tensor"),
        "activations": f"uint{settings.activation_bits}",
        "raised_to_16bit_tensors": raised,
        "calibration_images": calibration_images,
        "calibration_source": calibration_source,
        "source_model": prepared.source.name,
        **(extra_metadata or {}),
    }
    if nodes_to_quantize is not None:
        meta.extra["quantization"]["only_nodes"] = list(nodes_to_quantize)
    return meta


def quantize_model(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    source: Any,
    settings: QuantSettings | None = None,
    *,
    count: int = 300,
    resize: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    extra_metadata: dict[str, Any] | None = None,
) -> QuantizeResult:
    """FP32 ONNX -> QDQ ONNX calibrated on ``count`` frames of ``source`` (an images.ImageSource).

    Raises:
        OutputExistsError: ``out_path`` exists and not ``overwrite`` (checked before any work).
        DataError: empty calibration set, or frame size != model input without ``resize``.
        ModelFileError: the input is not a readable FP32 model with metadata.
    """
    from model_tools.quant.images import CalibrationReader

    settings = settings or QuantSettings()
    settings.validate()
    target = Path(out_path)
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} exists; refusing to overwrite it (pass --overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".prep.", dir=target.parent) as work:
        prepared = prepare_model(fp32_path, work)
        reader = CalibrationReader(source, prepared.metadata, count=count, resize=resize, progress=progress)
        result = quantize_prepared(
            prepared, target, settings, reader,
            calibration_source=source.describe(), overwrite=overwrite, extra_metadata=extra_metadata,
        )
    LOG.info("%s -> %s (%s, %d calibration images, %.1f s)", fp32_path, target, settings.label(),
             result.calibration_images, result.seconds)
    return result
