"""`model-tools seg`: DDRNet23-Slim segmentation train / eval / export / validate / load-official.

    model-tools seg train --config config/train/seg_ddrnet23s.yaml --run-dir runs/seg [--resume] [--set lr=5e-4]
    model-tools seg eval --weights runs/seg/model_fp16.pt --out runs/seg/eval
    model-tools seg export --weights runs/seg/model_fp16.pt --out seg.onnx [--output class_id]
    model-tools seg validate --onnx seg.onnx --weights runs/seg/model_fp16.pt [--htp]
    model-tools seg load-official --checkpoint DDRNet23s_imagenet.pth [--out init.pt]

torch is imported only inside the actions, so ``--help`` stays light.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from model_tools.io_utils import check_output_file, check_output_folder
from perception_core.errors import ConfigError, ModelFileError

ACTIONS = ("train", "eval", "export", "validate", "load-official")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    train = sub.add_parser("train", help="train with the shared engine (YAML config + --set overrides)")
    train.add_argument("--config", required=True, help="training YAML, e.g. config/train/seg_ddrnet23s.yaml")
    train.add_argument("--run-dir", default=None,
                       help="run folder: checkpoints, metrics.csv, curves.png, model_fp16.pt (default runs/<run_name>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --run-dir exactly where it stopped")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (repeatable)")
    train.add_argument("--stop-after-steps", type=int, default=None, help="checkpoint and stop at this global step")
    train.add_argument("--time-budget-min", type=float, default=None, help="wall-clock budget; the LR schedule ends with it")
    train.add_argument("--max-steps", type=int, default=None, help="cap on optimiser steps")
    _source_arg(train)

    ev = sub.add_parser("eval", help="per-class IoU, mIoU, pixel accuracy, confusion matrix (JSON, Markdown, PNG)")
    _weights_args(ev)
    ev.add_argument("--split", default=None, help="evaluate this split of every source (default: data.val_split)")
    ev.add_argument("--out", default=None,
                    help="folder for eval_<split>.json, eval_<split>.md, eval_<split>_confusion.png (default: beside the weights)")
    ev.add_argument("--batch-size", type=int, default=4)
    ev.add_argument("--num-workers", type=int, default=2)
    ev.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ev.add_argument("--overwrite", action="store_true")
    _source_arg(ev)

    ex = sub.add_parser("export", help="ONNX opset 17 with model metadata; validated against PyTorch")
    _weights_args(ex)
    ex.add_argument("--out", required=True, help="output .onnx path")
    ex.add_argument("--output", choices=("logits", "class_id"), default="logits",
                    help="logits [1,C,H,W], or class ids as float [1,1,H,W] (in-graph ArgMax + Cast)")
    ex.add_argument("--height", type=int, default=544)
    ex.add_argument("--width", type=int, default=640)
    ex.add_argument("--no-validate", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    ex.add_argument("--overwrite", action="store_true")

    va = sub.add_parser("validate", help="compare an exported ONNX with PyTorch; optionally load it on QNN HTP")
    va.add_argument("--onnx", required=True, help="exported .onnx")
    _weights_args(va)
    va.add_argument("--htp", action="store_true", help="also compile and run on the QNN HTP backend, CPU fallback off")
    va.add_argument("--seed", type=int, default=0)

    lo = sub.add_parser("load-official", help="load an official DDRNet23-Slim checkpoint; report keys; save ours")
    lo.add_argument("--checkpoint", required=True, help="DDRNet23s_imagenet.pth or a Cityscapes checkpoint")
    lo.add_argument("--ontology", default=None, help="ontology YAML (default lookup otherwise)")
    lo.add_argument("--no-aux-head", action="store_true", help="build without the training aux head")
    lo.add_argument("--strict-heads", action="store_true", help="refuse a class-count mismatch instead of the head swap")
    lo.add_argument("--out", default=None, help="save the converted (head-swapped) state dict here")
    lo.add_argument("--overwrite", action="store_true")


def _source_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None, help="synthetic data root (shortcut for --source synthetic=ROOT)")
    parser.add_argument("--source", action="append", default=[], metavar="FORMAT=ROOT",
                        help="replace data.sources with these (repeatable), e.g. synthetic=data/synth rellis=/data/Rellis-3D")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """--set pairs plus --source entries as one nested override dict."""
    from model_tools.training.config import parse_overrides

    tree = parse_overrides(args.set)
    for key in ("time_budget_min", "max_steps"):
        if getattr(args, key, None) is not None:
            tree[key] = getattr(args, key)
    items = list(getattr(args, "source", None) or [])
    if getattr(args, "data", None):
        items.insert(0, f"synthetic={args.data}")
    if items:
        sources = []
        for item in items:
            kind, sep, root = item.partition("=")
            if not sep or not kind or not root:
                raise ConfigError(f"--source {item!r} is not FORMAT=ROOT")
            sources.append({"format": kind, "root": root})
        tree.setdefault("data", {})["sources"] = sources
    return tree


def _weights_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True,
                        help="model_fp16.pt, checkpoints/last.pt, a split prefix, or a converted official state dict")
    parser.add_argument("--config", default=None, help="training YAML (default: the config stored with the weights)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")


def run(args: argparse.Namespace) -> int:
    return {
        "train": _train,
        "eval": _eval,
        "export": _export,
        "validate": _validate,
        "load-official": _load_official,
    }[args.action](args)


# ----------------------------------------------------------------------------- helpers


def _config(config_path: str | None, overrides: dict[str, Any], stored: dict[str, Any] | None, weights: str) -> Any:
    """The run config: --config, else the config saved beside/in the weights, else defaults."""
    from model_tools.training.config import _merge, config_from_dict, load_config

    if config_path:
        cfg = load_config(config_path, overrides)
    else:
        if stored is None:
            beside = Path(weights).parent / "config.yaml"
            if beside.is_file():
                return _check_task(load_config(beside, overrides), str(beside))
            stored = {"task": "segmentation"}
        cfg = config_from_dict(_merge(stored, overrides), f"{weights} (stored config)")
    return _check_task(cfg, config_path or weights)


def _check_task(cfg: Any, source: str) -> Any:
    if cfg.task != "segmentation":
        raise ConfigError(f"{source}: config task is {cfg.task!r}, not 'segmentation'")
    return cfg


def load_trained_model(weights: str, config_path: str | None, overrides: dict[str, Any], *, aux_head: bool = False) -> tuple[Any, Any]:
    """(task, DDRNet in eval mode) from our weights; the aux head is dropped unless asked for."""
    from model_tools.models.ddrnet import ddrnet23_slim
    from model_tools.tasks.segmentation import SegmentationTask
    from model_tools.training.checkpoint import load_state_dict_checked, load_weights

    state, stored = load_weights(weights)
    cfg = _config(config_path, overrides, stored, weights)
    task = SegmentationTask(cfg)
    if "final_layer.conv2.weight" not in state:
        raise ModelFileError(f"{weights}: no 'final_layer.conv2.weight'; not DDRNet segmentation weights")
    classes = int(state["final_layer.conv2.weight"].shape[0])
    if classes != task.num_classes:
        raise ModelFileError(
            f"{weights}: model has {classes} classes but ontology {task.ontology.path or task.ontology.version} "
            f"has {task.num_classes}"
        )
    if not aux_head:
        state = {k: v for k, v in state.items() if not k.startswith("seghead_extra.")}
    model = ddrnet23_slim(num_classes=classes, aux_head=aux_head)
    load_state_dict_checked(model, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, weights)
    return task, model.eval()


# ----------------------------------------------------------------------------- actions


def _train(args: argparse.Namespace) -> int:
    from model_tools.tasks.segmentation import SegmentationTask
    from model_tools.training.config import load_config
    from model_tools.training.engine import Trainer

    cfg = _check_task(load_config(args.config, _overrides(args)), args.config)
    run_dir = check_output_folder(args.run_dir or Path("runs") / cfg.run_name, "--run-dir")
    trainer = Trainer(SegmentationTask(cfg), cfg, run_dir, resume=args.resume)
    summary = trainer.fit(stop_after_steps=args.stop_after_steps)
    if not trainer.dist.is_main:
        return 0
    best = summary.get("best") or {}
    print(f"seg train: {summary['stop_reason']} after {summary['steps']} steps in {summary['elapsed_s']:.0f} s; "
          f"best {best.get('metric', '-')} {best.get('value', float('nan')):.4f}; run folder {run_dir}")
    return 0


def evaluate(task: Any, model: Any, split: str | None, batch_size: int, num_workers: int, device_name: str) -> Any:
    """ConfusionMatrix of ``model`` over the validation (or ``split``) set of the task's sources."""
    import torch
    from torch.utils.data import DataLoader

    if split:
        task.data_cfg.val_split = split
    _, val_set = task.build_datasets()
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)
    loader = DataLoader(val_set, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    return task.confusion_matrix(model.to(device), loader, device, progress=True), len(val_set)  # type: ignore[arg-type]


def write_eval_report(matrix: Any, class_names: list[str], out_dir: Path, stem: str, info: dict[str, Any],
                      overwrite: bool) -> dict[str, Any]:
    """``<stem>.json``, ``<stem>.md`` and ``<stem>_confusion.png`` in ``out_dir`` (atomic writes).

    The JSON holds ``metrics`` (miou, pixel_accuracy, per_class_iou; null IoU
    for a class absent from ground truth and prediction), the confusion
    matrix (rows ground truth, columns prediction, pixel counts) and the
    class names, plus ``info``.
    """
    from model_tools.io_utils import atomic_write, write_json
    from perception_core.errors import OutputExistsError

    paths = {kind: out_dir / f"{stem}{suffix}" for kind, suffix in
             (("json", ".json"), ("md", ".md"), ("png", "_confusion.png"))}
    for path in paths.values():
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    full = matrix.to_dict(class_names)
    metrics = {"miou": full["miou"], "pixel_accuracy": full["pixel_accuracy"], "per_class_iou": full["per_class_iou"]}
    report = {**info, "metrics": metrics, "class_names": full["class_names"], "confusion_matrix": full["confusion_matrix"]}
    write_json(paths["json"], report, overwrite=True)
    lines = [
        f"# Segmentation evaluation: {Path(str(info.get('weights', ''))).name} on {info.get('split', '?')}",
        "",
        f"{info.get('images', '?')} images at {info.get('input_hw', '?')} (HxW), ontology {info.get('ontology_version', '?')}.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| mIoU | **{metrics['miou']:.4f}** |",
        f"| pixel accuracy | {metrics['pixel_accuracy']:.4f} |",
    ]
    for name, value in metrics["per_class_iou"].items():
        lines.append(f"| IoU {name} | {'n/a (absent)' if value is None else f'{value:.4f}'} |")
    lines += ["", "Confusion matrix (rows ground truth, columns prediction, pixels):", "",
              "| | " + " | ".join(class_names) + " |", "|---" * (len(class_names) + 1) + "|"]
    for name, row in zip(class_names, full["confusion_matrix"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    with atomic_write(paths["md"], overwrite=True) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    with atomic_write(paths["png"], overwrite=True) as tmp:
        matrix.plot(tmp, class_names, title=f"{Path(str(info.get('weights', ''))).name} on {info.get('split', '?')}")
    return report


def _eval(args: argparse.Namespace) -> int:
    out_dir = check_output_folder(args.out or Path(args.weights).parent, "--out")
    task, model = load_trained_model(args.weights, args.config, _overrides(args))
    matrix, count = evaluate(task, model, args.split, args.batch_size, args.num_workers, args.device)
    split = args.split or task.data_cfg.val_split
    info = {"weights": str(args.weights), "images": count, "split": split, "sources": task.data_cfg.sources,
            "input_hw": list(task.data_cfg.val_hw), "ontology_version": task.ontology.version}
    report = write_eval_report(matrix, task.class_names, out_dir, f"eval_{split}", info, args.overwrite)
    metrics = report["metrics"]
    print(f"seg eval: mIoU {metrics['miou']:.4f}, pixel accuracy {metrics['pixel_accuracy']:.4f} over {count} images")
    for name, value in metrics["per_class_iou"].items():
        print(f"  IoU {name:<16} {'n/a' if value is None else f'{value:.4f}'}")
    print(f"seg eval: wrote {out_dir}/eval_{split}.json, .md, _confusion.png")
    return 0


def segmentation_metadata(ontology: Any, output: str, height: int, width: int, weights: str) -> Any:
    """The self-describing contract written into the ONNX file (normalisation lives here, not in the graph)."""
    from model_tools.tasks.segmentation import IMAGENET_MEAN, IMAGENET_STD
    from perception_core.model_metadata import ModelMetadata

    onto = ontology
    meaning = ("float32 [1,C,H,W] class scores at input size (argmax = class id)" if output == "logits"
               else "float32 [1,1,H,W] class id per pixel (in-graph ArgMax cast to float)")
    meta = ModelMetadata(
        task="segmentation",
        input_name="rgb",
        input_shape=[1, 3, height, width],
        output_names=[output],
        input_scale=1.0 / 255.0,
        mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD),
        model_name="ddrnet23_slim",
        output_meaning={output: meaning},
        class_names=list(onto.names),
        class_colors=[list(c) for c in onto.colors],
        ontology_version=onto.version,
        seg_output=output,
        extra={"source_weights": Path(weights).name, "output_stride": 8, "arch": "DDRNet23-Slim"},
    )
    meta.validate("segmentation export")
    return meta


def export_segmentation(model: Any, ontology: Any, out: str | Path, output: str, height: int, width: int,
                        weights: str, overwrite: bool) -> Path:
    """Export the inference graph (normalised rgb -> logits/class ids at input size) with metadata."""
    from model_tools.export.onnx_export import export_onnx
    from model_tools.models.ddrnet import SegmentationExportWrapper

    if output not in ("logits", "class_id"):
        raise ConfigError(f"export output must be 'logits' or 'class_id', not {output!r}")
    if height % 8 or width % 8:
        raise ConfigError(f"export size {height}x{width} must be multiples of 8 (output stride)")
    wrapper = SegmentationExportWrapper(model, output).eval()
    meta = segmentation_metadata(ontology, output, height, width, weights)
    path = export_onnx(wrapper, out, meta, opset=17, overwrite=overwrite)
    fold_static_shapes(path)
    return path


def fold_static_shapes(path: Path) -> None:
    """Constant-fold the TorchScript exporter's Shape/Slice/Concat size subgraphs (static input).

    The exporter builds every Resize's ``sizes`` from ``Shape`` of its input;
    with a fixed input those are constants. Folding leaves only Conv, BN,
    ReLU, Add, Concat, pooling, Resize (+ ArgMax/Cast) for the NPU. Uses
    onnxscript's optimizer; without it the (equivalent) unfolded graph stays.
    """
    import onnx

    from model_tools.io_utils import atomic_write
    from perception_core.model_metadata import ModelMetadata, set_model_metadata

    try:
        from onnxscript import optimizer
    except ImportError:
        print(f"seg export: onnxscript is not installed; {path} keeps its Shape/Slice size subgraphs")
        return
    model = optimizer.optimize(onnx.load(str(path)))
    onnx.checker.check_model(model)
    set_model_metadata(model, ModelMetadata.from_props({p.key: p.value for p in model.metadata_props}, str(path)))
    with atomic_write(path, overwrite=True) as tmp:
        onnx.save(model, str(tmp))


def _export(args: argparse.Namespace) -> int:
    check_output_file(args.out, "--out")
    task, model = load_trained_model(args.weights, args.config, _overrides(args))
    path = export_segmentation(model, task.ontology, args.out, args.output, args.height, args.width, args.weights,
                               args.overwrite)
    print(f"seg export: wrote {path} ({args.output}, input rgb 1x3x{args.height}x{args.width}, opset 17)")
    if not args.no_validate:
        _report_validation(path, model)
    return 0


def _report_validation(path: Path, model: Any, seed: int = 0) -> dict[str, Any]:
    """ONNX Runtime (CPU EP) vs PyTorch on random normalised images; raises on disagreement."""
    from model_tools.export.validate import validate_onnx
    from model_tools.models.ddrnet import SegmentationExportWrapper
    from perception_core.model_metadata import read_metadata

    meta = read_metadata(path)
    if meta.task != "segmentation":
        raise ModelFileError(f"{path}: metadata task is {meta.task!r}, not 'segmentation'")
    wrapper = SegmentationExportWrapper(model, meta.seg_output).eval()
    # Class ids may flip where two logits nearly tie: judged by the fraction of differing pixels.
    report = validate_onnx(path, wrapper, seed=seed, discrete={"class_id": 1.0} if meta.seg_output == "class_id" else None)
    stats = ", ".join(
        f"{name}: max |err| {v['max_abs_error']:.2e}" + (f", mismatched {v['mismatch_fraction']:.2e}" if "mismatch_fraction" in v else "")
        + f" ({v['verdict']})" for name, v in report["outputs"].items()
    )
    print(f"seg validate: {path}: ONNX Runtime vs PyTorch {report['verdict']}: {stats}; report {report['report_path']}")
    return report


def htp_check(path: str | Path, seed: int = 0) -> dict[str, Any]:
    """Load ``path`` on QNN HTP (CPU fallback disabled), run one random frame, compare with the CPU EP.

    HTP runs the FP32 graph at reduced (fp16) precision, so the check is the
    fraction of pixels whose class agrees with the CPU EP, not exact logits.
    """
    import numpy as np

    from model_tools.export.validate import random_inputs
    from perception_core.runtime.loader import load_model

    npu = load_model(path, backend="npu", expected_task="segmentation")
    cpu = load_model(path, backend="cpu", expected_task="segmentation")
    meta = npu.metadata
    x = random_inputs(meta, 1, seed)[0]
    name = meta.output_names[0]
    got, ref = npu.run({meta.input_name: x})[name], cpu.run({meta.input_name: x})[name]
    if meta.seg_output == "logits":
        got_ids, ref_ids = got.argmax(axis=1), ref.argmax(axis=1)
    else:
        got_ids, ref_ids = np.rint(got), np.rint(ref)
    return {"backend_used": npu.backend_used, "output": name, "shape": list(got.shape),
            "class_agreement": float((got_ids == ref_ids).mean()), "max_abs_diff": float(np.abs(got - ref).max())}


def _validate(args: argparse.Namespace) -> int:
    check_output_file(Path(args.onnx).with_suffix(".validation.json"), "--onnx (its validation report)")
    _, model = load_trained_model(args.weights, args.config, _overrides(args))
    _report_validation(Path(args.onnx), model, args.seed)
    if args.htp:
        result = htp_check(args.onnx, args.seed)
        print(f"seg validate: {args.onnx} ran on QNN HTP (CPU fallback disabled): class agreement with the CPU EP "
              f"{result['class_agreement']:.4f}, output {result['output']} {result['shape']}")
    return 0


def _load_official(args: argparse.Namespace) -> int:
    from model_tools.models.ddrnet import ddrnet23_slim, describe, load_official_weights
    from model_tools.training.checkpoint import save_atomic
    from perception_core.ontology import load_ontology

    if args.out:
        check_output_file(args.out, "--out")
    ontology = load_ontology(args.ontology)
    model = ddrnet23_slim(num_classes=ontology.num_classes, aux_head=not args.no_aux_head)
    report = load_official_weights(model, args.checkpoint, strict_heads=args.strict_heads)
    print(report.summary())
    print(describe(model))
    if args.out:
        out = Path(args.out)
        if out.exists() and not args.overwrite:
            from perception_core.errors import OutputExistsError

            raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
        save_atomic(model.state_dict(), out)
        print(f"seg load-official: wrote {out} ({ontology.num_classes} classes, ontology {ontology.version})")
    return 0
