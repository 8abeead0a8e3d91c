"""`model-tools quantize`: FP32 ONNX -> QDQ ONNX for the QNN HTP (see docs/int8.md).

    model-tools quantize --model fp32.onnx --out model_qdq.onnx --calib-data data/synth [--per-channel]
    model-tools quantize --model fp32.onnx --out model_qdq.onnx --calib-bag drive.mcap --calib-count 300
"""

from __future__ import annotations

import argparse

from model_tools.int8_cli import add_calibration_arguments, add_quant_arguments, calibration_source, quant_settings
from model_tools.io_utils import check_output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="FP32 ONNX model with perception metadata")
    parser.add_argument("--out", required=True, help="QDQ ONNX to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_calibration_arguments(parser)
    add_quant_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from model_tools.quant.quantize import quantize_model
    from perception_core.model_metadata import read_metadata

    check_output_file(args.out, "--out")
    meta = read_metadata(args.model)
    settings = quant_settings(args, meta.task)
    result = quantize_model(args.model, args.out, calibration_source(args), settings, count=args.calib_count,
                            resize=args.resize_calibration, overwrite=args.overwrite)
    raised = ", ".join(result.raised_tensors) or "none"
    print(f"quantize: wrote {result.path} ({settings.label()}, {result.calibration_images} calibration images from "
          f"{result.calibration_source}, {result.seconds:.1f} s); 16-bit tensors: {raised}")
    return 0
