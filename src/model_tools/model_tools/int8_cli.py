"""Shared argument groups of the INT8 subcommands (quantize, sensitivity, compile, compare, convert).

Each subcommand is its own module under ``model_tools.quant.cmd_*`` (the
``model-tools`` dispatcher wants one module per command); the options they
share are defined once here so they read the same everywhere.
"""

from __future__ import annotations

import argparse

from model_tools.quant.images import DEFAULT_CALIBRATION_COUNT, DEFAULT_TOPIC, ImageSource
from model_tools.quant.quantize import CALIBRATION_METHODS, QuantSettings
from model_tools.registry import get_task
from perception_core.errors import ConfigError


def add_calibration_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("calibration images (one source)")
    group.add_argument("--calib-data", help="data-set folder (<root>/<split>/rgb/*.png) or any image folder")
    group.add_argument("--calib-split", default="train", help="split of --calib-data (default train)")
    group.add_argument("--calib-bag", help="rosbag2 (folder or .mcap/.db3) with camera images")
    group.add_argument("--calib-topic", default=DEFAULT_TOPIC, help=f"image topic in --calib-bag (default {DEFAULT_TOPIC})")
    group.add_argument("--calib-count", type=int, default=DEFAULT_CALIBRATION_COUNT,
                       help=f"calibration images, evenly spaced (default {DEFAULT_CALIBRATION_COUNT}; 200-500 advised)")
    group.add_argument("--resize-calibration", action="store_true",
                       help="resize frames whose size differs from the model input (default: error naming both sizes)")


def calibration_source(args: argparse.Namespace) -> ImageSource:
    if bool(args.calib_data) == bool(args.calib_bag):
        raise ConfigError("give exactly one calibration source: --calib-data FOLDER or --calib-bag BAG")
    if args.calib_count <= 0:
        raise ConfigError(f"--calib-count must be > 0, got {args.calib_count}")
    return ImageSource(folder=args.calib_data, split=args.calib_split, bag=args.calib_bag, topic=args.calib_topic)


def add_quant_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("quantization")
    group.add_argument("--calibration", choices=CALIBRATION_METHODS, default="minmax",
                       help="activation range estimation (default minmax)")
    group.add_argument("--percentile", type=float, default=99.999, help="percentile for --calibration percentile")
    group.add_argument("--per-channel", action="store_true", help="per-channel weight scales (Conv axis 0)")
    group.add_argument("--activation-bits", type=int, choices=(8, 16), default=8,
                       help="activation bits everywhere: 8 = W8A8 (default), 16 = A16W8")
    group.add_argument("--head-bits", type=int, choices=(8, 16), default=None,
                       help="activation bits of the output head tail (last Conv -> outputs); default: the task's "
                            "(registry: 16 for depth, which keeps the fine depth resolution; 8 for segmentation)")
    group.add_argument("--camera-bits", type=int, choices=(8, 16), default=16,
                       help="activation bits of a depth model's camera conditioning (its camera input's MLP and "
                            "the features it scales; only models with a camera input): default 16")
    group.add_argument("--raise-16bit", nargs="*", default=[], metavar="PART",
                       help="parts (from `model-tools sensitivity`) whose activations go to 16 bit")
    group.add_argument("--part-granularity", choices=("node", "block"), default="block",
                       help="how parts are named (default block)")
    group.add_argument("--part-depth", type=int, default=2, help="name components that make a block (default 2)")


def quant_settings(args: argparse.Namespace, task: str) -> QuantSettings:
    head_bits = args.head_bits if args.head_bits is not None else get_task(task).head_bits
    settings = QuantSettings(
        calibration=args.calibration, percentile=args.percentile, activation_bits=args.activation_bits,
        per_channel=args.per_channel, head_bits=max(head_bits, args.activation_bits),
        camera_bits=max(args.camera_bits, args.activation_bits),
        raised_parts=list(args.raise_16bit), part_granularity=args.part_granularity, part_depth=args.part_depth,
    )
    settings.validate()
    return settings


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("QNN target (default Dragonwing IQ-9075: soc_model 77, htp_arch 73)")
    group.add_argument("--soc-model", default="77", help="QNN soc_model id (default 77 = QCS9075/IQ-9075)")
    group.add_argument("--htp-arch", default="73", help="Hexagon HTP architecture (default 73 = v73)")


def add_eval_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    group = parser.add_argument_group("evaluation data")
    group.add_argument("--data", required=required, help="data-set folder with rgb/ and depth/ or label/")
    group.add_argument("--split", default="val", help="split of --data (default val)")
    group.add_argument("--count", type=int, default=0, help="frames to use, evenly spaced (default 0 = all)")


def eval_source(args: argparse.Namespace) -> ImageSource | None:
    return ImageSource(folder=args.data, split=args.split) if args.data else None
