"""The task and model registry: a name gives the factories and the preprocessing facts of one model family.

Commands, the INT8 converter and the training tasks look a task up here
(``get_task("depth")``) instead of branching on its name, the way timm's
registered entry points give a model by name. An entry names its
implementation as ``"module:attribute"`` and imports it on first use, so
this module (and ``model-tools --help``) imports no torch.

Each entry's ``spec`` is a :class:`TaskSpec`: how to build the training task,
load trained weights, export them to ONNX and evaluate them. Its
``preprocessing`` is what the deployed node does to a camera frame before the
model; the exporters write it into the ONNX metadata and the training code
normalises with the same numbers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from perception_core.errors import ConfigError


@dataclass(frozen=True)
class Preprocessing:
    """Camera frame -> model input: resize the whole frame, scale, normalise per channel."""

    input_scale: float  # pixel value * input_scale = [0, 1]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    color_order: str  # channel order of the input tensor
    size_multiple: int  # input height and width must be multiples of this (the network's total stride)
    default_hw: tuple[int, int]  # (height, width) the shipped models use

    def check_size(self, height: int, width: int, source: str) -> None:
        """ConfigError naming ``source`` unless both sides are positive multiples of ``size_multiple``."""
        for name, value in (("height", height), ("width", width)):
            if value <= 0 or value % self.size_multiple:
                raise ConfigError(f"{source}: input {name} = {value} must be a positive multiple of "
                                  f"{self.size_multiple}")


@dataclass
class EvalOutcome:
    """What a task's evaluation produced: JSON-ready metrics, a Markdown body, and figure writers."""

    metrics: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)  # task-specific JSON fields beside ``metrics``
    markdown: list[str] = field(default_factory=list)  # lines after the common heading
    figures: dict[str, Callable[[Path], Any]] = field(default_factory=dict)  # file suffix -> writer(path)
    summary: str = ""  # one line for the console


class TaskSpec(Protocol):
    """What the shared commands need from a task (implemented in ``depth_cli`` and ``seg_cli``)."""

    def build_task(self, config: Any, source: str) -> Any:
        """The training task (``training.task.TrainingTask``) for a TrainConfig."""
        ...

    def build_model(self, state: dict[str, Any], config: Any, stored: dict[str, Any] | None,
                    checkpoint: str, config_source: str | None) -> Any:
        """The float model in eval mode with ``state`` loaded; ``stored`` is a checkpoint's own config."""
        ...

    def input_hw(self, config: Any) -> tuple[int, int]:
        """The input size a model trained with ``config`` is exported at by default."""
        ...

    def export(self, model: Any, config: Any, out: Path, *, variant: str, opset: int, height: int, width: int,
               checkpoint: str, overwrite: bool) -> Path:
        """Write the ONNX file with its metadata (atomic)."""
        ...

    def discrete_outputs(self, config: Any, variant: str) -> dict[str, float]:
        """Outputs behind an ArgMax, with their quantum (validation judges them by differing pixels)."""
        ...

    def export_module(self, model: Any, variant: str) -> Any:
        """The torch module whose outputs the ONNX file reproduces (for validation)."""
        ...

    def evaluate(self, task: Any, model: Any, loader: Any, device: Any) -> EvalOutcome:
        """Metrics of ``model`` over ``loader`` (the task's evaluation data set)."""
        ...


@dataclass(frozen=True)
class TaskEntry:
    """One registered task: names, factories (imported on use) and facts."""

    name: str  # the ``task`` field of a training config and of the ONNX metadata
    command: str  # the ``model-tools`` subcommand
    summary: str
    spec: str  # "module:attribute" of the TaskSpec
    preprocessing: Preprocessing
    variants: tuple[str, ...]  # ONNX output forms (`export --variant`); the first is the default
    variant_field: str  # the ModelMetadata field that states an exported file's output form
    deploy_variant: str  # the form `convert` exports for the NPU
    head_bits: int  # activation bits of the output head tail when quantized (see quant/quantize.py)
    data_formats: tuple[str, ...]  # source formats (data/sources.py) that carry this task's ground truth
    models: Mapping[str, str]  # architecture name -> "module:factory"
    config_in_weights: bool  # False: plain weights lack facts the model needs (max_depth), so a config is required

    def load_spec(self) -> TaskSpec:
        return _resolve(self.spec)

    def model_factory(self, arch: str) -> Callable[..., Any]:
        """The factory registered for ``arch``; ConfigError listing the known names otherwise."""
        if arch not in self.models:
            raise ConfigError(f"model.arch {arch!r} is not a registered {self.name} model; known: "
                              f"{', '.join(sorted(self.models))}")
        return _resolve(self.models[arch])


def _resolve(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


DEPTH = TaskEntry(
    name="depth",
    command="depth",
    summary="dual-head monocular depth (integer + fractional heads)",
    spec="model_tools.depth_cli:SPEC",
    preprocessing=Preprocessing(input_scale=1.0 / 255.0, mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225),
                                color_order="RGB", size_multiple=32, default_hw=(384, 640)),
    variants=("composed", "separate"),
    variant_field="depth_outputs",
    deploy_variant="separate",
    head_bits=16,
    data_formats=("synthetic", "kitti"),
    models={"dualhead": "model_tools.models.depth_net:build_depth_net"},
    config_in_weights=False,
)

SEGMENTATION = TaskEntry(
    name="segmentation",
    command="seg",
    summary="DDRNet23-Slim semantic segmentation on the off-road ontology",
    spec="model_tools.seg_cli:SPEC",
    # ImageNet statistics: the official DDRNet weights were trained with them.
    preprocessing=Preprocessing(input_scale=1.0 / 255.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                                color_order="RGB", size_multiple=8, default_hw=(544, 640)),
    variants=("logits", "class_id"),
    variant_field="seg_output",
    deploy_variant="class_id",
    head_bits=8,
    data_formats=("synthetic", "rellis", "rugd", "goose"),
    models={"ddrnet23_slim": "model_tools.models.ddrnet:ddrnet23_slim"},
    config_in_weights=True,
)

TASKS: dict[str, TaskEntry] = {entry.name: entry for entry in (DEPTH, SEGMENTATION)}


def task_names() -> list[str]:
    return sorted(TASKS)


def get_task(name: str, source: str = "task") -> TaskEntry:
    """The entry registered as ``name`` (or whose command is ``name``); ConfigError naming ``source`` otherwise."""
    for entry in TASKS.values():
        if name in (entry.name, entry.command):
            return entry
    raise ConfigError(f"{source}: {name!r} is not a registered task; known: {', '.join(task_names())}")
