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
