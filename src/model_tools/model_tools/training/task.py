"""What a training task plugs into the shared engine (``engine.py``).

The engine owns the loop, AMP, EMA, warmup-cosine schedule, gradient
clipping, atomic checkpoints with exact resume, metric logging and plots,
and DDP. A task owns its model, data, loss and validation metrics.

Batches reach ``compute_loss`` and ``validate`` as dicts, on the device,
after ``model_tools.data.datasets.to_model_batch`` (the loaders ship uint8):
``image`` float32 [B,3,H,W] RGB in [0,1] (un-normalised; the task
normalises, because normalisation travels with the model into ONNX
metadata), ``depth`` float32 [B,1,H,W] metres with 0 = invalid,
``label`` int64 [B,H,W] with 255 = ignore. A source without depth or labels
fills them with 0 / 255 so that mixed sources collate; a data set told
``with_depth = False`` (segmentation) has no ``depth`` at all.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset


class TrainingTask(Protocol):
    """Plug-in interface of one model family for the shared engine."""

    name: str  # "depth" | "segmentation"

    def build_model(self) -> nn.Module:
        """A fresh model (pretrained weights loaded here if configured)."""
        ...

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        """(train, validation) datasets yielding batch dicts as above."""
        ...

    def compute_loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        """Forward + loss; return (scalar loss to backprop, named parts for logging).

        Return the parts as detached 0-d tensors: the engine reads them only
        when it logs, and a float() here would make every step wait for the GPU.
        """
        ...

    @torch.no_grad()
    def validate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        """Metrics on the validation loader (the engine passes EMA weights when EMA is on).

        The first key is the headline metric; ``higher_is_better`` says its direction.
        """
        ...

    higher_is_better: bool
