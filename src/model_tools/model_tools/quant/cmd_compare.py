"""`model-tools compare`: FP32 vs INT8 on a data set (QDQ on the CPU EP, plus an HTP agreement sample).

    model-tools compare --fp32 fp32.onnx --int8 model_qdq.onnx --data data/synth --out-dir reports/int8 \
        [--htp-model model_ctx.onnx --htp-frames 2] [--thresholds thresholds.yaml]
"""

from __future__ import annotations

import argparse

from model_tools.int8_cli import add_eval_arguments, eval_source
from model_tools.io_utils import check_output_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fp32", required=True, help="FP32 ONNX model")
    parser.add_argument("--int8", required=True, help="QDQ ONNX model (run on the CPU EP for accuracy)")
    parser.add_argument("--out-dir", required=True, help="report folder (comparison.json/.md, figures, outputs/*.npz)")
    parser.add_argument("--htp-model", help="model for the HTP agreement sample (default: --int8); a context binary works")
    parser.add_argument("--htp-frames", type=int, default=2, help="frames run on QNN HTP for agreement (0 = skip)")
    parser.add_argument("--thresholds", help="YAML {task: {metric: [excellent, good, warning]}} degradation limits")
    parser.add_argument("--no-save-outputs", action="store_true", help="do not write per-frame npz outputs")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report in --out-dir")
    add_eval_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from model_tools.quant.compare import Thresholds, compare_models

    check_output_folder(args.out_dir, "--out-dir")
    report = compare_models(
        args.fp32, args.int8, eval_source(args), args.out_dir, count=args.count, htp_frames=args.htp_frames,
        htp_model=args.htp_model, thresholds=Thresholds.load(args.thresholds),
        save_outputs=not args.no_save_outputs, overwrite=args.overwrite,
    )
    print(f"compare: {report['frames']} frames, verdict {report['acceptability']['overall']}; "
          f"report {args.out_dir}/comparison.md")
    return 0
