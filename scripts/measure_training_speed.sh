#!/usr/bin/env bash
# Measure the training fast path on a GPU box in one go (docs/training.md, "Fast path"); from the repository root:
#   OUT=/path/to/out bash scripts/measure_training_speed.sh
#   1. render FRAMES synthetic 640x544 frames (train + val),
#   2. bench/bench_train_seg.py and bench/bench_train_depth.py on GPU 0, limited to BENCH_CORES cores (16: what a
#      one-GPU H200 box has), eager vs fast, compute-bound vs real  -> $OUT/train_seg.json, $OUT/train_depth.json
#   3. bench/bench_train_learning.py: eager, fast and eager with another seed, same steps, over all GPUs
#                                                                    -> $OUT/learning.json
#   4. with >= 2 GPUs, scripts/ddp_seg_demo.sh with the fast path   -> $OUT/ddp_seg_summary.json, ddp_seg_loss.png
# Every step has a time limit and a failed step does not stop the others; $OUT/measure.log holds the output.
# Needs only python + torch + numpy/cv2/yaml/matplotlib/tqdm (no ROS, no onnxruntime).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src/model_tools:$PWD/src/perception_core${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:?set OUT to the folder that receives the results}
SCRATCH=${SCRATCH:-/tmp/measure_training}
FRAMES=${FRAMES:-456}
BENCH_CORES=${BENCH_CORES:-16}
SEG_STEPS=${SEG_STEPS:-800}
DEPTH_STEPS=${DEPTH_STEPS:-300}
CORES=$(nproc)
START=$(date +%s)
mkdir -p "$OUT" "$SCRATCH"
exec > >(tee -a "$OUT/measure.log") 2>&1
log() { echo "[measure $(( $(date +%s) - START ))s] $*"; }
NGPU=$($PY -c 'import torch; print(torch.cuda.device_count())')
log "$NGPU GPU(s): $($PY -c 'import torch; print(torch.cuda.get_device_name(0), torch.__version__)'), $CORES cores"
DATA=$SCRATCH/synth
if [[ ! -f $DATA/.complete ]]; then
  log "rendering $FRAMES frames"
  $PY -m model_tools.cli synth --out "$DATA" --frames "$FRAMES" --width 640 --height 544 --val-fraction 0.105 \
      --workers "$CORES" --seed 7 --overwrite --no-progress && touch "$DATA/.complete"
fi
bench_cores=$(( BENCH_CORES < CORES ? BENCH_CORES : CORES ))
workers=$(( bench_cores - 2 ))
pin="taskset -c 0-$(( bench_cores - 1 ))"
log "seg benchmark ($bench_cores cores, $workers workers)"
CUDA_VISIBLE_DEVICES=0 timeout 110 $pin $PY bench/bench_train_seg.py --data "$DATA" --workers "$workers" --batch-size 8 \
    --json "$OUT/train_seg.json" || log "seg benchmark failed ($?)"
log "depth benchmark"
CUDA_VISIBLE_DEVICES=0 timeout 110 $pin $PY bench/bench_train_depth.py --data "$DATA" --set "num_workers=$workers" \
    --json "$OUT/train_depth.json" || log "depth benchmark failed ($?)"
log "same learning: seg $SEG_STEPS steps, depth $DEPTH_STEPS steps"
timeout 180 $PY bench/bench_train_learning.py --data "$DATA" --out "$OUT/learning.json" --work "$SCRATCH/learning" \
    --seg-steps "$SEG_STEPS" --depth-steps "$DEPTH_STEPS" --workers 3 --timeout 150 || log "learning runs failed ($?)"
if (( NGPU >= 2 )); then
  log "DDP: 1 GPU vs 2 GPUs, fast path, batch 8 per GPU"
  OUT=$OUT DATA=$DATA SCRATCH=$SCRATCH/ddp STEPS=${DDP_STEPS:-300} BATCH=8 FAST=1 RUN_TIMEOUT=150 \
      timeout 330 bash scripts/ddp_seg_demo.sh || log "DDP run failed ($?)"
fi
log "done: $(ls "$OUT" | tr '\n' ' ')"
