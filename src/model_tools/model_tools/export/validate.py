"""Check an exported ONNX model against the PyTorch module it came from.

Runs both on N random inputs (pixels uniform in [0, 255], normalised as the
metadata says) and reports per output the max and mean absolute error:

- < 1e-4: ``excellent``; < 1e-3: ``good``; otherwise ``fail`` (raises).
- Outputs that pass through an ArgMax (``discrete={name: quantum}``) can
  legitimately flip on near-ties; they are judged by the fraction of pixels
  that differ by half a quantum or more (``fail`` above
  ``max_mismatch_fraction``), and the errors are taken over agreeing pixels.

The report is written as JSON (atomically) beside the model by default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model_tools.io_utils import write_json
from perception_core.errors import ModelFileError
from perception_core.model_metadata import CAMERA_INPUT_SHAPE, ModelMetadata

EXCELLENT = 1e-4
GOOD = 1e-3
VERDICT_ORDER = ("excellent", "good", "fail")


def random_inputs(metadata: ModelMetadata, n: int, seed: int = 0) -> list[np.ndarray]:
    """Normalised random images as the node would feed them."""
    rng = np.random.default_rng(seed)
    mean = np.asarray(metadata.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(metadata.std, np.float32).reshape(1, 3, 1, 1)
    out = []
    for _ in range(n):
        pixels = rng.integers(0, 256, size=metadata.input_shape).astype(np.float32)
        out.append(((pixels * metadata.input_scale - mean) / std).astype(np.float32))
    return out


def _verdict(max_abs: float) -> str:
    return "excellent" if max_abs < EXCELLENT else "good" if max_abs < GOOD else "fail"


def compare_outputs(
    reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], discrete: dict[str, float], max_mismatch_fraction: float
) -> dict[str, dict[str, Any]]:
    """Per-output error statistics of ``candidate`` against ``reference``."""
    result: dict[str, dict[str, Any]] = {}
    for name, ref in reference.items():
        if name not in candidate:
            raise ModelFileError(f"ONNX model has no output {name!r} (has {sorted(candidate)})")
        got = candidate[name].astype(np.float64)
        ref = ref.astype(np.float64)
        if got.shape != ref.shape:
            raise ModelFileError(f"output {name!r}: ONNX shape {got.shape} != PyTorch shape {ref.shape}")
        diff = np.abs(got - ref)
        entry: dict[str, Any] = {}
        if name in discrete:
            mismatch = diff >= discrete[name] / 2
            frac = float(mismatch.mean())
            agree = diff[~mismatch]
            entry["mismatch_fraction"] = frac
            entry["quantum"] = discrete[name]
            max_abs = float(agree.max()) if agree.size else 0.0
            mean_abs = float(agree.mean()) if agree.size else 0.0
            verdict = "fail" if frac > max_mismatch_fraction else _verdict(max_abs)
        else:
            max_abs, mean_abs = float(diff.max()), float(diff.mean())
            verdict = _verdict(max_abs)
        entry.update({"max_abs_error": max_abs, "mean_abs_error": mean_abs, "verdict": verdict})
        result[name] = entry
    return result


def validate_onnx(
    onnx_path: str | os.PathLike[str],
    module: nn.Module,
    *,
    n_inputs: int = 4,
    seed: int = 0,
    discrete: dict[str, float] | None = None,
    max_mismatch_fraction: float = 1e-3,
    report_path: str | os.PathLike[str] | None = None,
    raise_on_fail: bool = True,
) -> dict[str, Any]:
    """Compare ONNX Runtime (CPU EP) with ``module`` and write the JSON report.

    ``module`` must return the outputs in ``metadata.output_names`` order.
    Raises ModelFileError (after writing the report) when any output fails.
    """
    import onnxruntime as ort

    from perception_core.model_metadata import read_metadata

    onnx_path = Path(onnx_path)
    metadata = read_metadata(onnx_path)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    module = module.eval()
    per_input = []
    totals: dict[str, dict[str, Any]] = {}
    rng = np.random.default_rng(seed + 1)
    for x in random_inputs(metadata, n_inputs, seed):
        feeds = {metadata.input_name: x}
        if metadata.camera_input:  # a camera inside the synthetic ranges (logs of 1x-3x focal and height)
            feeds[metadata.camera_input] = rng.uniform(0.0, 1.1, CAMERA_INPUT_SHAPE).astype(np.float32)
        onnx_out = dict(zip(metadata.output_names, session.run(list(metadata.output_names), feeds), strict=True))
        with torch.no_grad():
            torch_out = module(*(torch.from_numpy(feeds[name]) for name in metadata.input_names))
        if isinstance(torch_out, torch.Tensor):
            torch_out = (torch_out,)
        ref = {name: t.float().cpu().numpy() for name, t in zip(metadata.output_names, torch_out, strict=True)}
        stats = compare_outputs(ref, onnx_out, discrete or {}, max_mismatch_fraction)
        per_input.append(stats)
        for name, entry in stats.items():
            agg = totals.setdefault(name, {"max_abs_error": 0.0, "mean_abs_error": 0.0})
            agg["max_abs_error"] = max(agg["max_abs_error"], entry["max_abs_error"])
            agg["mean_abs_error"] += entry["mean_abs_error"] / n_inputs
            if "mismatch_fraction" in entry:
                agg["mismatch_fraction"] = max(agg.get("mismatch_fraction", 0.0), entry["mismatch_fraction"])
            agg["verdict"] = max(agg.get("verdict", "excellent"), entry["verdict"], key=VERDICT_ORDER.index)
    overall = max((t["verdict"] for t in totals.values()), key=VERDICT_ORDER.index)
    report = {
        "model": str(onnx_path),
        "n_inputs": n_inputs,
        "seed": seed,
        "thresholds": {"excellent": EXCELLENT, "good": GOOD, "max_mismatch_fraction": max_mismatch_fraction},
        "outputs": totals,
        "verdict": overall,
        "per_input": per_input,
    }
    report_path = Path(report_path) if report_path else onnx_path.with_suffix(".validation.json")
    write_json(report_path, report)
    report["report_path"] = str(report_path)
    if overall == "fail" and raise_on_fail:
        worst = {k: v for k, v in totals.items() if v["verdict"] == "fail"}
        raise ModelFileError(f"{onnx_path}: ONNX Runtime disagrees with PyTorch on {worst} (report {report_path})")
    return report
