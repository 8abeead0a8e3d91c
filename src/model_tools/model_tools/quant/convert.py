"""One command from a training run (or an FP32 ONNX) to every deployable artifact.

    checkpoint -> FP32 ONNX (the task's own exporter) -> validate -> quantize
    -> compile (QNN context binary) -> compare (FP32 vs INT8)

Everything lands in a new numbered/timestamped folder (``<run>/deploy/<stamp>``),
so earlier results are never overwritten; ``conversion_summary.{json,md}`` and
``comparison.json`` sit at its top.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from model_tools.io_utils import atomic_write, check_output_folder, write_json
from model_tools.quant.images import ImageSource
from model_tools.quant.quantize import QuantSettings
from model_tools.registry import get_task
from perception_core.errors import ConfigError, ModelFileError

LOG = logging.getLogger(__name__)
WEIGHT_NAMES = ("model_fp16.pt", "checkpoints/best.pt", "last_fp16.pt", "checkpoints/last.pt")


def new_output_folder(parent: str | os.PathLike[str]) -> Path:
    """A fresh ``<parent>/<YYYYmmdd-HHMMSS>[-N]`` folder (created; never an existing one)."""
    base = check_output_folder(parent, "--out-dir")
    base.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        folder = base / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise ConfigError(f"could not create a fresh output folder under {base}")


def find_weights(run_dir: Path) -> Path:
    """The run's deployable weights (best fp16 state dict first)."""
    for name in WEIGHT_NAMES:
        if (run_dir / name).is_file():
            return run_dir / name
    raise ModelFileError(f"run folder {run_dir} has none of {', '.join(WEIGHT_NAMES)}")


def run_task(run_dir: Path) -> str:
    """The task recorded in the run's effective config (``config.yaml``)."""
    import yaml

    cfg = run_dir / "config.yaml"
    if not cfg.is_file():
        raise ConfigError(f"run folder {run_dir} has no config.yaml; pass --task")
    task = (yaml.safe_load(cfg.read_text()) or {}).get("task")
    return get_task(str(task), f"{cfg}: field task").name


def export_fp32(checkpoint: Path, task: str, out: Path, *, variant: str | None = None,
                hw: tuple[int, int] | None = None) -> dict[str, Any]:
    """Export with the task's registered exporter, in its deployment form unless ``variant`` says otherwise."""
    from model_tools.task_cli import export_checkpoint

    entry = get_task(task)
    result = export_checkpoint(entry, checkpoint, out, variant=variant or entry.deploy_variant, hw=hw)
    return {key: result[key] for key in ("exporter", "variant", "input_hw", "validation")}


def validate_fp32(path: Path) -> dict[str, Any]:
    """Open the FP32 model through the runtime loader and run one frame: finite outputs of the stated shape."""
    from perception_core.pipelines import probe_feeds
    from perception_core.runtime.loader import load_model

    model = load_model(path, backend="cpu")
    meta = model.metadata
    rng = np.random.default_rng(0)
    x = rng.random(meta.input_shape, dtype=np.float32)
    start = time.perf_counter()
    outputs = model.run(probe_feeds(meta, x))
    ms = (time.perf_counter() - start) * 1e3
    bad = [n for n, v in outputs.items() if not np.isfinite(v).all()]
    if bad:
        raise ModelFileError(f"{path}: outputs {bad} are not finite on a random input")
    return {"task": meta.task, "input_shape": meta.input_shape, "outputs": {n: list(v.shape) for n, v in outputs.items()},
            "cpu_ms": ms}


def convert(
    *,
    run_dir: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    task: str | None = None,
    onnx_path: str | os.PathLike[str] | None = None,
    out_parent: str | os.PathLike[str] | None = None,
    calibration: ImageSource,
    validation: ImageSource | None = None,
    settings: QuantSettings | None = None,
    calibration_count: int = 300,
    validation_count: int = 0,
    htp_frames: int = 2,
    resize_calibration: bool = False,
    soc_model: str = "77",
    htp_arch: str = "73",
    variant: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the whole INT8 conversion; returns the summary (also written as JSON and Markdown)."""
    from model_tools.quant.compare import compare_models
    from model_tools.quant.compile import compile_context_binary, placement_markdown
    from model_tools.quant.quantize import quantize_model

    run = Path(run_dir) if run_dir else None
    if onnx_path is None and checkpoint is None and run is None:
        raise ConfigError("convert needs a run folder, a --checkpoint, or an --onnx FP32 model")
    parent = Path(out_parent) if out_parent else (run / "deploy" if run else None)
    if parent is None:
        raise ConfigError("convert with --checkpoint/--onnx and no run folder needs --out-dir")
    settings = settings or QuantSettings()
    settings.validate()
    folder = new_output_folder(parent)
    summary: dict[str, Any] = {"folder": str(folder), "started": datetime.now().isoformat(timespec="seconds"),
                               "steps": {}}
    timings: dict[str, float] = {}

    def step(name: str, started: float) -> None:
        timings[name] = time.perf_counter() - started

    try:
        fp32 = folder / "model_fp32.onnx"
        t = time.perf_counter()
        if onnx_path is not None:
            shutil.copyfile(onnx_path, fp32)
            summary["steps"]["export"] = {"source": str(onnx_path), "exporter": "given FP32 ONNX"}
        else:
            weights = Path(checkpoint) if checkpoint else find_weights(run)
            the_task = task or run_task(run if run else weights.parent)
            summary["steps"]["export"] = {"source": str(weights), "task": the_task,
                                          **export_fp32(weights, the_task, fp32, variant=variant)}
        step("export", t)
        t = time.perf_counter()
        summary["steps"]["validate"] = validate_fp32(fp32)
        step("validate", t)
        t = time.perf_counter()
        qdq = folder / "model_qdq.onnx"
        q = quantize_model(fp32, qdq, calibration, settings, count=calibration_count, resize=resize_calibration,
                           progress=progress)
        summary["steps"]["quantize"] = {"output": qdq.name, "label": settings.label(), "settings": asdict(settings),
                                        "calibration_images": q.calibration_images,
                                        "calibration_source": q.calibration_source,
                                        "raised_to_16bit_tensors": q.raised_tensors}
        step("quantize", t)
        t = time.perf_counter()
        ctx = folder / "model_ctx.onnx"
        c = compile_context_binary(qdq, ctx, soc_model=soc_model, htp_arch=htp_arch)
        summary["steps"]["compile"] = c.to_dict()
        step("compile", t)
        t = time.perf_counter()
        report = compare_models(fp32, qdq, validation or calibration, folder / "compare", count=validation_count,
                                htp_frames=htp_frames, htp_model=ctx, progress=progress)
        shutil.copyfile(folder / "compare" / "comparison.json", folder / "comparison.json")
        summary["steps"]["compare"] = {"verdict": report["acceptability"]["overall"], "report": "compare/comparison.md",
                                       "acceptability": report["acceptability"], "htp_agreement": {
                                           k: v for k, v in report["htp_agreement"].items() if k != "outputs"}}
        step("compare", t)
        summary["status"] = "ok"
    except Exception as err:
        summary["status"] = "failed"
        summary["error"] = f"{type(err).__name__}: {err}"
        raise
    finally:
        summary["seconds"] = timings
        write_json(folder / "conversion_summary.json", summary)
        with atomic_write(folder / "conversion_summary.md", overwrite=True) as tmp:
            tmp.write_text(summary_markdown(summary, placement_markdown if "compile" in summary["steps"] else None))
    return summary


def summary_markdown(summary: dict[str, Any], placement_md: Any | None) -> str:
    steps = summary["steps"]
    lines = [f"# INT8 conversion: {summary['folder']}", "", f"- status: **{summary.get('status', '?')}**"]
    if "error" in summary:
        lines.append(f"- error: {summary['error']}")
    if "export" in steps:
        lines.append(f"- export: {steps['export'].get('exporter')} from `{steps['export']['source']}` -> model_fp32.onnx")
    if "validate" in steps:
        v = steps["validate"]
        lines.append(f"- validate: {v['task']} input {v['input_shape']}, outputs {v['outputs']}, CPU {v['cpu_ms']:.0f} ms")
    if "quantize" in steps:
        q = steps["quantize"]
        lines.append(f"- quantize: {q['label']} on {q['calibration_images']} images of {q['calibration_source']} "
                     f"-> model_qdq.onnx; 16-bit tensors: {', '.join(q['raised_to_16bit_tensors']) or 'none'}")
    if "compile" in steps and placement_md is not None:
        from model_tools.quant.compile import CompileSummary, Placement

        c = dict(steps["compile"])
        p = dict(c.pop("placement"))
        p.pop("all_on_npu", None)
        lines += ["- compile -> model_ctx.onnx:", placement_md(CompileSummary(placement=Placement(**p), **c))]
    if "compare" in steps:
        lines.append(f"- compare: verdict **{steps['compare']['verdict']}** (see {steps['compare']['report']})")
    lines.append(f"- seconds per step: {', '.join(f'{k} {v:.1f}' for k, v in summary['seconds'].items())}")
    return "\n".join(lines) + "\n"
