"""Depth training throughput, eager vs fast path, compute-bound vs real pipeline, in one run.

For each mode (``model_tools.training.throughput``) with the config's model,
optimiser, precision, EMA and batch size: eager = ``step_mode: eager`` +
``data_pipeline: workers``; fast = ``cuda_graph`` + ``cached`` (frames
resized to the model input once, flip and colour jitter as batched tensor
ops on the GPU, the whole step one CUDA graph). Times the step on random
in-device data (compute-bound), the batches alone, and both together
(real); prints a table and the recipe's wall time (config epochs x the
train split) at the fast real rate; ``--json`` writes everything.

GPU:  python bench/bench_train_depth.py --data DATA --json docs/measurements/train_depth_h200.json
CPU smoke (renders a tiny data set itself): python bench/bench_train_depth.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

# Runs from a bare checkout on the GPU box (no colcon): both source folders on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src" / "model_tools"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src" / "perception_core"))

import torch

from model_tools.io_utils import write_json
from model_tools.tasks.depth import DepthTask
from model_tools.training.config import load_config
from model_tools.training.engine import DistInfo, resolve_device
from model_tools.training.throughput import MODES, measure_modes, print_table, summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config/train/depth_levels_r18.yaml")
    p.add_argument("--data", help="synthetic data root (default: render a tiny one to a temp dir)")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=0, help="timed steps (default 60 on GPU, 3 on CPU)")
    p.add_argument("--warmup", type=int, default=0, help="untimed steps first (default 15 on GPU, 5 on CPU)")
    p.add_argument("--modes", default="eager,fast", help=f"comma-separated, of {sorted(MODES)}")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    device = resolve_device(args.device, DistInfo())
    cpu = device.type == "cpu"
    overrides = list(args.overrides)
    if cpu:  # tiny settings so the smoke run takes seconds on 2 cores
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        overrides = ["model.width=8", "model.decoder_channels=[4,8,8,16,16]", "model.input_height=64",
                     "model.input_width=96", "batch_size=2", "num_workers=1", *overrides]
    data = args.data
    with tempfile.TemporaryDirectory() as tmp:
        if data is None:
            from model_tools.cli import main as cli

            data = str(Path(tmp) / "synth")
            frames = 12 if cpu else 96  # at least a few batches of the GPU config's batch size
            cli(["synth", "--out", data, "--frames", str(frames), "--width", "128", "--height", "96", "--val-fraction", "0.2",
                 "--no-progress"])
        config = load_config(args.config, [*overrides, f"data.sources=[{{format: synthetic, root: {data}}}]"])
        task = DepthTask(config, args.config)
        train_set, _ = task.build_datasets()
        steps = args.steps or (3 if cpu else 60)
        warmup = args.warmup or (5 if cpu else 15)
        mc = task.model_cfg
        b = config.batch_size
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        print(f"device {device}, input {mc.input_height}x{mc.input_width}, batch {b}, head {mc.kind}, "
              f"{config.num_workers} loader workers, {len(train_set)} training frames, modes {modes}")

        def random_batch() -> dict[str, torch.Tensor]:
            image = torch.rand(b, 3, mc.input_height, mc.input_width, device=device)
            if config.channels_last and not cpu:
                image = image.contiguous(memory_format=torch.channels_last)
            batch = {"image": image, "depth": torch.rand(b, 1, mc.input_height, mc.input_width, device=device) * mc.max_depth}
            if mc.camera != "fixed":  # a camera-aware model reads each frame's camera (tasks.depth.FrameCameras)
                batch["focal_px"] = torch.full((b,), mc.canonical_focal_px, device=device)
                batch["camera_height_m"] = torch.full((b,), max(mc.canonical_height_m, 1.0), device=device)
            return batch

        results = measure_modes(task, config, train_set, device, random_batch, modes=modes, steps=steps, warmup=warmup,
                                cache_dir=Path(tmp) / "frame_cache")
    images = config.epochs * (len(train_set) // b) * b
    report = summary("depth", config, device, results, height=mc.input_height, width=mc.input_width,
                     recipe_images=images, recipe_note=f"{config.epochs} epochs x {len(train_set)} training frames of --data",
                     extra={"config": args.config, "head": mc.kind, "steps": steps, "warmup": warmup,
                            "workers": config.num_workers, "frames": len(train_set), "cpu_cores": os.cpu_count(),
                            "command": " ".join(["python", *sys.argv])})
    print_table(report)
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
