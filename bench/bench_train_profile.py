"""Where a training step's GPU time goes: the step, the network alone, the loss alone, and the top kernels.

For ``--task depth`` (``config/train/depth_levels_r18.yaml``) or
``segmentation`` (``config/train/seg_ddrnet23s.yaml``, 544x640, batch 8)
it builds the model, optimiser, precision and EMA as the engine does and
times, on one random batch already on the device (median of ``--steps``
repeats between CUDA events, after ``--warmup``):

- ``step``: the engine's eager step (forward, loss, backward, clipping,
  fused AdamW) plus the EMA update, the compute-bound eager step;
- ``network``: forward + backward of the model under autocast with a
  trivial loss (the sum of every output, cast to fp32), the network's own
  cost (plus one cast and one sum per output);
- ``loss``: the task's ``compute_loss`` forward + backward on detached
  copies of the model's outputs (the model replaced by them);

then records one profile of ``--profile-steps`` steps with torch.profiler
and prints the kernels that take the most GPU time. ``--out DIR`` writes
``<task>_step_profile.json`` (the timings and the top kernels) and
``<task>_step_kernels.txt`` (the profiler's table).

GPU:  python bench/bench_train_profile.py --task depth --out /tmp/prof
CPU smoke: python bench/bench_train_profile.py --task depth --tiny
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

# Runs from a bare checkout on the GPU box (no colcon): both source folders on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src" / "model_tools"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src" / "perception_core"))

import torch

from model_tools.io_utils import write_json
from model_tools.training.config import load_config
from model_tools.training.throughput import build_bench_step, median_ms

CONFIGS = {"depth": "config/train/depth_levels_r18.yaml", "segmentation": "config/train/seg_ddrnet23s.yaml"}
TINY = {"depth": ["model.width=8", "model.decoder_channels=[4,8,8,16,16]", "model.input_height=64",
                  "model.input_width=96", "batch_size=2"],
        "segmentation": ["data.train_hw=[64,80]", "batch_size=2"]}


def task_and_batch(name: str, config_path: str, overrides: list[str], device: torch.device,
                   channels_last: bool) -> tuple[Any, Any, dict[str, torch.Tensor], int, int]:
    """(task, config, one random batch on ``device``, height, width) as the benchmarks build them."""
    config = load_config(config_path, overrides)
    if name == "depth":
        from model_tools.tasks.depth import DepthTask

        task: Any = DepthTask(config, config_path)
        mc, b = task.model_cfg, config.batch_size
        h, w = mc.input_height, mc.input_width
        depth = torch.rand(b, 1, h, w, device=device) * mc.max_depth * 1.1
        depth[:, :, : h // 8] = 0.0  # some invalid pixels (sky), as real frames have
        batch = {"depth": depth, "focal_px": torch.full((b,), max(mc.canonical_focal_px, 1.0), device=device),
                 "camera_height_m": torch.full((b,), max(mc.canonical_height_m, 1.0), device=device)}
    else:
        from model_tools.tasks.segmentation import SegmentationTask

        task = SegmentationTask(config)
        b, (h, w) = config.batch_size, task.data_cfg.train_hw
        batch = {"label": torch.randint(0, task.num_classes, (b, h, w), device=device)}
    image = torch.rand(b, 3, h, w, device=device)
    batch["image"] = image.contiguous(memory_format=torch.channels_last) if channels_last else image
    return task, config, batch, h, w


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=sorted(CONFIGS), default="depth")
    p.add_argument("--config", help="training config (default: the task's recipe)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument("--rows", type=int, default=30, help="kernels in the table")
    p.add_argument("--tiny", action="store_true", help="CPU smoke settings")
    p.add_argument("--out", help="folder for <task>_step_profile.json and <task>_step_kernels.txt")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_cuda = device.type == "cuda"
    config_path = args.config or CONFIGS[args.task]
    overrides = [*(TINY[args.task] if args.tiny else []), *args.overrides]
    channels_last = bool(load_config(config_path, overrides).channels_last and on_cuda)
    task, config, batch, h, w = task_and_batch(args.task, config_path, overrides, device, channels_last)
    b = config.batch_size
    bench = build_bench_step(task, config, device, "eager")
    model, ema, step, use_amp, amp_dtype = bench.model, bench.ema, bench.step, bench.use_amp, bench.amp_dtype

    def train_step() -> None:
        step(batch)
        if ema is not None:
            ema.update(model)

    # The model called as the task calls it, and the task's loss then cut short: the network's part.
    recorded: list[Any] = []

    class _ModelCalledError(Exception):
        pass

    def recording_model(*inputs: Any, **kwargs: Any) -> Any:
        recorded.append(model(*inputs, **kwargs))
        raise _ModelCalledError

    def model_outputs() -> Any:
        recorded.clear()
        try:
            task.compute_loss(recording_model, batch)
        except _ModelCalledError:
            pass
        return recorded[0]

    def tensors(out: Any) -> list[torch.Tensor]:
        return list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, (list, tuple)) else [out]

    def network() -> None:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            out = model_outputs()
        sum(t.float().sum() for t in tensors(out)).backward()
        model.zero_grad(set_to_none=True)

    with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
        network_out = model_outputs()

    def replay(*_: Any, **__: Any) -> Any:
        if isinstance(network_out, dict):
            return {k: v.detach().clone().requires_grad_() for k, v in network_out.items()}
        if isinstance(network_out, (list, tuple)):
            return type(network_out)(v.detach().clone().requires_grad_() for v in network_out)
        return network_out.detach().clone().requires_grad_()

    def loss_only() -> None:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            loss, _ = task.compute_loss(replay, batch)
        loss.backward()

    rows = []
    for name, work in (("step", train_step), ("network", network), ("loss", loss_only)):
        ms = median_ms(work, args.steps, args.warmup, device)
        rows.append({"part": name, "ms": ms, "img_s": b / ms * 1e3})
        print(f"{name:>8}: {ms:8.2f} ms  ({b / ms * 1e3:7.1f} img/s at batch {b})", flush=True)

    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if on_cuda else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.profile_steps):
            train_step()
        if on_cuda:
            torch.cuda.synchronize(device)
    sort_key = "self_cuda_time_total" if on_cuda else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort_key, row_limit=args.rows, max_name_column_width=90)
    print(table)
    kernels = []
    for evt in sorted(prof.key_averages(), key=lambda e: getattr(e, "self_device_time_total", 0.0), reverse=True)[: args.rows]:
        per_step = getattr(evt, "self_device_time_total", 0.0) / 1e3 / args.profile_steps
        if per_step > 0:
            kernels.append({"name": evt.key, "ms_per_step": per_step, "calls_per_step": evt.count / args.profile_steps})
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{args.task}_step_kernels.txt").write_text(table)
        write_json(out / f"{args.task}_step_profile.json", {
            "task": args.task, "gpu": torch.cuda.get_device_name(device) if on_cuda else "cpu", "batch_size": b,
            "height": h, "width": w, "precision": f"{config.amp_dtype} autocast" if use_amp else "fp32",
            "channels_last": channels_last, "cudnn_benchmark": torch.backends.cudnn.benchmark, "parts": rows,
            "top_kernels": kernels, "config": config_path, "torch": torch.__version__, "cpu_cores": os.cpu_count(),
            "command": " ".join(["python", *sys.argv])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
