"""`model-tools` command line: one entry point, one module per subcommand.

Subcommand modules are imported only when chosen, so `model-tools --help` and
the light commands never import torch. Each module defines
``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from model_tools.errors import ModelToolsError

# name -> (module, one-line help). Add a subcommand by adding a line here.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("model_tools.doctor", "report what this environment can run (ROS, ONNX Runtime, QNN HTP)"),
    "depth": ("model_tools.depth_cli", "depth model: train, eval, export to ONNX, validate, join split weights"),
    "seg": ("model_tools.seg_cli", "DDRNet23-Slim segmentation: train, eval, export, validate, load-official"),
    "replay": ("model_tools.bags.replay", "play a rosbag2 into the ROS graph with recorded timing (ros2 bag play stand-in)"),
    "record": ("model_tools.bags.recorder", "record chosen topics of the ROS graph to a rosbag2 (mcap/sqlite3)"),
    "eval-bag": ("model_tools.bags.eval_bag", "run the depth/seg/costmap pipelines over a bag and score them (HTML report)"),
    "synth": ("model_tools.data.synth_cli", "render synthetic off-road frames (RGB, depth, labels) to folders or a rosbag2"),
    "quantize": ("model_tools.quant.cmd_quantize", "FP32 ONNX -> INT8 QDQ ONNX for the QNN HTP (calibrated, metadata kept)"),
    "sensitivity": ("model_tools.quant.cmd_sensitivity", "rank layers by INT8 sensitivity; search 16-bit mixed precision"),
    "compile": ("model_tools.quant.cmd_compile", "QDQ ONNX -> QNN context binary (EPContext) with NPU op placement"),
    "compare": ("model_tools.quant.cmd_compare", "FP32 vs INT8 accuracy report (task metrics, heads, HTP agreement)"),
    "convert": ("model_tools.quant.cmd_convert", "training run -> FP32, QDQ, context binary and comparison in one go"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<14} {help_}" for name, (_, help_) in SUBCOMMANDS.items())
    return argparse.ArgumentParser(
        prog="model-tools",
        description="Data, training, export, INT8 and runtime tools for the off-road perception models.",
        epilog=f"commands:\n{lines}\n\nRun `model-tools COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    top.add_argument("command", choices=sorted(SUBCOMMANDS), metavar="COMMAND")
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    if argv[0] not in SUBCOMMANDS:
        top.error(f"unknown command {argv[0]!r}; choose from {', '.join(sorted(SUBCOMMANDS))}")
    name, rest = argv[0], argv[1:]
    module_name, help_ = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"model-tools {name}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except ModelToolsError as err:
        print(f"model-tools {name}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"model-tools {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
