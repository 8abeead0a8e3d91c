"""DDRNet23-Slim: official state-dict layout, checkpoint loading, head swap, shapes.

The official layout is written out by hand below from the published
structure (DATASETS.md), independently of the model code, so a renamed or
reshaped module fails here.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from model_tools.models.ddrnet import (
    SegmentationExportWrapper,
    count_parameters,
    ddrnet23_slim,
    load_official_weights,
)
from perception_core.errors import ModelFileError

Shape = tuple[int, ...]


def _bn(prefix: str, c: int) -> dict[str, Shape]:
    return {f"{prefix}.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")}


def _conv(prefix: str, cout: int, cin: int, k: int, bias: bool = False) -> dict[str, Shape]:
    out = {f"{prefix}.weight": (cout, cin, k, k)}
    if bias:
        out[f"{prefix}.bias"] = (cout,)
    return out


def _basic(prefix: str, cin: int, cout: int) -> dict[str, Shape]:
    keys = {**_conv(f"{prefix}.conv1", cout, cin, 3), **_bn(f"{prefix}.bn1", cout)}
    keys |= {**_conv(f"{prefix}.conv2", cout, cout, 3), **_bn(f"{prefix}.bn2", cout)}
    if cin != cout:
        keys |= {**_conv(f"{prefix}.downsample.0", cout, cin, 1), **_bn(f"{prefix}.downsample.1", cout)}
    return keys


def _bottleneck(prefix: str, cin: int, planes: int) -> dict[str, Shape]:
    keys = {**_conv(f"{prefix}.conv1", planes, cin, 1), **_bn(f"{prefix}.bn1", planes)}
    keys |= {**_conv(f"{prefix}.conv2", planes, planes, 3), **_bn(f"{prefix}.bn2", planes)}
    keys |= {**_conv(f"{prefix}.conv3", 2 * planes, planes, 1), **_bn(f"{prefix}.bn3", 2 * planes)}
    keys |= {**_conv(f"{prefix}.downsample.0", 2 * planes, cin, 1), **_bn(f"{prefix}.downsample.1", 2 * planes)}
    return keys


def _head(prefix: str, cin: int, classes: int) -> dict[str, Shape]:
    keys = {**_bn(f"{prefix}.bn1", cin), **_conv(f"{prefix}.conv1", 64, cin, 3), **_bn(f"{prefix}.bn2", 64)}
    return keys | _conv(f"{prefix}.conv2", classes, 64, 1, bias=True)


def official_layout(num_classes: int = 19, backbone_only: bool = False) -> dict[str, Shape]:
    """Key -> shape of the official DDRNet23-Slim (planes 32, spp 128, head 64) with the aux head."""
    keys: dict[str, Shape] = {}
    keys |= _conv("conv1.0", 32, 3, 3, bias=True) | _bn("conv1.1", 32)
    keys |= _conv("conv1.3", 32, 32, 3, bias=True) | _bn("conv1.4", 32)
    for name, cin, cout in (("layer1", 32, 32), ("layer2", 32, 64), ("layer3", 64, 128), ("layer4", 128, 256),
                            ("layer3_", 64, 64), ("layer4_", 64, 64)):
        keys |= _basic(f"{name}.0", cin, cout) | _basic(f"{name}.1", cout, cout)
    keys |= _bottleneck("layer5_.0", 64, 64) | _bottleneck("layer5.0", 256, 256)
    keys |= _conv("compression3.0", 64, 128, 1) | _bn("compression3.1", 64)
    keys |= _conv("compression4.0", 64, 256, 1) | _bn("compression4.1", 64)
    keys |= _conv("down3.0", 128, 64, 3) | _bn("down3.1", 128)
    keys |= _conv("down4.0", 128, 64, 3) | _bn("down4.1", 128) | _conv("down4.3", 256, 128, 3) | _bn("down4.4", 256)
    if backbone_only:
        return keys
    for i in (1, 2, 3, 4):
        keys |= _bn(f"spp.scale{i}.1", 512) | _conv(f"spp.scale{i}.3", 128, 512, 1)
        keys |= _bn(f"spp.process{i}.0", 128) | _conv(f"spp.process{i}.2", 128, 128, 3)
    keys |= _bn("spp.scale0.0", 512) | _conv("spp.scale0.2", 128, 512, 1)
    keys |= _bn("spp.compression.0", 640) | _conv("spp.compression.2", 128, 640, 1)
    keys |= _bn("spp.shortcut.0", 512) | _conv("spp.shortcut.2", 128, 512, 1)
    keys |= _head("final_layer", 128, num_classes) | _head("seghead_extra", 64, num_classes)
    return keys


def _fake_checkpoint(layout: dict[str, Shape], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        tensor = torch.rand(shape, generator=gen) + 0.5 if key.endswith("running_var") else torch.randn(shape, generator=gen)
        state[key] = tensor
    return state


def test_state_dict_matches_official_layout() -> None:
    model = ddrnet23_slim(num_classes=19, aux_head=True)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    expected = official_layout(19)
    assert sorted(set(ours) - set(expected)) == []
    assert sorted(set(expected) - set(ours)) == []
    mismatched = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
    assert mismatched == {}


def test_parameter_count_is_ddrnet23_slim() -> None:
    # Published: 5.7M parameters (without the training-only aux head).
    assert count_parameters(ddrnet23_slim(19)) == pytest.approx(5.7e6, rel=0.01)


def test_output_stride_8_and_aux_head() -> None:
    model = ddrnet23_slim(num_classes=7, aux_head=True).eval()
    with torch.no_grad():
        main, aux = model(torch.randn(1, 3, 64, 96))
        alone = model.forward_main(torch.randn(1, 3, 64, 96))
    assert main.shape == (1, 7, 8, 12)
    assert aux.shape == (1, 7, 8, 12)
    assert alone.shape == (1, 7, 8, 12)


def test_load_cityscapes_checkpoint_with_prefixes_and_head_swap(tmp_path: Path) -> None:
    state = _fake_checkpoint(official_layout(19))
    wrapped = {"model." + k: v for k, v in state.items()}
    wrapped["loss.criterion.weight"] = torch.ones(19)
    path = tmp_path / "cityscapes.pth"
    torch.save({"state_dict": wrapped, "epoch": 484}, path)

    model = ddrnet23_slim(num_classes=7, aux_head=True)
    report = load_official_weights(model, path)

    assert report.checkpoint_num_classes == 19
    assert report.dropped == ["loss.criterion.weight"]
    assert report.unexpected == []
    assert report.missing == []
    assert sorted(report.reinitialised_heads) == sorted(
        ["final_layer.conv2.weight", "final_layer.conv2.bias", "seghead_extra.conv2.weight", "seghead_extra.conv2.bias"]
    )
    own = model.state_dict()
    for key in ("conv1.0.weight", "layer5.0.conv2.weight", "spp.compression.2.weight", "final_layer.conv1.weight",
                "seghead_extra.bn2.running_var", "down4.4.running_mean"):
        assert torch.equal(own[key], state[key]), key
    # Head swap: 7-class classifiers, Xavier-uniform weights within the bound, zero bias.
    bound = math.sqrt(6.0 / (64 + 7))
    for head in ("final_layer", "seghead_extra"):
        weight, bias = own[f"{head}.conv2.weight"], own[f"{head}.conv2.bias"]
        assert weight.shape == (7, 64, 1, 1)
        assert float(weight.abs().max()) <= bound
        assert float(weight.std()) > bound / 4  # not zeros, not the tiny default init
        assert torch.count_nonzero(bias) == 0
    assert "19" in report.summary() and "loss.criterion.weight" in report.summary()


def test_load_module_prefixed_checkpoint_same_class_count(tmp_path: Path) -> None:
    state = _fake_checkpoint(official_layout(19), seed=1)
    path = tmp_path / "ddp.pth"
    torch.save({"module." + k: v for k, v in state.items()}, path)
    model = ddrnet23_slim(num_classes=19, aux_head=False)
    report = load_official_weights(model, path)
    assert report.reinitialised_heads == []
    assert all(k.startswith("seghead_extra.") for k in report.unexpected) and len(report.unexpected) == 11  # bn1 4 + conv1 + bn2 4 + conv2 2
    assert torch.equal(model.state_dict()["final_layer.conv2.weight"], state["final_layer.conv2.weight"])


def test_load_imagenet_backbone_reports_missing_and_unexpected(tmp_path: Path) -> None:
    state = _fake_checkpoint(official_layout(backbone_only=True), seed=2)
    state["linear.weight"] = torch.randn(1000, 1024)  # the classifier of the ImageNet model
    state["linear.bias"] = torch.randn(1000)
    path = tmp_path / "DDRNet23s_imagenet.pth"
    torch.save(state, path)
    model = ddrnet23_slim(num_classes=7, aux_head=True)
    report = load_official_weights(model, path)
    assert sorted(report.unexpected) == ["linear.bias", "linear.weight"]
    assert report.missing and all(k.startswith(("spp.", "final_layer.", "seghead_extra.")) for k in report.missing)
    assert len(report.loaded) == len(official_layout(backbone_only=True))
    assert torch.equal(model.state_dict()["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    assert "spp.*" in report.summary()


def test_shape_mismatch_names_the_key(tmp_path: Path) -> None:
    state = _fake_checkpoint(official_layout(19))
    state["layer2.0.conv1.weight"] = torch.randn(128, 64, 3, 3)  # a DDRNet23 (non-slim) shape
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(ModelFileError, match=r"layer2\.0\.conv1\.weight.*\(128, 64, 3, 3\)"):
        load_official_weights(ddrnet23_slim(19), path)


def test_strict_heads_refuses_class_count_change(tmp_path: Path) -> None:
    path = tmp_path / "c19.pth"
    torch.save(_fake_checkpoint(official_layout(19)), path)
    with pytest.raises(ModelFileError, match=r"final_layer\.conv2"):
        load_official_weights(ddrnet23_slim(7), path, strict_heads=True)


def test_missing_and_unrelated_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        load_official_weights(ddrnet23_slim(7), tmp_path / "absent.pth")
    other = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(ModelFileError, match="no tensor name matches"):
        load_official_weights(ddrnet23_slim(7), other)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match=r"garbage\.pth"):
        load_official_weights(ddrnet23_slim(7), garbage)


class _Payload:
    """An arbitrary pickled object: weights_only loading must refuse it."""


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "unsafe.pth"
    torch.save({"state_dict": {"conv1.0.weight": torch.zeros(1)}, "extra": _Payload()}, path)
    with pytest.raises(ModelFileError, match="weights-only"):
        load_official_weights(ddrnet23_slim(7), path)


def test_reset_classifier_keeps_backbone() -> None:
    model = ddrnet23_slim(19, aux_head=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.reset_classifier(7)
    after = model.state_dict()
    changed = sorted(k for k in before if before[k].shape != after[k].shape or not torch.equal(before[k], after[k]))
    assert changed == ["final_layer.conv2.bias", "final_layer.conv2.weight",
                       "seghead_extra.conv2.bias", "seghead_extra.conv2.weight"]
    assert model.num_classes == 7


def test_export_wrapper_upsamples_and_class_id_is_argmax() -> None:
    torch.manual_seed(0)
    model = ddrnet23_slim(5, aux_head=True).eval()
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        logits = SegmentationExportWrapper(model, "logits")(x)
        ids = SegmentationExportWrapper(model, "class_id")(x)
    assert logits.shape == (1, 5, 32, 48)
    assert ids.shape == (1, 1, 32, 48) and ids.dtype == torch.float32
    assert torch.equal(ids[:, 0].long(), logits.argmax(1))
    with pytest.raises(ValueError, match="class_id"):
        SegmentationExportWrapper(model, "probabilities")
