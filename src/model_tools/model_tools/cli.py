"""`model-tools` command line: one entry point, one module per subcommand.

Subcommand modules are imported only when chosen, so `model-tools --help` and
the light commands never import torch. Each module defines
``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from perception_core.errors import PerceptionError

# name -> (module, one-line help). Add a subcommand by adding a line here.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "depth": ("model_tools.depth_cli", "depth model: train, eval, export to ONNX, validate, join split weights"),
    "seg": ("model_tools.seg_cli", "DDRNet23-Slim segmentation: train, eval, export, validate, load-official"),
    "eval-bag": ("model_tools.bags.eval_bag", "run the depth/seg/costmap pipelines over a bag and score them (HTML report)"),
    "synth": ("model_tools.data.synth_cli", "render synthetic off-road frames (RGB, depth, labels) to folders or a rosbag2"),
    "quantize": ("model_tools.quant.cmd_quantize", "FP32 ONNX -> INT8 QDQ ONNX for the QNN HTP (calibrated, metadata kept)"),
    "sensitivity": ("model_tools.quant.cmd_sensitivity", "rank layers by INT8 sensitivity; search 16-bit mixed precision"),
    "compile": ("model_tools.quant.cmd_compile", "QDQ ONNX -> QNN context binary (EPContext) with NPU op placement"),
    "compare": ("model_tools.quant.cmd_compare", "FP32 vs INT8 accuracy report (task metrics, heads, HTP agreement)"),
    "convert": ("model_tools.quant.cmd_convert", "training run -> FP32, QDQ, context binary and comparison in one go"),
}


def run_cli(prog: str, description: str, subcommands: dict[str, tuple[str, str]], argv: list[str] | None) -> int:
    """Dispatch ``argv`` to a subcommand module; a PerceptionError or OSError becomes one line on stderr and exit 1.

    Shared by every command-line tool of the workspace (``model-tools``, ``perception-tools``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    lines = "\n".join(f"  {name:<14} {help_}" for name, (_, help_) in subcommands.items())
    top = argparse.ArgumentParser(
        prog=prog, description=description,
        epilog=f"commands:\n{lines}\n\nRun `{prog} COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("command", choices=sorted(subcommands), metavar="COMMAND")
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    if argv[0] not in subcommands:
        top.error(f"unknown command {argv[0]!r}; choose from {', '.join(sorted(subcommands))}")
    name, rest = argv[0], argv[1:]
    module_name, help_ = subcommands[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"{prog} {name}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except PerceptionError as err:
        print(f"{prog} {name}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a file the command reads or writes failed mid-way (disk full, removed, ...)
        print(f"{prog} {name}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog} {name}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return run_cli("model-tools", "Data, training, export, INT8 and offline evaluation tools for the off-road "
                   "perception models.", SUBCOMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
