#!/usr/bin/env bash
# Export the committed fp16 demo weights (models/weights/) to FP32 ONNX in models/.
# Run by scripts/setup_env.sh; skips a model whose ONNX is newer than its weights.
# Each export is checked against PyTorch by ONNX Runtime (fails loudly beyond tolerance).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. .venv/bin/activate
export PYTHONPATH=$PWD/src/model_tools${PYTHONPATH:+:$PYTHONPATH}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

fresh() {  # fresh OUT PART...: OUT exists and is newer than every PART
  local out=$1; shift
  [[ -f $out ]] || return 1
  for part in "$@"; do [[ $out -nt $part ]] || return 1; done
}

depth_parts=(models/weights/depth_levels_r18_fp16.part*of*.pt)
if fresh models/depth_levels_r18.onnx "${depth_parts[@]}"; then
  echo "[models] models/depth_levels_r18.onnx is up to date"
else
  echo "[models] exporting models/depth_levels_r18.onnx (ResNet-18 dual head, 256 levels, 384x640)"
  python -m model_tools.cli depth export --checkpoint models/weights/depth_levels_r18_fp16 \
    --config models/reports/depth_levels_r18/config.yaml --out models/depth_levels_r18.onnx \
    --variant separate --overwrite
fi

seg_parts=(models/weights/seg_ddrnet23s_fp16.part*of*.pt)
if fresh models/ddrnet23s_offroad.onnx "${seg_parts[@]}"; then
  echo "[models] models/ddrnet23s_offroad.onnx is up to date"
else
  echo "[models] exporting models/ddrnet23s_offroad.onnx (DDRNet23-Slim, 7 classes, class-id output, 544x640)"
  python -m model_tools.cli seg export --weights models/weights/seg_ddrnet23s_fp16 \
    --config models/reports/seg_ddrnet23s/config.yaml --out models/ddrnet23s_offroad.onnx \
    --output class_id --overwrite
fi
