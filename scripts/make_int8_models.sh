#!/usr/bin/env bash
# Regenerate the committed INT8 models from the committed FP32 ONNX models:
#   models/depth_levels_r18_int8_qdq.onnx      (W8A8; 16-bit head tail, camera conditioning, encoder layer1)
#   models/ddrnet23s_offroad_int8_qdq.onnx     (W8A8)
# plus their QNN context binaries for the Dragonwing IQ-9075 (soc_model 77, htp_arch 73;
# NOT committed, written as models/*.ctx.onnx) and the FP32-vs-INT8 reports in
# models/reports/int8/{depth,segmentation}/ (comparison.json/.md + figures, no npz).
#
# Steps (docs/int8.md): 0 render a held-out synthetic set (training generator settings, seed 101
# instead of 7): 299 train frames calibrate, 61 val frames evaluate; 1 quantize; 2 compile
# (CPU fallback disabled: any node HTP refuses is an error); 3 compare (QDQ on the CPU EP over all
# 61 val frames + 2 frames on QNN HTP from the context binary).
#
# Usage: bash scripts/make_int8_models.sh [WORK_DIR]   (default /tmp/int8_models; INT8_ONLY=depth took 27 min on 2 cores)
#   INT8_DATA=folder reuses an already rendered copy of step 0's data set (same command, same bytes).
#   INT8_ONLY=depth or INT8_ONLY=segmentation remakes one model and its report (after retraining only that one).
#   Each model calibrates and is judged on step 0's frames rendered at its own input size, WxH: depth 896x768,
#   segmentation 640x544 (upsampled frames are blurred, and the 768x896 depth model reads them worse:
#   models/reports/int8/depth_run26_candidate/). INT8_WIDTH / INT8_HEIGHT render both at another size. A size
#   other than 640x544 renders into its own folder, $WORK/synth_<W>x<H>.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source scripts/env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
WORK=${1:-/tmp/int8_models}
DEPTH_SIZE=${INT8_WIDTH:-896}x${INT8_HEIGHT:-768}
SEG_SIZE=${INT8_WIDTH:-640}x${INT8_HEIGHT:-544}
data_for() { if [[ $1 == 640x544 ]]; then echo "$WORK/synth"; else echo "$WORK/synth_$1"; fi; }  # data_for WxH
REPORTS=models/reports/int8
mkdir -p "$WORK" "$REPORTS"
timed() { local s; s=$(date +%s); "$@"; echo "[make_int8 $(( $(date +%s) - s )) s] $*"; }
ONLY=${INT8_ONLY:-}
case $ONLY in ""|depth|segmentation) ;; *) echo "INT8_ONLY must be depth or segmentation, got '$ONLY'" >&2; exit 2;; esac
wanted() { [[ -z $ONLY || $ONLY == "$1" ]]; }  # wanted TASK: this run remakes TASK's model

# ---- 0. held-out data (same generator settings as scripts/train_demo_models.sh, other seed) ------
render() {  # render WxH: step 0's frames at that size, once
  local out; out=$(data_for "$1")
  [[ -f $out/.complete ]] && return 0
  timed model-tools synth --out "$out" --frames 360 --width "${1%x*}" --height "${1#*x}" --val-fraction 0.17 \
      --test-fraction 0.0 --workers 2 --seed 101 --overwrite --no-progress
  touch "$out/.complete"
}
DEPTH_DATA=${INT8_DATA:-$(data_for "$DEPTH_SIZE")}
SEG_DATA=${INT8_DATA:-$(data_for "$SEG_SIZE")}
if [[ -z ${INT8_DATA:-} ]]; then
  wanted depth && render "$DEPTH_SIZE"
  wanted segmentation && render "$SEG_SIZE"
fi

# ---- 1. quantize (min/max calibration on all 299 train frames) ---------------------------------
# Depth: the tool's defaults for depth models, W8A8 with the head tail (last Conv of each head,
# Cast/Div of the integer head, the fractional Sigmoid) and the camera conditioning (the camera
# input's MLP and the encoder features it scales and shifts; at 8 bit INT8 read abs_rel 1.12x
# FP32's, at 16 bit 1.04x: docs/int8.md) at 16-bit activations, and the encoder's first residual stage
# (`--raise-16bit /net/encoder/layer1`, named at --part-depth 3): `model-tools sensitivity` ranks it first by far
# (models/reports/int8/depth_sensitivity/), and with it INT8 reads 1.05x FP32's abs_rel instead of 1.10x.
# --resize-calibration resizes frames of another size exactly as the node does (by default they are the input size).
wanted depth && timed model-tools quantize --model models/depth_levels_r18.onnx \
    --out models/depth_levels_r18_int8_qdq.onnx --calib-data "$DEPTH_DATA" --calib-split train --calib-count 300 \
    --raise-16bit /net/encoder/layer1 --part-depth 3 --resize-calibration --overwrite
wanted segmentation && timed model-tools quantize --model models/ddrnet23s_offroad.onnx \
    --out models/ddrnet23s_offroad_int8_qdq.onnx --calib-data "$SEG_DATA" --calib-split train --calib-count 300 --overwrite

# ---- 2. compile to QNN context binaries (IQ-9075), op placement next to them -------------------
for pair in depth:depth_levels_r18 segmentation:ddrnet23s_offroad; do
  wanted "${pair%%:*}" || continue
  name=${pair#*:}
  timed model-tools compile --model "models/${name}_int8_qdq.onnx" --out "models/${name}_int8.ctx.onnx" \
      --summary "$REPORTS/${name}_int8.placement.json" --soc-model 77 --htp-arch 73 --overwrite
done

# ---- 3. compare FP32 vs INT8 on the 61 held-out val frames --------------------------------------
wanted depth && timed model-tools compare --fp32 models/depth_levels_r18.onnx \
    --int8 models/depth_levels_r18_int8_qdq.onnx --htp-model models/depth_levels_r18_int8.ctx.onnx \
    --htp-frames 2 --data "$DEPTH_DATA" --split val --out-dir "$WORK/compare_depth" --overwrite
wanted segmentation && timed model-tools compare --fp32 models/ddrnet23s_offroad.onnx \
    --int8 models/ddrnet23s_offroad_int8_qdq.onnx --htp-model models/ddrnet23s_offroad_int8.ctx.onnx \
    --htp-frames 2 --data "$SEG_DATA" --split val --out-dir "$WORK/compare_seg" --overwrite

# Reports without the per-frame npz outputs (those stay in $WORK).
for pair in depth:compare_depth segmentation:compare_seg; do
  wanted "${pair%%:*}" || continue
  dest=$REPORTS/${pair%%:*}
  mkdir -p "$dest"
  cp "$WORK/${pair#*:}"/comparison.json "$WORK/${pair#*:}"/comparison.md "$WORK/${pair#*:}"/*.png "$dest"/
done
# Optional (INT8_BASELINE=1, ~12 min more): plain W8A8 depth (8-bit head tail too), the baseline that
# shows why the head tail is kept at 16 bit; its report goes to $REPORTS/depth_w8a8_baseline/.
if [[ ${INT8_BASELINE:-0} == 1 ]] && wanted depth; then
  timed model-tools quantize --model models/depth_levels_r18.onnx --out "$WORK/depth_w8a8_qdq.onnx" \
      --calib-data "$DEPTH_DATA" --calib-split train --calib-count 300 --resize-calibration --head-bits 8 --overwrite
  timed model-tools compare --fp32 models/depth_levels_r18.onnx --int8 "$WORK/depth_w8a8_qdq.onnx" --htp-frames 0 \
      --no-save-outputs --data "$DEPTH_DATA" --split val --out-dir "$WORK/compare_depth_w8a8" --overwrite
  mkdir -p "$REPORTS/depth_w8a8_baseline"
  cp "$WORK"/compare_depth_w8a8/comparison.json "$WORK"/compare_depth_w8a8/comparison.md \
     "$WORK"/compare_depth_w8a8/*.png "$REPORTS/depth_w8a8_baseline/"
fi
echo "[make_int8] done: models/*_int8_qdq.onnx, models/*_int8.ctx.onnx (not committed), $REPORTS/"
