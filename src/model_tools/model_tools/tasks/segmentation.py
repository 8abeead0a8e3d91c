"""Segmentation training task: DDRNet23-Slim + focal loss + mIoU, plugged into the shared engine.

The engine (``model_tools.training.engine``) owns the loop, AMP, EMA,
schedule, checkpoints and DDP; this module owns the model, loss, data
selection and validation metric. Config sections (``model``, ``data``,
``loss`` of :class:`~model_tools.training.config.TrainConfig`) are parsed
into the dataclasses below so typos fail with the section named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from torch import nn
from torch.utils.data import Dataset

from model_tools.data.datasets import to_model_image
from model_tools.losses import FocalLoss, class_weights_by_name
from model_tools.models.ddrnet import describe, load_official_weights
from model_tools.registry import SEGMENTATION
from perception_core.errors import ConfigError
from perception_core.metrics.segmentation import ConfusionMatrix
from perception_core.ontology import Ontology, load_ontology

# Normalisation (ImageNet statistics) is applied in the task, not in the graph, and travels in the ONNX metadata.
IMAGENET_MEAN = SEGMENTATION.preprocessing.mean
IMAGENET_STD = SEGMENTATION.preprocessing.std


@dataclass
class SegModelConfig:
    """``model:`` section."""

    arch: str = "ddrnet23_slim"
    aux_head: bool = True  # training-only auxiliary head (dropped at export)
    aux_weight: float = 0.4
    pretrained: str = ""  # official DDRNet23-Slim checkpoint (ImageNet or Cityscapes); "" = random init
    ontology: str = ""  # ontology YAML; "" = the default lookup (load_ontology)


@dataclass
class SegLossConfig:
    """``loss:`` section: focal loss with per-class weights by ontology class name."""

    gamma: float = 2.0
    class_weights: dict[str, float] = field(default_factory=lambda: {"water": 5.0, "dynamic": 5.0})
    ignore_index: int = 255


@dataclass
class SegDataConfig:
    """``data:`` section.

    ``sources`` lists data sets (each ``{format: synthetic|rellis|rugd|goose,
    root: PATH, ...}``, read by ``model_tools.data.sources``) combined into one
    training set; the validation split of every source is concatenated. Training uses random scale/crop to
    ``train_hw`` with colour jitter, erasing and flips; validation resizes the
    whole image to ``val_hw``.
    """

    sources: list[dict[str, Any]] = field(default_factory=list)
    train_split: str = "train"
    val_split: str = "val"
    train_hw: list[int] = field(default_factory=lambda: [544, 640])
    val_hw: list[int] = field(default_factory=lambda: [544, 640])
    augment: dict[str, Any] = field(default_factory=dict)  # passed to the data package's transform builder
    max_val_images: int = 0  # 0 = all


_NORM_CONSTANTS: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}


def normalize(image: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] RGB in [0,1] -> ImageNet-normalised (what the model and the ONNX metadata expect).

    The mean/std tensors are made once per device and dtype: a host-to-device
    copy on every call could not be captured into a CUDA graph.
    """
    key = (image.device, image.dtype)
    if key not in _NORM_CONSTANTS:
        _NORM_CONSTANTS[key] = (torch.tensor(IMAGENET_MEAN, device=image.device, dtype=image.dtype).view(1, 3, 1, 1),
                                torch.tensor(IMAGENET_STD, device=image.device, dtype=image.dtype).view(1, 3, 1, 1))
    mean, std = _NORM_CONSTANTS[key]
    return (image - mean) / std


_RESIZE_MATRICES: dict[tuple[int, int, torch.device], torch.Tensor] = {}


def _bilinear_matrix(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """[n_out, n_in] fp32 weights of 1-D bilinear resizing with half-pixel centres (``align_corners=False``).

    The source coordinate and the two weights of each output sample are
    PyTorch's (``(d + 0.5) * n_in / n_out - 0.5``, clamped at 0; the last
    sample repeats at the far edge). Made once per size and device, on the device.
    """
    key = (n_in, n_out, device)
    if key not in _RESIZE_MATRICES:
        rows = torch.arange(n_out, device=device)
        src = ((rows.double() + 0.5) * (n_in / n_out) - 0.5).clamp(min=0.0)
        i0 = src.floor().long().clamp(max=n_in - 1)
        i1 = (i0 + 1).clamp(max=n_in - 1)
        lam = src - i0.double()
        matrix = torch.zeros(n_out, n_in, dtype=torch.float64, device=device)
        matrix.index_put_((rows, i0), 1.0 - lam, accumulate=True)
        matrix.index_put_((rows, i1), lam, accumulate=True)
        _RESIZE_MATRICES[key] = matrix.float()
    return _RESIZE_MATRICES[key]


def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(logits.float(), size, mode="bilinear", align_corners=False)`` as two fp32 matrix products.

    Same weights, so the same values up to float rounding, and the same
    gradients; but the backward is two more matrix products instead of
    PyTorch's scatter with atomic adds, which on an H200 took 18% of the
    segmentation step's GPU time for the two heads' x8 upsampling
    (docs/measurements/train_seg_profile_h200.json). Autocast stays off: fp32
    as before.
    """
    h, w = logits.shape[-2:]
    with torch.autocast(logits.device.type, enabled=False):
        rows = _bilinear_matrix(h, int(size[0]), logits.device)
        cols = _bilinear_matrix(w, int(size[1]), logits.device)
        return rows @ (logits.float().contiguous() @ cols.T)


def main_logits(output: torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
    """The main head's logits whether or not the model returns the aux head too."""
    return output[0] if isinstance(output, (tuple, list)) else output


def predict_labels(model: nn.Module, image: torch.Tensor, out_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """int64 [B,H,W] class ids at ``out_hw`` (default: the input size) from un-normalised [0,1] images."""
    logits = main_logits(model(normalize(image)))
    size = out_hw or (image.shape[-2], image.shape[-1])
    logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
    return logits.argmax(dim=1)


class SegmentationTask:
    """The :class:`~model_tools.training.task.TrainingTask` of DDRNet23-Slim segmentation."""

    name = "segmentation"
    higher_is_better = True

    def __init__(self, config: Any, ontology: Ontology | None = None) -> None:
        from model_tools.training.config import dataclass_from_dict

        self.config = config
        self.model_cfg = dataclass_from_dict(SegModelConfig, dict(config.model), "config: model")
        self.loss_cfg = dataclass_from_dict(SegLossConfig, dict(config.loss), "config: loss")
        self.data_cfg = dataclass_from_dict(SegDataConfig, dict(config.data), "config: data")
        self.model_factory = SEGMENTATION.model_factory(self.model_cfg.arch)
        for key in ("train_hw", "val_hw"):
            hw = getattr(self.data_cfg, key)
            if len(hw) != 2 or any(int(v) % 8 for v in hw):
                raise ConfigError(f"config: data.{key} {hw} must be [H, W], both multiples of 8 (output stride)")
        if int(getattr(config, "batch_size", 2)) < 2:
            raise ConfigError(
                "config: batch_size must be >= 2 per process: DAPPM's global-pool branch has BatchNorm over a 1x1 map, "
                "which cannot train on a single image"
            )
        self.ontology = ontology or load_ontology(self.model_cfg.ontology or None)
        self.class_names = self.ontology.names
        self.num_classes = len(self.class_names)
        weights = class_weights_by_name(self.class_names, self.loss_cfg.class_weights)
        self.criterion = FocalLoss(self.loss_cfg.gamma, weights, self.loss_cfg.ignore_index)
        self.last_load_report: str = ""

    # -- model ------------------------------------------------------------------------------------

    def build_model(self) -> nn.Module:
        """DDRNet23-Slim with this ontology's class count; official weights loaded if configured."""
        model = self.model_factory(num_classes=self.num_classes, aux_head=self.model_cfg.aux_head)
        if self.model_cfg.pretrained:
            report = load_official_weights(model, self.model_cfg.pretrained)
            self.last_load_report = report.summary()
            print(self.last_load_report)
        print(describe(model))
        return model

    # -- data -------------------------------------------------------------------------------------

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        """(train, val) over every configured source, each combined into one MultiSourceDataset."""
        from model_tools.data.sources import build_sources
        from model_tools.data.transforms import train_transforms

        cfg = self.data_cfg
        scale = tuple(cfg.augment.get("scale", (0.5, 2.0)))
        unknown = sorted(set(cfg.augment) - {"scale"})
        if unknown:
            raise ConfigError(f"config: data.augment has unknown field(s) {unknown}; known: scale")
        train_tf = EngineSeededTransform(train_transforms(*cfg.train_hw, scale=scale))  # type: ignore[arg-type]
        train = build_sources(self.sources(), "train", train_tf, default_split=cfg.train_split, ontology=self.ontology,
                              with_depth=False)
        return train, self.eval_dataset()

    def sources(self) -> list[dict[str, Any]]:
        """``data.sources``, checked: each well formed and carrying segmentation labels."""
        from model_tools.data.sources import check_sources

        check_sources(self.data_cfg.sources, SEGMENTATION.data_formats, self.name)
        return self.data_cfg.sources

    def eval_dataset(self, split: str | None = None, max_images: int | None = None) -> Dataset:
        """The validation sources (or their ``split``), whole images resized to ``val_hw``.

        At most ``max_images`` (0: all), evenly spaced; None applies the config's ``max_val_images``.
        Segmentation never looks at depth, so the sources skip reading it (one decode less per sample).
        """
        from model_tools.data.sources import build_sources, evenly_spaced_subset
        from model_tools.data.transforms import val_transforms

        cfg = self.data_cfg
        val = build_sources(self.sources(), "val", EngineSeededTransform(val_transforms(*cfg.val_hw)),
                            default_split=cfg.val_split, split=split, ontology=self.ontology, with_depth=False)
        return evenly_spaced_subset(val, cfg.max_val_images if max_images is None else max_images)

    # -- loss -------------------------------------------------------------------------------------

    def compute_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Focal loss of the main head (+ ``aux_weight`` x the aux head), logits upsampled to label size (fp32)."""
        image, label = batch["image"], batch["label"]
        output = model(normalize(image))
        outputs = list(output) if isinstance(output, (tuple, list)) else [output]
        size = label.shape[-2:]
        self.criterion.to(image.device)
        losses = [
            self.criterion(resize_logits(o, (size[0], size[1])), label)
            for o in outputs
        ]
        total = losses[0]
        parts = {"focal": losses[0].detach()}
        if len(losses) > 1:
            total = total + self.model_cfg.aux_weight * losses[1]
            parts["focal_aux"] = losses[1].detach()
        return total, parts

    # -- validation -------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        """mIoU (headline), pixel accuracy and per-class IoU on the validation loader."""
        matrix = self.confusion_matrix(model, loader, device)
        metrics = {"miou": matrix.miou(), "pixel_accuracy": matrix.pixel_accuracy()}
        for name, value in zip(self.class_names, matrix.iou(), strict=True):
            metrics[f"iou_{name}"] = float(value)
        return metrics

    @torch.no_grad()
    def confusion_matrix(self, model: nn.Module, loader: Any, device: torch.device, progress: bool = False) -> ConfusionMatrix:
        """Accumulate predictions at label resolution over ``loader``."""
        was_training = model.training
        model.eval()
        matrix = ConfusionMatrix(self.num_classes, self.loss_cfg.ignore_index)
        batches = loader
        if progress:
            from tqdm import tqdm

            batches = tqdm(loader, desc="eval", unit="batch")
        for batch in batches:
            label = batch["label"]
            pred = predict_labels(model, to_model_image(batch["image"], device), tuple(label.shape[-2:]))
            matrix.update(pred.cpu().numpy(), label.cpu().numpy())  # the engine's loader may have moved it to the GPU
        model.train(was_training)
        return matrix


class EngineSeededTransform:
    """Runs a data transform with an RNG drawn from numpy's global state.

    The engine seeds the global RNGs per (seed, epoch, sample index) in the
    worker that loads a sample, so augmentation differs every epoch yet is
    replayed exactly on resume. (The loaders' own per-item RNG is either
    unseeded or fixed across epochs unless told the epoch.)
    """

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def __call__(self, sample: dict[str, Any], rng: Any = None) -> dict[str, Any]:
        import numpy as np

        return self.transform(sample, np.random.default_rng(np.random.randint(0, 2**31 - 1)))
