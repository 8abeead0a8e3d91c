#!/usr/bin/env bash
# Export the committed fp16 demo weights (models/weights/) to FP32 ONNX in models/.
# Run by scripts/setup_env.sh before colcon build; skips a model whose ONNX is newer than its weights.
# Each export is checked against PyTorch by ONNX Runtime (fails loudly beyond tolerance).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. .venv/bin/activate
# Runs before colcon build (the build installs models/ into the bringup share), so from the sources.
export PYTHONPATH=$PWD/src/model_tools:$PWD/src/perception_core${PYTHONPATH:+:$PYTHONPATH}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

fresh() {  # fresh OUT PART...: OUT exists, is newer than every PART and carries its content hash (and, for a
  # depth model, the hash of the weights it came from, which its range correction is matched by)
  local out=$1; shift
  [[ -f $out ]] || return 1
  for part in "$@"; do [[ $out -nt $part ]] || return 1; done
  python -c 'import sys; from perception_core.model_metadata import read_metadata
meta = read_metadata(sys.argv[1])
sys.exit(0 if meta.content_sha256 and (meta.task != "depth" or meta.extra.get("weights_sha256")) else 1)' "$out"
}

export_if_stale() {  # export_if_stale OUT WEIGHTS_PREFIX WHAT COMMAND...: run COMMAND unless OUT is fresh
  local out=$1 prefix=$2 what=$3; shift 3
  local parts=("$prefix".part*of*.pt)
  if fresh "$out" "${parts[@]}"; then
    echo "[models] $out is up to date"
  else
    echo "[models] exporting $out ($what)"
    "$@"
  fi
}

export_if_stale models/depth_levels_r18.onnx models/weights/depth_levels_r18_fp16 \
  "ResNet-18 dual head, 256 levels, 768x896" \
  python -m model_tools.cli depth export --checkpoint models/weights/depth_levels_r18_fp16 \
    --config models/reports/depth_levels_r18/config.yaml --out models/depth_levels_r18.onnx \
    --variant separate --overwrite

export_if_stale models/ddrnet23s_offroad.onnx models/weights/seg_ddrnet23s_fp16 \
  "DDRNet23-Slim, 7 classes, class-id output, 544x640" \
  python -m model_tools.cli seg export --checkpoint models/weights/seg_ddrnet23s_fp16 \
    --config models/reports/seg_ddrnet23s/config.yaml --out models/ddrnet23s_offroad.onnx \
    --variant class_id --overwrite
