"""Typed training config: a dataclass loaded from YAML, with CLI overrides.

One file describes a run. Engine settings are typed fields of
:class:`TrainConfig`; task-specific sections (``model``, ``data``, ``loss``,
``distill``) are dicts that each task parses into its own dataclass with
:func:`dataclass_from_dict`, so one loader serves depth and segmentation.
Overrides use dotted keys with YAML-parsed values (``--set lr=3e-4
--set model.kind=sigmoid``). The effective config is written to the run
folder (``config.yaml``) so a run can be repeated and resumed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from perception_core.errors import ConfigError

T = TypeVar("T")


@dataclass
class TrainConfig:
    """Engine settings of one training run (task sections are plain dicts)."""

    task: str = "depth"
    run_name: str = "run"
    seed: int = 0
    # Length: epochs, optionally capped by steps and/or wall-clock minutes.
    # With a time budget the LR schedule follows max(step, time) progress, so
    # the cosine still ends at the budget (such runs are not bit-reproducible).
    epochs: int = 10
    max_steps: int = 0  # 0 = epochs * steps_per_epoch
    time_budget_min: float = 0.0  # 0 = no budget
    batch_size: int = 8  # per process (per GPU under DDP)
    num_workers: int = 4
    pin_memory: bool = True
    persistent_workers: bool = True
    prefetch_factor: int = 4
    # Optimiser and schedule.
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 200
    warmup_epochs: float = 0.0  # > 0: warmup is this many epochs (overrides warmup_steps)
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0  # 0 = off
    # Precision and layout.
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # autocast on CUDA (CPU runs in fp32)
    amp_dtype: str = "bf16"  # bf16 | fp16 (fp16 uses a GradScaler)
    channels_last: bool = True  # CUDA only
    # How a step runs and how batches are made (docs/training.md, "Fast path").
    step_mode: str = "eager"  # eager | cuda_graph (the whole step captured once and replayed; CUDA only)
    data_pipeline: str = "workers"  # workers (decode + augment per sample in loader processes) | cached
    cache_dir: str = ""  # cached: where the decoded frames live; "" = <run dir>/frame_cache
    cache_max_hw: list[int] = field(default_factory=lambda: [0, 0])  # cached: larger frames are shrunk to fit; 0 = 2x the crop
    cache_on_device: bool = True  # cached: hold the frames in device memory when they fit in half of it
    # EMA of the weights (validation and exports use it when on).
    ema: bool = False
    ema_decay: float = 0.9999
    ema_warmup: bool = True  # decay ramps as (1+n)/(10+n) so short runs still track
    # Cadence.
    val_every_epochs: int = 1
    checkpoint_every_steps: int = 0  # 0 = at epoch ends only
    log_every_steps: int = 10
    progress_bar: bool = True
    # Task sections.
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)
    distill: dict[str, Any] = field(default_factory=dict)

    def validate(self, source: str = "config") -> None:
        """Raise ConfigError naming ``source`` and the field for impossible values."""
        checks = [
            ("epochs", self.epochs >= 1),
            ("batch_size", self.batch_size >= 1),
            ("lr", self.lr > 0),
            ("max_steps", self.max_steps >= 0),
            ("time_budget_min", self.time_budget_min >= 0),
            ("warmup_steps", self.warmup_steps >= 0),
            ("warmup_epochs", self.warmup_epochs >= 0),
            ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1),
            ("ema_decay", 0 < self.ema_decay < 1),
            ("val_every_epochs", self.val_every_epochs >= 1),
            ("amp_dtype", self.amp_dtype in ("bf16", "fp16")),
            ("betas", len(self.betas) == 2),
            ("step_mode", self.step_mode in ("eager", "cuda_graph")),
            ("data_pipeline", self.data_pipeline in ("workers", "cached")),
            ("cache_max_hw", len(self.cache_max_hw) == 2 and all(v >= 0 for v in self.cache_max_hw)),
        ]
        for name, ok in checks:
            if not ok:
                raise ConfigError(f"{source}: field {name!r} has an invalid value {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _type_ok(value: Any, annotation: Any) -> bool:
    """Loose runtime check of a YAML value against a dataclass field type."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is not None:
        annotation = origin
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _accepts_float(annotation: Any) -> bool:
    if annotation is float:
        return True
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and float in typing.get_args(annotation)


def _float_or_str(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def dataclass_from_dict(cls: type[T], data: dict[str, Any], source: str) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys or wrong types raise ConfigError.

    ``source`` names the file/section in the message (e.g. ``run.yaml: model``).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, str) and _accepts_float(hints[key]):
            value = _float_or_str(value)  # YAML 1.1 reads "3e-4" as a string
        if not _type_ok(value, hints[key]):
            raise ConfigError(f"{source}: field {key!r} = {value!r} is not of type {hints[key]}")
        if hints[key] is float and isinstance(value, int):
            value = float(value)
        kwargs[key] = value
    return cls(**kwargs)


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "lr=3e-4"]`` -> nested dict with YAML-typed values."""
    tree: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not key=value")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
            if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string; numbers are meant
                value = _float_or_str(value) if not value.lstrip("+-").isalpha() else value
        except yaml.YAMLError as err:
            raise ConfigError(f"override {key}: value {raw!r} is not valid YAML: {err}") from err
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {part!r} is set both as a value and a section")
        node[parts[-1]] = value
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def config_from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    config = dataclass_from_dict(TrainConfig, data, source)
    config.validate(source)
    return config


def load_config(path: str | Path | None, overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """Load a YAML config (or defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"cannot read config {path}: {err.strerror}") from err
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    if extra:
        source += " (with overrides)"
    return config_from_dict(_merge(data, extra), source)


def save_config(config: TrainConfig, path: str | Path) -> Path:
    """Write the effective config atomically (YAML)."""
    from model_tools.io_utils import atomic_write

    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    return Path(path)
