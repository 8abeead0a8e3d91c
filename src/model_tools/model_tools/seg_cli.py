"""`model-tools seg`: DDRNet23-Slim segmentation train / eval / export / validate / load-official.

    model-tools seg train --config config/train/seg_ddrnet23s.yaml --run-dir runs/seg [--resume] [--set lr=5e-4]
    model-tools seg eval --checkpoint runs/seg/model_fp16.pt [--out runs/seg/eval] [--overwrite]
    model-tools seg export --checkpoint runs/seg/model_fp16.pt --out seg.onnx [--variant class_id]
    model-tools seg validate --onnx seg.onnx --checkpoint runs/seg/model_fp16.pt [--htp]
    model-tools seg load-official --checkpoint DDRNet23s_imagenet.pth [--out init.pt]

train/eval/export/validate are the shared actions of ``model_tools.task_cli``
(the same flags as `model-tools depth`); this module supplies the
segmentation task's part of them (``SPEC``: model loading, export, metrics),
the HTP check of ``validate --htp`` and ``load-official``. torch is imported
only inside the actions, so ``--help`` stays light.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from model_tools.io_utils import check_output_file
from model_tools.registry import SEGMENTATION, EvalOutcome
from model_tools.task_cli import SHARED_ACTIONS, add_task_actions
from perception_core.errors import ModelFileError

ACTIONS = ("train", "eval", "export", "validate", "load-official")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    parsers = add_task_actions(sub, SEGMENTATION)
    parsers["validate"].add_argument("--htp", action="store_true",
                                     help="also load it on the QNN HTP backend (CPU fallback off) and compare one frame")

    lo = sub.add_parser("load-official", help="load an official DDRNet23-Slim checkpoint; report keys; save ours")
    lo.add_argument("--checkpoint", required=True, help="DDRNet23s_imagenet.pth or a Cityscapes checkpoint")
    lo.add_argument("--ontology", default=None, help="ontology YAML (default lookup otherwise)")
    lo.add_argument("--no-aux-head", action="store_true", help="build without the training aux head")
    lo.add_argument("--strict-heads", action="store_true", help="refuse a class-count mismatch instead of the head swap")
    lo.add_argument("--out", default=None, help="save the converted (head-swapped) state dict here")
    lo.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    if args.action == "load-official":
        return _load_official(args)
    code = SHARED_ACTIONS[args.action](SEGMENTATION, args)
    if args.action == "validate" and args.htp:
        result = htp_check(args.onnx, args.seed)
        print(f"seg validate: {args.onnx} ran on QNN HTP (CPU fallback disabled): class agreement with the CPU EP "
              f"{result['class_agreement']:.4f}, output {result['output']} {result['shape']}")
    return code


class SegSpec:
    """The segmentation task's part of the shared commands (``registry.TaskSpec``)."""

    def build_task(self, config: Any, source: str = "config") -> Any:
        from model_tools.tasks.segmentation import SegmentationTask

        return SegmentationTask(config)

    def build_model(self, state: dict[str, Any], config: Any, stored: dict[str, Any] | None, checkpoint: str,
                    config_source: str | None) -> Any:
        """DDRNet in eval mode with ``state`` loaded; the class count must be the ontology's; the aux head is dropped."""
        from model_tools.training.checkpoint import load_state_dict_checked

        task = self.build_task(config)
        if "final_layer.conv2.weight" not in state:
            raise ModelFileError(f"{checkpoint}: no 'final_layer.conv2.weight'; not DDRNet segmentation weights")
        classes = int(state["final_layer.conv2.weight"].shape[0])
        if classes != task.num_classes:
            raise ModelFileError(
                f"{checkpoint}: model has {classes} classes but ontology {task.ontology.path or task.ontology.version} "
                f"has {task.num_classes}"
            )
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items() if not k.startswith("seghead_extra.")}
        model = task.model_factory(num_classes=classes, aux_head=False)
        load_state_dict_checked(model, state, checkpoint)
        return model.eval()

    def input_hw(self, config: Any) -> tuple[int, int]:
        height, width = self.build_task(config).data_cfg.val_hw
        return int(height), int(width)

    def export_module(self, model: Any, variant: str) -> Any:
        from model_tools.models.ddrnet import SegmentationExportWrapper

        return SegmentationExportWrapper(model, variant).eval()

    def export(self, model: Any, config: Any, out: Path, *, variant: str, opset: int, height: int, width: int,
               checkpoint: str, overwrite: bool) -> Path:
        """The inference graph (normalised rgb -> logits/class ids at input size) with metadata, sizes folded."""
        from model_tools.export.onnx_export import export_onnx

        metadata = segmentation_metadata(self.build_task(config).ontology, variant, height, width, checkpoint)
        path = export_onnx(self.export_module(model, variant), out, metadata, opset=opset, overwrite=overwrite)
        fold_static_shapes(path)
        return path

    def discrete_outputs(self, config: Any, variant: str) -> dict[str, float]:
        # Class ids may flip where two logits nearly tie: judged by the fraction of differing pixels.
        return {"class_id": 1.0} if variant == "class_id" else {}

    def evaluate(self, task: Any, model: Any, loader: Any, device: Any) -> EvalOutcome:
        """Per-class IoU, mIoU, pixel accuracy and the confusion matrix (rows ground truth, columns prediction)."""
        matrix = task.confusion_matrix(model, loader, device, progress=True)
        names = task.class_names
        full = matrix.to_dict(names)
        metrics = {"miou": full["miou"], "pixel_accuracy": full["pixel_accuracy"], "per_class_iou": full["per_class_iou"]}
        lines = [f"At {list(task.data_cfg.val_hw)} (HxW), ontology {task.ontology.version}.", "",
                 "| metric | value |", "|---|---|",
                 f"| mIoU | **{metrics['miou']:.4f}** |", f"| pixel accuracy | {metrics['pixel_accuracy']:.4f} |"]
        for name, value in metrics["per_class_iou"].items():
            lines.append(f"| IoU {name} | {'n/a (absent)' if value is None else f'{value:.4f}'} |")
        lines += ["", "Confusion matrix (rows ground truth, columns prediction, pixels):", "",
                  "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for name, row in zip(names, full["confusion_matrix"], strict=True):
            lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
        per_class = ", ".join(f"{n} {'n/a' if v is None else f'{v:.3f}'}" for n, v in metrics["per_class_iou"].items())
        return EvalOutcome(
            metrics=metrics,
            report={"input_hw": list(task.data_cfg.val_hw), "ontology_version": task.ontology.version,
                    "class_names": full["class_names"], "confusion_matrix": full["confusion_matrix"]},
            markdown=lines,
            figures={"_confusion.png": lambda path: matrix.plot(path, names, title="confusion (rows: ground truth)")},
            summary=f"mIoU {metrics['miou']:.4f}, pixel accuracy {metrics['pixel_accuracy']:.4f} (IoU {per_class})",
        )


SPEC = SegSpec()


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
