"""`model-tools depth {train,eval,export,validate,join}`: the depth model's life cycle.

    model-tools depth train --config config/train/depth_levels_r18.yaml [--set k=v ...] [--resume] [--teacher CKPT]
    model-tools depth eval --checkpoint RUN/model_fp16.pt --data DATA [--split test]
    model-tools depth export --checkpoint CKPT --out depth.onnx [--variant composed|separate] [--opset 17]
    model-tools depth validate --onnx depth.onnx --checkpoint CKPT
    model-tools depth join --prefix DIR/depth_levels_fp16 --out model_fp16.pt

A checkpoint is a full training checkpoint (carries its config), a plain
state dict (``model_fp16.pt``; its config is ``--config`` or the run's
``config.yaml`` beside it) or the prefix of split parts (``X.part0of2.pt``, ``X.part1of2.pt``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from model_tools.io_utils import check_output_file, check_output_folder
from perception_core.errors import ConfigError

ACTIONS = ("train", "eval", "export", "validate", "join")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    train = sub.add_parser("train", help="train a depth model with the shared engine")
    train.add_argument("--config", required=True, help="training config YAML (config/train/depth_*.yaml)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, dotted for sections (model.kind=sigmoid); repeatable")
    train.add_argument("--run-dir", help="output folder (default runs/<run_name>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --run-dir from checkpoints/last.pt")
    train.add_argument("--teacher", help="distil from this frozen FP32 teacher checkpoint (sets distill.teacher)")
    train.add_argument("--data", help="data root (sets data.root)")
    train.add_argument("--time-budget-min", type=float, help="wall-clock budget; the LR schedule ends with it")
    train.add_argument("--max-steps", type=int, help="cap on optimiser steps")
    train.add_argument("--stop-after-steps", type=int, help="stop (checkpointed) at this step, to resume later")

    ev = sub.add_parser("eval", help="Eigen metrics of a checkpoint on a data split (JSON + Markdown)")
    _checkpoint_args(ev)
    ev.add_argument("--data", required=True, help="data root (SyntheticFolderDataset layout)")
    ev.add_argument("--split", default="test")
    ev.add_argument("--out", help="output folder (default: beside the checkpoint)")
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ev.add_argument("--device", default="auto")
    ev.add_argument("--max-samples", type=int, default=0)

    ex = sub.add_parser("export", help="export to ONNX (then validate against PyTorch)")
    _checkpoint_args(ex)
    ex.add_argument("--out", required=True, help="output .onnx path")
    ex.add_argument("--variant", choices=("composed", "separate"), default="composed",
                    help="composed: one 'depth' output; separate: 'integer' and 'fractional' composed on the host")
    ex.add_argument("--opset", type=int, default=17)
    ex.add_argument("--height", type=int, help="input height (default: the config's model.input_height)")
    ex.add_argument("--width", type=int, help="input width (default: the config's model.input_width)")
    ex.add_argument("--overwrite", action="store_true")
    ex.add_argument("--no-validate", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    ex.add_argument("--validate-inputs", type=int, default=3)

    va = sub.add_parser("validate", help="compare an exported ONNX file with PyTorch on random inputs")
    _checkpoint_args(va)
    va.add_argument("--onnx", required=True)
    va.add_argument("--inputs", type=int, default=4)
    va.add_argument("--report", help="JSON report path (default X.validation.json)")

    jo = sub.add_parser("join", help="join split fp16 state-dict parts into one file")
    jo.add_argument("--prefix", required=True, help="parts are PREFIX.part0of2.pt, PREFIX.part1of2.pt, ...")
    jo.add_argument("--out", required=True)


def _checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="training checkpoint, fp16 state dict, or split prefix")
    p.add_argument("--config", help="training config of a plain state dict (default: config.yaml beside it)")


# ---- model loading -----------------------------------------------------------------------------


def load_depth_model(checkpoint: str | os.PathLike[str], config_path: str | os.PathLike[str] | None = None) -> Any:
    """(DualHeadDepthNet in eval mode, DepthModelConfig) from any checkpoint form.

    The architecture comes from the checkpoint's own config, else ``config_path``,
    else ``config.yaml`` beside the checkpoint. When both the checkpoint and a
    config are given, a differing architecture field raises ConfigError naming it.
    """
    from model_tools.models.depth_net import DepthModelConfig, DualHeadDepthNet
    from model_tools.training.checkpoint import load_state_dict_checked, load_weights
    from model_tools.training.config import dataclass_from_dict, load_config

    checkpoint = Path(checkpoint)
    state, saved = load_weights(checkpoint)
    given = None
    if config_path is None and saved is None:
        sibling = checkpoint.parent / "config.yaml"
        if not sibling.is_file():
            raise ConfigError(f"{checkpoint} is a plain state dict and no config.yaml is beside it: pass --config")
        config_path = sibling
    if config_path is not None:
        given = dataclass_from_dict(DepthModelConfig, load_config(config_path).model, f"{config_path}: model")
    if saved is not None:
        model_cfg = dataclass_from_dict(DepthModelConfig, saved.get("model", {}), f"{checkpoint}: model")
        if given is not None:
            given.check_matches(model_cfg.to_dict(), f"{checkpoint} vs {config_path}")
    else:
        assert given is not None
        model_cfg = given
    model_cfg.encoder_weights = ""
    net = DualHeadDepthNet(model_cfg)
    load_state_dict_checked(net, state, str(checkpoint))
    return net.float().eval(), model_cfg


def depth_metadata(model_cfg: Any, variant: str, height: int, width: int, checkpoint: str) -> Any:
    from model_tools.models.depth_net import NORM_MEAN, NORM_STD
    from perception_core.model_metadata import ModelMetadata

    levels = model_cfg.levels if model_cfg.kind == "levels" else 0
    step = model_cfg.step
    if variant == "composed":
        outputs = ["depth"]
        meaning = {"depth": f"metres [1,1,{height},{width}] float32 = integer*max_depth + fractional; valid in [min_depth, max_depth]"}
    else:
        outputs = ["integer", "fractional"]
        int_meaning = (f"ArgMax level / {levels - 1} in [0,1] (float; step {step:.6g} m)" if model_cfg.kind == "levels"
                       else "sigmoid in [0,1]; depth part = integer*max_depth (trained on whole metres)")
        meaning = {"integer": int_meaning, "fractional": f"metres in [0, {step:.6g}) (sigmoid * step)",
                   "composition": "depth = integer * max_depth + fractional (on the host)"}
    return ModelMetadata(
        task="depth", input_name="rgb", input_shape=[1, 3, height, width], output_names=outputs,
        input_scale=1.0 / 255.0, mean=[NORM_MEAN] * 3, std=[NORM_STD] * 3, model_name=f"dualhead_{model_cfg.encoder}_{model_cfg.kind}",
        output_meaning=meaning, max_depth=float(model_cfg.max_depth), min_depth=float(model_cfg.min_depth),
        integer_head_kind=model_cfg.kind, levels=levels, depth_outputs=variant,
        extra={"checkpoint": str(checkpoint), "encoder": model_cfg.encoder, "padding": model_cfg.padding,
               "integer_step_m": step, "decoder_channels": list(model_cfg.decoder_channels)},
    )


def discrete_outputs(model_cfg: Any, variant: str) -> dict[str, float]:
    """Outputs that pass through ArgMax, with their quantum (for validation)."""
    if model_cfg.kind != "levels":
        return {}
    if variant == "composed":
        return {"depth": model_cfg.step}
    return {"integer": 1.0 / (model_cfg.levels - 1)}


def export_depth(
    checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *, variant: str = "composed", opset: int = 17,
    height: int | None = None, width: int | None = None, config_path: str | os.PathLike[str] | None = None,
    overwrite: bool = False, validate: bool = True, validate_inputs: int = 3,
) -> dict[str, Any]:
    """Export a depth checkpoint to ONNX and (by default) validate it; returns the validation report or {}."""
    from model_tools.export.onnx_export import export_onnx
    from model_tools.export.validate import validate_onnx
    from model_tools.models.depth_net import DepthExportModule, check_input_size

    net, model_cfg = load_depth_model(checkpoint, config_path)
    height = height or model_cfg.input_height
    width = width or model_cfg.input_width
    check_input_size(height, width, "export --height/--width")
    module = DepthExportModule(net, variant)
    export_onnx(module, out, depth_metadata(model_cfg, variant, height, width, str(checkpoint)), opset=opset, overwrite=overwrite)
    if not validate:
        return {}
    return validate_onnx(out, module, n_inputs=validate_inputs, discrete=discrete_outputs(model_cfg, variant))


# ---- actions -----------------------------------------------------------------------------------


def _train(args: argparse.Namespace) -> int:
    from model_tools.tasks.depth import DepthTask
    from model_tools.training.config import load_config
    from model_tools.training.engine import Trainer

    overrides = list(args.overrides)
    if args.teacher:
        overrides.append(f"distill.teacher={args.teacher}")
    if args.data:
        overrides.append(f"data.root={args.data}")
    if args.time_budget_min is not None:
        overrides.append(f"time_budget_min={args.time_budget_min}")
    if args.max_steps is not None:
        overrides.append(f"max_steps={args.max_steps}")
    config = load_config(args.config, overrides)
    if config.task != "depth":
        raise ConfigError(f"{args.config}: field task is {config.task!r}, expected 'depth'")
    run_dir = check_output_folder(args.run_dir or Path("runs") / config.run_name, "--run-dir")
    summary = Trainer(DepthTask(config, str(args.config)), config, run_dir, resume=args.resume).fit(args.stop_after_steps)
    print(f"depth train: {summary['stop_reason']} after {summary['steps']} steps; best {summary['best']}; run {run_dir}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    out_dir = check_output_folder(args.out or Path(args.checkpoint).parent, "--out")
    import torch
    from torch.utils.data import DataLoader, Subset

    from model_tools.io_utils import atomic_write, write_json
    from model_tools.tasks.depth import evaluate_depth, synthetic_depth_dataset
    from model_tools.training.engine import dist_from_env, resolve_device

    net, model_cfg = load_depth_model(args.checkpoint, args.config)
    device = resolve_device(args.device, dist_from_env())
    net = net.to(device)
    dataset = synthetic_depth_dataset(args.data, args.split, model_cfg, train=False)
    if args.max_samples:
        dataset = Subset(dataset, range(min(len(dataset), args.max_samples)))
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, pin_memory=device.type == "cuda")
    from tqdm import tqdm

    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=False):
        metrics = evaluate_depth(net, tqdm(loader, desc=f"eval {args.split}"), model_cfg.min_depth, model_cfg.max_depth, device)
    stem = f"eval_{args.split}"
    report = {"checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split,
              "min_depth": model_cfg.min_depth, "max_depth": model_cfg.max_depth, "kind": model_cfg.kind,
              "levels": model_cfg.levels, "encoder": model_cfg.encoder, "metrics": metrics}
    write_json(out_dir / f"{stem}.json", report)
    lines = [f"# Depth evaluation: {Path(args.checkpoint).name} on {args.split}", "",
             f"Data `{args.data}`, {metrics.get('frames', 0)} frames, valid GT in [{model_cfg.min_depth}, {model_cfg.max_depth}] m, "
             f"head `{model_cfg.kind}`.", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    with atomic_write(out_dir / f"{stem}.md", overwrite=True) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _export(args: argparse.Namespace) -> int:
    check_output_file(args.out, "--out")
    report = export_depth(args.checkpoint, args.out, variant=args.variant, opset=args.opset, height=args.height,
                          width=args.width, config_path=args.config, overwrite=args.overwrite,
                          validate=not args.no_validate, validate_inputs=args.validate_inputs)
    print(f"depth export: wrote {args.out}")
    if report:
        _print_report(report)
    return 0


def _print_report(report: dict[str, Any]) -> None:
    for name, entry in report["outputs"].items():
        extra = f", mismatching pixels {entry['mismatch_fraction']:.2e}" if "mismatch_fraction" in entry else ""
        print(f"  {name}: max |err| {entry['max_abs_error']:.3g}, mean {entry['mean_abs_error']:.3g}{extra} -> {entry['verdict']}")
    print(f"  verdict {report['verdict']} (report {report['report_path']})")


def _validate(args: argparse.Namespace) -> int:
    check_output_file(args.report or Path(args.onnx).with_suffix(".validation.json"), "--report")
    from model_tools.export.validate import validate_onnx
    from model_tools.models.depth_net import DepthExportModule
    from perception_core.model_metadata import read_metadata

    meta = read_metadata(args.onnx)
    net, model_cfg = load_depth_model(args.checkpoint, args.config)
    module = DepthExportModule(net, meta.depth_outputs)
    report = validate_onnx(args.onnx, module, n_inputs=args.inputs, discrete=discrete_outputs(model_cfg, meta.depth_outputs),
                           report_path=args.report)
    _print_report(report)
    return 0


def _join(args: argparse.Namespace) -> int:
    check_output_file(args.out, "--out")
    from model_tools.training.checkpoint import join_split

    print(f"depth join: wrote {join_split(args.prefix, args.out)}")
    return 0


def run(args: argparse.Namespace) -> int:
    return {"train": _train, "eval": _eval, "export": _export, "validate": _validate, "join": _join}[args.action](args)
