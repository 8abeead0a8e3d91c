"""ResNet-18/34 encoder (torchvision-compatible parameter names), written here.

Parameter names follow torchvision's ResNet (``conv1``, ``bn1``,
``layer1.0.conv1`` ...) so an ImageNet state dict in that layout can be
loaded with :func:`load_encoder_weights`. ``width`` scales every stage's
channels (64 = the standard network; tests use small widths).
Layout: blocks, encoder, factory, configs.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from perception_core.errors import ConfigError

# ---- blocks ------------------------------------------------------------------------------------


def init_conv_bn(model: nn.Module) -> None:
    """He (fan_out, ReLU) init for every conv, unit scale and zero shift for every BatchNorm."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; a 1x1 projection when the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


# ---- encoder -----------------------------------------------------------------------------------


class ResNetEncoder(nn.Module):
    """ResNet trunk returning five feature maps at strides 2, 4, 8, 16, 32."""

    def __init__(self, blocks: tuple[int, int, int, int], width: int = 64) -> None:
        super().__init__()
        chans = [width, width, width * 2, width * 4, width * 8]
        self.num_ch_enc = chans
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = width
        for index, (count, out_ch) in enumerate(zip(blocks, chans[1:], strict=True)):
            stride = 1 if index == 0 else 2
            layers = [BasicBlock(in_ch, out_ch, stride)] + [BasicBlock(out_ch, out_ch) for _ in range(count - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*layers))
            in_ch = out_ch
        init_conv_bn(self)
        # Zero-init the last BN of each residual branch: each block starts as identity.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f0 = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(self.maxpool(f0))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f0, f1, f2, f3, f4]


# ---- factory -----------------------------------------------------------------------------------

RESNET_BLOCKS: dict[str, tuple[int, int, int, int]] = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
}


def build_resnet_encoder(name: str = "resnet18", width: int = 64) -> ResNetEncoder:
    if name not in RESNET_BLOCKS:
        raise ConfigError(f"config field model.encoder = {name!r} is not one of {sorted(RESNET_BLOCKS)}")
    if width < 1:
        raise ConfigError(f"config field model.width = {width} must be >= 1")
    return ResNetEncoder(RESNET_BLOCKS[name], width)


def load_encoder_weights(encoder: ResNetEncoder, path: str | os.PathLike[str]) -> None:
    """Load a torchvision-layout ResNet state dict (``fc.*`` ignored), weights-only."""
    from model_tools.training.checkpoint import extract_state_dict, load_safe, load_state_dict_checked

    state = extract_state_dict(load_safe(path), str(path))
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    state = {k[len("encoder."):] if k.startswith("encoder.") else k: v for k, v in state.items()}
    load_state_dict_checked(encoder, state, f"encoder weights {path}")
