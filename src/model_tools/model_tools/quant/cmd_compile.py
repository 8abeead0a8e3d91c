"""`model-tools compile`: QDQ ONNX -> QNN context-binary EPContext ONNX, every node on the NPU.

    model-tools compile --model model_qdq.onnx --out model_ctx.onnx [--soc-model 77 --htp-arch 73]
    model-tools compile --model model_qdq.onnx --out model_ctx.onnx --via ai-hub   (needs a qai-hub token)
"""

from __future__ import annotations

import argparse

from model_tools.int8_cli import add_target_arguments
from model_tools.io_utils import check_output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="QDQ ONNX model (from `model-tools quantize`)")
    parser.add_argument("--out", required=True, help="EPContext ONNX to write (the QNN context binary is embedded)")
    parser.add_argument("--summary", help="op-placement JSON (default <out stem>.placement.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out/--summary if they exist")
    parser.add_argument("--no-check-run", action="store_true", help="skip the one-frame HTP run of the result")
    parser.add_argument("--via", choices=("local", "ai-hub"), default="local",
                        help="local QNN EP (default) or Qualcomm AI Hub (qai-hub client + API token)")
    parser.add_argument("--aihub-device", default=None, help="AI Hub device name (default: Dragonwing IQ-9075 EVK)")
    add_target_arguments(parser)


def run(args: argparse.Namespace) -> int:
    check_output_file(args.out, "--out")
    if args.summary:
        check_output_file(args.summary, "--summary")
    if args.via == "ai-hub":
        from model_tools.quant.aihub import IQ9075_DEVICE, build_compile_job, submit_compile_job
        from perception_core.model_metadata import read_metadata

        job = build_compile_job(args.model, read_metadata(args.model), device_name=args.aihub_device or IQ9075_DEVICE)
        path = submit_compile_job(job, args.out, overwrite=args.overwrite)
        print(f"compile: AI Hub job for {job.device_name!r} ({job.options}) wrote {path}")
        return 0
    from model_tools.quant.compile import compile_context_binary, placement_markdown

    summary = compile_context_binary(args.model, args.out, soc_model=args.soc_model, htp_arch=args.htp_arch,
                                     overwrite=args.overwrite, check_run=not args.no_check_run,
                                     summary_path=args.summary)
    print(f"compile: wrote {summary.output}")
    print(placement_markdown(summary))
    return 0
