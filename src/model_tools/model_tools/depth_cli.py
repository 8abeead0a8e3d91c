"""`model-tools depth {train,eval,export,validate,join}`: the depth model's life cycle.

    model-tools depth train --config config/train/depth_levels_r18.yaml --data DATA [--set k=v ...] [--resume] [--teacher CKPT]
    model-tools depth train --config ... --source kitti=/data/kitti/depth,raw_root=/data/kitti/raw
    model-tools depth eval --checkpoint RUN/model_fp16.pt [--data DATA] [--split test] [--overwrite]
    model-tools depth export --checkpoint CKPT --out depth.onnx [--variant composed|separate] [--opset 17]
    model-tools depth validate --onnx depth.onnx --checkpoint CKPT
    model-tools depth join --prefix DIR/depth_levels_fp16 --out model_fp16.pt

train/eval/export/validate are the shared actions of ``model_tools.task_cli``
(the same flags as `model-tools seg`); this module supplies the depth task's
part of them (``SPEC``: model loading, export, metrics) and ``join``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from model_tools.io_utils import check_output_file
from model_tools.registry import DEPTH, EvalOutcome
from model_tools.task_cli import SHARED_ACTIONS, add_task_actions

ACTIONS = ("train", "eval", "export", "validate", "join")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    parsers = add_task_actions(sub, DEPTH)
    parsers["train"].add_argument("--teacher", help="distil from this frozen FP32 teacher checkpoint (sets distill.teacher)")
    jo = sub.add_parser("join", help="join split fp16 state-dict parts into one file")
    jo.add_argument("--prefix", required=True, help="parts are PREFIX.part0of2.pt, PREFIX.part1of2.pt, ...")
    jo.add_argument("--out", required=True)


# ---- model loading -----------------------------------------------------------------------------


def depth_model_config(section: dict[str, Any], source: str) -> Any:
    """The ``model`` section of a depth training config as a checked DepthModelConfig."""
    from model_tools.models.depth_net import DepthModelConfig
    from model_tools.training.config import dataclass_from_dict

    model_cfg = dataclass_from_dict(DepthModelConfig, section, f"{source}: model")
    model_cfg.validate(source)
    return model_cfg


def load_depth_model(checkpoint: str | os.PathLike[str], config_path: str | os.PathLike[str] | None = None) -> Any:
    """(DualHeadDepthNet in eval mode, DepthModelConfig) from any checkpoint form.

    The architecture comes from the checkpoint's own config, else ``config_path``,
    else ``config.yaml`` beside the checkpoint. When both the checkpoint and a
    config are given, a differing architecture field raises ConfigError naming it.
    """
    from model_tools.task_cli import load_trained

    trained = load_trained(DEPTH, checkpoint, config_path)
    return trained.model, depth_model_config(trained.config.model, trained.config_source)


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
        depth_camera=model_cfg.camera, canonical_focal_px=float(model_cfg.canonical_focal_px),
        canonical_height_m=float(model_cfg.canonical_height_m),
        camera_input="camera" if model_cfg.camera_input else "",
        extra={"checkpoint": str(checkpoint), "weights_sha256": _weights_sha256(checkpoint),
               "encoder": model_cfg.encoder, "padding": model_cfg.padding,
               "integer_step_m": step, "decoder_channels": list(model_cfg.decoder_channels)},
    )


def _weights_sha256(checkpoint: str) -> str:
    """The checkpoint's content hash, or "" where it cannot be read as a file or split parts (a model built in
    memory, as tests do)."""
    from model_tools.training.checkpoint import checkpoint_sha256
    from perception_core.errors import ModelFileError

    try:
        return checkpoint_sha256(checkpoint)
    except (OSError, ModelFileError):
        return ""


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
    from model_tools.task_cli import export_checkpoint

    hw = (height, width) if height or width else None
    return export_checkpoint(DEPTH, checkpoint, out, variant=variant, opset=opset, hw=hw, config_path=config_path,
                             overwrite=overwrite, validate=validate, validate_inputs=validate_inputs)["validation"]


class DepthSpec:
    """The depth task's part of the shared commands (``registry.TaskSpec``)."""

    def build_task(self, config: Any, source: str) -> Any:
        from model_tools.tasks.depth import DepthTask

        return DepthTask(config, source)

    def build_model(self, state: dict[str, Any], config: Any, stored: dict[str, Any] | None, checkpoint: str,
                    config_source: str | None) -> Any:
        """The network of ``config`` with ``state`` loaded; a ``--config`` must agree with a checkpoint's own."""
        from model_tools.models.depth_net import DualHeadDepthNet
        from model_tools.training.checkpoint import load_state_dict_checked

        model_cfg = depth_model_config(config.model, config_source or checkpoint)
        if stored is not None and config_source is not None:
            saved = depth_model_config(stored.get("model", {}), checkpoint)
            model_cfg.check_matches(saved.to_dict(), f"{checkpoint} vs {config_source}")
            model_cfg = saved
        model_cfg.encoder_weights = ""
        net = DualHeadDepthNet(model_cfg)
        load_state_dict_checked(net, state, checkpoint)
        return net.float().eval()

    def input_hw(self, config: Any) -> tuple[int, int]:
        model_cfg = depth_model_config(config.model, "config")
        return model_cfg.input_height, model_cfg.input_width

    def export_module(self, model: Any, variant: str) -> Any:
        from model_tools.models.depth_net import DepthExportModule

        return DepthExportModule(model, variant)

    def export(self, model: Any, config: Any, out: Path, *, variant: str, opset: int, height: int, width: int,
               checkpoint: str, overwrite: bool) -> Path:
        from model_tools.export.onnx_export import export_onnx

        metadata = depth_metadata(depth_model_config(config.model, checkpoint), variant, height, width, checkpoint)
        return export_onnx(self.export_module(model, variant), out, metadata, opset=opset, overwrite=overwrite)

    def discrete_outputs(self, config: Any, variant: str) -> dict[str, float]:
        return discrete_outputs(depth_model_config(config.model, "config"), variant)

    def evaluate(self, task: Any, model: Any, loader: Any, device: Any) -> EvalOutcome:
        """Eigen metrics of the deployed prediction (ArgMax for levels; a camera-aware model's scaled to each
        frame's camera) over GT within [min_depth, max_depth]."""
        from tqdm import tqdm

        from model_tools.tasks.depth import evaluate_depth

        mc = task.model_cfg
        metrics = evaluate_depth(model, tqdm(loader, desc="eval", unit="batch"), mc.min_depth, mc.max_depth, device,
                                 mc.canonical_focal_px)
        lines = [f"Valid GT in [{mc.min_depth}, {mc.max_depth}] m, head `{mc.kind}`, {metrics.get('frames', 0)} frames "
                 "with valid GT.", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
        return EvalOutcome(
            metrics=metrics,
            report={"min_depth": mc.min_depth, "max_depth": mc.max_depth, "kind": mc.kind, "levels": mc.levels,
                    "encoder": mc.encoder},
            markdown=lines,
            summary=f"abs_rel {metrics['abs_rel']:.4f}, rmse {metrics['rmse']:.3f} m, a1 {metrics['a1']:.4f}",
        )


SPEC = DepthSpec()


# ---- actions -----------------------------------------------------------------------------------


def _join(args: argparse.Namespace) -> int:
    check_output_file(args.out, "--out")
    from model_tools.training.checkpoint import join_split

    print(f"depth join: wrote {join_split(args.prefix, args.out)}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.action == "join":
        return _join(args)
    if args.action == "train" and args.teacher:
        args.set.append(f"distill.teacher={args.teacher}")
    return SHARED_ACTIONS[args.action](DEPTH, args)
