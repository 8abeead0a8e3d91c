"""Depth network shapes, codec round trips on torch tensors, and loss values on known inputs."""

from __future__ import annotations

import math

import pytest
import torch

from model_tools.models.depth_net import DepthExportModule, DepthModelConfig, build_depth_net
from model_tools.tasks.depth import DepthLossConfig, DistillConfig, depth_loss, distill_loss
from perception_core.depth_codec import compose_depth, decompose_depth, integer_step
from perception_core.errors import ConfigError

TINY = {"width": 8, "decoder_channels": [4, 8, 8, 16, 16], "levels": 32, "input_height": 64, "input_width": 96}


@pytest.mark.parametrize("kind,levels", [("sigmoid", 256), ("levels", 256), ("levels", 16)])
def test_codec_round_trip_on_torch_is_exact_within_float_resolution(kind: str, levels: int) -> None:
    max_depth = 15.0
    depth = torch.cat([torch.linspace(0, max_depth, 10001), torch.arange(0, 16, dtype=torch.float32) * integer_step(max_depth, kind, levels)])
    depth = depth.clamp(max=max_depth)
    integer, fractional = decompose_depth(depth, max_depth, kind, levels)
    step = integer_step(max_depth, kind, levels)
    assert float(fractional.min()) >= 0.0
    assert float(fractional.max()) < step + 1e-5
    assert torch.allclose(compose_depth(integer, fractional, max_depth), depth, atol=2e-6 * max_depth)
    # Integer values sit exactly on the head's grid (floor, not round).
    k = integer * max_depth / step
    assert torch.allclose(k, k.round(), atol=1e-4)
    assert torch.all(k.round() * step <= depth + 1e-5)


@pytest.mark.parametrize("kind", ["sigmoid", "levels"])
def test_forward_returns_four_scales_in_training_and_scale_zero_in_eval(kind: str) -> None:
    net = build_depth_net({**TINY, "kind": kind})
    x = torch.randn(2, 3, 64, 96)
    out = net.train()(x)
    channels = 32 if kind == "levels" else 1
    for s in range(4):
        assert out[("integer", s)].shape == (2, channels, 64 // 2**s, 96 // 2**s)
        frac = out[("fractional", s)]
        assert frac.shape == (2, 1, 64 // 2**s, 96 // 2**s)
        assert float(frac.min()) >= 0 and float(frac.max()) <= net.step
    net.eval()
    assert set(net(x)) == {("integer", 0), ("fractional", 0)}
    depth = DepthExportModule(net, "composed")(x)
    integer, fractional = DepthExportModule(net, "separate")(x)
    assert torch.allclose(depth, integer * 15.0 + fractional)
    if kind == "levels":  # ArgMax / (levels-1): values on the level grid
        assert torch.allclose(integer * 31, (integer * 31).round(), atol=1e-5)


def test_resnet34_is_selectable_and_bigger() -> None:
    r18 = sum(p.numel() for p in build_depth_net({**TINY, "kind": "sigmoid"}).parameters())
    r34 = sum(p.numel() for p in build_depth_net({**TINY, "kind": "sigmoid", "encoder": "resnet34"}).parameters())
    assert r34 > r18


@pytest.mark.parametrize(
    "field,value,match",
    [("encoder", "resnet50", "model.encoder"), ("kind", "bins", "model.kind"), ("padding", "circular", "model.padding"),
     ("input_height", 100, "input height = 100"), ("levels", 8, "levels=8")],
)
def test_bad_model_config_names_the_field(field: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_depth_net({**TINY, field: value})


def _constant_outputs(integer: torch.Tensor | float, frac: float, channels: int, hw: tuple[int, int]) -> dict:
    out = {}
    for s in range(4):
        h, w = hw[0] // 2**s, hw[1] // 2**s
        if isinstance(integer, torch.Tensor):
            out[("integer", s)] = integer.view(1, -1, 1, 1).expand(1, channels, h, w).clone()
        else:
            out[("integer", s)] = torch.full((1, channels, h, w), integer)
        out[("fractional", s)] = torch.full((1, 1, h, w), frac)
    return out


def test_sigmoid_loss_value_on_known_input_ignores_invalid_pixels() -> None:
    cfg = DepthModelConfig(kind="sigmoid", max_depth=15.0, input_height=32, input_width=32)
    gt = torch.full((1, 1, 32, 32), 5.5)
    gt[..., :8, :] = 0.0  # invalid
    out = _constant_outputs(6 / 15, 0.25, 1, (32, 32))
    out[("integer", 0)][..., :8, :] = 1.0  # garbage where GT is invalid must not count
    total, parts = depth_loss(out, gt, cfg, DepthLossConfig())
    assert float(parts["integer"]) == pytest.approx(1 / 15, abs=1e-6)  # |6/15 - 5/15|
    assert float(parts["fractional"]) == pytest.approx(0.25, abs=1e-6)  # |0.25 - 0.5| / 1 m
    assert float(parts["depth"]) == pytest.approx(0.75, abs=1e-5)  # |6.25 - 5.5|
    assert float(total) == pytest.approx(1 / 15 + 10 * 0.25 + 0.5 * 0.75, abs=1e-5)
    weighted, _ = depth_loss(out, gt, cfg, DepthLossConfig(w_integer=2.0, w_fractional=0.0, w_depth=1.0))
    assert float(weighted) == pytest.approx(2 / 15 + 0.75, abs=1e-5)


def test_levels_loss_value_on_known_input() -> None:
    cfg = DepthModelConfig(kind="levels", levels=16, max_depth=15.0, input_height=32, input_width=32)
    step = 1.0
    gt = torch.full((1, 1, 32, 32), 7.25)
    uniform = _constant_outputs(0.0, 0.25 * step, 16, (32, 32))
    _, parts = depth_loss(uniform, gt, cfg, DepthLossConfig())
    assert float(parts["integer"]) == pytest.approx(math.log(16), abs=1e-5)  # CE of uniform logits
    assert float(parts["fractional"]) == pytest.approx(0.0, abs=1e-6)
    assert float(parts["depth"]) == pytest.approx(abs(0.5 * 15 + 0.25 - 7.25), abs=1e-4)  # soft integer = mean level
    logits = torch.full((16,), -50.0)
    logits[7] = 50.0
    sharp = _constant_outputs(logits, 0.25, 16, (32, 32))
    total, parts = depth_loss(sharp, gt, cfg, DepthLossConfig())
    assert float(total) == pytest.approx(0.0, abs=1e-4)


def test_distill_loss_is_zero_against_itself_and_positive_otherwise() -> None:
    cfg = DepthModelConfig(**{**TINY, "kind": "levels"})
    net = build_depth_net(cfg).train()
    x = torch.randn(1, 3, 64, 96)
    a = net(x, with_features=True)
    zero, parts = distill_loss(a, a, cfg, DistillConfig(w_feature=1.0), 4)
    assert float(zero) == pytest.approx(0.0, abs=1e-5) and float(parts["distill_feature"]) == 0.0
    b = net(torch.randn(1, 3, 64, 96), with_features=True)
    assert float(distill_loss(a, b, cfg, DistillConfig(w_feature=1.0), 4)[0]) > 0


def test_fake_quant_keeps_gradients_and_quantises_to_8_bits() -> None:
    from model_tools.models.depth_net import fake_quant

    x = torch.linspace(-1, 3, 1000, requires_grad=True)
    q = fake_quant(x, 8)
    assert len(torch.unique(q.detach())) <= 256
    assert float((q - x).abs().max()) <= 4 / 255 / 2 + 1e-6
    q.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))
