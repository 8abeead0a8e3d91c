"""Benchmark: DDRNet23-Slim training throughput with the real data pipeline vs the compute-bound rate.

In one run, with the same model, optimiser, precision and batch size:

1. compute-bound: forward + backward + AdamW on random images already on
   the device (no data loading) - the ceiling;
2. loader alone: the segmentation task's training set (synthetic frames,
   the seed recipe's augmentations: random scale, crop, flip, colour
   jitter, erasing) through a DataLoader with N workers, no model;
3. real pipeline: 2 feeding 1 (the loop the engine runs).

Prints img/s of each, the ratio real / compute-bound, and the wall time the
seed recipe (config/train/seg_ddrnet23s.yaml: epochs x training images)
would take at each rate. Reference: a DDRNet23-Slim-shaped net trained at
~1251 img/s compute-bound at batch 32, 544x640, bf16 + channels_last on
one H100 (docs/ENVIRONMENT facts).

    python bench/bench_train_seg.py                       # GPU: 544x640, batch 8 (the recipe's), renders frames
    python bench/bench_train_seg.py --data /tmp/demo_train/synth --batch-size 32
    python bench/bench_train_seg.py --tiny                # CPU smoke: 64x80, batch 2, a few steps
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from model_tools.data.datasets import loader_worker_init, to_model_batch
from model_tools.tasks.segmentation import SegmentationTask
from model_tools.training.config import load_config
from model_tools.training.engine import DistInfo, ResumableSampler, SeededSamples

REPO = Path(__file__).resolve().parents[1]
REFERENCE_IMG_S = 1251.0  # compute-bound, batch 32, 544x640, bf16 + channels_last, H100
# A rough, unverified guess at the combined training images of the recipe's three sources
# (RELLIS-3D + RUGD + GOOSE train splits); pass --recipe-images with your own count.
DEFAULT_RECIPE_IMAGES = 15_900


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(task: SegmentationTask, model: torch.nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                batch: dict[str, torch.Tensor], device: torch.device, amp_dtype: torch.dtype | None) -> float:
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        loss, _ = task.compute_loss(model, batch)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    scaler.step(opt)
    scaler.update()
    return float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="synthetic folder (model-tools synth); rendered into a temp dir if absent")
    parser.add_argument("--frames", type=int, default=0, help="frames to render when --data is absent")
    parser.add_argument("--height", type=int, default=0)
    parser.add_argument("--width", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--steps", type=int, default=0, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=0, help="untimed steps first (cudnn autotune, workers)")
    parser.add_argument("--workers", type=int, default=-1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp-dtype", choices=("bf16", "fp16", "none"), default="bf16")
    parser.add_argument("--recipe-images", type=int, default=DEFAULT_RECIPE_IMAGES,
                        help="training images per epoch of the seed recipe (for the wall-time estimate)")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke settings (64x80, batch 2, 3 steps)")
    args = parser.parse_args()

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    small = args.tiny or device.type == "cpu"
    height = args.height or (64 if small else 544)
    width = args.width or (80 if small else 640)
    batch = args.batch_size or (2 if small else 8)
    steps = args.steps or (3 if small else 50)
    warmup = args.warmup or (1 if small else 10)
    workers = args.workers if args.workers >= 0 else (1 if small else max(2, (os.cpu_count() or 2) - 2))
    frames = args.frames or (8 if small else 256)
    on_cuda = device.type == "cuda"
    amp_dtype = None if (args.amp_dtype == "none" or not on_cuda) else (torch.bfloat16 if args.amp_dtype == "bf16" else torch.float16)
    channels_last = on_cuda
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "synth"
        if not args.data:
            from model_tools.data.synth import CameraRig, write_synthetic_folder

            t0 = time.perf_counter()
            write_synthetic_folder(data, CameraRig.default(width, height), frames, seed=1, split="train",
                                   workers=max(1, min(16, os.cpu_count() or 1)), progress=False)
            write_synthetic_folder(data, CameraRig.default(width, height), 2, seed=1, split="val", progress=False)
            print(f"rendered {frames} {width}x{height} frames in {time.perf_counter() - t0:.1f} s")
        recipe = load_config(REPO / "config/train/seg_ddrnet23s.yaml")
        config = load_config(REPO / "config/train/seg_ddrnet23s.yaml", {
            "batch_size": batch,
            "data": {"sources": [{"format": "synthetic", "root": str(data)}], "train_hw": [height, width],
                     "val_hw": [height, width]},
        })
        task = SegmentationTask(config)
        torch.manual_seed(0)
        model = task.build_model().to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=on_cuda or None)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        train_set, _ = task.build_datasets()
        print(f"device {device}, {height}x{width}, batch {batch}, precision {args.amp_dtype if amp_dtype else 'fp32'}, "
              f"channels_last {channels_last}, {workers} loader workers, {len(train_set)} training frames")

        # 1. compute-bound: random data already on the device.
        fixed = {
            "image": torch.rand(batch, 3, height, width, device=device),
            "label": torch.randint(0, task.num_classes, (batch, height, width), device=device),
        }
        if channels_last:
            fixed["image"] = fixed["image"].contiguous(memory_format=torch.channels_last)
        for _ in range(warmup):
            _train_step(task, model, opt, scaler, fixed, device, amp_dtype)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            _train_step(task, model, opt, scaler, fixed, device, amp_dtype)
        _sync(device)
        compute_rate = steps * batch / (time.perf_counter() - t0)

        # 2. and 3. the loader alone, then loader + training (one loader, workers kept alive).
        # As the engine builds it: seeded per-sample augmentation, an endless sampler (no drain at epoch ends).
        kwargs = {"persistent_workers": True, "prefetch_factor": 4} if workers > 0 else {}
        sampler = ResumableSampler(train_set, DistInfo(), shuffle=True, seed=0, drop_last=True, endless_batch_size=batch)
        loader = DataLoader(SeededSamples(train_set), batch_size=batch, sampler=sampler, drop_last=True, num_workers=workers,
                            pin_memory=on_cuda, worker_init_fn=loader_worker_init if workers > 0 else None, **kwargs)
        stream = iter(loader)
        for _ in range(warmup):
            next(stream)
        t0 = time.perf_counter()
        for _ in range(steps):
            next(stream)
        loader_rate = steps * batch / (time.perf_counter() - t0)

        for _ in range(warmup):
            _train_step(task, model, opt, scaler, to_model_batch(next(stream), device, channels_last), device, amp_dtype)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            _train_step(task, model, opt, scaler, to_model_batch(next(stream), device, channels_last), device, amp_dtype)
        _sync(device)
        real_rate = steps * batch / (time.perf_counter() - t0)

    epochs = recipe.epochs
    images = epochs * args.recipe_images
    print(f"compute-bound (random data on {device.type}): {compute_rate:9.1f} img/s")
    print(f"data pipeline alone ({workers} workers):      {loader_rate:9.1f} img/s")
    print(f"real pipeline (loader + training):            {real_rate:9.1f} img/s")
    print(f"ratio real / compute-bound:                   {real_rate / compute_rate:9.2f}")
    if on_cuda and (height, width) == (544, 640):
        print(f"reference compute-bound (H100, batch 32, bf16, channels_last): {REFERENCE_IMG_S:.0f} img/s; "
              f"this run / reference = {compute_rate / REFERENCE_IMG_S:.2f} (batch {batch})")
    print(f"seed recipe: {epochs} epochs x {args.recipe_images} images = {images / 1e6:.2f} M images -> "
          f"{images / real_rate / 3600:.1f} h at the real rate, {images / compute_rate / 3600:.1f} h compute-bound"
          + ("" if (height, width) == (544, 640) else f" (at {height}x{width}, not the recipe's 544x640)"))


if __name__ == "__main__":
    main()
