"""The actions and flags that `model-tools depth` and `model-tools seg` share.

    model-tools TASK train    --config YAML [--set K=V ...] [--data ROOT | --source FORMAT=ROOT ...] [--run-dir DIR]
                              [--resume] [--time-budget-min M] [--max-steps N] [--stop-after-steps N]
    model-tools TASK eval     --checkpoint CKPT [--config YAML] [--set K=V] [--data ROOT | --source ...] [--split S]
                              [--out DIR] [--batch-size B] [--workers W] [--device D] [--max-images N] [--overwrite]
    model-tools TASK export   --checkpoint CKPT --out X.onnx [--variant V] [--opset 17] [--height H --width W]
                              [--overwrite] [--no-validate] [--validate-inputs N]
    model-tools TASK validate --onnx X.onnx --checkpoint CKPT [--inputs N] [--seed S] [--report JSON]

One flag name for one thing in both tasks. What differs between the tasks
(model loading, export, metrics) comes from the task's registry entry
(``model_tools.registry``), never from a branch on its name. A checkpoint is
a full training checkpoint (carries its config), a plain state dict (its
config is ``--config`` or the run's ``config.yaml`` beside it) or the prefix of
split parts (``X.part0of2.pt``). Evaluation writes ``eval_<split>.json`` and
``.md`` (plus the task's figures) and refuses to replace them without
``--overwrite``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_tools.io_utils import check_output_file, check_output_folder
from model_tools.registry import TaskEntry
from perception_core.errors import ConfigError, ModelFileError, OutputExistsError

ACTIONS = ("train", "eval", "export", "validate")


# ---- arguments ---------------------------------------------------------------------------------


def add_task_actions(sub: Any, entry: TaskEntry) -> dict[str, argparse.ArgumentParser]:
    """The shared subcommands under ``sub``; returns their parsers so a task can add its own flags."""
    train = sub.add_parser("train", help=f"train a {entry.name} model with the shared engine")
    train.add_argument("--config", required=True, help="training config YAML (config/train/*.yaml)")
    _override_arguments(train)
    _data_arguments(train)
    train.add_argument("--run-dir", help="output folder: checkpoints, metrics.csv, curves.png, model_fp16.pt "
                                         "(default runs/<run_name>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --run-dir exactly where it stopped")
    train.add_argument("--time-budget-min", type=float, help="wall-clock budget; the LR schedule ends with it")
    train.add_argument("--max-steps", type=int, help="cap on optimiser steps")
    train.add_argument("--stop-after-steps", type=int, help="checkpoint and stop at this global step (to resume later)")

    ev = sub.add_parser("eval", help="metrics of a checkpoint on a data split (eval_<split>.json, .md, figures)")
    _checkpoint_arguments(ev)
    _data_arguments(ev)
    ev.add_argument("--split", help="split of every source to evaluate (default: the config's data.val_split)")
    ev.add_argument("--out", help="output folder (default: beside the checkpoint)")
    ev.add_argument("--batch-size", type=int, default=4)
    ev.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="data-loader processes")
    ev.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ev.add_argument("--max-images", type=int, default=0, help="evaluate this many images, evenly spaced (0: all)")
    ev.add_argument("--overwrite", action="store_true", help="replace an evaluation already in --out")

    ex = sub.add_parser("export", help="export to ONNX with the model metadata (then validate against PyTorch)")
    _checkpoint_arguments(ex)
    ex.add_argument("--out", required=True, help="output .onnx path")
    ex.add_argument("--variant", choices=entry.variants, default=entry.variants[0],
                    help=f"output form ({' | '.join(entry.variants)}; default {entry.variants[0]}, "
                         f"NPU deployments use {entry.deploy_variant})")
    ex.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    ex.add_argument("--height", type=int, help="input height (default: the size the config trains/validates at)")
    ex.add_argument("--width", type=int, help="input width (default: as --height)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    ex.add_argument("--no-validate", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    ex.add_argument("--validate-inputs", type=int, default=3, help="random inputs of the check (default 3)")

    va = sub.add_parser("validate", help="compare an exported ONNX file with PyTorch on random inputs")
    va.add_argument("--onnx", required=True, help="exported .onnx")
    _checkpoint_arguments(va)
    va.add_argument("--inputs", type=int, default=4, help="random inputs (default 4)")
    va.add_argument("--seed", type=int, default=0)
    va.add_argument("--report", help="JSON report path (default <onnx stem>.validation.json)")
    return {"train": train, "eval": ev, "export": ex, "validate": va}


def _override_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, dotted for sections (model.kind=sigmoid); repeatable")


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="a synthetic folder (shortcut for --source synthetic=ROOT)")
    parser.add_argument("--source", action="append", default=[], metavar="FORMAT=ROOT[,OPTION=VALUE]",
                        help="replace data.sources with these (repeatable), e.g. synthetic=data/synth, "
                             "kitti=/data/kitti/depth,raw_root=/data/kitti/raw")


def _checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="model_fp16.pt, checkpoints/last.pt, or the prefix of split parts")
    parser.add_argument("--config", help="training config of a plain state dict (default: the one stored with it)")
    _override_arguments(parser)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--set`` pairs, the length flags and ``--data``/``--source`` as one nested override dict."""
    from model_tools.data.sources import parse_source_argument
    from model_tools.training.config import parse_overrides

    tree = parse_overrides(getattr(args, "set", None))
    for key in ("time_budget_min", "max_steps"):
        if getattr(args, key, None) is not None:
            tree[key] = getattr(args, key)
    items = list(getattr(args, "source", None) or [])
    if getattr(args, "data", None):
        items.insert(0, f"synthetic={args.data}")
    if items:
        tree.setdefault("data", {})["sources"] = [parse_source_argument(item) for item in items]
    return tree


# ---- configs and trained models ----------------------------------------------------------------


@dataclass
class TrainedModel:
    """A model loaded for evaluation or export, with the config that describes it."""

    model: Any  # torch module, float, eval mode
    config: Any  # TrainConfig
    checkpoint: str
    config_source: str  # where the config came from (file, "stored in <checkpoint>", defaults)


def check_task(config: Any, entry: TaskEntry, source: str) -> Any:
    if config.task != entry.name:
        raise ConfigError(f"{source}: field task is {config.task!r}, expected {entry.name!r}")
    return config


def run_config(entry: TaskEntry, checkpoint: str | os.PathLike[str], config_path: str | os.PathLike[str] | None,
               overrides: dict[str, Any], stored: dict[str, Any] | None) -> tuple[Any, str]:
    """(TrainConfig, where it came from) for a checkpoint.

    ``--config`` first, else the config stored in a full checkpoint, else
    ``config.yaml`` beside the weights, else the task defaults when the weights
    alone fix the architecture (``TaskEntry.config_in_weights``).
    """
    from model_tools.training.config import _merge, config_from_dict, load_config

    if config_path is not None:
        return check_task(load_config(config_path, overrides), entry, str(config_path)), str(config_path)
    if stored is not None:
        source = f"{checkpoint} (stored config)"
        return check_task(config_from_dict(_merge(stored, overrides), source), entry, source), source
    beside = Path(checkpoint).parent / "config.yaml"
    if beside.is_file():
        return check_task(load_config(beside, overrides), entry, str(beside)), str(beside)
    if not entry.config_in_weights:
        raise ConfigError(f"{checkpoint} is a plain state dict and no config.yaml is beside it: pass --config")
    return config_from_dict(_merge({"task": entry.name}, overrides), "defaults"), f"{entry.name} defaults"


def load_trained(entry: TaskEntry, checkpoint: str | os.PathLike[str], config_path: str | os.PathLike[str] | None = None,
                 overrides: dict[str, Any] | None = None) -> TrainedModel:
    """The task's model with ``checkpoint`` loaded (weights-only), and its config."""
    from model_tools.training.checkpoint import load_weights

    state, stored = load_weights(checkpoint)
    config, source = run_config(entry, checkpoint, config_path, overrides or {}, stored)
    model = entry.load_spec().build_model(state, config, stored, str(checkpoint),
                                          None if config_path is None else str(config_path))
    return TrainedModel(model, config, str(checkpoint), source)


# ---- actions -----------------------------------------------------------------------------------


def train(entry: TaskEntry, args: argparse.Namespace) -> int:
    from model_tools.training.config import load_config
    from model_tools.training.engine import Trainer

    config = check_task(load_config(args.config, config_overrides(args)), entry, args.config)
    run_dir = check_output_folder(args.run_dir or Path("runs") / config.run_name, "--run-dir")
    trainer = Trainer(entry.load_spec().build_task(config, str(args.config)), config, run_dir, resume=args.resume)
    summary = trainer.fit(stop_after_steps=args.stop_after_steps)
    if not trainer.dist.is_main:
        return 0
    best = summary.get("best") or {}
    best_text = f"{best['metric']} {best['value']:.4f}" if "value" in best else "none (not validated)"
    print(f"{entry.command} train: {summary['stop_reason']} after {summary['steps']} steps in "
          f"{summary['elapsed_s']:.0f} s; best {best_text}; run folder {run_dir}")
    return 0


def refuse_existing_evaluation(out_dir: Path, stem: str, overwrite: bool) -> None:
    """Refuse (before any work) when ``out_dir`` already holds an evaluation named ``stem``."""
    if overwrite or not out_dir.is_dir():
        return
    existing = sorted(p.name for p in out_dir.iterdir() if p.name.startswith(f"{stem}.") or p.name.startswith(f"{stem}_"))
    if existing:
        raise OutputExistsError(f"{out_dir / existing[0]} exists; pass --overwrite to replace the evaluation")


def evaluate(entry: TaskEntry, args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from model_tools.training.engine import dist_from_env, resolve_device

    out_dir = check_output_folder(args.out or Path(args.checkpoint).parent, "--out")
    spec = entry.load_spec()
    trained = load_trained(entry, args.checkpoint, args.config, config_overrides(args))
    task = spec.build_task(trained.config, trained.config_source)
    split = args.split or task.data_cfg.val_split
    stem = f"eval_{split}"
    refuse_existing_evaluation(out_dir, stem, args.overwrite)
    dataset = task.eval_dataset(args.split, max_images=args.max_images)  # the whole split unless --max-images
    device = resolve_device(args.device, dist_from_env())
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, shuffle=False,
                        pin_memory=device.type == "cuda")
    outcome = spec.evaluate(task, trained.model.to(device), loader, device)
    report = {"task": entry.name, "checkpoint": trained.checkpoint, "config": trained.config_source, "split": split,
              "sources": task.sources(), "images": len(dataset), **outcome.report, "metrics": outcome.metrics}
    sources = ", ".join(f"{s['format']} `{s['root']}`" for s in report["sources"])
    heading = [f"# {entry.name.capitalize()} evaluation: {Path(trained.checkpoint).name} on {split}", "",
               f"{len(dataset)} images of {sources}.", ""]
    written = write_evaluation(out_dir, stem, report, heading + outcome.markdown, outcome.figures)
    print(f"{entry.command} eval: {outcome.summary} over {len(dataset)} images")
    print(f"{entry.command} eval: wrote {', '.join(str(path) for path in written)}")
    return 0


def write_evaluation(out_dir: Path, stem: str, report: dict[str, Any], markdown: list[str],
                     figures: dict[str, Any]) -> list[Path]:
    """``<stem>.json``, ``<stem>.md`` and ``<stem><suffix>`` per figure, each written atomically."""
    from model_tools.io_utils import atomic_write, write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [write_json(out_dir / f"{stem}.json", report, overwrite=True)]
    with atomic_write(out_dir / f"{stem}.md", overwrite=True) as tmp:
        tmp.write_text("\n".join(markdown) + "\n")
    written.append(out_dir / f"{stem}.md")
    for suffix, write_figure in figures.items():
        with atomic_write(out_dir / f"{stem}{suffix}", overwrite=True) as tmp:
            write_figure(tmp)
        written.append(out_dir / f"{stem}{suffix}")
    return written


def export_checkpoint(entry: TaskEntry, checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *,
                      variant: str | None = None, opset: int = 17, hw: tuple[int | None, int | None] | None = None,
                      config_path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None,
                      overwrite: bool = False, validate: bool = True, validate_inputs: int = 3,
                      verbose: bool = False) -> dict[str, Any]:
    """Export ``checkpoint`` with its task's exporter (and validate it); returns what was done.

    ``variant`` defaults to the first of the entry's forms; ``hw`` (height,
    width; either may be None) defaults to the size the config trains or
    validates at. The result holds the path, the form, the input size and the
    validation report ({} when not validated).
    """
    spec = entry.load_spec()
    trained = load_trained(entry, checkpoint, config_path, overrides)
    variant = variant or entry.variants[0]
    if variant not in entry.variants:
        raise ConfigError(f"export variant {variant!r} is not one of {', '.join(entry.variants)} ({entry.name})")
    default_h, default_w = spec.input_hw(trained.config)
    height, width = (hw[0] or default_h, hw[1] or default_w) if hw else (default_h, default_w)
    entry.preprocessing.check_size(height, width, "export --height/--width")
    path = spec.export(trained.model, trained.config, Path(out), variant=variant, opset=opset, height=height,
                       width=width, checkpoint=trained.checkpoint, overwrite=overwrite)
    if verbose:
        from perception_core.model_metadata import read_metadata

        inputs = " + ".join(read_metadata(path).input_names)
        print(f"{entry.command} export: wrote {path} ({variant}, inputs {inputs}, rgb 1x3x{height}x{width}, opset {opset})")
    report = validate_export(entry, path, trained, variant, inputs=validate_inputs, verbose=verbose) if validate else {}
    return {"path": str(path), "exporter": f"{entry.spec} ({entry.name})", "variant": variant,
            "input_hw": [height, width], "validation": report}


def export(entry: TaskEntry, args: argparse.Namespace) -> int:
    check_output_file(args.out, "--out")
    export_checkpoint(entry, args.checkpoint, args.out, variant=args.variant, opset=args.opset,
                      hw=(args.height, args.width), config_path=args.config, overrides=config_overrides(args),
                      overwrite=args.overwrite, validate=not args.no_validate, validate_inputs=args.validate_inputs,
                      verbose=True)
    return 0


def validate_export(entry: TaskEntry, path: Path, trained: TrainedModel, variant: str, *, inputs: int = 3,
                    seed: int = 0, report_path: str | None = None, verbose: bool = True) -> dict[str, Any]:
    """ONNX Runtime (CPU EP) vs PyTorch on random inputs (JSON report); raises ModelFileError on disagreement."""
    from model_tools.export.validate import validate_onnx

    spec = entry.load_spec()
    report = validate_onnx(path, spec.export_module(trained.model, variant), n_inputs=inputs, seed=seed,
                           discrete=spec.discrete_outputs(trained.config, variant), report_path=report_path)
    if not verbose:
        return report
    for name, item in report["outputs"].items():
        extra = f", mismatching pixels {item['mismatch_fraction']:.2e}" if "mismatch_fraction" in item else ""
        print(f"  {name}: max |err| {item['max_abs_error']:.3g}, mean {item['mean_abs_error']:.3g}{extra} "
              f"-> {item['verdict']}")
    print(f"{entry.command} validate: {path}: ONNX Runtime vs PyTorch {report['verdict']} "
          f"(report {report['report_path']})")
    return report


def export_variant(entry: TaskEntry, metadata: Any, path: str | os.PathLike[str]) -> str:
    """The output form an exported file states in its metadata; ModelFileError for another task's file."""
    if metadata.task != entry.name:
        raise ModelFileError(f"{path}: metadata task is {metadata.task!r}, not {entry.name!r}")
    variant = getattr(metadata, entry.variant_field)
    if variant not in entry.variants:
        raise ModelFileError(f"{path}: output form {variant!r} is not one of {', '.join(entry.variants)}")
    return variant


def validate(entry: TaskEntry, args: argparse.Namespace) -> int:
    from perception_core.model_metadata import read_metadata

    check_output_file(args.report or Path(args.onnx).with_suffix(".validation.json"),
                      "--report" if args.report else "--onnx (its validation report)")
    variant = export_variant(entry, read_metadata(args.onnx), args.onnx)
    trained = load_trained(entry, args.checkpoint, args.config, config_overrides(args))
    validate_export(entry, Path(args.onnx), trained, variant, inputs=args.inputs, seed=args.seed,
                    report_path=args.report)
    return 0


SHARED_ACTIONS = {"train": train, "eval": evaluate, "export": export, "validate": validate}
