"""Segmentation training rate on one or several GPUs of one host, and where a multi-GPU step spends its time.

Run as one process (one GPU) or under torchrun (one process per GPU):

    python bench/bench_train_ddp.py --data DATA --json one.json
    torchrun --standalone --nproc_per_node=2 bench/bench_train_ddp.py --data DATA --json two.json

Each rank builds what the engine builds for the segmentation recipe (DDRNet23-Slim, 544x640, batch 8
per GPU, fp16 autocast + GradScaler, EMA, clipping) with the engine's step (``--step-mode``; the CUDA
graph step syncs the ranks with ``training.step.FlatAllReduce``) and batches (``--pipeline``), then
times, after warm-up, between device synchronisations:

- compute-bound: the step (+ EMA) on one random batch already on the device;
- host: the host's own time to issue one such step (the mean time per call while the GPU is still
  busy with earlier steps: nothing in the step waits for the GPU, so this is the issuing cost);
- parts (CUDA-graph step under DDP only, each on its own between CUDA events): the buffer broadcast,
  the forward + backward graph, the gradient all-reduce, the update graph;
- real: the batches feeding the step, as training runs.

Rates are summed over the ranks (images per second of the whole job); rank 0 writes ``--json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# Runs from a bare checkout on the GPU box (no colcon): both source folders on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src" / "model_tools"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src" / "perception_core"))

import torch

from model_tools.data.datasets import to_model_batch
from model_tools.io_utils import write_json
from model_tools.tasks.segmentation import SegmentationTask
from model_tools.training.config import load_config
from model_tools.training.engine import dist_from_env, train_batches
from model_tools.training.throughput import build_bench_step, images_per_second, median_ms

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="synthetic folder (model-tools synth)")
    p.add_argument("--batch-size", type=int, default=8, help="per GPU")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=15)
    p.add_argument("--workers", type=int, default=6, help="cache build workers (eager pipeline: loader workers)")
    p.add_argument("--step-mode", default="cuda_graph", choices=("eager", "cuda_graph"))
    p.add_argument("--pipeline", default="cached", choices=("workers", "cached"))
    p.add_argument("--cache-dir", default="/tmp/bench_train_ddp_cache")
    p.add_argument("--json", help="rank 0 writes the results here")
    p.add_argument("--profile-dir", help="each rank writes a torch.profiler table of 5 compute-bound steps here")
    args = p.parse_args()
    dist = dist_from_env()
    device = torch.device("cuda", dist.local_rank)
    torch.cuda.set_device(device)
    if dist.enabled:
        torch.distributed.init_process_group(backend="nccl", device_id=device)
    config = load_config(REPO / "config/train/seg_ddrnet23s.yaml", {
        "batch_size": args.batch_size, "num_workers": args.workers, "step_mode": args.step_mode,
        "data_pipeline": args.pipeline, "cache_dir": args.cache_dir, "progress_bar": False,
        "data": {"sources": [{"format": "synthetic", "root": args.data}], "train_hw": [544, 640], "val_hw": [544, 640]}})
    task = SegmentationTask(config)
    train_set, _ = task.build_datasets()
    bench = build_bench_step(task, config, device, args.step_mode, world_size=dist.world_size,
                             log=print if dist.is_main else lambda _: None)
    model, ema, step = bench.model, bench.ema, bench.step
    if ema is None or not bench.channels_last:
        raise SystemExit("bench_train_ddp times the segmentation recipe, which trains with an EMA and channels_last")
    b = args.batch_size

    def train_on(batch: dict[str, Any]) -> None:
        step(batch)
        ema.update(model)

    image = torch.rand(b, 3, 544, 640, device=device).contiguous(memory_format=torch.channels_last)
    fixed = {"image": image, "label": torch.randint(0, task.num_classes, (b, 544, 640), device=device)}
    compute = images_per_second(lambda: train_on(fixed), args.steps, args.warmup, b, device)
    # Host time per step: issue steps back to back without waiting (the GPU queue absorbs them), then sync.
    torch.cuda.synchronize(device)
    host = []
    for _ in range(20):
        t0 = time.perf_counter()
        train_on(fixed)
        host.append((time.perf_counter() - t0) * 1e3)
    torch.cuda.synchronize(device)
    result: dict[str, Any] = {"rank": dist.rank, "compute_bound_img_s": compute, "host_ms_per_step": statistics.median(host),
                              "mode": getattr(step, "mode", args.step_mode)}
    if args.profile_dir:
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(5):
                train_on(fixed)
            torch.cuda.synchronize(device)
        folder = Path(args.profile_dir)
        folder.mkdir(parents=True, exist_ok=True)
        averages = prof.key_averages()
        (folder / f"ddp_step_rank{dist.rank}_of{dist.world_size}.txt").write_text(
            averages.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=70) + "\n"
            + averages.table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=70))
    sync = getattr(step, "sync", None)
    graphs = getattr(step, "graphs", [])
    if sync is not None and len(graphs) == 2:
        result["parts_ms"] = {"broadcast_buffers": median_ms(sync.broadcast_buffers, 20, 0, device),
                              "forward_backward_graph": median_ms(graphs[0].replay, 20, 0, device),
                              "average_gradients": median_ms(sync.average_gradients, 20, 0, device),
                              "update_graph": median_ms(graphs[1].replay, 20, 0, device),
                              "ema_update": median_ms(lambda: ema.update(model), 20, 0, device)}
    elif graphs:
        result["parts_ms"] = {"step_graph": median_ms(graphs[0].replay, 20, 0, device), "ema_update": median_ms(lambda: ema.update(model), 20, 0, device)}
    stream = train_batches(train_set, config, dist, device, channels_last=True, run_dir=Path(args.cache_dir).parent,
                           log=print if dist.is_main else lambda _: None)
    result["batches_alone_img_s"] = images_per_second(lambda: to_model_batch(next(stream), device, True), args.steps, args.warmup, b, device)
    result["real_img_s"] = images_per_second(lambda: train_on(to_model_batch(next(stream), device, True)), args.steps, args.warmup, b, device)
    ranks = [result]
    if dist.enabled:
        ranks = [None] * dist.world_size  # type: ignore[list-item]
        torch.distributed.all_gather_object(ranks, result)
    if dist.is_main:
        report = {"task": "segmentation", "gpu": torch.cuda.get_device_name(device), "world_size": dist.world_size,
                  "batch_size_per_gpu": b, "step_mode": args.step_mode, "data_pipeline": args.pipeline,
                  "compute_bound_img_s": sum(r["compute_bound_img_s"] for r in ranks),
                  "real_img_s": sum(r["real_img_s"] for r in ranks), "ranks": ranks, "steps": args.steps,
                  "warmup": args.warmup, "cpu_cores": os.cpu_count(), "torch": torch.__version__,
                  "command": " ".join(["python", *sys.argv])}
        report["ratio_real_to_compute_bound"] = report["real_img_s"] / report["compute_bound_img_s"]
        print(f"{dist.world_size} GPU(s), batch {b} per GPU: compute-bound {report['compute_bound_img_s']:.1f} img/s, "
              f"real {report['real_img_s']:.1f} img/s")
        for r in ranks:
            print(f"  rank {r['rank']}: host {r['host_ms_per_step']:.2f} ms/step, parts {r.get('parts_ms')}")
        if args.json:
            write_json(args.json, report)
    if dist.enabled:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
