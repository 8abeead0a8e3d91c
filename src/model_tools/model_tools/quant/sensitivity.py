"""Per-part quantization sensitivity, and the mixed-precision search built on its ranking.

Sensitivity: quantize one part at a time (every other node stays float),
score the task metric on a validation subset with the QDQ model on the CPU
EP, and rank parts by how much they alone degrade it. Calibration runs once:
ONNX Runtime's calibration cache (tensor ranges, JSON) serves every variant.

Mixed precision: starting from the full INT8 model, raise the activations of
the most sensitive parts to 16 bit (TensorQuantOverrides through
get_qnn_qdq_config) one by one until the degradation meets the target; the
raised parts are recorded in the model's metadata and in the report.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from model_tools.io_utils import atomic_write, write_json
from model_tools.quant import graph
from model_tools.quant.evaluate import cpu_runner, decoder, degradation, prepare_frames, primary, score_model
from model_tools.quant.images import CalibrationReader, ImageSource
from model_tools.quant.quantize import QuantSettings, prepare_model, quantize_prepared
from perception_core.errors import ConfigError, OutputExistsError

LOG = logging.getLogger(__name__)
OUTPUT_NAMES = ("sensitivity.csv", "sensitivity.md", "sensitivity.json", "sensitivity.png")


def _plot(path: Path, rows: list[dict[str, Any]], metric: str, top: int = 30) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = rows[:top]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.32 * len(shown)))
    ax.barh([r["part"] for r in shown][::-1], [r["worse_by"] for r in shown][::-1], color="tab:red")
    ax.set_xlabel(f"{metric} degradation when only this part is INT8")
    ax.set_title("Quantization sensitivity (higher = more sensitive)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_sensitivity(
    fp32_path: str | os.PathLike[str],
    calibration: ImageSource,
    validation: ImageSource,
    out_dir: str | os.PathLike[str],
    *,
    settings: QuantSettings | None = None,
    calibration_count: int = 300,
    validation_count: int = 20,
    granularity: str = "block",
    depth: int = 2,
    resize: bool = False,
    target_worse_by: float | None = None,
    max_raised: int = 8,
    mixed_out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Rank parts by sensitivity; with ``target_worse_by`` also search mixed precision.

    Writes ``sensitivity.{csv,md,json,png}`` into ``out_dir`` and, when the
    search runs, the chosen QDQ model at ``mixed_out`` (default
    ``out_dir/model_mixed_qdq.onnx``).
    """
    from tqdm import tqdm

    settings = settings or QuantSettings()
    settings.validate()
    out = Path(out_dir)
    for name in OUTPUT_NAMES:
        if (out / name).exists() and not overwrite:
            raise OutputExistsError(f"{out / name} exists; refusing to overwrite it (pass --overwrite or a new folder)")
    mixed_path = Path(mixed_out) if mixed_out else out / "model_mixed_qdq.onnx"
    if target_worse_by is not None and mixed_path.exists() and not overwrite:
        raise OutputExistsError(f"{mixed_path} exists; refusing to overwrite it (pass --overwrite to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".sens.", dir=out) as work_dir:
        work = Path(work_dir)
        prepared = prepare_model(fp32_path, work)
        meta = prepared.metadata
        task = meta.task
        metric = "abs_rel" if task == "depth" else "miou"
        frames = prepare_frames(validation, meta, validation_count, resize=True)
        fp32_run = cpu_runner(str(prepared.path), meta)
        decode = decoder(meta)
        references = [decode(fp32_run(f), f.frame) for f in frames]
        fp32_value = primary(score_model(fp32_run, frames, meta, references), task)
        cache = work / "calibration_cache.json"
        reader = CalibrationReader(calibration, meta, count=calibration_count, resize=resize, progress=progress)

        def score(variant: Path) -> float:
            return primary(score_model(cpu_runner(str(variant), meta), frames, meta, references), task)

        full = quantize_prepared(prepared, work / "full.onnx", settings, reader, calibration_cache=cache,
                                 calibration_source=calibration.describe())
        full_value = score(full.path)
        parts = graph.model_parts(prepared.model, None, granularity, depth)
        rows = []
        for part, nodes in tqdm(parts.items(), desc="sensitivity", unit="part", disable=not progress):
            variant = work / "part.onnx"
            quantize_prepared(prepared, variant, settings, None, calibration_cache=cache, nodes_to_quantize=nodes,
                              overwrite=True)
            value = score(variant)
            rows.append({"part": part, "nodes": len(nodes), "op_types": ",".join(sorted({_op(prepared.model, n)
                                                                                        for n in nodes})),
                         metric: value, "worse_by": degradation(fp32_value, value, task, metric)})
        rows.sort(key=lambda r: r["worse_by"], reverse=True)
        for rank, row in enumerate(rows, 1):
            row["rank"] = rank
        result: dict[str, Any] = {
            "model": str(fp32_path), "task": task, "metric": metric, "validation": validation.describe(),
            "validation_frames": len(frames), "calibration": calibration.describe(),
            "calibration_images": full.calibration_images, "granularity": granularity, "block_depth": depth,
            "settings": asdict(settings), "fp32": fp32_value, "full_int8": full_value,
            "full_int8_worse_by": degradation(fp32_value, full_value, task, metric), "parts": rows,
            "reference": "ground truth" if _has_gt(frames, task) else "FP32 outputs (no ground truth)",
        }
        if target_worse_by is not None:
            result["mixed_precision"] = _search(
                prepared, reader, cache, settings, rows, granularity, depth, target_worse_by, max_raised,
                full_value, fp32_value, task, metric, score, work, mixed_path, overwrite, calibration.describe(),
            )
    result["seconds"] = time.perf_counter() - started
    _write_tables(out, result, overwrite)
    return result


def _op(model: Any, node_name: str) -> str:
    return next((n.op_type for n in model.graph.node if n.name == node_name), "?")


def _has_gt(frames: list[Any], task: str) -> bool:
    return all((f.frame.depth if task == "depth" else f.frame.label) is not None for f in frames)


def _search(
    prepared: Any, reader: Any, cache: Path, settings: QuantSettings, rows: list[dict[str, Any]], granularity: str,
    depth: int, target: float, max_raised: int, full_value: float, fp32_value: float, task: str, metric: str,
    score: Any, work: Path, mixed_path: Path, overwrite: bool, source: str,
) -> dict[str, Any]:
    """Raise the top parts to 16-bit activations until the degradation is <= target."""
    if target < 0:
        raise ConfigError(f"target degradation must be >= 0, got {target}")
    steps = [{"raised": [], metric: full_value, "worse_by": degradation(fp32_value, full_value, task, metric)}]
    raised: list[str] = []
    candidates = [r["part"] for r in rows if r["worse_by"] > 0][:max_raised]
    while steps[-1]["worse_by"] > target and candidates:
        raised.append(candidates.pop(0))
        trial = replace(settings, raised_parts=list(raised), part_granularity=granularity, part_depth=depth)
        variant = quantize_prepared(prepared, work / "mixed.onnx", trial, None, calibration_cache=cache,
                                    overwrite=True)
        value = score(variant.path)
        steps.append({"raised": list(raised), metric: value, "worse_by": degradation(fp32_value, value, task, metric)})
    final = replace(settings, raised_parts=list(raised), part_granularity=granularity, part_depth=depth)
    met = steps[-1]["worse_by"] <= target
    quantize_prepared(
        prepared, mixed_path, final, None, calibration_cache=cache, overwrite=overwrite, calibration_source=source,
        extra_metadata={"calibration_images": getattr(reader, "used", 0),
                        "mixed_precision": {"raised_parts": raised, "target_worse_by": target, "metric": metric,
                                            "target_met": met, "worse_by": steps[-1]["worse_by"]}},
    )
    return {"target_worse_by": target, "target_met": met, "raised_parts": raised, "steps": steps,
            "model": str(mixed_path)}


def _write_tables(out: Path, result: dict[str, Any], overwrite: bool) -> None:
    metric = result["metric"]
    rows = result["parts"]
    with atomic_write(out / "sensitivity.csv", overwrite=overwrite) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["rank", "part", "nodes", "op_types", metric, "worse_by"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in writer.fieldnames})
    lines = [
        f"# Quantization sensitivity: {result['model']}",
        "",
        f"- task {result['task']}, metric {metric} on {result['validation_frames']} frames of {result['validation']} "
        f"(reference: {result['reference']})",
        f"- FP32 {metric} {result['fp32']:.4f}; full INT8 ({QuantSettings(**result['settings']).label()}) "
        f"{result['full_int8']:.4f} (worse by {result['full_int8_worse_by']:.4f})",
        f"- calibration: {result['calibration_images']} images of {result['calibration']}",
        "",
        f"| rank | part | nodes | ops | {metric} (only this part INT8) | worse by |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['rank']} | `{r['part']}` | {r['nodes']} | {r['op_types']} | {r[metric]:.4f} | {r['worse_by']:.4f} |"
              for r in rows]
    mixed = result.get("mixed_precision")
    if mixed:
        lines += ["", "## Mixed precision (16-bit activations on the most sensitive parts)", "",
                  f"target: worse by <= {mixed['target_worse_by']}; met: {mixed['target_met']}; "
                  f"raised parts: {', '.join(mixed['raised_parts']) or 'none'}; model: `{mixed['model']}`", "",
                  "| raised parts | " + metric + " | worse by |", "|---|---|---|"]
        lines += [f"| {', '.join(s['raised']) or '(none)'} | {s[metric]:.4f} | {s['worse_by']:.4f} |"
                  for s in mixed["steps"]]
    lines += ["", "![sensitivity](sensitivity.png)"]
    with atomic_write(out / "sensitivity.md", overwrite=overwrite) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    with atomic_write(out / "sensitivity.png", overwrite=overwrite) as tmp:
        _plot(tmp, rows, metric)
    write_json(out / "sensitivity.json", result, overwrite=overwrite)
