#!/usr/bin/env bash
# DDP demonstration for the segmentation trainer (run on a box with >= 2 GPUs, from the repository root):
#   OUT=/path/to/out bash scripts/ddp_seg_demo.sh
# Trains the same short DDRNet23-Slim run (config/train/seg_ddrnet23s_demo.yaml) for STEPS optimiser steps
#   1. on one GPU (plain process), and
#   2. on two GPUs through `torchrun --nproc_per_node=2` (batch_size is per GPU, so each step sees twice
#      the images; the eager step uses DistributedDataParallel, the CUDA-graph step all-reduces one flat
#      gradient buffer between its two graphs),
# with the fast path on (FAST=1, default: step_mode cuda_graph + data_pipeline cached; FAST=0: eager + workers),
# then prints the training throughput (img/s) of each and their ratio, and writes both loss curves into
# one plot ($OUT/ddp_seg_loss.png) plus $OUT/ddp_seg_summary.json.
# Synthetic frames are rendered first unless DATA points at an existing `model-tools synth` folder.
# Each run's log is copied to $OUT (gpu1.log, gpu2.log). A run still going 15 s before RUN_TIMEOUT is asked
# for its stacks first: each of its Python processes (torchrun's ranks too) gets SIGUSR1, on which a
# faulthandler set up by a sitecustomize in $SCRATCH prints every thread's stack into the run's log.
# Needs only python + torch + numpy/cv2/yaml/matplotlib/tqdm (no ROS, no onnxruntime).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src/model_tools:$PWD/src/perception_core${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:?set OUT to the folder that receives the plot and summary}
SCRATCH=${SCRATCH:-/tmp/ddp_seg_demo}
CORES=${CORES:-$(nproc)}
STEPS=${STEPS:-300}
BATCH=${BATCH:-8}  # per GPU: the segmentation recipe's batch
FAST=${FAST:-1}
FRAMES=${FRAMES:-1200}
DATA=${DATA:-$SCRATCH/synth}
EXTRA=${SEG_EXTRA_TRAIN_ARGS:-}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}  # seconds per training run; a run that trains but never exits is killed, not waited on
START=$(date +%s)
log() { echo "[ddp_seg_demo $(( $(date +%s) - START ))s] $*"; }
mkdir -p "$OUT" "$SCRATCH"
stacks=$SCRATCH/stacks_on_usr1
mkdir -p "$stacks"
printf 'import faulthandler\nimport signal\n\nfaulthandler.register(signal.SIGUSR1, all_threads=True)\n' > "$stacks/sitecustomize.py"
export PYTHONPATH="$stacks:$PYTHONPATH"
descendants() { local child; for child in $(pgrep -P "$1"); do echo "$child"; descendants "$child"; done; }

ngpu=$($PY -c 'import torch; print(torch.cuda.device_count())')
(( ngpu >= 2 )) || { echo "ddp_seg_demo: needs 2 GPUs, found $ngpu" >&2; exit 1; }

if [[ ! -d $DATA/train ]]; then
  log "rendering $FRAMES synthetic 640x544 frames on $CORES cores into $DATA"
  $PY -m model_tools.cli synth --out "$DATA" --frames "$FRAMES" --width 640 --height 544 --val-fraction 0.05 \
      --workers "$CORES" --seed 11 --overwrite --no-progress
fi

# Fixed length, no wall-clock budget, one validation at the end; identical settings for both runs.
common=(seg train --config config/train/seg_ddrnet23s_demo.yaml --data "$DATA"
        --set "max_steps=$STEPS" --set time_budget_min=0 --set "batch_size=$BATCH" --set val_every_epochs=1000
        --set checkpoint_every_steps=0 --set log_every_steps=10 --set progress_bar=false)
if (( FAST )); then
  common+=(--set step_mode=cuda_graph --set data_pipeline=cached --set "cache_dir=$SCRATCH/frame_cache")
else
  common+=(--set step_mode=eager --set data_pipeline=workers)
fi
half=$(( CORES / 2 - 1 )); (( half < 2 )) && half=2

# run NAME CMD...: one training run under a time limit. A run whose summary.json exists finished training;
# if its process then fails to exit it is reported and killed, and the demo goes on with its numbers.
run() {
  local name=$1; shift
  local rc=0
  timeout -k 10 "$RUN_TIMEOUT" "$@" > "$SCRATCH/$name.log" 2>&1 &
  local pid=$! waited=0
  while kill -0 "$pid" 2>/dev/null && (( waited < RUN_TIMEOUT - 15 )); do sleep 1; waited=$(( waited + 1 )); done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name still running after ${waited}s: asking its processes for their stacks (in $name.log)"
    for child in $(descendants "$pid"); do kill -USR1 "$child" 2>/dev/null || true; done
  fi
  wait "$pid" || rc=$?
  cp "$SCRATCH/$name.log" "$OUT/$name.log"
  if [[ -f $SCRATCH/$name/summary.json ]]; then
    (( rc == 0 )) || log "WARNING: $name finished training but exited with status $rc (killed after ${RUN_TIMEOUT}s?)"
    grep 'seg train:' "$SCRATCH/$name.log" | tail -1
  else
    grep -v "^  \|^Traceback\|^torch.distributed.elastic" "$SCRATCH/$name.log" | tail -40
    [[ -f $SCRATCH/$name/metrics.csv ]] && tail -3 "$SCRATCH/$name/metrics.csv"
    log "$name failed (status $rc)"; exit 1
  fi
}

rm -rf "$SCRATCH/gpu1" "$SCRATCH/gpu2"
log "1 GPU: $STEPS steps at batch $BATCH"
CUDA_VISIBLE_DEVICES=0 run gpu1 $PY -m model_tools.cli "${common[@]}" --run-dir "$SCRATCH/gpu1" \
    --set "num_workers=$(( CORES - 2 ))" $EXTRA

log "2 GPUs (torchrun, DDP): $STEPS steps at batch $BATCH per GPU"
CUDA_VISIBLE_DEVICES=0,1 run gpu2 $PY -m torch.distributed.run --standalone --nproc_per_node=2 -m model_tools.cli \
    "${common[@]}" --run-dir "$SCRATCH/gpu2" --set "num_workers=$half" $EXTRA

$PY - "$SCRATCH" "$OUT" "$BATCH" "$FAST" <<'PYEOF'
"""Throughput of each run from its metrics.csv, and both loss curves in one figure."""
import csv, json, statistics, sys
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

scratch, out, batch, fast = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
runs = {"1 GPU": scratch / "gpu1", "2 GPUs (DDP)": scratch / "gpu2"}
result = {}
fig, (ax_step, ax_img) = plt.subplots(1, 2, figsize=(12, 4))
for label, run in runs.items():
    rows = [r for r in csv.DictReader((run / "metrics.csv").open()) if r.get("phase") == "train"]
    summary = json.loads((run / "summary.json").read_text())
    world = int(summary["world_size"])
    steps = [int(float(r["step"])) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    rates = [float(r["img_per_s"]) for r in rows if r.get("img_per_s")]
    steady = rates[len(rates) // 4:] or rates  # skip start-up (cudnn autotune, worker spin-up)
    log = (scratch / f"{run.name}.log").read_text(errors="replace").splitlines()
    result[label] = {"world_size": world, "steps": summary["steps"], "global_batch": batch * world,
                     "img_per_s_median": statistics.median(steady), "elapsed_s": summary["elapsed_s"],
                     "final_loss": loss[-1], "val_miou": summary["last_validation"].get("miou"),
                     "engine_lines": [line for line in log if line.startswith("train:")]}
    ax_step.plot(steps, loss, label=f"{label}, global batch {batch * world}")
    ax_img.plot([s * batch * world for s in steps], loss, label=label)
ax_step.set_xlabel("optimiser step")
ax_img.set_xlabel("training images seen")
for ax in (ax_step, ax_img):
    ax.set_ylabel("training loss (focal + 0.4 aux)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
fig.suptitle("DDRNet23-Slim segmentation: 1 GPU vs 2 GPUs (torchrun DDP)")
fig.tight_layout()
fig.savefig(out / "ddp_seg_loss.png", dpi=100)
one, two = result["1 GPU"]["img_per_s_median"], result["2 GPUs (DDP)"]["img_per_s_median"]
result["speedup_2gpu_over_1gpu"] = two / one
result.update(task="segmentation", batch_size_per_gpu=batch, fast_path=fast,
              gpu=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(),
              step_mode="cuda_graph" if fast else "eager", data_pipeline="cached" if fast else "workers")
(out / "ddp_seg_summary.json").write_text(json.dumps(result, indent=2) + "\n")
print(f"1 GPU : {one:8.1f} img/s (batch {batch})")
print(f"2 GPUs: {two:8.1f} img/s (batch {batch} per GPU, DDP)")
print(f"ratio 2 GPUs / 1 GPU: {two / one:.2f}x  -> {out / 'ddp_seg_loss.png'}")
PYEOF
log "done"
