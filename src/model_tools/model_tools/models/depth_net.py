"""Dual-head monocular depth network: ResNet encoder + monodepth-style decoder.

The decoder (channels [16, 32, 64, 128, 256] by default, nearest x2
upsampling, skip connections) predicts at 4 scales; scale 0 is the input
resolution, scale s is 1/2^s. Each scale has two heads:

- ``integer``: ``sigmoid`` kind -> 1 channel, sigmoid, value in [0, 1] whose
  depth part is ``integer * max_depth`` (trained towards floor(depth)/max_depth);
  ``levels`` kind -> ``levels`` logits (training: softmax/CE; inference:
  ArgMax -> float -> / (levels-1)).
- ``fractional``: 1 channel, ``step * sigmoid`` metres, the residual below
  one integer step (``perception_core.depth_codec.integer_step``).

Depth = integer * max_depth + fractional (``depth_codec.compose_depth``).
The network takes normalised input ``(x - 0.45) / 0.225`` (x = RGB in [0,1]);
the normalisation is not in the graph, it travels in the ONNX metadata.
Only ReLU activations and Conv/Resize/ArgMax ops, for the NPU (plus Gemm and
broadcast Mul/Add for the optional camera input, ``CameraModulation``). Padding of
the decoder's 3x3 convs is ``zeros`` (NPU-friendly) or ``reflect``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - torch convention
from torch import nn

from model_tools.models.resnet import RESNET_BLOCKS, build_resnet_encoder, load_encoder_weights
from model_tools.registry import DEPTH
from perception_core.depth_codec import HEAD_KINDS, integer_step
from perception_core.errors import ConfigError
from perception_core.model_metadata import CAMERA_INPUT_SHAPE, DEPTH_CAMERA_MODELS

NORM_MEAN = DEPTH.preprocessing.mean[0]  # one value for all three channels
NORM_STD = DEPTH.preprocessing.std[0]
NUM_SCALES = 4
CAMERA_FEATURES = CAMERA_INPUT_SHAPE[1]
PADDING_MODES = ("zeros", "reflect")

# ---- config ------------------------------------------------------------------------------------


@dataclass
class DepthModelConfig:
    """The ``model`` section of a depth training config."""

    encoder: str = "resnet18"  # resnet18 | resnet34
    width: int = 64  # encoder base width (64 = standard ResNet)
    decoder_channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    kind: str = "levels"  # integer head: levels | sigmoid
    levels: int = 256
    max_depth: float = 15.0
    min_depth: float = 0.1
    padding: str = "zeros"  # zeros (NPU) | reflect (training quality)
    input_height: int = 384
    input_width: int = 640
    encoder_weights: str = ""  # optional torchvision-layout ResNet state dict
    # "fixed": depth in metres for the training camera; "canonical_focal": depth for a camera whose focal
    # length at the model input (geometric mean of fx, fy) is canonical_focal_px; "canonical_focal_height":
    # and whose height above the ground is canonical_height_m. Training divides each frame's depth by
    # (focal / canonical_focal_px) [* (height / canonical_height_m)], and the runtime multiplies by it
    # (perception_core.model_metadata.DEPTH_CAMERA_MODELS).
    camera: str = "fixed"
    canonical_focal_px: float = 0.0
    canonical_height_m: float = 0.0
    # camera_focal_height only: the network also takes the camera ([ln focal ratio, ln height ratio], the
    # runtime's perception_core.pipelines.camera_features) and scales and shifts every encoder feature map by
    # a small MLP of it (CameraModulation), zero at start so that a run from weights without it starts equal.
    camera_input: bool = False
    # Optional weights to start from (a state dict, checkpoint or split-parts prefix of this architecture).
    init_weights: str = ""

    # Fields whose difference makes a checkpoint's weights mean something else.
    ARCH_FIELDS = ("encoder", "width", "decoder_channels", "kind", "levels", "max_depth", "padding", "camera",
                   "canonical_focal_px", "canonical_height_m", "camera_input")

    def validate(self, source: str = "config") -> None:
        if self.encoder not in RESNET_BLOCKS:
            raise ConfigError(f"{source}: model.encoder = {self.encoder!r} is not one of {sorted(RESNET_BLOCKS)}")
        if self.kind not in HEAD_KINDS:
            raise ConfigError(f"{source}: model.kind = {self.kind!r} is not one of {HEAD_KINDS}")
        if self.padding not in PADDING_MODES:
            raise ConfigError(f"{source}: model.padding = {self.padding!r} is not one of {PADDING_MODES}")
        if len(self.decoder_channels) != 5:
            raise ConfigError(f"{source}: model.decoder_channels needs 5 values, got {self.decoder_channels}")
        if not 0 <= self.min_depth < self.max_depth:
            raise ConfigError(f"{source}: model.min_depth {self.min_depth} must be in [0, max_depth={self.max_depth})")
        check_input_size(self.input_height, self.input_width, source)
        integer_step(self.max_depth, self.kind, self.levels)  # raises ConfigError on a bad level count
        if self.camera not in DEPTH_CAMERA_MODELS:
            raise ConfigError(f"{source}: model.camera = {self.camera!r} is not one of {DEPTH_CAMERA_MODELS}")
        if (self.camera != "fixed") != (self.canonical_focal_px > 0):
            raise ConfigError(f"{source}: model.canonical_focal_px = {self.canonical_focal_px} must be > 0 exactly "
                              f"when model.camera is not 'fixed' (it is {self.camera!r})")
        if (self.camera == "canonical_focal_height") != (self.canonical_height_m > 0):
            raise ConfigError(f"{source}: model.canonical_height_m = {self.canonical_height_m} must be > 0 exactly "
                              f"when model.camera is canonical_focal_height (it is {self.camera!r})")
        if self.camera_input and self.camera != "canonical_focal_height":
            raise ConfigError(f"{source}: model.camera_input needs model.camera canonical_focal_height "
                              f"(it is {self.camera!r}): the input is the log of its two factors")

    @property
    def step(self) -> float:
        return integer_step(self.max_depth, self.kind, self.levels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check_matches(self, other: dict[str, Any], source: str) -> None:
        """ConfigError naming ``source`` and the field if ``other`` (a checkpoint's) differs in architecture."""
        mine = self.to_dict()
        for key in self.ARCH_FIELDS:
            theirs = other.get(key, DepthModelConfig.__dataclass_fields__[key].default
                               if key != "decoder_channels" else [16, 32, 64, 128, 256])
            if theirs != mine[key]:
                raise ConfigError(f"{source}: model.{key} is {theirs!r} in the checkpoint but {mine[key]!r} in the config")


def check_input_size(height: int, width: int, source: str = "input") -> None:
    """The encoder downsamples by 32: both sides must be positive multiples of 32."""
    for name, value in (("height", height), ("width", width)):
        if value <= 0 or value % 32:
            raise ConfigError(f"{source}: input {name} = {value} must be a positive multiple of 32")


# ---- blocks ------------------------------------------------------------------------------------


def fake_quant(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Per-tensor asymmetric fake quantisation with a straight-through gradient."""
    lo = x.detach().amin().clamp(max=0.0)
    hi = x.detach().amax().clamp(min=0.0)
    levels = 2**bits - 1
    scale = (hi - lo).clamp(min=1e-8) / levels
    zero = torch.round(-lo / scale)
    q = (torch.round(x / scale) + zero).clamp(0, levels)
    return x + ((q - zero) * scale - x).detach()


class ConvBlock(nn.Module):
    """3x3 conv (configurable padding) + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, padding: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, padding_mode=padding)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


class DualHeadDecoder(nn.Module):
    """Monodepth-style decoder with an integer and a fractional head at each of 4 scales."""

    def __init__(self, enc_ch: list[int], dec_ch: list[int], int_out: int, padding: str) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict()
        for i in range(4, -1, -1):
            in_ch = enc_ch[-1] if i == 4 else dec_ch[i + 1]
            self.blocks[f"upconv_{i}_0"] = ConvBlock(in_ch, dec_ch[i], padding)
            skip = enc_ch[i - 1] if i > 0 else 0
            self.blocks[f"upconv_{i}_1"] = ConvBlock(dec_ch[i] + skip, dec_ch[i], padding)
        self.integer_convs = nn.ModuleList(
            nn.Conv2d(dec_ch[s], int_out, 3, padding=1, padding_mode=padding) for s in range(NUM_SCALES)
        )
        self.fractional_convs = nn.ModuleList(
            nn.Conv2d(dec_ch[s], 1, 3, padding=1, padding_mode=padding) for s in range(NUM_SCALES)
        )
        self.fake_quant_bits = 0  # > 0: fake-quantise activations (quantisation-aware distillation)

    def _q(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quant(x, self.fake_quant_bits) if self.fake_quant_bits else x

    def forward(
        self, features: list[torch.Tensor], scales: tuple[int, ...], with_features: bool = False
    ) -> dict[tuple[str, int], torch.Tensor]:
        out: dict[tuple[str, int], torch.Tensor] = {}
        x = features[-1]
        for i in range(4, -1, -1):
            x = self._q(self.blocks[f"upconv_{i}_0"](x))
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            if i > 0:
                x = torch.cat([x, features[i - 1]], dim=1)
            x = self._q(self.blocks[f"upconv_{i}_1"](x))
            if with_features:
                out[("feature", i)] = x
            if i in scales:
                out[("integer_raw", i)] = self.integer_convs[i](x)
                out[("fractional_raw", i)] = self.fractional_convs[i](x)
        return out


class CameraModulation(nn.Module):
    """Feature-wise scale and shift of each encoder level from the camera vector (FiLM).

    ``features[i] * (1 + gamma_i(camera)) + beta_i(camera)``, with gamma and beta
    from one two-layer MLP whose last layer starts at zero (the identity). Broadcast
    Mul/Add and two Gemm on a [1, 2] input: NPU-friendly ops.
    """

    def __init__(self, channels: list[int], hidden: int = 32) -> None:
        super().__init__()
        self.channels = list(channels)
        self.hidden = nn.Linear(CAMERA_FEATURES, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.out = nn.Linear(hidden, 2 * sum(self.channels))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: list[torch.Tensor], camera: torch.Tensor) -> list[torch.Tensor]:
        params = self.out(self.relu(self.hidden(camera.to(features[0].dtype))))
        out, start = [], 0
        for feat, ch in zip(features, self.channels, strict=True):
            gamma = params[:, start : start + ch].reshape(-1, ch, 1, 1)
            beta = params[:, start + ch : start + 2 * ch].reshape(-1, ch, 1, 1)
            out.append(feat * (1.0 + gamma) + beta)
            start += 2 * ch
        return out


# ---- model -------------------------------------------------------------------------------------


class DualHeadDepthNet(nn.Module):
    """ResNet encoder + dual-head decoder. ``forward`` returns per-scale head outputs.

    Keys: ``("integer", s)`` - sigmoid kind: [B,1,h,w] in [0,1]; levels kind:
    [B,levels,h,w] logits. ``("fractional", s)`` - [B,1,h,w] metres in
    [0, step). In training mode all 4 scales are computed, in eval mode
    scale 0 only (unless ``scales`` is given).
    """

    def __init__(self, config: DepthModelConfig) -> None:
        super().__init__()
        config.validate("model config")
        self.config = config
        self.kind = config.kind
        self.levels = config.levels
        self.max_depth = float(config.max_depth)
        self.step = config.step
        self.encoder = build_resnet_encoder(config.encoder, config.width)
        int_out = config.levels if config.kind == "levels" else 1
        self.decoder = DualHeadDecoder(self.encoder.num_ch_enc, list(config.decoder_channels), int_out, config.padding)
        self.camera_modulation = CameraModulation(list(self.encoder.num_ch_enc)) if config.camera_input else None
        if config.encoder_weights:
            load_encoder_weights(self.encoder, config.encoder_weights)

    def forward(
        self, x: torch.Tensor, scales: tuple[int, ...] | None = None, with_features: bool = False,
        camera: torch.Tensor | None = None,
    ) -> dict[tuple[str, int], torch.Tensor]:
        """``camera``: [B, 2] camera vector, required exactly when the config has ``camera_input``."""
        if scales is None:
            scales = tuple(range(NUM_SCALES)) if self.training else (0,)
        features = self.encoder(x)
        if self.camera_modulation is not None:
            if camera is None:
                raise ConfigError("this depth model takes the camera as an input (model.camera_input); none given")
            features = self.camera_modulation(features, camera)
        elif camera is not None:
            raise ConfigError("a camera vector was given to a depth model without model.camera_input")
        raw = self.decoder(features, scales, with_features)
        out: dict[tuple[str, int], torch.Tensor] = {}
        for (name, s), value in raw.items():
            if name == "integer_raw":
                out[("integer", s)] = value if self.kind == "levels" else torch.sigmoid(value)
            elif name == "fractional_raw":
                out[("fractional", s)] = self.decoder._q(torch.sigmoid(value) * self.step)
            else:
                out[(name, s)] = value
        return out

    def integer_value(self, integer_out: torch.Tensor) -> torch.Tensor:
        """Head output -> integer value in [0, 1] as deployed (levels: ArgMax / (levels-1))."""
        if self.kind == "sigmoid":
            return integer_out
        return torch.argmax(integer_out, dim=1, keepdim=True).to(torch.float32) / float(self.levels - 1)

    def soft_integer_value(self, integer_out: torch.Tensor) -> torch.Tensor:
        """Differentiable integer value (levels: softmax expectation of the level / (levels-1))."""
        if self.kind == "sigmoid":
            return integer_out
        probs = torch.softmax(integer_out.float(), dim=1)
        ks = torch.arange(self.levels, device=integer_out.device, dtype=probs.dtype).view(1, -1, 1, 1)
        return (probs * ks).sum(dim=1, keepdim=True) / float(self.levels - 1)

    @torch.no_grad()
    def predict_depth(self, x: torch.Tensor, camera: torch.Tensor | None = None) -> torch.Tensor:
        """Composed metric depth [B,1,H,W] at scale 0, as the exported model computes it."""
        out = self.forward(x, scales=(0,), camera=camera)
        return self.integer_value(out[("integer", 0)]).float() * self.max_depth + out[("fractional", 0)].float()


class DepthExportModule(nn.Module):
    """Inference graph for ONNX: scale 0 only; ``composed`` -> depth, ``separate`` -> (integer, fractional)."""

    def __init__(self, net: DualHeadDepthNet, variant: str = "composed") -> None:
        super().__init__()
        if variant not in ("composed", "separate"):
            raise ConfigError(f"export variant {variant!r} is not composed/separate")
        self.net = net.eval()
        self.variant = variant

    def forward(self, rgb: torch.Tensor, camera: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out = self.net(rgb, scales=(0,), camera=camera)
        integer = self.net.integer_value(out[("integer", 0)])
        fractional = out[("fractional", 0)]
        if self.variant == "composed":
            return integer * self.net.max_depth + fractional
        return integer, fractional


# ---- factory -----------------------------------------------------------------------------------


def build_depth_net(config: DepthModelConfig | dict[str, Any], source: str = "model config") -> DualHeadDepthNet:
    if isinstance(config, dict):
        from model_tools.training.config import dataclass_from_dict

        config = dataclass_from_dict(DepthModelConfig, config, source)
    config.validate(source)
    return DualHeadDepthNet(config)


def normalize(image: torch.Tensor) -> torch.Tensor:
    """RGB in [0,1] -> network input (what the node does from the metadata)."""
    return (image - NORM_MEAN) / NORM_STD
