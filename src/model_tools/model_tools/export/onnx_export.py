"""Export a torch module to a self-describing ONNX file (TorchScript exporter).

Static shapes, batch 1, the image input (and a depth model's camera input), named outputs, and the
:class:`~perception_core.model_metadata.ModelMetadata` written into
``metadata_props`` with the hash of the graph. The file appears atomically (temp + rename).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from model_tools.io_utils import atomic_write
from perception_core.errors import ConfigError, ModelFileError
from perception_core.model_metadata import CAMERA_INPUT_SHAPE, ModelMetadata, set_model_metadata

SUPPORTED_OPSETS = range(11, 22)


def export_onnx(
    module: nn.Module,
    out_path: str | os.PathLike[str],
    metadata: ModelMetadata,
    *,
    opset: int = 17,
    overwrite: bool = False,
) -> Path:
    """Trace ``module`` on zero inputs of ``metadata.input_shape`` (and ``CAMERA_INPUT_SHAPE``) and write the ONNX file.

    The metadata is validated first and must name the module's outputs in order.
    """
    import onnx

    if opset not in SUPPORTED_OPSETS:
        raise ConfigError(f"opset {opset} is not supported; pick one of {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")
    metadata.validate(str(out_path))
    module = module.eval()
    example: tuple[torch.Tensor, ...] = (torch.zeros(*metadata.input_shape, dtype=torch.float32),)
    if metadata.camera_input:
        example += (torch.zeros(*CAMERA_INPUT_SHAPE, dtype=torch.float32),)
    with atomic_write(out_path, overwrite=overwrite) as tmp:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                example,
                str(tmp),
                input_names=metadata.input_names,
                output_names=list(metadata.output_names),
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        model = onnx.load(str(tmp))
        graph_outputs = [o.name for o in model.graph.output]
        if graph_outputs != list(metadata.output_names):
            raise ModelFileError(f"{out_path}: exported outputs {graph_outputs} != metadata output_names {metadata.output_names}")
        del model.metadata_props[:]
        model.producer_name = "model_tools"
        onnx.checker.check_model(model)
        set_model_metadata(model, metadata)
        onnx.save(model, str(tmp))
    return Path(out_path)


