"""Benchmark: DDRNet23-Slim training throughput, eager vs fast path, compute-bound vs real pipeline, in one run.

For each mode (``model_tools.training.throughput``), with the segmentation recipe's
model, optimiser, precision, EMA and batch size:

- eager: ``step_mode: eager`` + ``data_pipeline: workers`` (per-sample
  decode and augmentation in N loader processes);
- fast: ``step_mode: cuda_graph`` + ``data_pipeline: cached`` (the whole
  step as one CUDA graph; frames decoded once, augmented as batches on the GPU);

it times the step on random data already on the device (compute-bound),
the batches alone, and the batches feeding the step (real). Prints a table
and the segmentation recipe's wall time (config/train/seg_ddrnet23s.yaml: epochs x
training images) at the fast real rate; ``--json`` writes everything
(``task``, ``batch_size``, ``gpu``, ``real_img_s``, ``compute_bound_img_s``,
``ratio_real_to_compute_bound``, ``recipe_hours_real``, per-mode numbers).

    python bench/bench_train_seg.py --json docs/measurements/train_seg_h200.json   # GPU: 544x640, batch 8, renders frames
    python bench/bench_train_seg.py --data /tmp/demo_train/synth --batch-size 32
    python bench/bench_train_seg.py --tiny                # CPU smoke: 64x80, batch 2, a few steps
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

from model_tools.io_utils import write_json
from model_tools.tasks.segmentation import SegmentationTask
from model_tools.training.config import load_config
from model_tools.training.throughput import MODES, measure_modes, print_table, summary

REPO = Path(__file__).resolve().parents[1]
# A rough, unverified guess at the combined training images of the recipe's three sources
# (RELLIS-3D + RUGD + GOOSE train splits); pass --recipe-images with your own count.
DEFAULT_RECIPE_IMAGES = 15_900


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="synthetic folder (model-tools synth); rendered into a temp dir if absent")
    parser.add_argument("--frames", type=int, default=0, help="frames to render when --data is absent")
    parser.add_argument("--height", type=int, default=0)
    parser.add_argument("--width", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--steps", type=int, default=0, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=0, help="untimed steps first (graph capture, workers, autotune)")
    parser.add_argument("--workers", type=int, default=-1, help="loader workers (eager pipeline; cache build)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp-dtype", choices=("bf16", "fp16", "recipe"), default="recipe",
                        help="autocast dtype on CUDA (default: the recipe's, fp16 with a GradScaler)")
    parser.add_argument("--modes", default="eager,fast", help=f"comma-separated, of {sorted(MODES)}")
    parser.add_argument("--recipe-images", type=int, default=DEFAULT_RECIPE_IMAGES,
                        help="training images per epoch of the segmentation recipe (for the wall-time estimate)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke settings (64x80, batch 2, 3 steps)")
    args = parser.parse_args()

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    small = args.tiny or device.type == "cpu"
    height = args.height or (64 if small else 544)
    width = args.width or (80 if small else 640)
    batch = args.batch_size or (2 if small else 8)
    steps = args.steps or (3 if small else 100)
    warmup = args.warmup or (5 if small else 15)
    workers = args.workers if args.workers >= 0 else (1 if small else max(2, (os.cpu_count() or 2) - 2))
    frames = args.frames or (8 if small else 256)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
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
        overrides: dict = {"batch_size": batch, "num_workers": workers,
                           "data": {"sources": [{"format": "synthetic", "root": str(data)}], "train_hw": [height, width],
                                    "val_hw": [height, width]}}
        if args.amp_dtype != "recipe":
            overrides["amp_dtype"] = args.amp_dtype
        config = load_config(REPO / "config/train/seg_ddrnet23s.yaml", overrides)
        task = SegmentationTask(config)
        train_set, _ = task.build_datasets()
        print(f"device {device}, {height}x{width}, batch {batch}, {workers} loader workers, {len(train_set)} training frames, "
              f"modes {modes}, {steps} timed steps after {warmup}")

        def random_batch() -> dict[str, torch.Tensor]:
            image = torch.rand(batch, 3, height, width, device=device)
            if config.channels_last and device.type == "cuda":
                image = image.contiguous(memory_format=torch.channels_last)
            return {"image": image, "label": torch.randint(0, task.num_classes, (batch, height, width), device=device)}

        results = measure_modes(task, config, train_set, device, random_batch, modes=modes, steps=steps, warmup=warmup,
                                cache_dir=Path(tmp) / "frame_cache")

    images = recipe.epochs * args.recipe_images
    report = summary("segmentation", config, device, results, height=height, width=width, recipe_images=images,
                     recipe_note=f"{recipe.epochs} epochs x {args.recipe_images} images (config/train/seg_ddrnet23s.yaml)",
                     extra={"steps": steps, "warmup": warmup, "workers": workers, "frames": len(train_set),
                            "cpu_cores": os.cpu_count(), "command": " ".join(["python", *sys.argv])})
    print_table(report)
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
