"""`model-tools sensitivity`: rank parts by INT8 sensitivity; optionally search mixed precision.

    model-tools sensitivity --model fp32.onnx --calib-data data/synth --data data/synth --out-dir reports/sens
    model-tools sensitivity ... --target-worse-by 0.005   (raise the top parts to 16 bit until met)
"""

from __future__ import annotations

import argparse

from model_tools.int8_cli import (
    add_calibration_arguments,
    add_eval_arguments,
    add_quant_arguments,
    calibration_source,
    eval_source,
    quant_settings,
)
from model_tools.io_utils import check_output_file, check_output_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="FP32 ONNX model")
    parser.add_argument("--out-dir", required=True, help="folder for sensitivity.{csv,md,json,png}")
    parser.add_argument("--target-worse-by", type=float, default=None,
                        help="search mixed precision until the primary metric (abs_rel / mIoU) is at most this much "
                             "worse than FP32; writes --mixed-out")
    parser.add_argument("--max-raised", type=int, default=8, help="most parts the search raises to 16 bit")
    parser.add_argument("--mixed-out", help="mixed-precision QDQ model (default <out-dir>/model_mixed_qdq.onnx)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_calibration_arguments(parser)
    add_quant_arguments(parser)
    add_eval_arguments(parser)
    parser.set_defaults(count=20)


def run(args: argparse.Namespace) -> int:
    from model_tools.quant.sensitivity import run_sensitivity
    from perception_core.model_metadata import read_metadata

    check_output_folder(args.out_dir, "--out-dir")
    if args.mixed_out:
        check_output_file(args.mixed_out, "--mixed-out")
    meta = read_metadata(args.model)
    result = run_sensitivity(
        args.model, calibration_source(args), eval_source(args), args.out_dir,
        settings=quant_settings(args, meta.task), calibration_count=args.calib_count, validation_count=args.count,
        granularity=args.part_granularity, depth=args.part_depth, resize=args.resize_calibration,
        target_worse_by=args.target_worse_by, max_raised=args.max_raised, mixed_out=args.mixed_out,
        overwrite=args.overwrite,
    )
    top = ", ".join(f"{r['part']} ({r['worse_by']:+.4f})" for r in result["parts"][:5])
    print(f"sensitivity: {len(result['parts'])} parts; most sensitive: {top}; table {args.out_dir}/sensitivity.md")
    if "mixed_precision" in result:
        m = result["mixed_precision"]
        print(f"mixed precision: target met {m['target_met']}, raised {m['raised_parts']}, model {m['model']}")
    return 0
