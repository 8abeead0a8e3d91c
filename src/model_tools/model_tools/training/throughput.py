"""Training throughput of one task, in one process: the engine's step and batches, eager and fast path.

``bench/bench_train_seg.py`` and ``bench/bench_train_depth.py`` call
:func:`measure_modes`. For each mode it builds a fresh model, optimiser,
scaler and EMA as the engine does, takes the step from
``training.step.build_train_step`` and the batches from
``training.engine.train_batches``, and times (after warm-up, between device
synchronisations):

- compute-bound: the step (with the EMA update) on one random batch already
  on the device, the ceiling for that step mode;
- batches alone: the data pipeline with no model;
- real: the pipeline feeding the step, as ``Trainer.fit`` runs it.

Modes: ``eager`` = ``step_mode: eager`` + ``data_pipeline: workers`` (the
engine's defaults), ``fast`` = ``cuda_graph`` + ``cached``.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from model_tools.data.datasets import to_model_batch
from model_tools.data.frame_cache import CachedBatches
from model_tools.training.config import TrainConfig
from model_tools.training.engine import DistInfo, ModelEma, train_batches
from model_tools.training.step import StepParts, build_train_step, make_optimizer

MODES = {"eager": ("eager", "workers"), "fast": ("cuda_graph", "cached")}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(work: Callable[[], Any], steps: int, warmup: int, images_per_step: int,
                      device: torch.device) -> float:
    """img/s of ``work`` over ``steps`` calls after ``warmup``, between device synchronisations."""
    for _ in range(warmup):
        work()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        work()
    _sync(device)
    return steps * images_per_step / (time.perf_counter() - start)


def median_ms(work: Callable[[], object], steps: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``work`` in ms: CUDA events around each call on a GPU, the host clock on a CPU."""
    for _ in range(warmup):
        work()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # nothing queued before ``work`` lands in its time
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            work()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            work()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@dataclasses.dataclass
class BenchStep:
    """What a training run of a config builds to take its steps (model, EMA, step), and the settings it used."""

    model: torch.nn.Module
    ema: ModelEma | None
    step: Any  # training.step.EagerStep | GraphStep
    channels_last: bool
    use_amp: bool
    amp_dtype: torch.dtype


def build_bench_step(task: Any, cfg: TrainConfig, device: torch.device, step_mode: str, *, world_size: int = 1,
                     log: Callable[[str], None] = print) -> BenchStep:
    """A fresh, seeded model, optimiser, scaler and EMA as the engine builds them, and the step for ``step_mode``."""
    on_cuda = device.type == "cuda"
    use_amp = bool(cfg.amp and on_cuda)
    amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bf16" else torch.float16
    channels_last = bool(cfg.channels_last and on_cuda)
    torch.manual_seed(cfg.seed)
    model = task.build_model().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    ema = ModelEma(model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema else None
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.betas[0], cfg.betas[1]), on_cuda)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    step, _ = build_train_step(StepParts(task, model, optimizer, scaler, device, amp_dtype, use_amp, cfg.grad_clip),
                               step_mode, world_size=world_size, log=log)
    return BenchStep(model, ema, step, channels_last, use_amp, amp_dtype)


def measure_mode(task: Any, config: TrainConfig, train_set: Any, device: torch.device,
                 random_batch: Callable[[], dict[str, torch.Tensor]], *, mode: str, steps: int, warmup: int,
                 cache_dir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """img/s of one mode (compute-bound, batches alone, real) and what actually ran (after any fallback)."""
    step_mode, pipeline = MODES[mode]
    cfg = dataclasses.replace(config, step_mode=step_mode, data_pipeline=pipeline, cache_dir=str(cache_dir),
                              progress_bar=False)
    bench = build_bench_step(task, cfg, device, step_mode, log=log)
    model, ema, step, channels_last = bench.model, bench.ema, bench.step, bench.channels_last
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)

    def train_on(batch: dict[str, Any]) -> None:
        nonlocal nonfinite
        loss, _, _ = step(batch)
        nonfinite |= ~torch.isfinite(loss)
        if ema is not None:
            ema.update(model)

    batch_size = cfg.batch_size
    fixed = random_batch()
    compute = images_per_second(lambda: train_on(fixed), steps, warmup, batch_size, device)
    stream = train_batches(train_set, cfg, DistInfo(), device, channels_last=channels_last, run_dir=cache_dir, log=log)
    alone = images_per_second(lambda: to_model_batch(next(stream), device, channels_last), steps, warmup, batch_size, device)
    real = images_per_second(lambda: train_on(to_model_batch(next(stream), device, channels_last)), steps, warmup, batch_size, device)
    result = {"step_mode": getattr(step, "mode", step_mode), "data_pipeline": "cached" if isinstance(stream, CachedBatches)
              else "workers", "compute_bound_img_s": compute, "batches_alone_img_s": alone, "real_img_s": real,
              "ratio_real_to_compute_bound": real / compute, "loss_finite": not bool(nonfinite)}
    return result


def measure_modes(task: Any, config: TrainConfig, train_set: Any, device: torch.device,
                  random_batch: Callable[[], dict[str, torch.Tensor]], *, modes: list[str], steps: int, warmup: int,
                  cache_dir: Path, log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """:func:`measure_mode` for each of ``modes``, in order."""
    results = {}
    for mode in modes:
        results[mode] = measure_mode(task, config, train_set, device, random_batch, mode=mode, steps=steps,
                                     warmup=warmup, cache_dir=cache_dir, log=log)
        gc.collect()  # the mode's loader workers and device memory go before the next mode is timed
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def summary(task_name: str, config: TrainConfig, device: torch.device, results: dict[str, dict[str, Any]], *,
            height: int, width: int, recipe_images: int, recipe_note: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The JSON a benchmark writes: the fast path's headline fields, every mode's numbers, the settings."""
    headline = results.get("fast") or next(iter(results.values()))
    out: dict[str, Any] = {
        "task": task_name,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "batch_size": config.batch_size,
        "height": height,
        "width": width,
        "precision": f"{config.amp_dtype} autocast" if config.amp and device.type == "cuda" else "fp32",
        "real_img_s": headline["real_img_s"],
        "compute_bound_img_s": headline["compute_bound_img_s"],
        "ratio_real_to_compute_bound": headline["ratio_real_to_compute_bound"],
        "recipe_images": recipe_images,
        "recipe_note": recipe_note,
        "recipe_hours_real": recipe_images / headline["real_img_s"] / 3600,
        "modes": results,
    }
    if "eager" in results and "fast" in results:
        out["fast_real_over_eager_real"] = results["fast"]["real_img_s"] / results["eager"]["real_img_s"]
        out["eager_recipe_hours_real"] = recipe_images / results["eager"]["real_img_s"] / 3600
    out.update(extra)
    out["torch"] = torch.__version__
    return out


def print_table(report: dict[str, Any]) -> None:
    """The numbers as a short table (what the benchmark prints last)."""
    print(f"{report['task']}: {report['gpu']}, {report['height']}x{report['width']}, batch {report['batch_size']}, "
          f"{report['precision']}")
    print(f"{'mode':>6} {'step':>10} {'batches':>8} {'compute-bound':>14} {'batches alone':>14} {'real':>9} {'real/cb':>8}")
    for mode, r in report["modes"].items():
        print(f"{mode:>6} {r['step_mode']:>10} {r['data_pipeline']:>8} {r['compute_bound_img_s']:>10.1f} img/s "
              f"{r['batches_alone_img_s']:>8.1f} img/s {r['real_img_s']:>5.1f} img/s {r['ratio_real_to_compute_bound']:>7.2f}")
    if "fast_real_over_eager_real" in report:
        print(f"fast real / eager real: {report['fast_real_over_eager_real']:.2f}x")
    print(f"recipe ({report['recipe_images'] / 1e6:.2f} M images, {report['recipe_note']}): "
          f"{report['recipe_hours_real']:.2f} h at the headline real rate"
          + (f", {report['eager_recipe_hours_real']:.2f} h eager" if "eager_recipe_hours_real" in report else ""))
