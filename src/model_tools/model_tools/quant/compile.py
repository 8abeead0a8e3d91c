"""QDQ ONNX -> QNN context binary (EPContext ONNX) for a Qualcomm target, with op placement.

Compilation runs ONNX Runtime's QNN EP with CPU fallback *disabled*, so the
binary holds the whole model on the NPU or the command fails. When it fails,
a second, diagnostic session with fallback allowed writes a scratch context
model; every node left outside its EPContext partitions is a node HTP refused,
and the error names them (op type and node name).

ORT refuses to overwrite an existing context file, so the binary is written
to a fresh temp name beside the target and renamed into place on success.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model_tools.io_utils import write_json
from model_tools.quant import graph
from perception_core.errors import BackendError, ModelFileError, OutputExistsError
from perception_core.model_metadata import ModelMetadata, load_onnx, set_model_metadata
from perception_core.runtime.qnn import DEFAULT_HTP_ARCH, DEFAULT_SOC_MODEL

LOG = logging.getLogger(__name__)
EP_CONTEXT_OP = "EPContext"
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
# ORT log severity for our sessions: 3 = errors only (QNN's warnings are noise here).
QUIET = 3


@dataclass
class Placement:
    """Where the model's nodes run after QNN partitioning."""

    nodes_total: int  # nodes of the QDQ model, Q/DQ included
    compute_nodes_total: int  # nodes that are not QuantizeLinear/DequantizeLinear
    nodes_on_npu: int
    compute_nodes_on_npu: int
    npu_partitions: int
    fallback_nodes: list[dict[str, str]] = field(default_factory=list)  # [{"name", "op_type"}]
    op_types: dict[str, int] = field(default_factory=dict)  # compute op histogram of the QDQ model

    @property
    def all_on_npu(self) -> bool:
        return not self.fallback_nodes


@dataclass
class CompileSummary:
    source: str
    output: str
    soc_model: str
    htp_arch: str
    placement: Placement
    seconds: float
    binary_bytes: int
    htp_run_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["placement"]["all_on_npu"] = self.placement.all_on_npu
        return data


def _qnn_session(model_path: Path, *, fallback: bool, context_path: Path | None, soc_model: str, htp_arch: str) -> Any:
    import onnxruntime as ort

    from perception_core.runtime.qnn import qnn_session_options

    so = qnn_session_options(
        disable_cpu_fallback=not fallback,
        soc_model=soc_model,
        htp_arch=htp_arch,
        context_path=str(context_path) if context_path is not None else None,
    )
    so.log_severity_level = QUIET
    return ort.InferenceSession(str(model_path), sess_options=so)


def _fresh_temp_path(folder: Path, stem: str) -> Path:
    """A name in ``folder`` that does not exist (ORT writes the context file itself)."""
    fd, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp.onnx", dir=folder)
    os.close(fd)
    os.unlink(name)
    return Path(name)


def placement_from_context(qdq_model: Any, ctx_model: Any) -> Placement:
    """Compare the QDQ graph with the EPContext graph: nodes outside EPContext ran elsewhere."""
    qdq_nodes = list(qdq_model.graph.node)
    compute = [n for n in qdq_nodes if n.op_type not in QDQ_OPS]
    outside = [n for n in ctx_model.graph.node if n.op_type != EP_CONTEXT_OP]
    partitions = sum(1 for n in ctx_model.graph.node if n.op_type == EP_CONTEXT_OP)
    outside_compute = [n for n in outside if n.op_type not in QDQ_OPS]
    return Placement(
        nodes_total=len(qdq_nodes),
        compute_nodes_total=len(compute),
        nodes_on_npu=len(qdq_nodes) - len(outside),
        compute_nodes_on_npu=len(compute) - len(outside_compute),
        npu_partitions=partitions,
        fallback_nodes=[{"name": n.name, "op_type": n.op_type} for n in outside],
        op_types=graph.op_histogram(compute),
    )


def diagnose_placement(qdq_path: Path, soc_model: str, htp_arch: str) -> Placement:
    """Compile once with CPU fallback allowed (to a scratch file) and report what stayed off the NPU."""
    import onnx

    with tempfile.TemporaryDirectory(prefix=".diag.") as tmp:
        ctx = Path(tmp) / "diagnose_ctx.onnx"
        _qnn_session(qdq_path, fallback=True, context_path=ctx, soc_model=soc_model, htp_arch=htp_arch)
        ctx_model = onnx.load(str(ctx), load_external_data=False)
    return placement_from_context(onnx.load(str(qdq_path), load_external_data=False), ctx_model)


def _describe_refused(placement: Placement) -> str:
    compute = [f"{n['op_type']} '{n['name']}'" for n in placement.fallback_nodes if n["op_type"] not in QDQ_OPS]
    listed = compute or [f"{n['op_type']} '{n['name']}'" for n in placement.fallback_nodes]
    return ", ".join(listed[:20]) + (f" (+{len(listed) - 20} more)" if len(listed) > 20 else "")


def compile_context_binary(
    qdq_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    soc_model: str = DEFAULT_SOC_MODEL,
    htp_arch: str = DEFAULT_HTP_ARCH,
    overwrite: bool = False,
    check_run: bool = True,
    summary_path: str | os.PathLike[str] | None = None,
) -> CompileSummary:
    """Compile ``qdq_path`` into a QNN context-binary EPContext model at ``out_path``.

    Also writes the op-placement summary JSON (default ``<out>.placement.json``).

    Raises:
        OutputExistsError: ``out_path`` (or the summary) exists and not ``overwrite``.
        ModelFileError: the input is missing or has no model metadata.
        BackendError: HTP refused nodes (named) or the QNN EP is unavailable.
    """
    import onnx

    source = Path(qdq_path)
    target = Path(out_path)
    summary_file = Path(summary_path) if summary_path else target.with_suffix(".placement.json")
    for existing in (target, summary_file):
        if existing.exists() and not overwrite:
            raise OutputExistsError(f"{existing} exists; refusing to overwrite it (pass --overwrite to replace it)")
    qdq_model = load_onnx(source)
    meta = ModelMetadata.from_props({p.key: p.value for p in qdq_model.metadata_props}, str(source))
    if meta.format == "qnn_context":
        raise ModelFileError(f"{source}: is already a QNN context binary")
    if meta.format == "fp32":
        LOG.warning("%s: compiling an FP32 model; HTP needs a QDQ model for INT8 (run `model-tools quantize`)", source)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_temp_path(target.parent, target.stem)
    started = time.perf_counter()
    try:
        try:
            _qnn_session(source, fallback=False, context_path=tmp, soc_model=soc_model, htp_arch=htp_arch)
        except BackendError:
            raise
        except Exception as err:
            tmp.unlink(missing_ok=True)
            try:
                placement = diagnose_placement(source, soc_model, htp_arch)
                refused = _describe_refused(placement)
            except Exception as diag_err:  # noqa: BLE001 - diagnosis is best effort; keep the first error
                refused = f"(could not list them: {diag_err})"
            raise BackendError(
                f"{source}: QNN HTP (soc_model {soc_model}, htp_arch {htp_arch}) cannot run every node with CPU "
                f"fallback disabled; not on the NPU: {refused}. ORT said: {str(err).strip()}"
            ) from err
        seconds = time.perf_counter() - started
        ctx_model = onnx.load(str(tmp), load_external_data=False)
        placement = placement_from_context(qdq_model, ctx_model)
        meta.format = "qnn_context"
        meta.extra = dict(meta.extra)
        meta.extra["qnn_compile"] = {
            "soc_model": str(soc_model), "htp_arch": str(htp_arch), "source_model": source.name,
            "npu_partitions": placement.npu_partitions, "nodes_on_npu": placement.nodes_on_npu,
        }
        set_model_metadata(ctx_model, meta)
        onnx.save(ctx_model, str(tmp))
        htp_run_ms = _check_run(tmp, meta) if check_run else None
        if target.exists() and not overwrite:
            raise OutputExistsError(f"{target} appeared while compiling; refusing to overwrite it")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    summary = CompileSummary(
        source=str(source), output=str(target), soc_model=str(soc_model), htp_arch=str(htp_arch),
        placement=placement, seconds=seconds, binary_bytes=target.stat().st_size, htp_run_ms=htp_run_ms,
    )
    write_json(summary_file, summary.to_dict(), overwrite=overwrite)
    LOG.info("compiled %s -> %s: %d/%d nodes on the NPU in %d partition(s)", source, target,
             placement.nodes_on_npu, placement.nodes_total, placement.npu_partitions)
    return summary


def _check_run(ctx_path: Path, meta: ModelMetadata) -> float:
    """Load the fresh context binary on HTP (fallback disabled) and run one zero frame; return ms."""
    import numpy as np

    from perception_core.pipelines import probe_feeds
    from perception_core.runtime.loader import load_model

    model = load_model(ctx_path, backend="npu")
    feed = probe_feeds(meta, np.zeros(meta.input_shape, dtype=np.float32))
    start = time.perf_counter()
    outputs = model.run(feed)
    elapsed = (time.perf_counter() - start) * 1e3
    missing = [n for n in meta.output_names if n not in outputs]
    if missing:
        raise BackendError(f"{ctx_path}: compiled model did not return outputs {missing}")
    return elapsed


def placement_markdown(summary: CompileSummary) -> str:
    """A short Markdown block of the op placement (for reports)."""
    p = summary.placement
    lines = [
        f"- target: soc_model {summary.soc_model}, htp_arch {summary.htp_arch}",
        f"- nodes on the NPU: {p.nodes_on_npu}/{p.nodes_total} (compute {p.compute_nodes_on_npu}/"
        f"{p.compute_nodes_total}) in {p.npu_partitions} EPContext partition(s)",
        f"- fallback nodes: {len(p.fallback_nodes)}" + (f" ({_describe_refused(p)})" if p.fallback_nodes else ""),
        f"- compute ops: {json.dumps(p.op_types)}",
        f"- compile time {summary.seconds:.1f} s, binary {summary.binary_bytes / 1e6:.2f} MB"
        + (f", one HTP run {summary.htp_run_ms:.0f} ms" if summary.htp_run_ms is not None else ""),
    ]
    return "\n".join(lines)
