"""`model-tools convert`: training run (or checkpoint / FP32 ONNX) -> FP32, QDQ, context binary, comparison.

    model-tools convert --run runs/depth_demo --calib-data data/synth [--data data/synth]
    model-tools convert --onnx fp32.onnx --out-dir deploy --calib-data data/synth
"""

from __future__ import annotations

import argparse
from pathlib import Path

from model_tools.int8_cli import (
    add_calibration_arguments,
    add_eval_arguments,
    add_quant_arguments,
    add_target_arguments,
    calibration_source,
    eval_source,
    quant_settings,
)
from model_tools.io_utils import check_output_folder
from model_tools.registry import get_task, task_names
from perception_core.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("what to convert (one)")
    src.add_argument("--run", help="training run folder (config.yaml + model_fp16.pt); results go to <run>/deploy/<stamp>")
    src.add_argument("--checkpoint", help="a checkpoint file (with --task)")
    src.add_argument("--task", choices=task_names(), help="task of --checkpoint (default: run config)")
    src.add_argument("--onnx", help="an existing FP32 ONNX model (skips export)")
    src.add_argument("--variant", help="export output form (default: the task's NPU form: "
                     + ", ".join(f"{n} {get_task(n).deploy_variant}" for n in task_names()) + ")")
    parser.add_argument("--out-dir", help="parent of the new result folder (default <run>/deploy)")
    parser.add_argument("--htp-frames", type=int, default=2, help="frames for the HTP agreement check (0 = skip)")
    add_calibration_arguments(parser)
    add_quant_arguments(parser)
    add_target_arguments(parser)
    add_eval_arguments(parser, required=False)


def run(args: argparse.Namespace) -> int:
    from model_tools.quant.convert import convert, run_task
    from perception_core.model_metadata import read_metadata

    if args.out_dir or args.run:
        check_output_folder(args.out_dir or Path(args.run) / "deploy", "--out-dir")
    if args.onnx:
        task = read_metadata(args.onnx).task
    elif args.task:
        task = args.task
    elif args.run or args.checkpoint:
        task = run_task(Path(args.run) if args.run else Path(args.checkpoint).parent)
    else:
        raise ConfigError("convert needs --run, --checkpoint with --task, or --onnx")
    summary = convert(
        run_dir=args.run, checkpoint=args.checkpoint, task=args.task, onnx_path=args.onnx, out_parent=args.out_dir,
        calibration=calibration_source(args), validation=eval_source(args), settings=quant_settings(args, task),
        calibration_count=args.calib_count, validation_count=args.count, htp_frames=args.htp_frames,
        resize_calibration=args.resize_calibration, soc_model=args.soc_model, htp_arch=args.htp_arch,
        variant=args.variant,
    )
    print(f"convert: {summary['status']}; verdict {summary['steps']['compare']['verdict']}; "
          f"artifacts in {summary['folder']}")
    return 0
