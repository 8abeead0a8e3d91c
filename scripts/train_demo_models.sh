#!/usr/bin/env bash
# Train the demo models on a GPU box, end to end in < 9.5 minutes:
#   1. render synthetic data (the generator with its default camera ranges, all cores) into $SCRATCH:
#      val and test splits first, then as many train frames as RENDER_MAX_S seconds allow (at most TRAIN_FRAMES),
#   2. train the depth model (ResNet-18 `levels`, camera-aware) and the segmentation model [+ the `sigmoid`
#      depth comparison], JOBS_PER_GPU jobs at once on each GPU (CUDA_VISIBLE_DEVICES), each within a
#      wall-clock budget,
#   3. evaluate each model on the held-out test split (metrics JSON + Markdown) when TEST_FRAMES > 0,
#   4. copy fp16 state dicts (split into < 16 MiB parts) and one reports archive into $OUT (<= 8 files),
#   5. with CAMERAS_EVAL="run ...", score those runs on the held-out cameras after packaging ($OUT/cameras.tar.gz).
# Needs only python + torch + numpy/cv2/yaml/matplotlib/tqdm; run from the repository root:
#   OUT=/path/to/out bash scripts/train_demo_models.sh
# EXTRA_TRAIN_ARGS="--set k=v ..." is appended to each depth run (e.g. tiny settings for a CPU smoke run).
# Every run takes the fast path (docs/training.md): the whole step as one CUDA graph, frames decoded once
# into $SCRATCH/frame_cache_<task> and augmented as batches on the GPU. FAST_PATH=0 trains eagerly from
# loader workers instead.
# Join the parts again with: model-tools depth join --prefix OUT/depth_levels_r18_fp16 --out model_fp16.pt
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src/model_tools:$PWD/src/perception_core${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
OUT=${OUT:?set OUT to the folder that receives the results}
SCRATCH=${SCRATCH:-/tmp/demo_train}
CORES=${CORES:-$(nproc)}
TRAIN_FRAMES=${TRAIN_FRAMES:-2400}
VAL_FRAMES=${VAL_FRAMES:-200}
TEST_FRAMES=${TEST_FRAMES:-200}
RENDER_MAX_S=${RENDER_MAX_S:-}       # cap on rendering the train split (seconds); empty = render all TRAIN_FRAMES
SEED=${SEED:-7}                      # generator seed of the rendered data set
DRIVE_SHARE=${DRIVE_SHARE:-0}        # share of frames from drive scenes (model-tools synth --drive-share), every split
# FOCUS_SYNTH_ARGS="--hfov 60 70" (any `model-tools synth` options) renders a second folder, FOCUS_SHARE of the
# train and val frames and of the render time, mixed into every depth run's data (e.g. more frames of the cameras
# that the held-out grid shows the model worst at). Several focus folders: option groups separated by ";"
# (FOCUS_SYNTH_ARGS="--mount-height 1.6 2.2 --hfov 60 80 ; --mount-height 0.8 1.1 --hfov 100 110"), each folder
# FOCUS_SHARE of the frames and its own seed. Segmentation and the test split keep the main folder only.
FOCUS_SYNTH_ARGS=${FOCUS_SYNTH_ARGS:-}
FOCUS_SHARE=${FOCUS_SHARE:-0.3}
FRAME_W=${FRAME_W:-896}  # the depth model's input (config/train/depth_levels_r18.yaml): frames are not upsampled
FRAME_H=${FRAME_H:-768}
# Minutes of training per GPU queue (split between the jobs that share a queue); the rest of the
# 9.5 minutes goes to rendering, start-up, evaluation and packaging.
QUEUE_TRAIN_MIN=${QUEUE_TRAIN_MIN:-6.0}
NGPU=${NGPU:-$($PY -c 'import torch; print(torch.cuda.device_count())')}
JOBS_PER_GPU=${JOBS_PER_GPU:-1}
if [[ " ${ONLY:-} " == *" depth_levels_r18_variant "* && -z ${VARIANT_ARGS:-} ]]; then
  echo "train_demo_models.sh: depth_levels_r18_variant needs VARIANT_ARGS=\"--set key=value ...\" (what differs)" >&2
  exit 2
fi
START=$(date +%s)
log() { echo "[train_demo $(( $(date +%s) - START ))s] $*"; }
mkdir -p "$OUT" "$SCRATCH"
rm -f "$SCRATCH"/*.failed
DATA=$SCRATCH/synth
FOCUS_GROUPS=()
# Focus folder i: synth_focus, then synth_focus2, synth_focus3, ... (the first keeps its name from one-folder runs).
focus_dir() { if (( $1 == 0 )); then echo "$SCRATCH/synth_focus"; else echo "$SCRATCH/synth_focus$(( $1 + 1 ))"; fi; }
if [[ -n $FOCUS_SYNTH_ARGS ]]; then IFS=';' read -r -a FOCUS_GROUPS <<< "$FOCUS_SYNTH_ARGS"; fi
RUNS=$SCRATCH/runs
DEPTH_DATA="--data $DATA"
share() { $PY -c "import sys; print(max(1, round(float(sys.argv[1]) * float(sys.argv[2]))))" "$@"; }
MAIN_SHARE=1
if (( ${#FOCUS_GROUPS[@]} > 0 )); then
  MAIN_SHARE=$($PY -c "print(1.0 - ${#FOCUS_GROUPS[@]} * float('$FOCUS_SHARE'))")
  $PY -c "import sys; sys.exit(float('$MAIN_SHARE') <= 0)" \
    || { echo "train_demo_models.sh: ${#FOCUS_GROUPS[@]} focus folders x FOCUS_SHARE=$FOCUS_SHARE leave no main share" >&2; exit 2; }
  DEPTH_DATA="--source synthetic=$DATA"
  for i in "${!FOCUS_GROUPS[@]}"; do DEPTH_DATA+=" --source synthetic=$(focus_dir "$i")"; done
fi

# ---- 1. data -----------------------------------------------------------------------------------
render() {  # render FOLDER SEED [synth options...]
  local out=$1 seed=$2; shift 2
  $PY -m model_tools.cli synth --out "$out" --width "$FRAME_W" --height "$FRAME_H" --workers "$CORES" \
      --seed "$seed" --drive-share "$DRIVE_SHARE" --overwrite --no-progress "$@"
}
if [[ ! -f $DATA/.complete ]]; then
  synth() { render "$DATA" "$SEED" "$@"; }
  log "rendering $VAL_FRAMES val + $TEST_FRAMES test + up to $TRAIN_FRAMES train ${FRAME_W}x${FRAME_H} frames on $CORES cores into $DATA"
  synth --split val --frames "$(share "$MAIN_SHARE" "$VAL_FRAMES")"
  if (( TEST_FRAMES > 0 )); then synth --split test --frames "$TEST_FRAMES"; fi
  synth --split train --frames "$(share "$MAIN_SHARE" "$TRAIN_FRAMES")" \
      ${RENDER_MAX_S:+--max-seconds "$(share "$MAIN_SHARE" "$RENDER_MAX_S")"}
  touch "$DATA/.complete"
fi
for i in "${!FOCUS_GROUPS[@]}"; do
  # Each folder its own seed (SEED + 1000, + 2000, ...), so that its scenes are not another folder's again.
  dir=$(focus_dir "$i")
  [[ -f $dir/.complete ]] && continue
  focus_args=${FOCUS_GROUPS[$i]}
  focus() { render "$dir" "$(( SEED + 1000 * (i + 1) ))" $focus_args "$@"; }
  log "rendering focus folder $(( i + 1 )) ($focus_args, $FOCUS_SHARE of the frames) into $dir"
  focus --split val --frames "$(share "$FOCUS_SHARE" "$VAL_FRAMES")"
  focus --split train --frames "$(share "$FOCUS_SHARE" "$TRAIN_FRAMES")" \
      ${RENDER_MAX_S:+--max-seconds "$(share "$FOCUS_SHARE" "$RENDER_MAX_S")"}
  touch "$dir/.complete"
done

# ---- 2. training jobs --------------------------------------------------------------------------
if [[ ${FAST_PATH:-1} == 1 ]]; then
  FAST_DEPTH="--set step_mode=cuda_graph --set data_pipeline=cached --set cache_dir=$SCRATCH/frame_cache_depth"
  FAST_SEG="--set step_mode=cuda_graph --set data_pipeline=cached --set cache_dir=$SCRATCH/frame_cache_seg"
else
  FAST_DEPTH="" FAST_SEG=""
fi
# Each job: "<run name>|<command line, with @BUDGET@ and @WORKERS@ filled in per queue>".
JOBS=(
  "depth_levels_r18|$PY -m model_tools.cli depth train --config config/train/depth_levels_r18.yaml $DEPTH_DATA --run-dir $RUNS/depth_levels_r18 --time-budget-min @BUDGET@ --set num_workers=@WORKERS@ $FAST_DEPTH ${EXTRA_TRAIN_ARGS:-}"
  # ---- segmentation job ----
  # DDRNet23-Slim on the synthetic frames (config/train/seg_ddrnet23s_demo.yaml: the segmentation recipe, shortened).
  # Listed second on purpose: job i runs in queue (i % queues), queue q on GPU (q % NGPU), so with 2 GPUs
  # segmentation has GPU 1 to itself, concurrent with both depth runs on GPU 0; with 1 GPU and
  # JOBS_PER_GPU=2 it shares the GPU with the levels depth run, concurrently. SEG_EXTRA_TRAIN_ARGS="--set k=v ..."
  # is appended (EXTRA_TRAIN_ARGS carries depth-only keys, so it is not).
  "seg_ddrnet23s|$PY -m model_tools.cli seg train --config config/train/seg_ddrnet23s_demo.yaml --data $DATA --run-dir $RUNS/seg_ddrnet23s --time-budget-min @BUDGET@ --set num_workers=@WORKERS@ $FAST_SEG ${SEG_EXTRA_TRAIN_ARGS:-}"
  "depth_sigmoid_r18|$PY -m model_tools.cli depth train --config config/train/depth_sigmoid_r18.yaml $DEPTH_DATA --run-dir $RUNS/depth_sigmoid_r18 --time-budget-min @BUDGET@ --set num_workers=@WORKERS@ $FAST_DEPTH ${EXTRA_TRAIN_ARGS:-}"
)
# Jobs that run only when ONLY names them: the levels depth run with the depth-edge weight (loss.edge_weight,
# docs/depth.md; EDGE_WEIGHT, default 3.0), with the relief weight (loss.relief_weight: the ground off the
# vehicle's plane; RELIEF_WEIGHT, default 3.0) or with any other settings (VARIANT_ARGS="--set k=v ...", required
# for depth_levels_r18_variant), each for an A/B against depth_levels_r18 on the same frames in one call
# (JOBS_PER_GPU=2 trains two at once on one GPU). Each has its own frame cache: two runs must not fill one folder.
OPTIONAL_JOBS=(
  "depth_levels_r18_edges|$PY -m model_tools.cli depth train --config config/train/depth_levels_r18.yaml $DEPTH_DATA --run-dir $RUNS/depth_levels_r18_edges --time-budget-min @BUDGET@ --set num_workers=@WORKERS@ ${FAST_DEPTH//frame_cache_depth/frame_cache_depth_edges} --set loss.edge_weight=${EDGE_WEIGHT:-3.0} ${EXTRA_TRAIN_ARGS:-}"
  "depth_levels_r18_relief|$PY -m model_tools.cli depth train --config config/train/depth_levels_r18.yaml $DEPTH_DATA --run-dir $RUNS/depth_levels_r18_relief --time-budget-min @BUDGET@ --set num_workers=@WORKERS@ ${FAST_DEPTH//frame_cache_depth/frame_cache_depth_relief} --set loss.relief_weight=${RELIEF_WEIGHT:-3.0} ${EXTRA_TRAIN_ARGS:-}"
  # (Run 16's A/B of the camera input used a job depth_levels_r18_camera, "--set model.camera_input=true": the
  # config has it since, and VARIANT_ARGS="--set model.camera_input=false" gives that A/B's other half.)
  "depth_levels_r18_variant|$PY -m model_tools.cli depth train --config config/train/depth_levels_r18.yaml $DEPTH_DATA --run-dir $RUNS/depth_levels_r18_variant --time-budget-min @BUDGET@ --set num_workers=@WORKERS@ ${FAST_DEPTH//frame_cache_depth/frame_cache_depth_variant} ${VARIANT_ARGS:-} ${EXTRA_TRAIN_ARGS:-}"
)
# ONLY="name ..." keeps just those jobs (e.g. one device call per pair of runs).
if [[ -n ${ONLY:-} ]]; then
  kept=()
  for job in "${JOBS[@]}" "${OPTIONAL_JOBS[@]}"; do [[ " $ONLY " == *" ${job%%|*} "* ]] && kept+=("$job"); done
  JOBS=("${kept[@]}")
fi
NAMES=(); for job in "${JOBS[@]}"; do NAMES+=("${job%%|*}"); done
gpus=$(( NGPU > 0 ? NGPU : 1 ))
queues=$(( gpus * JOBS_PER_GPU ))
(( queues > ${#JOBS[@]} )) && queues=${#JOBS[@]}
concurrent=$queues
workers=$(( CORES / concurrent - 1 )); (( workers < 2 )) && workers=2
log "${#JOBS[@]} training jobs on $NGPU GPU(s): $queues queue(s) ($JOBS_PER_GPU per GPU), $workers loader workers per job"
pids=()
for (( q = 0; q < queues; q++ )); do
  mine=()
  for (( j = q; j < ${#JOBS[@]}; j += queues )); do mine+=("${JOBS[$j]}"); done
  budget=$($PY -c "print(round(($QUEUE_TRAIN_MIN - 0.3 * ${#mine[@]}) / ${#mine[@]}, 2))")  # 0.3 min/job for start-up and validation
  (
    export CUDA_VISIBLE_DEVICES=$(( q % gpus ))
    for job in "${mine[@]}"; do
      name=${job%%|*}; cmd=${job#*|}
      cmd=${cmd//@BUDGET@/$budget}; cmd=${cmd//@WORKERS@/$workers}
      mkdir -p "$RUNS"
      log "GPU $CUDA_VISIBLE_DEVICES (queue $q): $name for $budget min"
      if [[ -f $RUNS/$name/checkpoints/last.pt && ! -f $RUNS/$name/summary.json ]]; then cmd="$cmd --resume"; fi
      if [[ ! -f $RUNS/$name/summary.json ]]; then
        # A failed job must not cost the others their results: note it, package the rest, fail at the end.
        $cmd > "$SCRATCH/$name.log" 2>&1 || { log "$name FAILED (see $SCRATCH/$name.log)"; tail -20 "$SCRATCH/$name.log"; touch "$SCRATCH/$name.failed"; continue; }
      fi
      tail -1 "$SCRATCH/$name.log"
    done
  ) &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
failed=""; for f in "$SCRATCH"/*.failed; do [[ -e $f ]] && failed+="$(basename "$f" .failed) "; done
[[ -z $failed ]] || log "failed jobs: $failed (packaging the others)"
kept=(); for name in "${NAMES[@]}"; do [[ -f $RUNS/$name/model_fp16.pt ]] && kept+=("$name"); done
NAMES=("${kept[@]}")

# ---- 3. evaluation on the held-out split -------------------------------------------------------
EVAL_NAMES=()
if [[ -d $DATA/test/rgb ]]; then EVAL_NAMES=("${NAMES[@]}"); else log "no test split: evaluation skipped"; fi
for name in "${EVAL_NAMES[@]}"; do
  [[ $name == depth_* ]] || continue
  log "evaluating $name on the test split"
  CUDA_VISIBLE_DEVICES=0 $PY -m model_tools.cli depth eval --checkpoint "$RUNS/$name/model_fp16.pt" --data "$DATA" \
      --split test --workers "$(( CORES / 2 ))" --batch-size 16 > "$SCRATCH/$name.eval.log" 2>&1 \
      || { tail -20 "$SCRATCH/$name.eval.log"; exit 1; }
  grep -E "abs_rel|\| a1" "$SCRATCH/$name.eval.log" || true
done
# ---- segmentation evaluation ----
# Per-class IoU, mIoU, pixel accuracy and the confusion matrix on the held-out test frames (the full
# FRAME_WxFRAME_H image), written beside the weights: eval_test.json ("metrics" key), eval_test.md,
# eval_test_confusion.png.
if [[ -d $DATA/test/rgb && " ${NAMES[*]} " == *" seg_ddrnet23s "* ]]; then
log "evaluating seg_ddrnet23s on the test split"
CUDA_VISIBLE_DEVICES=0 $PY -m model_tools.cli seg eval --checkpoint "$RUNS/seg_ddrnet23s/model_fp16.pt" --data "$DATA" \
    --split test --workers "$(( CORES / 2 ))" --batch-size 16 --overwrite > "$SCRATCH/seg_ddrnet23s.eval.log" 2>&1 \
    || { tail -20 "$SCRATCH/seg_ddrnet23s.eval.log"; exit 1; }
grep -E "mIoU|IoU " "$SCRATCH/seg_ddrnet23s.eval.log" || true
fi

# ---- 3b. costmap bench (COSTMAP_BENCH=1) ----------------------------------------------------------
# Each levels depth run exported to ONNX and scored on the costmap bench's drives (bench/bench_costmap.py, with
# the segmentation model of models/weights, or of this call when it trained one), all runs at once on the CPU
# cores; costmap_bench.json joins the reports archive. COSTMAP_BENCH_ARGS is appended (default --split-depth;
# e.g. "--seeds 101 202 --split-depth"), split as the shell splits a command line, so quotes work
# (COSTMAP_BENCH_ARGS="--range-correction ''" passes an empty value; plain word splitting passed the two quote
# characters). The time comes out of the call's: lower QUEUE_TRAIN_MIN by ~3 min.
BENCH_NAMES=(); for name in "${NAMES[@]}"; do [[ $name == depth_levels_* ]] && BENCH_NAMES+=("$name"); done
if [[ ${COSTMAP_BENCH:-0} == 1 && ${#BENCH_NAMES[@]} -gt 0 ]]; then
  mkdir -p "$SCRATCH/onnx"
  seg_ckpt=models/weights/seg_ddrnet23s_fp16 seg_config=models/reports/seg_ddrnet23s/config.yaml
  if [[ -f $RUNS/seg_ddrnet23s/model_fp16.pt ]]; then
    seg_ckpt=$RUNS/seg_ddrnet23s/model_fp16.pt seg_config=$RUNS/seg_ddrnet23s/config.yaml
  fi
  log "costmap bench: exporting ${BENCH_NAMES[*]} and the segmentation model"
  $PY -m model_tools.cli seg export --checkpoint "$seg_ckpt" --config "$seg_config" --out "$SCRATCH/onnx/seg.onnx" \
      --variant class_id --overwrite > "$SCRATCH/seg_export.log" 2>&1 || { tail -20 "$SCRATCH/seg_export.log"; exit 1; }
  eval "bench_args=(${COSTMAP_BENCH_ARGS:---split-depth})"
  bench_pids=()
  threads=$(( CORES / ${#BENCH_NAMES[@]} )); (( threads < 1 )) && threads=1
  for name in "${BENCH_NAMES[@]}"; do
    (
      $PY -m model_tools.cli depth export --checkpoint "$RUNS/$name/model_fp16.pt" --config "$RUNS/$name/config.yaml" \
          --out "$SCRATCH/onnx/$name.onnx" --variant separate --overwrite > "$SCRATCH/$name.export.log" 2>&1 \
        && OMP_NUM_THREADS=$threads $PY bench/bench_costmap.py --depth-model "$SCRATCH/onnx/$name.onnx" \
          --seg-model "$SCRATCH/onnx/seg.onnx" --threads "$threads" --out "$RUNS/$name/costmap_bench.json" \
          "${bench_args[@]}" > "$SCRATCH/$name.bench.log" 2>&1
    ) &
    bench_pids+=($!)
  done
  for i in "${!bench_pids[@]}"; do
    name=${BENCH_NAMES[$i]}
    if wait "${bench_pids[$i]}"; then
      log "costmap bench of $name:"; grep -E "^ +obstacle_recall|^goal|^models in the loop" "$SCRATCH/$name.bench.log" || true
    else
      log "costmap bench of $name FAILED"; tail -20 "$SCRATCH/$name.export.log" "$SCRATCH/$name.bench.log" 2>/dev/null; status=1
    fi
  done
fi

# ---- 4. package into $OUT (<= 8 files, each < 16 MiB) ------------------------------------------
log "packaging into $OUT"
$PY - "$RUNS" "$OUT" "${NAMES[@]}" <<'PYEOF'
import os, sys, tarfile, json
from pathlib import Path
import torch
from model_tools.training.checkpoint import save_split
runs, out, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
# Segmentation packaging: seg_ddrnet23s is in the names above; its fp16 state dict (~11.5 MB)
# is one part (seg_ddrnet23s_fp16.part0of1.pt); eval_test_confusion.png joins the reports archive.
# Only the committed demo models travel back as weights ($OUT holds at most 64 MiB); the
# other runs (e.g. the sigmoid comparison) return their metrics and curves in the archive.
keep_weights = os.environ.get("PACK_WEIGHTS", "depth_levels_r18 seg_ddrnet23s").split()
for name in names:
    if name not in keep_weights:
        continue
    state = torch.load(runs / name / "model_fp16.pt", weights_only=True)
    for p in save_split(state, out / f"{name}_fp16"):
        print(f"  {p.name} {p.stat().st_size / 2**20:.1f} MiB")
with tarfile.open(out / "reports.tar.gz", "w:gz") as tar:
    for name in names:
        for f in ("config.yaml", "metrics.csv", "curves.png", "summary.json", "eval_test.json", "eval_test.md",
                  "eval_test_confusion.png", "costmap_bench.json"):
            if (runs / name / f).exists():
                tar.add(runs / name / f, arcname=f"{name}/{f}")
files = sorted(p for p in out.iterdir() if p.is_file())
assert len(files) <= 8, f"{len(files)} files in {out}: the device returns at most 8"
assert all(p.stat().st_size < 16 * 2**20 for p in files), "a file is >= 16 MiB"
summary = {n: json.loads((runs / n / "eval_test.json").read_text())["metrics"] for n in names if (runs / n / "eval_test.json").exists()}
print(json.dumps(summary, indent=1))
PYEOF
# ---- 5. depth per camera (CAMERAS_EVAL="run ...") ----------------------------------------------------
# Those runs' costmap-bench exports scored on the held-out cameras (model_tools.eval_cameras, its default sets:
# the command of models/reports/depth_cameras/), one after the other on all cores; the first renders the sets
# (about 2.8 min per run on 16 cores once rendered). It runs after packaging, so a call that runs out of time
# here keeps its weights and reports; each finished run's cameras.md/.json go into $OUT/cameras.tar.gz.
# CAMERAS_EVAL_ARGS is appended (e.g. "--frames 1 --default-frames 2 --random-frames 2" for a smoke run).
cams_done=()
for name in ${CAMERAS_EVAL:-}; do
    [[ -f $SCRATCH/onnx/$name.onnx ]] || { log "depth per camera: no export of $name (COSTMAP_BENCH=1 makes it)"; continue; }
    log "depth per camera: $name"
    $PY -m model_tools.eval_cameras --model "$SCRATCH/onnx/$name.onnx" --out "$RUNS/$name/cameras" \
        --work "$SCRATCH/evcams" --workers "$CORES" --threads "$CORES" ${CAMERAS_EVAL_ARGS:-} > "$SCRATCH/$name.cameras.log" 2>&1 \
      || { log "depth per camera of $name FAILED"; tail -20 "$SCRATCH/$name.cameras.log"; status=1; continue; }
    grep -E "^Grid|meet" "$RUNS/$name/cameras/cameras.md" | tail -2 || true
    cams_done+=("$name/cameras/cameras.md" "$name/cameras/cameras.json")
    tar czf "$OUT/cameras.tar.gz" -C "$RUNS" "${cams_done[@]}"
done

log "done; $OUT holds: $(ls "$OUT" | tr '\n' ' ')"
[[ -z $failed && $status == 0 ]] || { log "finished with failures: $failed"; exit 1; }
