"""Depth training throughput: real data pipeline vs the model's compute-bound rate, in one run.

Prints img/s of (a) forward+backward+AdamW on random in-device data (the
compute-bound rate) and (b) the same steps fed by the real loader
(SyntheticFolderDataset + crop/flip/colour jitter, the engine's sampler,
workers, pinned memory), their ratio, and the wall time the seed recipe
(config epochs over the train split) would need at the pipeline rate.

GPU:  python bench/bench_train_depth.py --data DATA --config config/train/depth_levels_r18.yaml
CPU smoke (renders a tiny data set itself): python bench/bench_train_depth.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# Runs from a bare checkout on the GPU box (no colcon): both source folders on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src" / "model_tools"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src" / "perception_core"))

import torch
from torch.utils.data import DataLoader

from model_tools.data.datasets import loader_worker_init, to_model_batch
from model_tools.tasks.depth import DepthTask
from model_tools.training.config import load_config
from model_tools.training.engine import DistInfo, ResumableSampler, SeededSamples, resolve_device


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config/train/depth_levels_r18.yaml")
    p.add_argument("--data", help="synthetic data root (default: render a tiny one to a temp dir)")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=0, help="timed steps (default 30 on GPU, 4 on CPU)")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    device = resolve_device(args.device, DistInfo())
    cpu = device.type == "cpu"
    overrides = list(args.overrides)
    if cpu:  # tiny settings so the smoke run takes seconds on 2 cores
        overrides = ["model.width=8", "model.decoder_channels=[4,8,8,16,16]", "model.input_height=64",
                     "model.input_width=96", "batch_size=2", "num_workers=1", *overrides]
    data = args.data
    if data is None:
        from model_tools.cli import main as cli

        data = tempfile.mkdtemp(prefix="bench_depth_")
        frames = 12 if cpu else 96  # at least a few batches of the GPU config's batch size
        cli(["synth", "--out", data, "--frames", str(frames), "--width", "128", "--height", "96", "--no-progress"])
    config = load_config(args.config, [*overrides, f"data.sources=[{{format: synthetic, root: {data}}}]"])
    task = DepthTask(config, args.config)
    steps = args.steps or (4 if cpu else 30)
    warmup = 2 if cpu else 10
    use_amp = config.amp and not cpu
    channels_last = config.channels_last and not cpu
    model = task.build_model().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, fused=not cpu or None)
    mc = task.model_cfg
    b = config.batch_size

    def step(batch: dict[str, torch.Tensor]) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, _ = task.compute_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if not cpu:
            torch.cuda.synchronize()

    # (a) compute-bound: random batches already on the device.
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    rand = {"image": torch.rand(b, 3, mc.input_height, mc.input_width, device=device).contiguous(memory_format=fmt),
            "depth": torch.rand(b, 1, mc.input_height, mc.input_width, device=device) * mc.max_depth}
    for _ in range(warmup):
        step(rand)
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step(rand)
    sync()
    compute_rate = steps * b / (time.perf_counter() - t)

    # (b) the real pipeline, as the engine builds it.
    train_set, _ = task.build_datasets()
    sampler = ResumableSampler(train_set, DistInfo(), shuffle=True, seed=config.seed, drop_last=True, endless_batch_size=b)
    kw = {"persistent_workers": True, "prefetch_factor": config.prefetch_factor} if config.num_workers else {}
    loader = DataLoader(SeededSamples(train_set), batch_size=b, sampler=sampler, num_workers=config.num_workers,
                        pin_memory=not cpu, drop_last=True,
                        worker_init_fn=loader_worker_init if config.num_workers else None, **kw)

    def batches():  # endless, epoch after epoch, one iterator (as the engine runs it)
        for batch in loader:
            yield to_model_batch(batch, device)

    it = batches()
    for _ in range(warmup):
        step(next(it))
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step(next(it))
    sync()
    pipe_rate = steps * b / (time.perf_counter() - t)
    recipe_images = config.epochs * (len(train_set) // b) * b
    print(f"device {device} ({torch.cuda.get_device_name(device) if not cpu else os.cpu_count()} ), "
          f"input {mc.input_height}x{mc.input_width}, batch {b}, head {mc.kind}, workers {config.num_workers}")
    print(f"compute-bound (random in-device data): {compute_rate:8.1f} img/s")
    print(f"real data pipeline + augmentation:     {pipe_rate:8.1f} img/s")
    print(f"ratio pipeline / compute-bound:        {pipe_rate / compute_rate:8.2f}")
    print(f"seed recipe ({config.epochs} epochs x {len(train_set)} images): {recipe_images / pipe_rate / 60:.1f} min at the pipeline rate "
          f"({recipe_images / compute_rate / 60:.1f} min compute-bound)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
