"""DDRNet23-Slim semantic segmentation, with the official checkpoints' state-dict layout.

DDRNet (Deep Dual-Resolution Network) runs a high-resolution branch at 1/8
and a low-resolution branch down to 1/64, exchanges features between them
("bilateral fusion"), pools context with DAPPM and predicts at 1/8. The
module and attribute names below follow the official segmentation code, so
``state_dict()`` keys match ``DDRNet23s_imagenet.pth`` and the Cityscapes
checkpoints and they load without renaming (see :func:`load_official_weights`).

Only NPU-friendly operators appear: Conv, BatchNorm (folded into Conv on
export), ReLU, Add, Concat (DAPPM's branch merge), AveragePool /
GlobalAveragePool (DAPPM, as in the official model) and bilinear Resize with
``align_corners=False``.

Layout (timm-like): blocks, model, weight loading, factory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from torch import nn

from model_tools.models.resnet import init_conv_bn
from model_tools.training.checkpoint import load_safe
from perception_core.errors import ModelFileError

BN_MOMENTUM = 0.1
# Classifier convs of the two heads: the only keys whose shape depends on the class count.
HEAD_CLASSIFIER_PREFIXES = ("final_layer.conv2.", "seghead_extra.conv2.")
# Keys in official checkpoints that are not model weights.
NON_MODEL_KEYS = ("loss.criterion.weight",)


# ----------------------------------------------------------------------------- blocks


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _resize(x: torch.Tensor, size: tuple[int, int] | list[int]) -> torch.Tensor:
    """Bilinear resize, ``align_corners=False`` (what HTP and the official model use)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; ``no_relu`` leaves the sum un-activated (last block of a stage)."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, no_relu: bool = False
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + residual
        return out if self.no_relu else self.relu(out)


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 residual block with expansion 2; un-activated output by default (as official)."""

    expansion = 2

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, no_relu: bool = True
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out)) + residual
        return out if self.no_relu else self.relu(out)


def _bn_relu_conv(in_ch: int, out_ch: int, kernel_size: int = 1) -> list[nn.Module]:
    return [
        nn.BatchNorm2d(in_ch, momentum=BN_MOMENTUM),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_ch, out_ch, kernel_size=kernel_size, padding=kernel_size // 2, bias=False),
    ]


class DAPPM(nn.Module):
    """Deep Aggregation Pyramid Pooling: context at 1/2, 1/4, 1/8 and global scale of the 1/64 map.

    Each pooled branch is upsampled and added to the previous branch before a
    3x3 conv (hierarchical fusion); the five branches are concatenated,
    compressed and added to a 1x1 shortcut.
    """

    def __init__(self, inplanes: int, branch_planes: int, outplanes: int) -> None:
        super().__init__()
        self.scale1 = nn.Sequential(nn.AvgPool2d(5, stride=2, padding=2), *_bn_relu_conv(inplanes, branch_planes))
        self.scale2 = nn.Sequential(nn.AvgPool2d(9, stride=4, padding=4), *_bn_relu_conv(inplanes, branch_planes))
        self.scale3 = nn.Sequential(nn.AvgPool2d(17, stride=8, padding=8), *_bn_relu_conv(inplanes, branch_planes))
        self.scale4 = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), *_bn_relu_conv(inplanes, branch_planes))
        self.scale0 = nn.Sequential(*_bn_relu_conv(inplanes, branch_planes))
        self.process1 = nn.Sequential(*_bn_relu_conv(branch_planes, branch_planes, 3))
        self.process2 = nn.Sequential(*_bn_relu_conv(branch_planes, branch_planes, 3))
        self.process3 = nn.Sequential(*_bn_relu_conv(branch_planes, branch_planes, 3))
        self.process4 = nn.Sequential(*_bn_relu_conv(branch_planes, branch_planes, 3))
        self.compression = nn.Sequential(*_bn_relu_conv(branch_planes * 5, outplanes))
        self.shortcut = nn.Sequential(*_bn_relu_conv(inplanes, outplanes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (int(x.shape[-2]), int(x.shape[-1]))  # python ints: static Resize sizes in the exported graph
        branches = [self.scale0(x)]
        for scale, process in (
            (self.scale1, self.process1),
            (self.scale2, self.process2),
            (self.scale3, self.process3),
            (self.scale4, self.process4),
        ):
            branches.append(process(_resize(scale(x), size) + branches[-1]))
        return self.compression(torch.cat(branches, dim=1)) + self.shortcut(x)


class SegmentHead(nn.Module):
    """BN-ReLU-Conv3x3-BN-ReLU-Conv1x1 classifier (``final_layer`` / ``seghead_extra``)."""

    def __init__(self, inplanes: int, interplanes: int, num_classes: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, momentum=BN_MOMENTUM)
        self.conv1 = nn.Conv2d(inplanes, interplanes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(interplanes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(interplanes, num_classes, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.relu(self.bn1(x)))
        return self.conv2(self.relu(self.bn2(x)))


def _make_layer(block: type[BasicBlock | Bottleneck], inplanes: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """A stage of ``blocks`` blocks; the first may downsample, the last has no final ReLU."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion, momentum=BN_MOMENTUM),
        )
    layers: list[nn.Module] = [block(inplanes, planes, stride, downsample)]
    inplanes = planes * block.expansion
    for index in range(1, blocks):
        layers.append(block(inplanes, planes, stride=1, no_relu=index == blocks - 1))
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- model


@dataclass(frozen=True)
class DDRNetConfig:
    """Architecture hyper-parameters; the defaults are DDRNet23-Slim."""

    num_classes: int = 19
    layers: tuple[int, int, int, int] = (2, 2, 2, 2)
    planes: int = 32
    spp_planes: int = 128
    head_planes: int = 64
    aux_head: bool = False


class DDRNet(nn.Module):
    """Dual-resolution segmentation network; ``forward`` returns logits at 1/8 of the input.

    With ``aux_head`` (training) ``forward`` returns ``(main, aux)``; the aux
    head reads the high-resolution branch after the first fusion. ``eval()``
    alone does not drop it: use :meth:`forward_main` (what export uses) or
    build with ``aux_head=False``.
    """

    output_stride = 8

    def __init__(self, config: DDRNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or DDRNetConfig()
        planes = cfg.planes
        highres_planes = planes * 2
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, planes, kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(planes, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(planes, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
        )
        self.relu = nn.ReLU(inplace=False)
        self.layer1 = _make_layer(BasicBlock, planes, planes, cfg.layers[0])
        self.layer2 = _make_layer(BasicBlock, planes, planes * 2, cfg.layers[1], stride=2)
        self.layer3 = _make_layer(BasicBlock, planes * 2, planes * 4, cfg.layers[2], stride=2)
        self.layer4 = _make_layer(BasicBlock, planes * 4, planes * 8, cfg.layers[3], stride=2)
        # Bilateral fusion: low -> high (1x1 conv + upsample), high -> low (strided 3x3 convs).
        self.compression3 = nn.Sequential(
            nn.Conv2d(planes * 4, highres_planes, kernel_size=1, bias=False),
            nn.BatchNorm2d(highres_planes, momentum=BN_MOMENTUM),
        )
        self.compression4 = nn.Sequential(
            nn.Conv2d(planes * 8, highres_planes, kernel_size=1, bias=False),
            nn.BatchNorm2d(highres_planes, momentum=BN_MOMENTUM),
        )
        self.down3 = nn.Sequential(
            nn.Conv2d(highres_planes, planes * 4, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(planes * 4, momentum=BN_MOMENTUM),
        )
        self.down4 = nn.Sequential(
            nn.Conv2d(highres_planes, planes * 4, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(planes * 4, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes * 4, planes * 8, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(planes * 8, momentum=BN_MOMENTUM),
        )
        # High-resolution branch (1/8).
        self.layer3_ = _make_layer(BasicBlock, planes * 2, highres_planes, 2)
        self.layer4_ = _make_layer(BasicBlock, highres_planes, highres_planes, 2)
        self.layer5_ = _make_layer(Bottleneck, highres_planes, highres_planes, 1)
        # Low-resolution branch down to 1/64, then context pooling.
        self.layer5 = _make_layer(Bottleneck, planes * 8, planes * 8, 1, stride=2)
        self.spp = DAPPM(planes * 16, cfg.spp_planes, planes * 4)
        if cfg.aux_head:
            self.seghead_extra = SegmentHead(highres_planes, cfg.head_planes, cfg.num_classes)
        self.final_layer = SegmentHead(planes * 4, cfg.head_planes, cfg.num_classes)
        init_conv_bn(self)

    @property
    def num_classes(self) -> int:
        return self.final_layer.conv2.out_channels

    @property
    def has_aux_head(self) -> bool:
        return hasattr(self, "seghead_extra")

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused 1/8 features for the main head, and the mid-level high-res features for the aux head."""
        # Python ints so a traced export gets constant Resize sizes (no Shape/Gather subgraph).
        out_hw = (int(x.shape[-2]) // 8, int(x.shape[-1]) // 8)
        x = self.layer1(self.conv1(x))
        x2 = self.layer2(self.relu(x))
        low = self.layer3(self.relu(x2))
        high = self.layer3_(self.relu(x2))
        low_fused = low + self.down3(self.relu(high))
        high = high + _resize(self.compression3(self.relu(low)), out_hw)
        aux_features = high
        low = self.layer4(self.relu(low_fused))
        high = self.layer4_(self.relu(high))
        low_fused = low + self.down4(self.relu(high))
        high = high + _resize(self.compression4(self.relu(low)), out_hw)
        high = self.layer5_(self.relu(high))
        context = _resize(self.spp(self.layer5(self.relu(low_fused))), out_hw)
        return context + high, aux_features

    def forward_main(self, x: torch.Tensor) -> torch.Tensor:
        """Main-head logits at 1/8 resolution (no aux head: the inference/export path)."""
        features, _ = self.forward_features(x)
        return self.final_layer(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features, aux_features = self.forward_features(x)
        logits = self.final_layer(features)
        if self.has_aux_head:
            return logits, self.seghead_extra(aux_features)
        return logits

    def reset_classifier(self, num_classes: int) -> None:
        """Head swap: new class count for both heads' final 1x1 conv, Xavier-initialised.

        The heads' BN-ReLU-Conv3x3 part and the whole backbone keep their
        (pretrained) weights; only the class-dependent classifier is replaced.
        """
        heads = [self.final_layer] + ([self.seghead_extra] if self.has_aux_head else [])
        for head in heads:
            old = head.conv2
            new = nn.Conv2d(old.in_channels, num_classes, kernel_size=1, bias=True)
            nn.init.xavier_uniform_(new.weight)
            nn.init.zeros_(new.bias)
            head.conv2 = new.to(device=old.weight.device, dtype=old.weight.dtype)


class SegmentationExportWrapper(nn.Module):
    """What the ONNX file computes: normalised RGB in, logits or class ids at input size out.

    ``output="logits"`` gives [1,C,H,W]; ``"class_id"`` an in-graph ArgMax cast
    to float [1,1,H,W] (int64 outputs fail on HTP). Normalisation stays out
    of the graph (it travels in the metadata).
    """

    def __init__(self, model: DDRNet, output: str = "logits") -> None:
        super().__init__()
        if output not in ("logits", "class_id"):
            raise ValueError(f"output must be 'logits' or 'class_id', not {output!r}")
        self.model = model
        self.output = output

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        logits = _resize(self.model.forward_main(rgb), (int(rgb.shape[-2]), int(rgb.shape[-1])))
        if self.output == "class_id":
            return torch.argmax(logits, dim=1, keepdim=True).to(torch.float32)
        return logits


# ----------------------------------------------------------------------------- official weights


@dataclass
class LoadReport:
    """What :func:`load_official_weights` did, for the user to read."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # model keys the checkpoint lacks (kept as initialised)
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys the model lacks (ignored)
    reinitialised_heads: list[str] = field(default_factory=list)  # class-count mismatch -> Xavier init
    dropped: list[str] = field(default_factory=list)  # known non-weight keys (loss.criterion.weight)
    checkpoint_num_classes: int | None = None

    def summary(self) -> str:
        lines = [f"{self.source}: loaded {len(self.loaded)} tensors"]
        if self.checkpoint_num_classes is not None:
            lines.append(f"  checkpoint classes: {self.checkpoint_num_classes}")
        for label, keys in (
            ("re-initialised heads (class count differs)", self.reinitialised_heads),
            ("missing (kept as initialised)", self.missing),
            ("unexpected (ignored)", self.unexpected),
            ("dropped non-weight keys", self.dropped),
        ):
            if keys:
                lines.append(f"  {label}: {len(keys)}: {_abbreviate(keys)}")
        return "\n".join(lines)


def _abbreviate(keys: list[str], limit: int = 8) -> str:
    """Key list grouped by top-level module, so 100 spp keys read as one entry."""
    groups: dict[str, int] = {}
    for key in keys:
        top = key.split(".")[0]
        groups[top] = groups.get(top, 0) + 1
    parts = [f"{top}.* ({n})" if n > 1 else next(k for k in keys if k.split(".")[0] == top) for top, n in groups.items()]
    return ", ".join(parts[:limit]) + (f", ... (+{len(parts) - limit} groups)" if len(parts) > limit else "")


def read_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of an official DDRNet checkpoint, safely loaded and with wrappers removed.

    Loads with ``weights_only=True`` (never executes pickled code), unwraps a
    ``state_dict``/``model`` entry, strips ``module.`` (DDP) and ``model.``
    (the official ``FullModel`` wrapper) prefixes.
    """
    raw = load_safe(path)
    if isinstance(raw, Mapping):
        for wrapper_key in ("state_dict", "model_state_dict"):
            if wrapper_key in raw and isinstance(raw[wrapper_key], Mapping):
                raw = raw[wrapper_key]
                break
        else:
            if "model" in raw and isinstance(raw["model"], Mapping):
                raw = raw["model"]
    if not isinstance(raw, Mapping) or not raw:
        raise ModelFileError(f"{path}: expected a state dict (name -> tensor), found {type(raw).__name__}")
    tensors: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if not isinstance(value, torch.Tensor):
            continue  # e.g. an epoch counter beside the weights
        name = str(key)
        for prefix in ("module.", "model."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        tensors[name] = value
    if not tensors:
        raise ModelFileError(f"{path}: the checkpoint holds no tensors")
    return tensors


def load_official_weights(model: DDRNet, path: str | Path, strict_heads: bool = False) -> LoadReport:
    """Load an official DDRNet23-Slim checkpoint (ImageNet or Cityscapes) into ``model``.

    * Keys of the ImageNet checkpoint's classifier (absent here) are reported
      as unexpected; spp and heads it lacks are reported as missing.
    * A class-count mismatch on the heads' final 1x1 conv (Cityscapes 19 ->
      ours 7) re-initialises those heads with Xavier (the head swap) unless
      ``strict_heads``.
    * Any other shape mismatch raises :class:`ModelFileError` naming the key.
    """
    state = read_official_state_dict(path)
    report = LoadReport(source=str(path))
    own = model.state_dict()
    to_load: dict[str, torch.Tensor] = {}
    head_mismatch = False
    for key, tensor in state.items():
        if key in NON_MODEL_KEYS:
            report.dropped.append(key)
            continue
        if key not in own:
            report.unexpected.append(key)
            continue
        if key == "final_layer.conv2.weight":
            report.checkpoint_num_classes = int(tensor.shape[0])
        if tuple(tensor.shape) != tuple(own[key].shape):
            if key.startswith(HEAD_CLASSIFIER_PREFIXES) and not strict_heads:
                head_mismatch = True
                report.reinitialised_heads.append(key)
                continue
            raise ModelFileError(
                f"{path}: tensor {key!r} has shape {tuple(tensor.shape)} in the checkpoint but "
                f"{tuple(own[key].shape)} in the model (is this a DDRNet23-Slim checkpoint?)"
            )
        to_load[key] = tensor
    if not to_load:
        raise ModelFileError(
            f"{path}: no tensor name matches DDRNet23-Slim (first keys: {', '.join(list(state)[:5])})"
        )
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    # num_batches_tracked buffers (absent from checkpoints of older torch) only count BN updates.
    report.missing = sorted(
        k for k in own
        if k not in to_load and k not in report.reinitialised_heads and not k.endswith("num_batches_tracked")
    )
    if head_mismatch:
        model.reset_classifier(model.num_classes)
    return report


# ----------------------------------------------------------------------------- factory


def ddrnet23_slim(num_classes: int = 19, aux_head: bool = False) -> DDRNet:
    """DDRNet23-Slim: BasicBlock [2,2,2,2], planes 32, spp_planes 128, head_planes 64 (~5.7M params)."""
    return DDRNet(DDRNetConfig(num_classes=num_classes, aux_head=aux_head))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(model: DDRNet) -> str:
    """One line: classes, parameter count in millions, aux head present."""
    return (
        f"DDRNet23-Slim: {model.num_classes} classes, {count_parameters(model) / 1e6:.2f}M params, "
        f"aux head {'on' if model.has_aux_head else 'off'}, output stride {model.output_stride}"
    )


__all__ = [
    "DAPPM",
    "BasicBlock",
    "Bottleneck",
    "DDRNet",
    "DDRNetConfig",
    "LoadReport",
    "SegmentHead",
    "SegmentationExportWrapper",
    "count_parameters",
    "ddrnet23_slim",
    "describe",
    "load_official_weights",
    "read_official_state_dict",
]
